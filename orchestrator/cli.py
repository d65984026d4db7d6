"""Command line: argument parsing only; the work is done by the modules it calls."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from orchestrator.config import BadInput, load_experiment
from orchestrator.progress import console, setup_logging
from orchestrator.workload import rows_to_columns

log = logging.getLogger("orchestrator")
USAGE = """examples:
  orchestrator run experiments/aeria/quickstart.yaml aeria.user_counts=[500,5000] seed=3
  orchestrator run experiments/aeria/quickstart.yaml --resume   # continue a killed run
  orchestrator sweep experiments/aeria/sweep.yaml sweep.num_samples=8
  orchestrator validate experiments/aeria/paper.yaml
  orchestrator reproduce fedprox          # a paper's claims: ours, 95% interval, verdict
  orchestrator list                       # workloads, experiments, what each runs
  orchestrator keys aeria                 # every config key: type, default, rules, help
  orchestrator compare aeria-quickstart --format json
  orchestrator submit experiments/aeria/quickstart.yaml --address http://127.0.0.1:8265

exit status: 0 done, 1 the experiment failed (its MLflow run is FAILED), 2 bad input,
130 interrupted (Ctrl-C; its MLflow run is KILLED)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the open MLflow runs were marked KILLED on the way out
        print("interrupted: any MLflow run it had open is marked KILLED; `run --resume` "
              "continues a run from its checkpoints", file=sys.stderr)
        return 130


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("edge-orchestrator")
    except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run research experiments from YAML on Ray, tracked in MLflow.",
        epilog=USAGE)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"orchestrator {version()}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for name, func, text in (("run", cmd_run, "run an experiment"),
                             ("sweep", cmd_sweep, "run the config's Ray Tune sweep"),
                             ("validate", cmd_validate, "validate a config and exit")):
        example = "sweep.yaml" if name == "sweep" else "quickstart.yaml"
        p = sub.add_parser(name, help=text, description=text, epilog=(
            f"example:\n  orchestrator {name} experiments/aeria/{example} seed=3\n"
            "every key an override can set, with its type, default and help:\n"
            "  orchestrator keys WORKLOAD"), formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("config", help=f"experiment YAML, e.g. experiments/aeria/{example}")
        p.add_argument("overrides", nargs="*",
                       help="OmegaConf dotlist, e.g. aeria.user_counts=[500,5000] seed=3")
        if name in ("run", "sweep"):
            p.add_argument("--output", metavar="PATH",
                           help="also write a JSON summary (run id, UI links, rows, claims)")
        if name == "run":
            p.add_argument("--resume", action="store_true",
                           help="continue the last run of this exact config from its "
                                "checkpoints (exit 2 when there is none)")
            p.add_argument("--resume-or-start", action="store_true",
                           help="as --resume, but start afresh when there is nothing to resume")
        if name == "validate":
            p.add_argument("--print", action="store_true", dest="print_config",
                           help="print the resolved config, every default filled in")
        p.set_defaults(func=func)
    p = sub.add_parser("reproduce", help="run a workload's CPU-sized reproduction; print its "
                                         "paper-claims table")
    p.add_argument("workload", help="workload name, e.g. fedprox")
    p.add_argument("overrides", nargs="*", help="OmegaConf dotlist, e.g. seed=1")
    p.add_argument("--resume", action="store_true", help="continue a killed reproduction")
    p.add_argument("--resume-or-start", action="store_true",
                   help="as --resume, but start afresh when there is nothing to resume")
    p.add_argument("--output", metavar="PATH",
                   help="also write a JSON summary (run id, UI links, rows, claims)")
    p.set_defaults(func=cmd_reproduce)
    p = sub.add_parser("list", help="list workloads and shipped experiments")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("keys", help="every config key of a workload's experiments: type, "
                                    "default, rules, help")
    p.add_argument("workload", help="workload name, e.g. aeria")
    p.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    p.set_defaults(func=cmd_keys)
    p = sub.add_parser("compare", help="table of a parent run's child runs (default: the "
                                       "latest FINISHED parent)")
    p.add_argument("experiment", help="MLflow experiment name, e.g. aeria-quickstart")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--run-id", help="this parent run (any status)")
    p.add_argument("--status", default="FINISHED",
                   choices=["FINISHED", "RUNNING", "FAILED", "KILLED", "any"],
                   help="the latest parent of this status (default FINISHED)")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="only parents with this tag (repeatable), e.g. "
                        "orchestrator.overrides=seed=3")
    p.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"],
                   help="what stdout gets (default: a table; the others are for scripts)")
    p.add_argument("--out", help="CSV path (default compare_<experiment>.csv)")
    p.set_defaults(func=cmd_compare)
    _add_submit(sub)
    return parser


