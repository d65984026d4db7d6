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
import shutil
from pathlib import Path
from typing import Any

from orchestrator.config import to_yaml

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_run_id"


def run_state_dir(cfg: Any, config_path: str, resume: bool) -> Path:
    from orchestrator.tracking import experiment_name

    digest = hashlib.sha1(to_yaml(cfg).encode()).hexdigest()[:12]
    path = Path(cfg.state_dir) / "state" / experiment_name(cfg, config_path) / digest
    if not resume and path.exists():
        log.info("starting over: clearing the previous run's state at %s", path)
        shutil.rmtree(path)
    elif resume and not path.exists():
        log.warning("nothing to resume for this config at %s: starting from scratch", path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def last_run_id(state_dir: Path) -> str | None:
    path = state_dir / RUN_ID_FILE
    return path.read_text().strip() if path.is_file() else None


def remember_run_id(state_dir: Path, run_id: str) -> None:
    (state_dir / RUN_ID_FILE).write_text(run_id)
