"""Command line: argument parsing only; the work is done by the modules it calls.

    orchestrator run CONFIG [key=value ...]       one experiment, a child run per method
    orchestrator sweep CONFIG [key=value ...]     a Ray Tune sweep, a child run per trial
    orchestrator validate CONFIG [key=value ...]  check a config without starting anything
    orchestrator list                             workloads and shipped experiments
    orchestrator compare EXPERIMENT               the latest parent run's children as a table

Exit status: 0 done, 1 the experiment failed (its MLflow run is FAILED), 2 bad input.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from orchestrator.config import ConfigError, load_experiment
from orchestrator.progress import console, setup_logging
from orchestrator.workload import rows_to_columns

log = logging.getLogger("orchestrator")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for name, func, text in (("run", cmd_run, "run an experiment"),
                             ("sweep", cmd_sweep, "run the config's Ray Tune sweep"),
                             ("validate", cmd_validate, "validate a config and exit")):
        p = sub.add_parser(name, help=text)
        p.add_argument("config", help="experiment YAML, e.g. experiments/aeria/quickstart.yaml")
        p.add_argument("overrides", nargs="*", help="OmegaConf dotlist, e.g. aeria.num_users=5000")
        if name == "run":
            p.add_argument("--resume", action="store_true",
                           help="continue the last run of this exact config from its checkpoints")
        p.set_defaults(func=func)
    p = sub.add_parser("list", help="list workloads and shipped experiments")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("compare", help="table of the latest parent run's child runs")
    p.add_argument("experiment", help="MLflow experiment name, e.g. aeria-quickstart")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db",
                   help="MLflow store (MLFLOW_TRACKING_URI overrides it)")
    p.add_argument("--out", help="CSV path (default compare_<experiment>.csv)")
    p.set_defaults(func=cmd_compare)
    return parser


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_experiment(args.config, args.overrides)
    from orchestrator.tracking import check_store, tracking_uri

    check_store(tracking_uri(cfg.mlflow.tracking_uri))
    console.print(f"[green]ok[/green]: {args.config} is a valid '{cfg.workload}' experiment")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return _execute(args, kind="run")


def cmd_sweep(args: argparse.Namespace) -> int:
    return _execute(args, kind="sweep")


def _execute(args: argparse.Namespace, kind: str) -> int:
    """Validate everything first, then open the parent run, then start or join Ray."""
    from orchestrator import registry, runtime, tracking

    cfg = load_experiment(args.config, args.overrides)
    workload = registry.get(cfg.workload)
    if kind == "sweep" and not cfg.sweep.params:
        raise ConfigError("sweep.params", "nothing to sweep", "add sweep.params to the config")
    if kind == "sweep" and workload.trial is None and workload.trial_batch is None:
        raise ConfigError("workload", f"'{cfg.workload}' defines no trial() and cannot be swept")
    tracking.check_store(tracking.tracking_uri(cfg.mlflow.tracking_uri))
    resume = getattr(args, "resume", False)
    state_dir = run_state_dir(cfg, args.config, resume)
    started = time.time()
    try:
        with tracking.parent_run(cfg, args.config, kind, _read(state_dir / RUN_ID_FILE)) as parent, \
                runtime.ray_session(cfg.ray):
            (state_dir / RUN_ID_FILE).write_text(parent.run_id)
            rows = _run_workload(cfg, workload, parent, state_dir, resume) if kind == "run" \
                else _run_sweep(cfg, parent)
            parent.log_table(rows, "results.csv")
            parent.log_metrics({"wall_seconds": time.time() - started})
    except Exception:
        log.exception("the %s failed; its MLflow run is marked FAILED", kind)
        return 1
    _print_summary(rows if kind == "run" else _best_trials(rows, cfg), cfg, parent.run_id)
    return 0


RUN_ID_FILE = "mlflow_run_id"


def run_state_dir(cfg, config_path: str, resume: bool) -> Path:
    """`.orchestrator/state/<experiment>/<config hash>`: checkpoints and the MLflow run id of the
    last run of this exact config. A fresh run (no --resume) starts it over."""
    import hashlib
    import shutil

    from orchestrator.config import to_yaml
    from orchestrator.tracking import experiment_name

    digest = hashlib.sha1(to_yaml(cfg).encode()).hexdigest()[:12]
    path = Path(".orchestrator") / "state" / experiment_name(cfg, config_path) / digest
    if not resume and path.exists():
        shutil.rmtree(path)
    elif resume and not path.exists():
        log.warning("nothing to resume for this config at %s: starting from scratch", path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.is_file() else None


def _run_workload(cfg, workload, parent, state_dir: Path, resume: bool) -> list[dict]:
    from orchestrator import runtime
    from orchestrator.progress import progress
    from orchestrator.workload import RunContext

    ctx = RunContext(cfg=cfg, tracker=parent, progress=progress, map=runtime.parallel_map,
                     checkpoint_dir=state_dir / "checkpoints", resume=resume)
    ctx.checkpoint_dir.mkdir(exist_ok=True)
    return workload.run(cfg, ctx)


def _run_sweep(cfg, parent) -> list[dict]:
    from orchestrator import tuning

    rows = tuning.run_sweep(cfg, parent)
    best = (max if cfg.sweep.mode == "max" else min)(rows, key=lambda r: r[cfg.sweep.metric])
    parent.log_metrics({f"best_{cfg.sweep.metric}": best[cfg.sweep.metric]})
    parent.set_tags({"best_trial": best["trial"]})
    return rows


def _best_trials(rows: list[dict], cfg, top: int = 10) -> list[dict]:
    """The sweep's best trials, with only the swept values and the metric (all is in MLflow)."""
    from orchestrator.sweepspec import parse_params

    keys = ["trial", *(d.path for d in parse_params(cfg)), cfg.sweep.metric]
    ranked = sorted(rows, key=lambda r: r[cfg.sweep.metric], reverse=cfg.sweep.mode == "max")
    return [{k: r.get(k) for k in keys} for r in ranked[:top]]


