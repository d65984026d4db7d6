"""Shared fixtures: the repo root, a scratch working directory, one local Ray per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "aeria" / "quickstart.yaml"


def store() -> str:
    """The absolute SQLite URI of ./mlflow.db (MLflow caches stores by URI string)."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run in an empty directory so mlflow.db and .orchestrator/ land there, not in the repo."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def local_ray():
    """One 2-CPU local Ray for every end-to-end test (the CLI reuses an initialised Ray)."""
    import ray

    from orchestrator.runtime import QUIET_ENV

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()
