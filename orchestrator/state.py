"""Where a run keeps what must outlive its process: checkpoints and its MLflow run id.

`<state_dir>/state/<experiment>/<hash of the resolved config>/`, with `state_dir` the config key
(default `.orchestrator` in the working directory; a shared absolute path on a cluster, where each
job has its own working directory). A fresh `run` of a config starts that directory over;
`run --resume` continues from it, reopening the same MLflow run, so a killed run and its
resumption read as one run in the UI.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from orchestrator.config import ConfigError, to_yaml

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_run_id"


def check_state_dir(cfg: Any) -> None:
    """`state_dir` must be a folder this process can create or write: checked before anything
    starts, since the first write (`run_state_dir`) comes after the checks and the Tune results
    go there too. Looks at the nearest part of the path that exists: a file anywhere on it (not
    only at its end) fails the same way, with a NotADirectoryError, much later."""
    path = Path(os.path.expanduser(cfg.state_dir)).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "" if existing == path else f" (on the way to {path})"
        raise ConfigError("state_dir", f"{existing} is a file, not a folder{where}",
                          "point state_dir at a folder, e.g. state_dir=.orchestrator")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError("state_dir", f"{existing} is not writable by this user",
                          "point state_dir at a folder you can write, e.g. state_dir=.orchestrator")


def run_state_dir(cfg: Any, config_path: str, resume: bool,
                  start_if_missing: bool = False) -> Path:
    """This config's state folder: cleared for a fresh run, kept for `resume`; resuming what
    was never started is bad input (a typo in an override would silently start over) unless
    `start_if_missing`."""
    from orchestrator.config import BadInput
    from orchestrator.tracking import experiment_name

    digest = hashlib.sha1(to_yaml(cfg).encode()).hexdigest()[:12]
    path = Path(cfg.state_dir) / "state" / experiment_name(cfg, config_path) / digest
    if not resume and path.exists():
        log.info("starting over: clearing the previous run's state at %s", path)
        shutil.rmtree(path)
    elif resume and not path.exists():
        if not start_if_missing:
            raise BadInput(f"--resume: nothing to resume for this config and these overrides "
                           f"(no state at {path}); run without --resume to start, or pass "
                           f"--resume-or-start")
        log.info("nothing to resume for this config at %s: starting from scratch", path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def last_run_id(state_dir: Path) -> str | None:
    path = state_dir / RUN_ID_FILE
    return path.read_text().strip() if path.is_file() else None


def remember_run_id(state_dir: Path, run_id: str) -> None:
    (state_dir / RUN_ID_FILE).write_text(run_id)


def digest(*parts: Any) -> str:
    """A short stable name for a tuple of configs (dataclass reprs are deterministic)."""
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def atomic_save(obj: Any, path: Path) -> None:
    """`torch.save` to `path` through a temporary file and a rename, so a kill mid-write never
    leaves a torn file; the temporary name is per process (concurrent sweep trials)."""
    import torch

    tmp = Path(path).with_suffix(f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(text: str, path: Path) -> None:
    tmp = Path(path).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cache_path(directory: Path, name: str, inputs: tuple) -> Path:
    return Path(directory) / f"{name}-{digest(*inputs)}.pt"


def cached(directory: Path, name: str, inputs: tuple, compute: Callable[[], Any]) -> Any:
    """`compute()`'s result, kept in `<directory>/<name>-<digest of inputs>.pt`.

    `inputs` are the config dataclasses (and plain values) the result depends on: their reprs are
    hashed, so a changed knob anywhere inside them is a different file, never a stale hit. Loaded
    with weights_only (tensors, arrays of numbers, plain containers)."""
    import torch

    path = cache_path(directory, name, inputs)
    if path.exists():
        log.info("%s loaded from %s", name, path)
        return torch.load(path, weights_only=True)
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(out, path)
    return out
