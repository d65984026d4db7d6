"""Every MLflow call of the project lives here.

One parent run per `run`/`sweep` invocation; one child run per compared method or Tune trial,
linked by the `mlflow.parentRunId` tag so the UI nests them. All writes happen in the driver
process through an explicit `MlflowClient`, which keeps a SQLite store free of concurrent writers.
A parent run records the process that holds it open; one left RUNNING by a process that died
without closing it (SIGKILL, out of memory) is marked FAILED when the next run of its experiment
opens (`close_orphans`), and `run --resume` reopens it and ends it as usual.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import io
import json
import logging
import math
import numbers
import os
import re
import shlex
import socket
import subprocess
import tempfile
import time
import traceback
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from orchestrator.config import BadInput, ConfigError, did_you_mean, flatten, to_dict, to_yaml
from orchestrator.registry import REPO_ROOT

log = logging.getLogger(__name__)
PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "orchestrator.kind"          # run | sweep | child | trial
ROLE_TAG = "orchestrator.role"          # parent | child
PROCESS_TAG = "orchestrator.process"    # host/pid/start of the process that holds a parent open
PACKAGES = ("ray", "torch", "mlflow", "omegaconf", "numpy", "transformers", "deepspeed")
SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|credential)", re.I)
MAX_PARAM_CHARS = 6000


def tracking_uri(cfg_uri: str) -> str:
    """MLFLOW_TRACKING_URI, else the config's; a relative SQLite path is made absolute (MLflow
    caches stores by URI, so a relative one would follow the first working directory)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg_uri
    db = sqlite_file(uri)
    return f"sqlite:///{db}" if db is not None else uri