def _add_submit(sub) -> None:
    p = sub.add_parser("submit", help="run or sweep on a Ray cluster as a Ray job "
                                      "(docs/cluster-jobs.md)")
    p.add_argument("config", help="experiment YAML under the repo, e.g. "
                                  "experiments/aeria/quickstart.yaml")
    p.add_argument("overrides", nargs="*", help="OmegaConf dotlist, passed to the job")
    p.add_argument("--sweep", action="store_true", help="submit the config's sweep, not a run")
    p.add_argument("--resume", action="store_true",
                   help="the job runs `run --resume`: continue a killed job's run from its "
                        "checkpoints (needs an absolute, shared state_dir)")
    p.add_argument("--address", help="Ray job API (dashboard) URL; default RAY_API_SERVER_ADDRESS, "
                                     "RAY_ADDRESS, else http://127.0.0.1:8265")
    p.add_argument("--env", action="append", default=[], metavar="NAME",
                   help="pass this variable's value to the job (repeatable); printed redacted")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="leave more files out of the upload (gitignore syntax, repeatable)")
    p.add_argument("--no-wait", action="store_true",
                   help="return once submitted (default: follow the job's logs to its end)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the equivalent `ray job submit` and the upload size; submit nothing")
    p.set_defaults(func=cmd_submit)


def cmd_validate(args: argparse.Namespace) -> int:
    """What `run`/`sweep` check before starting, without probing servers (a cluster's may be
    out of reach from here)."""
    from orchestrator import preflight, registry, state
    from orchestrator.tracking import check_store, tracking_uri

    cfg = load_experiment(args.config, args.overrides)
    kind = "sweep" if cfg.sweep.params else "run"
    preflight.check_before_start(cfg, registry.get(cfg.workload), kind)
    state.check_state_dir(cfg)
    check_store(tracking_uri(cfg.mlflow.tracking_uri))
    if args.print_config:  # plain YAML on stdout, for a file or a diff; the verdict to stderr
        from orchestrator.config import to_yaml

        print(to_yaml(cfg), end="")
        print(f"ok: {args.config} is a valid '{cfg.workload}' experiment", file=sys.stderr)
        return 0
    console.print(f"[green]ok[/green]: {args.config} is a valid '{cfg.workload}' experiment")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return _execute(args, kind="run")


def cmd_sweep(args: argparse.Namespace) -> int:
    return _execute(args, kind="sweep")


def _execute(args: argparse.Namespace, kind: str, after=None) -> int:
    """Parse, hand over to the runner, print what it produced (then `after(cfg, outcome)`)."""
    from orchestrator import runner

    cfg = load_experiment(args.config, args.overrides)
    output = _check_out(Path(args.output), "--output") if getattr(args, "output", None) else None
    try:
        out = runner.execute(cfg, args.config, args.overrides, kind,
                             getattr(args, "resume", False) or getattr(args, "resume_or_start",
                                                                       False),
                             start_if_missing=getattr(args, "resume_or_start", False))
    except BadInput:
        raise  # one line and exit 2 (`main`); a parent run already opened is marked FAILED
    except Exception:
        log.exception("the %s failed; its MLflow run is marked FAILED", kind)
        return 1
    _print_summary(out.rows if kind == "run" else _best_trials(out.rows, cfg), cfg, out)
    if out.claims:
        console.print("[bold]the paper's claims[/bold] (claims.md in the parent run)")
        _print_table([_claim_row(c) for c in out.claims], wrap=True)
    if output:
        _write_summary(out, output)
    if after is not None:
        after(cfg, out)
    return 0


