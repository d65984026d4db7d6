"""Load: a sweep of 200 Tune trials against one MLflow store loses no run and no metric (issue 7).

The aeria sweep with one configuration per trial (`sweep.batch_size=1`: 200 real Ray Tune trials,
each a child run written by the driver) on tiny markets, against (a) a SQLite file and (b) a real
`mlflow server` on 127.0.0.1. Every trial must be a FINISHED child run carrying every metric and
the swept params, with the values Tune reported (the parent's configurations.csv, 200 rows).
"""
from __future__ import annotations

import csv
import logging
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator.cli import main
from orchestrator.tracking import PARENT_TAG, ROLE_TAG
from tests.conftest import QUICKSTART, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]
log = logging.getLogger(__name__)
TRIALS = 200
SWEEP = str(Path(QUICKSTART).with_name("sweep.yaml"))
SWEEP_200 = ["sweep.batch_size=1", "sweep.num_samples=50",  # 4 grid points x 50 samples
             "sweep.params.aeria.consensus_base={grid: [1.5, 2.0, 2.5, 3.0]}",
             "sweep.params.aeria.num_users={randint: [40, 80]}", "aeria.num_users=40"]
METRIC = "revenue_share_aeria"


def sweep_200(uri: str, experiment: str) -> float:
    started = time.perf_counter()
    assert main(["sweep", SWEEP, *SWEEP_200, f"mlflow.tracking_uri={uri}",
                 f"mlflow.experiment={experiment}"]) == 0
    return time.perf_counter() - started


def assert_every_trial_is_a_finished_child_with_its_metrics(uri: str, experiment: str) -> None:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([exp.experiment_id], f"tags.`{ROLE_TAG}` = 'parent'")
    assert parent.info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` = "
                                  f"'{parent.info.run_id}'", max_results=10_000)
    assert len(children) == TRIALS
    assert len({c.info.run_name for c in children}) == TRIALS, "one child per trial, no duplicate"
    assert all(c.info.status == "FINISHED" for c in children)
    keys = set(children[0].data.metrics)
    assert METRIC in keys and "revenue_aeria" in keys
    assert all(set(c.data.metrics) == keys for c in children), "no child misses a metric"
    assert all({"aeria.consensus_base", "aeria.reserve_price", "aeria.num_users"}
               <= set(c.data.params) for c in children)
    path = client.download_artifacts(parent.info.run_id, "configurations.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == TRIALS
    reported = {r["trial"]: float(r[METRIC]) for r in rows}
    assert reported == {c.info.run_name: c.data.metrics[METRIC] for c in children}, \
        "each child holds the value its trial reported"
    assert parent.data.metrics[f"best_{METRIC}"] == max(reported.values())


def test_a_200_trial_sweep_on_sqlite_loses_no_run_and_no_metric(workdir):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    seconds = sweep_200(uri, "load-sqlite")
    log.warning("200-trial sweep on SQLite: %.1f s", seconds)
    assert_every_trial_is_a_finished_child_with_its_metrics(uri, "load-sqlite")


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts), stopped after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "server.log", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
             "--artifacts-destination", str(tmp_path / "server-artifacts")],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not come up in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        stop_process(proc)


def test_a_200_trial_sweep_on_an_mlflow_server_loses_no_run_and_no_metric(workdir, mlflow_server):
    seconds = sweep_200(mlflow_server, "load-server")
    log.warning("200-trial sweep on an mlflow server: %.1f s", seconds)
    assert_every_trial_is_a_finished_child_with_its_metrics(mlflow_server, "load-server")