def sqlite_file(uri: str) -> Path | None:
    """The absolute database path of a `sqlite:///` store, else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]).expanduser().resolve() if uri.startswith(prefix) else None


def check_store(uri: str, probe: bool = False) -> None:
    """Fail before anything starts on a store MLflow cannot open or create: an unknown scheme, a
    SQLite file whose folder is missing (or that is a folder), a file store MLflow refuses, an
    http(s) server address that is malformed (or, with `probe`, where nothing answers)."""
    problem = store_problem(uri, probe, reading=False)
    if problem:
        via = " (from MLFLOW_TRACKING_URI)" if os.environ.get("MLFLOW_TRACKING_URI") else ""
        raise ConfigError("mlflow.tracking_uri", problem[0] + via, problem[1])


def store_problem(uri: str, probe: bool, reading: bool) -> tuple[str, str] | None:
    """(what is wrong, the fix) with the store `uri`, or None. `reading`: the store must already
    exist (`compare` reads; it must never create an empty store, or a file store's folders)."""
    scheme = _store_scheme(uri)
    if scheme is None:
        return (f"'{uri}' is not a store MLflow knows",
                "use sqlite:///path/to/mlflow.db, http(s)://host:port or postgresql://...")
    if scheme == "sqlite":
        return _sqlite_problem(sqlite_file(uri), reading)
    if scheme in ("", "file"):
        return _file_store_problem(uri, reading)
    if scheme in ("http", "https"):
        return _server_problem(uri, probe)
    return None


# The stores MLflow 3 opens without plugins (mlflow.tracking._tracking_service.utils
# `_register_tracking_stores`; mlflow.store.db.db_types.DATABASE_ENGINES), known here so that
# `validate` reads a URI without importing MLflow (a second). The test
# tests/orchestrator/test_validate_is_light.py checks these against MLflow's own registry.
BUILTIN_STORE_SCHEMES = ("", "file", "databricks", "databricks-uc", "uc", "http", "https")
DATABASE_ENGINES = ("postgresql", "mysql", "sqlite", "mssql")  # SQLAlchemy stores
STORE_PLUGIN_GROUP = "mlflow.tracking_store"                    # entry points of plugin stores


def _store_scheme(uri: str) -> str | None:
    """The scheme MLflow picks a store by ("" for a path), or None when it has no store for it.

    Read as MLflow reads it (`TrackingStoreRegistry.get_store_builder`, `get_uri_scheme`), from
    the built-in schemes above and the names of plugin stores' entry points, without importing
    MLflow: a database scheme needs SQLAlchemy, may name one driver (`postgresql+psycopg2`),
    and must be one of MLflow's engines."""
    from urllib.parse import urlparse

    if uri in ("databricks", "databricks-uc", "uc"):
        return uri
    scheme = urlparse(uri).scheme
    if any(scheme.lower().startswith(db) for db in DATABASE_ENGINES):
        engine, _, driver = scheme.partition("+")
        if "+" in driver or engine not in DATABASE_ENGINES:
            return None  # MLflow: "Invalid database URI" / "Invalid database engine"
        return engine if importlib.util.find_spec("sqlalchemy") else None
    if len(scheme) == 1 and scheme.isalpha():
        scheme = ""  # a Windows drive letter: a path
    if scheme in BUILTIN_STORE_SCHEMES:
        return scheme
    return scheme if scheme in {ep.name for ep in entry_points(group=STORE_PLUGIN_GROUP)} \
        else None


SQLITE_FIX = "give the path of an existing MLflow SQLite store, e.g. sqlite:///mlflow.db"


def _sqlite_problem(db: Path | None, reading: bool) -> tuple[str, str] | None:
    if db is None:
        return "a SQLite store is written sqlite:///path/to/mlflow.db", SQLITE_FIX
    if db.is_dir():
        return f"{db} is a folder, not a SQLite file", SQLITE_FIX
    if reading and not db.is_file():
        return (f"no MLflow store at {db}", "run `compare` in the directory where you ran "
                "`run`, or pass --tracking-uri")
    if reading:
        return _not_mlflow_sqlite(db)
    if not db.parent.is_dir():
        return f"folder {db.parent} does not exist", "create it or use sqlite:///mlflow.db"
    return None


def _not_mlflow_sqlite(db: Path) -> tuple[str, str] | None:
    """Opened read-only: MLflow itself would add its tables to any SQLite file it is given."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
            found = con.execute("select 1 from sqlite_master where type = 'table' and "
                                "name = 'experiments'").fetchone()
    except sqlite3.Error as err:
        return f"{db} is not a SQLite database ({err})", SQLITE_FIX
    return None if found else (f"{db} is a SQLite file without MLflow's tables", SQLITE_FIX)


def _file_store_problem(uri: str, reading: bool) -> tuple[str, str] | None:
    """MLflow 3's file store opens only with MLFLOW_ALLOW_FILE_STORE=true, and creates its
    folders when it opens: reading one that is not there would leave an empty store behind."""
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
    if path.is_file():
        return (f"{path} is a file, not a store", f"a SQLite store is written sqlite:///{path}")
    if reading and not any(path.glob("*/meta.yaml")):
        return f"no MLflow store at {path}", SQLITE_FIX
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
        return (f"'{uri}' names a folder (MLflow's file store), which MLflow 3 no longer opens",
                "use sqlite:///mlflow.db (`mlflow migrate-filestore` converts a file store), "
                "or set MLFLOW_ALLOW_FILE_STORE=true")
    return None


def _server_problem(uri: str, probe: bool) -> tuple[str, str] | None:
    from urllib.parse import urlsplit

    from orchestrator.preflight import split_host_port, unreachable

    netloc = urlsplit(uri).netloc.rpartition("@")[2]
    fix = "start the MLflow server (docs/cluster-jobs.md) or give its URL, e.g. " \
          "http://127.0.0.1:5000"
    try:
        host, port = split_host_port(netloc, port_required=False)
    except ValueError as err:
        return f"'{uri}' is not a server URL: {err}", fix
    why = unreachable(host, port or (443 if uri.startswith("https") else 80)) if probe else None
    return (f"no MLflow server at {uri}: {why}", fix) if why else None


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


class RunTracker:
    """One MLflow run: params, metrics, figures, tables; `child(name)` nests a run under it."""

    def __init__(self, client: Any, run_id: str, experiment_id: str, resuming: bool = False):
        self.client, self.run_id, self.experiment_id = client, run_id, experiment_id
        self.resuming = resuming  # reopen children of the same name instead of adding new ones

    # ---- logging
    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], _param_value(k, v)) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict, step: Optional[int] = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, numbers.Real)]  # numpy scalars and bools too
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_figure(self, fig: Any, name: str) -> None:
        """`name` as `<stem>.png` at 200 dpi for the UI, and the same figure as vector SVG beside
        it (`<stem>.svg`) for a paper."""
        import matplotlib.pyplot as plt

        stem = str(Path(name).with_suffix(""))
        with tempfile.TemporaryDirectory() as tmp:
            for path, kw in ((Path(tmp) / Path(f"{stem}.png").name, {"dpi": 200}),
                             (Path(tmp) / Path(f"{stem}.svg").name, {})):
                fig.savefig(path, bbox_inches="tight", **kw)
                folder = str(Path(stem).parent) if Path(stem).parent != Path(".") else None
                self.client.log_artifact(self.run_id, str(path), folder)
        plt.close(fig)

    def log_table(self, rows: Sequence[dict], name: str) -> None:
        self.client.log_text(self.run_id, rows_to_csv(rows), name)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    # ---- nesting
    def start_child(self, name: str, kind: str = "child") -> "RunTracker":
        if self.resuming:
            for old in self.client.search_runs(
                    [self.experiment_id], f"tags.`{PARENT_TAG}` = '{self.run_id}' and "
                    f"attributes.run_name = '{name}'"):
                self.client.update_run(old.info.run_id, status="RUNNING")
                return RunTracker(self.client, old.info.run_id, self.experiment_id, True)
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={PARENT_TAG: self.run_id, KIND_TAG: kind,
                                           ROLE_TAG: "child"})
        return RunTracker(self.client, run.info.run_id, self.experiment_id)

    @contextlib.contextmanager
    def child(self, name: str, kind: str = "child") -> Iterator["RunTracker"]:
        """A nested run that ends FINISHED, or FAILED with its traceback attached."""
        run = self.start_child(name, kind)
        with run.finishing():
            yield run

    @contextlib.contextmanager
    def finishing(self) -> Iterator[None]:
        try:
            yield
        except KeyboardInterrupt:
            self.end("KILLED", traceback.format_exc())
            raise
        except BaseException:
            self.end("FAILED", traceback.format_exc())
            raise
        self.end("FINISHED")

    def end(self, status: str, error: str | None = None) -> None:
        if error:
            self.log_text(error, "error/traceback.txt")
        self.client.set_terminated(self.run_id, status)


def mlflow_key_part(value: Any) -> str:
    """`value` as part of an MLflow key (metric, param, tag), which allows only letters, digits,
    `_ - . /` and spaces: `=` becomes `-`, anything else `_` ('case-medical_num_devices-32')."""
    return re.sub(r"[^\w\-. ]", lambda m: "-" if m.group() == "=" else "_", str(value))


class Scope:
    """The parent run as one part of a larger run sees it (seed 3 of `seeds: N`, recheck 1 of a
    sweep): child runs are named '<name> <key> <value>' and carry `key` as a param, and what
    the part logs on the parent goes under `<key>_<value>/` (artifacts, params, tags) or
    `<key><value>/` (metrics), so the parts never overwrite each other."""

    def __init__(self, parent: RunTracker, key: str, value: Any):
        self.parent, self.key, self.value = parent, key, value
        part = mlflow_key_part(value)  # a grid label 'case=medical,num_devices=32' has = and ,
        self.prefix = f"{key}_{part}"
        self.metric_prefix = f"{key}{part}" if isinstance(value, int) else self.prefix

    @contextlib.contextmanager
    def child(self, name: str, kind: str = "child") -> Iterator[RunTracker]:
        """A child named and parametrised by its part, so the UI can group and filter by it."""
        with self.parent.child(f"{name} {self.key} {self.value}", kind) as child:
            child.log_params({self.key: self.value})
            yield child

    def log_params(self, params: dict) -> None:
        self.parent.log_params({self.prefix: params})

    def log_metrics(self, metrics: dict, step: Optional[int] = None) -> None:
        self.parent.log_metrics({f"{self.metric_prefix}/{k}": v for k, v in metrics.items()},
                                step)

    def set_tags(self, tags: dict) -> None:
        self.parent.set_tags({f"{self.prefix}/{k}": v for k, v in tags.items()})

    def log_figure(self, fig: Any, name: str) -> None:
        self.parent.log_figure(fig, f"{self.prefix}/{name}")

    def log_table(self, rows: Sequence[dict], name: str) -> None:
        self.parent.log_table(rows, f"{self.prefix}/{name}")

    def log_text(self, text: str, name: str) -> None:
        self.parent.log_text(text, f"{self.prefix}/{name}")


class SeedScope(Scope):
    """One seed of a multi-seed run (`seeds: N`): children '<name> seed <s>'."""

    def __init__(self, parent: RunTracker, seed: int):
        super().__init__(parent, "seed", seed)
        self.seed = seed


@contextlib.contextmanager
def parent_run(cfg: Any, config_path: str, kind: str, resume_run_id: str | None = None,
               overrides: Sequence[str] = ()) -> Iterator[RunTracker]:
    """Open the invocation's parent run (or reopen `resume_run_id`) and log what makes it
    reproducible: config as params and YAML, git commit, package versions, and the command
    line's `overrides` (tag `orchestrator.overrides`). Unless `mlflow.run_name` is set, the run
    is named by `default_run_name`, so that runs of one experiment differ in the MLflow UI."""
    uri = tracking_uri(cfg.mlflow.tracking_uri)
    client = _client(uri)
    experiment_id = _experiment_id(client, experiment_name(cfg, config_path), uri,
                                   cfg.mlflow.artifact_root)
    close_orphans(client, experiment_id, keep=resume_run_id)
    if resume_run_id and _exists(client, resume_run_id):
        client.update_run(resume_run_id, status="RUNNING")
        tracker = RunTracker(client, resume_run_id, experiment_id, resuming=True)
        with tracker.finishing():
            tracker.set_tags({"orchestrator.resumed": "true", PROCESS_TAG: process_identity()})
            yield tracker
        return
    run_name = cfg.mlflow.run_name or default_run_name(config_path, kind, overrides)
    run = client.create_run(experiment_id, run_name=run_name, tags={
        KIND_TAG: kind, ROLE_TAG: "parent", "orchestrator.workload": cfg.workload,
        "orchestrator.config_path": str(config_path), "mlflow.source.git.commit": git_commit(),
        PROCESS_TAG: process_identity(), OVERRIDES_TAG: shlex.join(redacted(overrides)),
        "mlflow.note.content": run_description(config_path, kind, overrides)})
    tracker = RunTracker(client, run.info.run_id, experiment_id)
    with tracker.finishing():
        tracker.log_params(to_dict(cfg))
        tracker.log_text(to_yaml(cfg), "config.yaml")
        tracker.log_text(json.dumps(package_versions(), indent=2), "versions.json")
        tracker.set_tags({f"version.{k}": v for k, v in package_versions().items()})
        yield tracker


def run_description(config_path: str, kind: str, overrides: Sequence[str] = ()) -> str:
    """The parent run's description in the MLflow UI: the command that made it."""
    command = shlex.join(["orchestrator", kind, str(config_path), *redacted(overrides)])
    return f"Made by `{command}`"


OVERRIDES_TAG = "orchestrator.overrides"  # the command line's overrides, shell-quoted
RUN_NAME_CHARS = 100                      # what the MLflow UI's run list shows without cropping
_WHERE_NOT_WHAT = ("mlflow.", "state_dir=", "ray.")  # where it ran: left out of the name


def default_run_name(config_path: str, kind: str, overrides: Sequence[str] = (),
                     now: float | None = None) -> str:
    """`quickstart-run 2026-12-05 09:41 seed=3 aeria.user_counts=[500,5000]`: the experiment
    file, the kind, the local start time, then what the command line changed (each override cut
    to 40 characters; where it ran, `mlflow.*`, `ray.*`, `state_dir`, left to the tag), the whole
    cut to RUN_NAME_CHARS."""
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(now))
    changed = [o if len(o) <= 40 else o[:39] + "…" for o in redacted(overrides)
               if not o.startswith(_WHERE_NOT_WHAT)]
    name = " ".join([f"{Path(config_path).stem}-{kind}", stamp, *changed])
    return name if len(name) <= RUN_NAME_CHARS else name[:RUN_NAME_CHARS - 1] + "…"