def _json(obj) -> str:
    """Strict JSON (jq and browsers reject NaN and Infinity): non-finite numbers become null."""
    import json
    import math

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    return json.dumps(clean(obj), indent=1, default=str, allow_nan=False)


def _write_summary(out, path: Path) -> None:
    """The machine-readable twin of what the terminal shows."""
    from orchestrator.tracking import runs_url

    summary = {"kind": out.kind, "workload": out.cfg.workload, "run_id": out.run_id,
               "experiment_id": out.experiment_id,
               "run_url": runs_url(out.experiment_id, out.run_id) if out.experiment_id else None,
               "rows": out.rows, "claims": out.claims}
    path.write_text(_json(summary) + "\n")
    console.print(f"wrote {path}")


def _claim_row(c: dict) -> dict:
    """A claims.csv row as the terminal shows it: the interval in one cell, n/a for one seed."""
    ci = "n/a" if c["seeds"] < 2 else f"[{c['ci95_low']:.4g}, {c['ci95_high']:.4g}]"
    return {**({"setting": c["setting"]} if "setting" in c else {}),
            "claim": c["claim"], "paper": c["paper"], "ours": f"{c['ours']:.4g}{c['unit']}",
            "95% interval": ci, "seeds": c["seeds"], "verdict": c["verdict"]}


def cmd_reproduce(args: argparse.Namespace) -> int:
    """`run experiments/<workload>/reproduce.yaml`: the CPU-sized reproduction and its claims."""
    from orchestrator import runner

    args.config = str(runner.reproduction_config(args.workload))
    return _execute(args, kind="run",
                    after=None if args.overrides else _refresh_readme_figure(args.workload))


def _refresh_readme_figure(name: str):
    """After the unmodified reproduction: its figure into the workload's README folder."""
    from orchestrator import registry, runner

    def refresh(cfg, out) -> None:
        try:
            written = runner.refresh_readme_figure(cfg, registry.get(name), out.run_id)
        except Exception as err:  # a figure never fails a finished reproduction
            log.warning("README figure not refreshed: %s: %s", type(err).__name__, err)
            return
        for path in written:
            console.print(f"README figure: {path}")
    return refresh


def _best_trials(rows: list[dict], cfg, top: int = 10) -> list[dict]:
    """The sweep's best trials, with only the swept values and the metric (all is in MLflow)."""
    from orchestrator.sweepspec import parse_params
    from orchestrator.tuning import ranked

    keys = ["trial", *(d.path for d in parse_params(cfg)), cfg.sweep.metric]
    return [{k: r.get(k) for k in keys} for r in ranked(rows, cfg.sweep.metric, cfg.sweep.mode)[:top]]


def _seed_means(rows: list[dict]) -> list[dict]:
    """Rows of several seeds as one row per method (the rows' text columns): the mean of each
    number over seeds. Rows of one seed come back unchanged."""
    seeds = {r.get("seed") for r in rows}
    if len(seeds) < 2:
        return rows
    text = list(dict.fromkeys(k for r in rows for k, v in r.items() if isinstance(v, str)))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in text), []).append(r)
    out = []
    for key, members in groups.items():
        row = dict(zip(text, key))
        for k in dict.fromkeys(k for r in members for k in r):
            values = [r[k] for r in members if isinstance(r.get(k), (int, float))
                      and not isinstance(r.get(k), bool)]
            if k not in row and k not in ("seed", "workload_seed") and values:
                row[k] = sum(values) / len(values)
        out.append({**row, "seeds": len(members)})
    return out


