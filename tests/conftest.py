"""Shared fixtures: the repo root, a scratch working directory, one local Ray per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "aeria" / "quickstart.yaml"


def stop_process(proc) -> None:
    """Terminate a server the test started; kill it if it does not exit within 20 s."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def runs_by_parent(experiment: str, kind: str = "run"):
    """(client, [(parent run, its child runs)]) of an experiment in ./mlflow.db, oldest first;
    `kind` "sweep" gives the sweeps' parents and their trials."""
    from mlflow import MlflowClient

    from orchestrator.tracking import KIND_TAG, PARENT_TAG

    client = MlflowClient(store())
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if r.data.tags.get(KIND_TAG) == kind]
    return client, [(p, [r for r in runs if r.data.tags.get(PARENT_TAG) == p.info.run_id])
                    for p in parents]


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

    from orchestrator.config import RayConfig
    from orchestrator.runtime import QUIET_ENV, start_local_ray

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    start_local_ray(RayConfig(num_cpus=2))
    yield
    ray.shutdown()


def refuse_starts(monkeypatch, record: list[str], *, mlflow_runs: bool = True) -> None:
    """Make starting Ray (and, with `mlflow_runs`, opening an MLflow parent run) record its name
    in `record` and raise: bad-input tests then fail in a second instead of waiting on Ray."""
    import ray

    from orchestrator import runtime, tracking

    def refuse(name):
        def start(*args, **kwargs):
            record.append(name)
            raise RuntimeError(f"{name} must not start on bad input")
        return start

    monkeypatch.setattr(ray, "init", refuse("ray.init"))
    monkeypatch.setattr(runtime, "ray_session", refuse("ray_session"))
    if mlflow_runs:
        monkeypatch.setattr(tracking, "parent_run", refuse("parent_run"))
