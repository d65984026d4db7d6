"""Runs an experiment: the one place a run or a sweep is put together (the CLI only parses).

Order matters and is the contract: every check that can fail on bad input runs before the
parent MLflow run is opened or Ray is started, so a typo costs a second and writes nothing.
Then: the parent run, Ray, the workload's `run` (one `RunContext`) or the Tune sweep (whose
trials get the same context type, `RunContext.for_trial`), `results.csv`, and the paper's
claims (`claims.csv`/`claims.md`) when the workload declares them.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a finished run or sweep produced (all of it is also in the parent MLflow run)."""
    kind: str                  # "run" or "sweep"
    cfg: Any
    run_id: str
    rows: list[dict]           # one per child run (run) or per trial (sweep)
    claims: list[dict] = field(default_factory=list)
    experiment_id: str = ""


def check(cfg: Any, kind: str) -> Any:
    """Everything `run`/`sweep` check before starting; returns the workload."""
    from orchestrator import preflight, registry, state, tracking

    workload = registry.get(cfg.workload)
    if kind == "sweep" and cfg.seeds > 1:
        raise ConfigError("seeds", "a sweep runs each trial at `seed`; `seeds` repeats a run",
                          "drop seeds, or sweep over seeds with sweep.params.seed: {grid: [0, 1, 2]}")
    if kind == "sweep" and cfg.grid:
        raise ConfigError("grid", "a sweep varies its settings in sweep.params",
                          "move the grid to sweep.params: {key: {grid: [..]}}")
    if kind == "sweep" and not cfg.sweep.params:
        raise ConfigError("sweep.params", "nothing to sweep", "add sweep.params to the config")
    if kind == "sweep" and workload.trial is None and workload.trial_batch is None:
        raise ConfigError("workload", f"'{cfg.workload}' defines no trial() and cannot be swept")
    preflight.check_before_start(cfg, workload, kind, about_to_run=True)
    state.check_state_dir(cfg)
    tracking.check_store(tracking.tracking_uri(cfg.mlflow.tracking_uri), probe=True)
    return workload


def execute(cfg: Any, config_path: str, overrides: list[str], kind: str,
            resume: bool = False, start_if_missing: bool = False) -> Outcome:
    """Check, open the parent run, start or join Ray, run, log. Raises what the work raised
    (the parent run is then marked FAILED). `resume` with nothing to resume is bad input unless
    `start_if_missing`."""
    from orchestrator import runtime, state, tracking

    workload = check(cfg, kind)
    state_dir = state.run_state_dir(cfg, config_path, resume, start_if_missing)
    started = time.time()
    with tracking.parent_run(cfg, config_path, kind, state.last_run_id(state_dir),
                             overrides) as parent, runtime.ray_session(cfg.ray):
        state.remember_run_id(state_dir, parent.run_id)
        if kind == "run":
            rows = run_workload(cfg, workload, parent, state_dir / "checkpoints")
        else:
            rows = run_sweep(cfg, parent)
            if cfg.sweep.recheck:
                recheck_best(cfg, workload, rows, parent, state_dir / "checkpoints")
        parent.log_table(rows, "results.csv")
        claims = check_claims(workload, rows, parent) if kind == "run" else []
        if kind == "run" and len({(r.get("seed"), r.get("setting")) for r in rows}) > 1:
            log_seed_summary(workload, rows, parent)
            summarize(workload, rows, parent)
        parent.log_metrics({"wall_seconds": time.time() - started})
    return Outcome(kind, cfg, parent.run_id, rows, claims, parent.experiment_id)


def run_workload(cfg: Any, workload: Any, parent: Any, checkpoint_dir: Path) -> list[dict]:
    """`run_seeds` once, or once per setting of the `grid`, each in a `Scope` of the parent
    run; the rows of every setting, with a `setting` column (last, so the method stays the
    first text column) when there is a grid."""
    from orchestrator.sweepspec import grid_settings
    from orchestrator.tracking import Scope

    checkpoint_dir.mkdir(exist_ok=True)
    if not cfg.grid:
        return run_seeds(cfg, workload, parent, checkpoint_dir)
    rows = []
    for label, setting in grid_settings(cfg):
        log.info("setting %s", label)
        rows += [{**row, "setting": label}
                 for row in run_seeds(setting, workload, Scope(parent, "setting", label),
                                      checkpoint_dir, label)]
    return rows


def run_seeds(cfg: Any, workload: Any, parent: Any, checkpoint_dir: Path,
              setting: str = "") -> list[dict]:
    """`workload.run` once, or once per seed (`seeds: N`), each seed in a `SeedScope` of the
    parent run; the rows of every seed, with a `seed` column when there are several. Progress
    bars name the grid `setting` and the seed when there are several."""
    import dataclasses

    from orchestrator import runtime
    from orchestrator.progress import labelled
    from orchestrator.tracking import SeedScope
    from orchestrator.workload import RunContext

    if cfg.seeds == 1:
        return workload.run(cfg, RunContext(cfg, parent, labelled(setting), runtime.parallel_map,
                                            checkpoint_dir))
    rows = []
    for i, seed in enumerate(range(cfg.seed, cfg.seed + cfg.seeds)):
        log.info("%sseed %d (%d of %d)", f"{setting} " if setting else "", seed, i + 1,
                 cfg.seeds)
        one = dataclasses.replace(cfg, seed=seed, seeds=1)
        ctx = RunContext(one, SeedScope(parent, seed),
                         labelled(f"{setting} seed {seed}" if setting else f"seed {seed}"),
                         runtime.parallel_map, checkpoint_dir)
        rows += [{"seed": seed, **{k if k != "seed" else "workload_seed": v
                                    for k, v in row.items()}} for row in workload.run(one, ctx)]
    return rows