def _print_summary(rows: list[dict], cfg, out) -> None:
    from orchestrator.tracking import runs_url, ui_command

    means = _seed_means(rows)
    if means is not rows:
        console.print(f"mean over {len({r.get('seed') for r in rows})} seeds (each seed: "
                      "results.csv; 95% intervals: seeds_summary.csv in the parent run)")
    _print_table(means[:50])
    console.print(f"MLflow run {out.run_id} in experiment "
                  f"'{cfg.mlflow.experiment or cfg.workload}'. Open the UI with:")
    console.print(f"  {ui_command(cfg.mlflow.tracking_uri)}", highlight=False, soft_wrap=True)
    if out.experiment_id:
        console.print(f"then this run: {runs_url(out.experiment_id, out.run_id)}\n"
                      f"     its experiment's runs: {runs_url(out.experiment_id)}",
                      highlight=False, soft_wrap=True)


TEXT_MIN = 8  # characters a text column keeps in a narrow terminal (its cells fold)


def _print_table(rows: list[dict], wrap: bool = False) -> None:
    """Numbers are never cropped: text cells wrap, and a table too wide for the terminal even so
    is printed long, one (field, value) table per row. With `wrap`, long text cells wrap too, so
    a narrow terminal shows every column (the claims' verdict)."""
    from rich.table import Table

    if not console.is_terminal:
        console.width = 400  # in logs and pipes: never crop cells
    columns = list(rows_to_columns(rows))
    if not wrap and _least_width(rows, columns) > console.width:
        for row in rows:
            long = Table("field", "value", title=_fmt(row.get(columns[0])), title_justify="left")
            for c in columns[1:]:
                long.add_row(c, _fmt(row.get(c)))
            console.print(long)
        return
    table = Table()
    for name in columns:
        numeric = all(isinstance(r.get(name), (int, float, type(None))) for r in rows)
        longest = max((len(_fmt(r.get(name))) for r in rows), default=1)
        # rich would squeeze a text column to nothing to fit the numbers: fold it at TEXT_MIN
        table.add_column(name, overflow="fold", no_wrap=numeric and not wrap,
                         min_width=longest if numeric else min(TEXT_MIN, longest))
    for row in rows:
        table.add_row(*[_fmt(row.get(c)) for c in columns])
    console.print(table)


def _least_width(rows: list[dict], columns: list[str], text_min: int = TEXT_MIN) -> int:
    """The narrowest the table can be with every number whole: text folds to `text_min`
    (TEXT_MIN when printing)."""
    width = 1
    for c in columns:
        cells = [_fmt(r.get(c)) for r in rows]
        numeric = all(isinstance(r.get(c), (int, float, type(None))) for r in rows)
        width += 3 + (max(map(len, cells), default=1) if numeric else
                      min(text_min, max(map(len, cells), default=1)))
    return width


def _transposed(rows: list[dict]) -> list[dict]:
    """One row per metric and one column per run: wide metric sets stay readable in a terminal."""
    keys = [k for k in rows_to_columns(rows) if k != "run"]
    return [{"metric": k, **{str(r["run"]): r.get(k) for r in rows}} for k in keys]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def cmd_submit(args: argparse.Namespace) -> int:
    """Exit 0 when the job succeeded (or, with --no-wait/--dry-run, was submitted/printed)."""
    from orchestrator import submit

    if args.resume and args.sweep:
        raise BadInput("submit: --resume continues a run; a sweep cannot be resumed")
    submit.check_address(args.address)  # its form: before anything is read
    job = submit.build(args.config, args.overrides, "sweep" if args.sweep else "run",
                       args.env, args.exclude, resume=args.resume,
                       probe_address=not args.dry_run, address=args.address)
    console.print(f"from {submit.REPO_ROOT}:\n  {submit.ray_command(job, args.address)}",
                  highlight=False, markup=False, soft_wrap=True)
    if args.dry_run:
        console.print(f"upload: {submit.package_size(job) / 2**20:.1f} MiB "
                      f"(Ray's limit {submit.RAY_UPLOAD_LIMIT / 2**20:.0f} MiB)")
        return 0
    jobs, job_id = submit.submit(job, args.address)
    console.print(f"submitted {job_id}; follow it with `ray job logs -f {job_id}`",
                  highlight=False, markup=False)
    if args.no_wait:
        return 0
    status = submit.follow(jobs, job_id)
    console.print(f"job {job_id}: {status}", highlight=False, markup=False)
    return 0 if status == "SUCCEEDED" else 1


