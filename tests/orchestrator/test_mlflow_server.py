"""MLflow server mode (docs/cluster-jobs.md): a real `mlflow server` on 127.0.0.1 that runs log to.

The server keeps runs in SQLite and serves artifacts itself (`--artifacts-destination`), so a
client needs only its URL. These helpers also serve tests/orchestrator/test_submit.py, where a
Ray job logs to the same kind of server.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest
from mlflow import MlflowClient

from orchestrator.cli import main
from orchestrator.tracking import PARENT_TAG, ROLE_TAG
from tests.conftest import QUICKSTART

pytestmark = pytest.mark.slow
SMALL = ["aeria.user_counts=[100,300]", "aeria.num_seeds=2", "aeria.property_users=60",
         "aeria.property_probes=2", "mlflow.experiment=served"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, what: str,
               timeout_s: float = 120) -> None:
    """Poll `ready` until it holds; fail with the log if `proc` dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{what} not ready after {timeout_s:.0f} s"
        time.sleep(0.5)


def stop_process_group(proc: subprocess.Popen, grace_s: float = 10,
                       signal_group: bool = True) -> None:
    """SIGTERM (the group we started, or only its leader), then SIGKILL the whole group.

    Each server runs in a session of its own (`start_new_session`), so this ends exactly the
    processes it started and nothing else on the machine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM) if signal_group else proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def listening_hosts(proc: subprocess.Popen, port: int) -> set[str]:
    """The addresses `proc` or its children listen on at `port`."""
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    return {c.laddr.ip for p in tree for c in p.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[tuple[str, subprocess.Popen, int]]:
    """The documented `mlflow server` (SQLite store, served artifacts) on a free loopback port;
    yields (url, process, port) once /health answers 200, and stops it whatever happens."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # server-side MLflow jobs (GenAI evaluation) are not used here: skip their worker processes
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = ["mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts")]
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), proc, "mlflow server")
        yield url, proc, port
    finally:
        stop_process_group(proc)


def test_a_run_logs_params_metrics_and_artifacts_to_a_loopback_mlflow_server(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with mlflow_server(tmp_path / "server") as (url, proc, port):
        assert listening_hosts(proc, port) == {"127.0.0.1"}, "bound to loopback only"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        assert main(["run", str(QUICKSTART), *SMALL]) == 0
        client = MlflowClient(url)
        exp = client.get_experiment_by_name("served")
        (parent,) = client.search_runs([exp.experiment_id], f"tags.`{ROLE_TAG}` = 'parent'")
        children = client.search_runs([exp.experiment_id],
                                      f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
        assert parent.info.status == "FINISHED" and parent.data.params["seed"] == "0"
        assert sorted(c.info.run_name for c in children) == \
            sorted(eval(parent.data.params["aeria.mechanisms"]))
        assert all("revenue_mean" in c.data.metrics for c in children)
        results = client.download_artifacts(parent.info.run_id, "results.csv", str(tmp_path))
        assert "revenue" in Path(results).read_text().splitlines()[0]
    stored = list((tmp_path / "server" / "artifacts").rglob("results.csv"))
    assert stored, "the server, not the client, wrote the artifact under its destination"
    assert not (tmp_path / "mlflow.db").exists(), "nothing fell back to a local store"
    assert proc.poll() is not None, "the server is stopped"