def redacted(overrides: Sequence[str]) -> list[str]:
    """Overrides with secret-looking keys' values masked, as `log_params` masks params."""
    out = []
    for override in overrides:
        key, sep, value = override.partition("=")
        out.append(f"{key}{sep}***" if sep and SECRET_KEY.search(key.rsplit(".", 1)[-1])
                   else override)
    return out


# --------------------------------------------------------------------------- orphaned runs
def close_orphans(client: Any, experiment_id: str, keep: str | None = None) -> list[str]:
    """Mark FAILED, with a note as `error/traceback.txt`, every RUNNING parent run of the
    experiment whose process died on this host without closing it (SIGKILL, the OOM killer, a
    power cut), and its RUNNING children. Called when the next parent run opens, so a killed run
    is RUNNING only until then. Runs of other hosts, or of live processes, are left alone."""
    orphans = [r for r in client.search_runs(
        [experiment_id], f"attributes.status = 'RUNNING' and tags.`{ROLE_TAG}` = 'parent'",
        max_results=1000) if r.info.run_id != keep
        and not _owner_alive(r.data.tags.get(PROCESS_TAG, ""))]
    for run in orphans:
        note = (f"the process that ran this ({run.data.tags[PROCESS_TAG]}) died without closing "
                "it (SIGKILL? out of memory?); marked FAILED when the next run of this "
                "experiment started\n")
        children = client.search_runs(
            [experiment_id], f"tags.`{PARENT_TAG}` = '{run.info.run_id}' and "
            "attributes.status = 'RUNNING'", max_results=10000)
        for r in [*children, run]:
            RunTracker(client, r.info.run_id, experiment_id).end("FAILED", note)
        log.warning("run %s was left RUNNING by a dead process: marked FAILED", run.info.run_id)
    return [r.info.run_id for r in orphans]