def _print_summary(rows: list[dict], cfg, run_id: str) -> None:
    from orchestrator.tracking import ui_command

    _print_table(rows[:50])
    console.print(f"MLflow run {run_id} in experiment "
                  f"'{cfg.mlflow.experiment or cfg.workload}'. Open the UI with:")
    console.print(f"  {ui_command(cfg.mlflow.tracking_uri)}", highlight=False, soft_wrap=True)


def _print_table(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table()
    columns = rows_to_columns(rows)
    for name in columns:
        table.add_column(name, no_wrap=True)
    for row in rows:
        table.add_row(*[_fmt(row.get(c)) for c in columns])
    if not console.is_terminal:
        console.width = 400  # in logs and pipes: never crop cells
    console.print(table)


def _transposed(rows: list[dict]) -> list[dict]:
    """One row per metric and one column per run: wide metric sets stay readable in a terminal."""
    keys = [k for k in rows_to_columns(rows) if k != "run"]
    return [{"metric": k, **{str(r["run"]): r.get(k) for r in rows}} for k in keys]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def cmd_list(args: argparse.Namespace) -> int:
    from orchestrator import registry

    console.print("[bold]workloads[/bold]")
    for name in registry.names():
        console.print(f"  {name:12s} {registry.get(name).description}")
    console.print("[bold]experiments[/bold]")
    for folder, paths in registry.shipped_experiments().items():
        for path in paths:
            console.print(f"  {path.relative_to(registry.REPO_ROOT)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from orchestrator.tracking import latest_children, rows_to_csv

    parent, rows = latest_children(args.tracking_uri, args.experiment)
    console.print(f"{args.experiment}: parent run {parent['name']} ({parent['run_id']}, "
                  f"{parent['status']}), {len(rows)} child runs")
    _print_table(_transposed(rows) if len(rows[0] if rows else ()) > 10 else rows)
    out = Path(args.out or f"compare_{args.experiment}.csv")
    out.write_text(rows_to_csv(rows))
    console.print(f"wrote {out}")
    return 0