def cmd_list(args: argparse.Namespace) -> int:
    from orchestrator import registry

    console.print("[bold]workloads[/bold]")
    for name in registry.names():
        console.print(f"  {name:12s} {registry.get(name).description}")
    console.print("[bold]experiments[/bold]")
    for folder, paths in registry.shipped_experiments().items():
        for path in paths:
            console.print(f"  [bold]{path.relative_to(registry.REPO_ROOT)}[/bold]")
            console.print(f"      {registry.experiment_summary(path)}", highlight=False,
                          markup=False)
            runtime = registry.experiment_runtime(path)
            console.print(f"      runtime: {runtime or 'not stated'}", highlight=False,
                          markup=False, style="dim")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from orchestrator import registry
    from orchestrator.config import experiment_schema, schema_keys
    from orchestrator.tracking import rows_to_csv

    workload = registry.get(args.workload)
    rows = schema_keys(experiment_schema(workload.name, workload.config_cls))
    if args.format == "table":
        _print_table([{**r, "default": "null" if r["default"] is None else _fmt(r["default"])}
                      for r in rows], wrap=True)
    elif args.format == "csv":
        print(rows_to_csv(rows), end="")
    elif args.format == "json":
        print(_json(rows))
    else:
        print(_markdown(rows))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from orchestrator.tracking import pick_parent_children, rows_to_csv, tracking_uri

    uri = args.tracking_uri or tracking_uri("sqlite:///mlflow.db")
    source = "--tracking-uri" if args.tracking_uri else \
        "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the default store"
    out = _check_out(Path(args.out or f"compare_{args.experiment}.csv"))
    tags = dict(_tag_filter(t) for t in args.tag)
    pick = pick_parent_children(uri, args.experiment, source, run_id=args.run_id,
                                status=args.status, tags=tags)
    parent, rows = pick.parent, pick.rows
    say = console.print if args.format == "table" else \
        (lambda text: print(text, file=sys.stderr))  # stdout: only the data, for scripts
    if pick.skipped:
        say(f"skipped {pick.skipped} newer parent run(s) not {args.status} (the latest: "
            f"{pick.skipped_latest}); --status any or --run-id picks one")
    say(f"{args.experiment}: parent run {parent['name']} ({parent['run_id']}, "
        f"{parent['status']}), {len(rows)} child runs")
    if args.format == "table":
        _print_table(_transposed(rows) if len(rows[0] if rows else ()) > 10 else rows)
    elif args.format == "csv":
        print(rows_to_csv(rows), end="")
    elif args.format == "json":
        print(_json({"parent": parent, "children": rows}))
    else:
        print(_markdown(rows))
    out.write_text(rows_to_csv(rows))
    say(f"wrote {out}")
    return 0


def _tag_filter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise BadInput(f"--tag {text!r}: expected KEY=VALUE, e.g. --tag orchestrator.kind=run")
    return key, value


def _markdown(rows: list[dict]) -> str:
    columns = rows_to_columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _check_out(out: Path, flag: str = "--out") -> Path:
    """Where an output goes must take a file, checked before anything runs or is read."""
    if out.is_dir():
        raise BadInput(f"{flag} {out}: is a folder; give a file path, e.g. {out / 'out.json'}")
    if not out.parent.is_dir():
        raise BadInput(f"{flag} {out}: folder {out.parent} does not exist; create it first")
    return out