def run_sweep(cfg: Any, parent: Any) -> list[dict]:
    from orchestrator import tuning

    rows = tuning.run_sweep(cfg, parent)
    best = rows[tuning.best_index(rows, cfg.sweep.metric, cfg.sweep.mode)]
    parent.log_metrics({f"best_{cfg.sweep.metric}": best[cfg.sweep.metric]})
    parent.set_tags({"best_trial": best["trial"]})
    return rows


def recheck_best(cfg: Any, workload: Any, rows: list[dict], parent: Any,
                 checkpoint_dir: Path) -> list[dict]:
    """Run the `sweep.recheck` best trials' configurations for real. A trial's metric may be a
    model's prediction (prince's is the bound and time model PRINCE itself optimises); the
    workload's `run` on the same values measures it. recheck.csv on the parent: every row the
    runs returned, with the trial, its swept values and its metric as `trial_<metric>`."""
    import dataclasses

    from orchestrator import runtime, tuning
    from orchestrator.config import build, experiment_schema, to_dict
    from orchestrator.progress import progress
    from orchestrator.sweepspec import parse_params, with_values
    from orchestrator.tracking import Scope
    from orchestrator.workload import RunContext

    metric, dims = cfg.sweep.metric, parse_params(cfg)
    schema = experiment_schema(workload.name, workload.config_cls)
    checkpoint_dir.mkdir(exist_ok=True)
    out = []
    for i, trial in enumerate(tuning.ranked(rows, metric, cfg.sweep.mode)[:cfg.sweep.recheck], 1):
        values = {d.path: trial[d.path] for d in dims}
        pick = build(schema, with_values(to_dict(cfg), values))
        pick = dataclasses.replace(pick, sweep=dataclasses.replace(pick.sweep, recheck=0))
        log.info("recheck %d: trial %s (%s = %s), trained for real", i, trial["trial"], metric,
                 trial[metric])
        ctx = RunContext(pick, Scope(parent, "recheck", i), progress, runtime.parallel_map,
                         checkpoint_dir)
        out += [{"recheck": i, "trial": trial["trial"], **values,
                 f"trial_{metric}": trial[metric], **row} for row in workload.run(pick, ctx)]
    parent.log_table(out, "recheck.csv")
    return out


def log_seed_summary(workload: Any, rows: list[dict], parent: Any) -> None:
    """`seeds_summary.csv` on the parent run: each method's metrics as mean and 95% interval
    over seeds, and paired differences against the workload's proposed method."""
    from orchestrator import claims

    try:
        table = claims.seed_summary(rows, workload.reference)
    except (KeyError, TypeError, ValueError) as err:  # a summary never fails a finished run
        log.warning("no seeds_summary.csv: %s: %s", type(err).__name__, err)
        return
    if table:
        parent.log_table(table, "seeds_summary.csv")


def summarize(workload: Any, rows: list[dict], parent: Any) -> None:
    """The workload's own tables and figures over seeds and settings (`Workload.summarize`)."""
    if workload.summarize is None:
        return
    try:
        workload.summarize(rows, parent)
    except Exception:  # the rows and claims are logged: a figure never fails a finished run
        log.exception("%s: its summary figures failed", workload.name)


def check_claims(workload: Any, rows: list[dict], parent: Any) -> list[dict]:
    """The workload's paper claims against this run's rows, logged to the parent run."""
    from orchestrator import claims

    table = claims.check(workload.claims, rows)
    if table:
        parent.log_table(table, "claims.csv")
        parent.log_text(claims.markdown(table), "claims.md")
    return table


def reproduction_config(workload_name: str) -> Path:
    """`experiments/<workload>/reproduce.yaml`, for a workload that declares paper claims."""
    from orchestrator import registry
    from orchestrator.config import BadInput

    workload = registry.get(workload_name)
    path = registry.EXPERIMENTS_DIR / workload_name / "reproduce.yaml"
    if not workload.claims or not path.is_file():
        raise BadInput(f"reproduce {workload_name}: it declares no paper claims with an "
                       f"experiments/{workload_name}/reproduce.yaml; `orchestrator list` shows "
                       "the shipped experiments")
    return path


def readme_folder(workload: Any) -> Path:
    """Where a workload's README lives: beside the module that defines its `run`."""
    import inspect

    return Path(inspect.getfile(workload.run)).parent


def refresh_readme_figure(cfg: Any, workload: Any, run_id: str) -> list[Path]:
    """Copy the reproduction's `workload.readme_figure` (SVG and PNG) from its parent run into
    `figures/` beside the workload's README, so the README shows what the last reproduction
    measured. Only the unmodified reproduction calls this (overrides change the results).
    Both files are fetched before either is replaced: never a new SVG beside an old PNG."""
    from orchestrator.tracking import download_artifacts

    folder = readme_folder(workload)
    if not workload.readme_figure or not (folder / "README.md").is_file():
        return []
    names = [workload.readme_figure + suffix for suffix in (".svg", ".png")]
    (folder / "figures").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fetched = download_artifacts(cfg.mlflow.tracking_uri, run_id, names, Path(tmp))
        parts = [folder / "figures" / f"{local.name}.part" for local in fetched]
        try:
            for local, part in zip(fetched, parts):
                shutil.copyfile(local, part)
        except OSError:
            for part in parts:
                part.unlink(missing_ok=True)
            raise
    targets = [part.with_name(part.name[:-len(".part")]) for part in parts]
    for part, target in zip(parts, targets):
        os.replace(part, target)
    return targets
