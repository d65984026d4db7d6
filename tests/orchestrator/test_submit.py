"""Ray job submission (docs/cluster-jobs.md) on a real two-node Ray cluster on this machine.

The cluster is a head (2 CPUs, job API on 127.0.0.1) and a worker node (1 CPU), each a
`ray start --block` in a session of its own and with a Ray temp dir of its own: no other Ray on
the machine finds it (no shared address file) and stopping it touches no other Ray. It is not the
in-process `local_ray` of the other tests, and RAY_ADDRESS stays unset for them.
The aeria quickstart goes in through the printed `ray job submit` command and logs to a real
`mlflow server`; the deepfusion quickstart (tiny) through `orchestrator submit` into SQLite.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from mlflow import MlflowClient

from orchestrator import submit
from orchestrator.cli import main
from orchestrator.tracking import PARENT_TAG, ROLE_TAG
from tests.conftest import QUICKSTART, REPO
from tests.orchestrator.test_mlflow_server import (free_port, listening_hosts, mlflow_server,
                                                   stop_process_group, wait_until)
from tests.workloads.deepfusion.test_deepfusion_workload import TINY

DEEPFUSION = str(REPO / "experiments" / "deepfusion" / "quickstart.yaml")
# two of its methods keep the job near a minute on two loaded cores; the workload's own test
# runs all six (tests/workloads/deepfusion/test_deepfusion_workload.py)
SUBSET = {"deepfusion", "fedjets"}
DEEPFUSION_TINY = [*TINY, f"deepfusion.run.methods=[{','.join(sorted(SUBSET))}]"]


def _node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            ["ray", "start", "--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
             "--object-store-memory", str(200 * 2**20),
             "--dashboard-agent-listen-port", str(free_port()), *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _alive_nodes(gcs: str, env: dict) -> int:
    probe = f"import ray; ray.init(address={gcs!r}, logging_level='ERROR'); " \
            "print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                         timeout=90).stdout.strip()
    return int(out) if out.isdigit() else 0


def _job_api_up(url: str) -> bool:
    try:
        submit.client(url).list_jobs()
    except Exception:  # not listening yet
        return False
    return True


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict]:
    """A running head + worker node: {'url': job API, 'env': their env, 'head': its process,
    'dashboard_port'}; stopped, and its temp dir removed, whatever happens."""
    temp = tempfile.mkdtemp(prefix="rayjobs-", dir="/tmp")  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    # token auth, as `ray start --head` picks by default in Ray 2.60; a joining node and the
    # `ray job submit` CLI use it only when told
    env.update(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
    gcs_port, dashboard_port = free_port(), free_port()
    nodes = []
    try:
        head = _node(["--head", "--port", str(gcs_port), "--num-cpus", "2",
                      "--temp-dir", f"{temp}/h", "--include-dashboard", "true",
                      "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port)],
                     env, Path(temp) / "head.log")
        nodes.append(head)
        url, gcs = f"http://127.0.0.1:{dashboard_port}", f"127.0.0.1:{gcs_port}"
        wait_until(lambda: _job_api_up(url), head, "ray head")
        # a temp dir of its own: sharing the head's, its runtime env agent would unpack the job's
        # working_dir again over the one the head's drivers are running in
        nodes.append(_node(["--address", gcs, "--num-cpus", "1", "--temp-dir", f"{temp}/w"], env,
                           Path(temp) / "worker.log"))
        wait_until(lambda: _alive_nodes(gcs, env) == 2, nodes[-1], "ray worker node")
        yield {"url": url, "env": env, "head": head, "dashboard_port": dashboard_port}
    finally:
        for node in reversed(nodes):  # `ray start --block` stops its own processes on SIGTERM
            stop_process_group(node, grace_s=5, signal_group=False)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_both_quickstarts_run_as_ray_jobs_and_leave_their_mlflow_runs(cluster, tmp_path,
                                                                       monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert listening_hosts(cluster["head"], cluster["dashboard_port"]) == {"127.0.0.1"}
    # deepfusion: `orchestrator submit --no-wait` into a SQLite file; it runs while the rest starts
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    args = ["submit", DEEPFUSION, *DEEPFUSION_TINY, "--address", cluster["url"], "--no-wait"]
    assert main(args) == 0
    job_id = re.search(r"submitted (\S+);", capsys.readouterr().out).group(1)
    with mlflow_server(tmp_path / "server") as (server_url, _, _):
        # aeria: the raw `ray job submit` that `submit --dry-run` prints, run as printed
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server_url)
        assert main(["submit", str(QUICKSTART), "--address", cluster["url"], "--dry-run"]) == 0
        raw = next(line.strip() for line in capsys.readouterr().out.splitlines()
                   if line.strip().startswith("ray job submit"))
        aeria = subprocess.run(shlex.split(raw), cwd=REPO, env=cluster["env"], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        assert aeria.returncode == 0 and "succeeded" in aeria.stdout, aeria.stdout[-3000:]
        _check_runs(MlflowClient(server_url), "aeria-quickstart", None)
    assert submit.follow(submit.client(cluster["url"]), job_id) == "SUCCEEDED"
    assert "Running entrypoint" in capsys.readouterr().out, "follow streamed the job's logs"
    _check_runs(MlflowClient(store), "deepfusion-e2e", SUBSET)


def _check_runs(client: MlflowClient, experiment: str, methods: set | None) -> None:
    exp = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([exp.experiment_id], f"tags.`{ROLE_TAG}` = 'parent'")
    children = client.search_runs([exp.experiment_id],
                                  f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    methods = methods or set(eval(parent.data.params["aeria.mechanisms"]))
    assert parent.info.status == "FINISHED"
    assert {c.info.run_name for c in children} == methods
    assert all(c.info.status == "FINISHED" and c.data.metrics for c in children)
    assert "results.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_dry_run_prints_the_ray_command_with_secrets_redacted_and_a_small_upload(
        monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:s3cret@127.0.0.1:5000")
    monkeypatch.setenv("MODEL_API_KEY", "sk-do-not-print")
    assert main(["submit", str(QUICKSTART), "seed=3", "--env", "MODEL_API_KEY", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "sk-do-not-print" not in out
    line = next(x.strip() for x in out.splitlines() if x.strip().startswith("ray job submit"))
    argv = shlex.split(line)
    env = json.loads(argv[argv.index("--runtime-env-json") + 1])
    from orchestrator.tracking import git_commit

    assert env["env_vars"] == {"MLFLOW_TRACKING_URI": "http://alice:***@127.0.0.1:5000",
                               "MODEL_API_KEY": "***", "ORCHESTRATOR_GIT_COMMIT": git_commit()}
    assert {".git", "mlflow.db*", ".orchestrator"} <= set(env["excludes"])
    assert argv[argv.index("--") + 1:] == ["python", "-m", "orchestrator", "run",
                                           "experiments/aeria/quickstart.yaml", "seed=3"]
    job = submit.build(str(QUICKSTART), [])
    assert submit.package_size(job) < submit.RAY_UPLOAD_LIMIT / 3


def test_resubmitting_with_resume_runs_run_resume_and_a_relative_state_dir_is_warned_of(caplog):
    job = submit.build(str(QUICKSTART), ["state_dir=/mnt/shared/orch"], resume=True)
    assert job.entrypoint[-3:] == ["experiments/aeria/quickstart.yaml", "state_dir=/mnt/shared/orch",
                                   "--resume"]
    assert "state_dir" not in caplog.text
    submit.build(str(QUICKSTART), [])
    assert "state_dir=.orchestrator is relative" in caplog.text
    assert main(["submit", str(QUICKSTART), "--sweep", "--resume", "--dry-run"]) == 2


def test_submit_refuses_bad_input_before_contacting_a_cluster(tmp_path, capsys):
    outside = tmp_path / "mine.yaml"
    outside.write_text(QUICKSTART.read_text())
    assert main(["submit", str(outside), "--address", "http://127.0.0.1:9"]) == 2
    assert main(["submit", str(QUICKSTART), "aeria.num_user=3"]) == 2
    assert main(["submit", str(QUICKSTART), "--env", "NO_SUCH_VARIABLE_HERE"]) == 2
    assert "outside" in capsys.readouterr().err