def process_identity(pid: int | None = None) -> str:
    """`host/pid/start` of a process; `start` (boot id and start time, Linux) tells a reused pid
    from the one that opened the run."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}/{pid}/{_start_token(pid)}"


def _start_token(pid: int) -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        state, *fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return "" if state == "Z" else f"{boot}:{fields[18]}"  # field 22: start time; Z: a zombie


def _owner_alive(identity: str) -> bool:
    """False only when we can tell: the run's process ran on this host and is gone."""
    host, _, rest = identity.partition("/")
    pid, _, start = rest.partition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's run, or one opened before runs were tagged
    if start:
        return _start_token(int(pid)) == start
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def experiment_name(cfg: Any, config_path: str) -> str:
    return cfg.mlflow.experiment or f"{cfg.workload}-{Path(config_path).stem}"


def _exists(client: Any, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True


def _experiment_id(client: Any, name: str, uri: str, artifact_root: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    if artifact_root is None and sqlite_file(uri) is not None:
        artifact_root = str(sqlite_file(uri).parent / "mlartifacts")
    location = f"{Path(artifact_root).resolve().as_uri()}/{name}" if artifact_root and \
        "://" not in artifact_root else (f"{artifact_root}/{name}" if artifact_root else None)
    return client.create_experiment(name, artifact_location=location)


UI_PORT = 5000


def ui_command(cfg_uri: str) -> str:
    """The command that opens the MLflow UI on this store: bound to loopback, one worker and no
    job runner (the defaults start 11 processes and 3 GB on a laptop; docs/cluster-jobs.md)."""
    uri = tracking_uri(cfg_uri)
    return (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {uri} "
            f"--host 127.0.0.1 --port {UI_PORT} --workers 1")


def runs_url(experiment_id: str, run_id: str | None = None, port: int = UI_PORT) -> str:
    """The UI page of an experiment's runs (or of one run), in MLflow 3's model-training view:
    without `workflowType` the experiment lands on the GenAI overview and a run opens under
    "Evaluations" (both seen in headless Chromium, MLflow 3.17)."""
    base = f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs"
    return f"{base}{'/' + run_id if run_id else ''}?workflowType=machine_learning"


# --------------------------------------------------------------------------- reading back
@dataclasses.dataclass
class Picked:
    """A parent run (run_id, name, status), its children as rows, and how many newer parents
    the status or tag filter passed over."""

    parent: dict
    rows: list[dict]
    skipped: int = 0
    skipped_latest: str = ""


def pick_parent_children(uri: str, experiment: str, source: str = "--tracking-uri",
                         run_id: str | None = None, status: str = "FINISHED",
                         tags: dict[str, str] | None = None) -> Picked:
    """A parent run of `experiment` (the run `run_id`, else the latest of `status` with `tags`;
    status "any": any) and its children as rows: name, status, metrics.

    Reading never writes: a store that is not there, not MLflow's, or not answering is one
    BadInput naming `source` (the flag or variable the URI came from)."""
    db = sqlite_file(uri)
    uri = f"sqlite:///{db}" if db is not None else uri
    problem = store_problem(uri, probe=True, reading=True)
    if problem:
        raise BadInput(f"{source} {uri}: {problem[0]}; {problem[1]}")
    from mlflow.exceptions import MlflowException

    try:
        return _pick(_client(uri), uri, experiment, run_id, status, tags or {})
    except MlflowException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadInput(f"{source} {uri}: MLflow cannot read it: {first}") from None


def latest_children(uri: str, experiment: str,
                    source: str = "--tracking-uri") -> tuple[dict, list[dict]]:
    """The latest parent run of `experiment`, whatever its status, and its children as rows."""
    picked = pick_parent_children(uri, experiment, source, status="any")
    return picked.parent, picked.rows


def _pick(client: Any, uri: str, experiment: str, run_id: str | None, status: str,
          tags: dict[str, str]) -> Picked:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise BadInput(f"no experiment '{experiment}' in {uri}; "
                       + did_you_mean(experiment, known) + f"known: {', '.join(known) or 'none'}")
    if run_id:
        from mlflow.exceptions import MlflowException

        try:
            parents = [client.get_run(run_id)]
        except MlflowException:
            parents = []
        if not parents or parents[0].info.experiment_id != exp.experiment_id or \
                parents[0].data.tags.get(ROLE_TAG) != "parent":
            raise BadInput(f"--run-id {run_id}: no parent run with that id in '{experiment}'; "
                           f"`compare {experiment} --status any` shows the latest")
        newer = []
    else:
        runs = client.search_runs([exp.experiment_id], f"tags.`{ROLE_TAG}` = 'parent'",
                                  order_by=["attributes.start_time DESC"], max_results=1000)
        # tags compared here, not in MLflow's filter: a value holds quotes and brackets
        runs = [r for r in runs if all(r.data.tags.get(k) == v for k, v in tags.items())]
        if not runs:
            raise BadInput(f"experiment '{experiment}' has no parent run yet"
                           + (f" with tags {tags}" if tags else ""))
        at = next((i for i, r in enumerate(runs) if status == "any" or r.info.status == status),
                  None)
        if at is None:
            raise BadInput(f"experiment '{experiment}' has no {status} parent run (the latest, "
                           f"{runs[0].info.run_name}, is {runs[0].info.status}); "
                           f"--status any shows it")
        parents, newer = [runs[at]], runs[:at]
    parent = parents[0]
    children = client.search_runs([exp.experiment_id],
                                  f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"], max_results=10000)
    rows = [{"run": c.info.run_name, "status": c.info.status, **_round(c.data.metrics)}
            for c in children]
    return Picked({"run_id": parent.info.run_id, "name": parent.info.run_name,
                   "status": parent.info.status}, rows, len(newer),
                  f"{newer[0].info.run_name}, {newer[0].info.status}" if newer else "")


# --------------------------------------------------------------------------- helpers
def download_artifacts(cfg_uri: str, run_id: str, paths: Sequence[str], dest: Path) -> list[Path]:
    """Local copies of a run's artifacts `paths` under `dest` (no progress bar per file)."""
    client = _client(tracking_uri(cfg_uri))
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        return [Path(client.download_artifacts(run_id, path, str(dest))) for path in paths]
    finally:
        if previous is None:
            del os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"]
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


def rows_to_csv(rows: Sequence[dict]) -> str:
    from orchestrator.workload import rows_to_columns

    columns = list(rows_to_columns(rows))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


COMMIT_ENV = "ORCHESTRATOR_GIT_COMMIT"  # set by `orchestrator submit`: jobs upload no .git


def git_commit() -> str:
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def package_versions() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _param_value(key: str, value: Any) -> str:
    if SECRET_KEY.search(key.rsplit(".", 1)[-1]):
        return "***"
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:MAX_PARAM_CHARS]


def _round(metrics: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in sorted(metrics.items())}
