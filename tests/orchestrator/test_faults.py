"""Faults a long experiment meets, and what must survive each (issue 7).

- one device actor's process SIGKILLed mid-round: Ray restarts the actor and retries its task with
  the same inputs; the round ends with every device's update and the undisturbed aggregate.
- the whole `orchestrator run` process group SIGKILLed mid-FedJETS (right after its first round
  checkpoint): the parent is left RUNNING; `run --resume` reopens it, finishes it, and reaches
  exactly the metrics (final and per round) of an uninterrupted run; no Ray process outlives it.
- a SIGKILLed run's parent is RUNNING until the next run in its experiment marks it FAILED with
  a note (tracking.close_orphans); a SIGTERMed run ends FAILED at once; an exception inside a
  workload leaves the parent and its open child FAILED with the traceback (test_end_to_end
  checks the parent alone).

The killed `run`s are real CLI processes with their own Ray in a private RAY_TMPDIR, so the
session's shared Ray is never touched and their leftovers can be found and reaped exactly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from orchestrator.cli import main
from orchestrator.federated.pool import DevicePool, WeightedSum
from orchestrator.federated.reference import MlpProgram, MlpTask, initial_state
from orchestrator.tracking import KIND_TAG, PARENT_TAG
from tests.conftest import QUICKSTART, REPO, store

pytestmark = pytest.mark.slow
DEEPFUSION = str(REPO / "experiments" / "deepfusion" / "quickstart.yaml")
FEDJETS = ["deepfusion.run.methods=[fedjets]", "deepfusion.data.max_records=400",
           "deepfusion.local.steps=3", "deepfusion.baselines.fedjets_rounds=3",
           "deepfusion.baselines.fedjets_local_steps=2", "deepfusion.run.eval_blocks=8",
           "deepfusion.run.round_eval_blocks=4", "mlflow.experiment=sigkill"]
CENTRALIZED = ["deepfusion.run.methods=[centralized]", "deepfusion.data.max_records=400",
               "deepfusion.run.centralized_steps=60", "deepfusion.run.ep_checkpoint_every=10",
               "deepfusion.run.eval_blocks=8", "mlflow.experiment=ep-fault"]
AERIA = ["aeria.user_counts=[100,300]", "aeria.num_seeds=2", "aeria.property_users=60",
         "aeria.property_probes=2", "mlflow.experiment=orphan"]


# --------------------------------------------------------------------------- a device actor dies
def slow_marked_mlp(task: MlpTask, marks: Path, seconds: float, ballast_bytes: int = 0):
    """A factory of the reference MLP program that leaves `<pid>-<device>` in `marks` when it
    starts a device and takes `seconds` longer per device (time for the test to kill it). The
    ballast makes the factory as large as a real one (deepfusion's carries released weights):
    too large for Ray to inline, so the actors' constructor argument lives in the object store."""
    ballast = np.zeros(ballast_bytes, dtype=np.uint8)

    class SlowMarkedMlp(MlpProgram):  # local: pickled by value, so workers need no tests/ path
        def train(self, device, global_state, task):
            (marks / f"{os.getpid()}-{device}").touch()
            time.sleep(seconds)
            return super().train(device, global_state, task)

    return lambda: (ballast, SlowMarkedMlp(task))[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.usefixtures("local_ray")
def test_a_device_actor_killed_mid_round_is_restarted_and_the_round_loses_nothing(tmp_path):
    import ray

    task, devices = MlpTask(num_devices=6), list(range(6))
    state, reducer = initial_state(task), WeightedSum()
    pool = DevicePool(slow_marked_mlp(task, tmp_path, 0.4, ballast_bytes=4_000_000),
                      num_actors=2)
    try:
        pids = ray.get([a.pid.remote() for a in pool.actors])
        undisturbed, undisturbed_reports = pool.round(devices, state, 0, 3, reducer)
        for mark in tmp_path.iterdir():
            mark.unlink()
        out: dict = {}
        worker = threading.Thread(target=lambda: out.update(
            result=pool.round(devices, state, 0, 3, reducer)))
        worker.start()
        # actor 0 hosts devices 0, 2, 4: kill it once it is inside its second device
        wait_for(lambda: (tmp_path / f"{pids[0]}-2").exists(), 60, "actor 0 to reach device 2")
        os.kill(pids[0], signal.SIGKILL)
        worker.join(timeout=180)
        assert not worker.is_alive(), "the round never completed after the kill"
        aggregate, reports = out["result"]
        new_pid = ray.get(pool.actors[0].pid.remote())
    finally:
        pool.shutdown()
    assert new_pid != pids[0], "actor 0 was restarted in a new process"
    reran = sorted(int(m.name.split("-")[1]) for m in tmp_path.iterdir()
                   if m.name.startswith(f"{new_pid}-"))
    assert reran == [0, 2, 4], "the retried task re-ran actor 0's whole share"
    assert [r.device for r in reports] == devices, "every device reported exactly once"
    assert [r.metrics for r in reports] == [r.metrics for r in undisturbed_reports]
    assert all(torch.equal(aggregate[k], undisturbed[k]) for k in state), \
        "the retried task got the same inputs: the aggregate is the undisturbed one, bit for bit"


# --------------------------------------------------------------------------- the whole run dies
@pytest.fixture
def private_ray(tmp_path):
    """A RAY_TMPDIR of its own for the CLI processes a test starts (short: Ray's socket paths
    must fit in 107 bytes); afterwards, any process still carrying it is killed."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rayf", dir="/tmp"))
    yield ray_tmp
    for pid in processes_with_env(f"RAY_TMPDIR={ray_tmp}"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def processes_with_env(entry: str) -> list[int]:
    """Live processes whose environment holds `entry` (Ray renames its workers' command lines,
    never their environments)."""
    found, needle = [], entry.encode() + b"\0"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes() and \
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return found


def start_cli(args: list[str], cwd: Path, ray_tmp: Path, log: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["RAY_TMPDIR"] = str(ray_tmp)
    with open(cwd / log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_while_running(proc: subprocess.Popen, predicate, timeout: float, what: str, log: Path):
    """`wait_for(predicate)`, failing at once with the log if `proc` exits first."""
    def check():
        found = predicate()
        assert found or proc.poll() is None, f"exited {proc.returncode} before {what}:\n" + \
            log.read_text()[-3000:]
        return found
    return wait_for(check, timeout, what)


def run_cli(args: list[str], cwd: Path, ray_tmp: Path, log: str, timeout: float = 420) -> None:
    proc = start_cli(args, cwd, ray_tmp, log)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        kill_group(proc)
    assert code == 0, f"`orchestrator {' '.join(args[:2])}` exited {code}:\n" + \
        (cwd / log).read_text()[-3000:]


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def leftovers(ray_tmp: Path, grace: float = 15) -> list[int]:
    """The run's Ray processes still alive `grace` seconds after its driver died."""
    deadline = time.monotonic() + grace
    while (alive := processes_with_env(f"RAY_TMPDIR={ray_tmp}")) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def parents(experiment: str, cwd: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    return client, [(p, [r for r in runs if r.data.tags.get(PARENT_TAG) == p.info.run_id])
                    for p in runs if p.data.tags.get(KIND_TAG) in ("run", "sweep")]


def per_round(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """{round: value}; a round re-run on resume is logged twice with the same value."""
    history = client.get_metric_history(run_id, key)
    by_step: dict[int, set] = {}
    for m in history:
        by_step.setdefault(m.step, set()).add(m.value)
    assert all(len(v) == 1 for v in by_step.values()), f"{key}: a re-run round changed: {by_step}"
    return {step: v.pop() for step, v in sorted(by_step.items())}


def test_a_sigkilled_run_resumes_to_the_metrics_of_an_uninterrupted_run(tmp_path, private_ray):
    args = ["run", DEEPFUSION, *FEDJETS]
    killed = start_cli(args, tmp_path, private_ray, "killed.log")
    try:
        rounds = wait_while_running(killed, lambda: list(tmp_path.glob(
            ".orchestrator/state/sigkill/*/checkpoints/fedjets-*/round_*.pt")), 300,
            "the first FedJETS round checkpoint", tmp_path / "killed.log")
    finally:
        kill_group(killed)
    assert killed.returncode == -signal.SIGKILL
    assert leftovers(private_ray) == [], "Ray's processes die with the run's process group"
    checkpoints = rounds[0].parent.parent
    assert not list(checkpoints.glob("fedjets-*.pt")), "killed before FedJETS finished"
    client, [(parent, [child])] = parents("sigkill", tmp_path)
    assert (parent.info.status, child.info.status) == ("RUNNING", "RUNNING"), \
        "what a SIGKILL leaves behind in MLflow"

    run_cli([*args, "--resume"], tmp_path, private_ray, "resumed.log")
    run_cli(args, tmp_path, private_ray, "uninterrupted.log")  # a fresh run: starts over
    client, [(resumed, [r_child]), (straight, [s_child])] = parents("sigkill", tmp_path)
    assert resumed.info.run_id == parent.info.run_id, "--resume reopened the killed run"
    assert (resumed.info.status, r_child.info.status) == ("FINISHED", "FINISHED")
    assert resumed.data.tags["orchestrator.resumed"] == "true"
    assert r_child.data.metrics == s_child.data.metrics, "identical final metrics"
    for key in ("cum_bytes", "eval_log_ppl", "device_loss"):
        got = per_round(client, r_child.info.run_id, key)
        assert got == per_round(client, s_child.info.run_id, key) and list(got) == [0, 1, 2], \
            f"{key}: every round logged once or identically twice, nothing lost"
    keep = lambda m: {k: v for k, v in m.items() if "seconds" not in k}  # noqa: E731
    assert keep(resumed.data.metrics) == keep(straight.data.metrics)
    assert leftovers(private_ray, grace=5) == []


# --------------------------------------------------------------------------- a Ray Train rank dies
def registered_checkpoints(tmp_path: Path) -> list[str]:
    """The checkpoints Ray Train's controller has taken in (a rank can die before its report is)."""
    for snapshot in tmp_path.glob(".orchestrator/state/ep-fault/*/checkpoints/ray_train/"
                                  "centralized-*/checkpoint_manager_snapshot.json"):
        with contextlib.suppress(OSError, ValueError):
            return [c["checkpoint_dir_name"]
                    for c in json.loads(snapshot.read_text())["checkpoint_results"]]
    return []


def ray_train_workers(ray_tmp: Path) -> list[int]:
    return [pid for pid in processes_with_env(f"RAY_TMPDIR={ray_tmp}")
            if b"RayTrainWorker" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_a_ray_train_rank_killed_mid_phase_restarts_the_expert_parallel_phase_from_its_checkpoint(
        tmp_path, private_ray):
    args = ["run", DEEPFUSION, *CENTRALIZED]
    killed = start_cli(args, tmp_path, private_ray, "killed.log")
    try:
        wait_while_running(killed, lambda: registered_checkpoints(tmp_path), 300,
                           "the expert-parallel phase's first checkpoint", tmp_path / "killed.log")
        victims = ray_train_workers(private_ray)
        assert len(victims) == 2, "two expert-parallel ranks"
        os.kill(victims[-1], signal.SIGKILL)
        code = killed.wait(timeout=300)
    finally:
        kill_group(killed)
    assert code == 0, (tmp_path / "killed.log").read_text()[-3000:]
    client, [(parent, [child])] = parents("ep-fault", tmp_path)
    resumed_from = child.data.metrics["ep_resumed_from_step"]
    assert 10 <= resumed_from < 60 and resumed_from % 10 == 0, \
        "Ray Train restarted the worker group from a checkpoint, not from step 0"
    assert child.info.status == "FINISHED"
    assert len(client.get_metric_history(child.info.run_id, "tune_loss")) == 60, "every step"

    run_cli(args, tmp_path, private_ray, "uninterrupted.log")
    _, [_, (_, [straight])] = parents("ep-fault", tmp_path)
    assert straight.data.metrics["ep_resumed_from_step"] == 0
    for key in ("log_ppl", "token_accuracy", "comm_bytes"):
        assert child.data.metrics[key] == pytest.approx(straight.data.metrics[key], rel=1e-5), \
            f"{key}: the restarted phase ends where an undisturbed one does"
    assert leftovers(private_ray, grace=5) == []


@pytest.mark.usefixtures("local_ray")  # the next run is in-process, on the session's Ray
def test_a_sigkilled_runs_parent_is_failed_by_the_next_run_not_left_running(workdir, private_ray):
    killed = start_cli(["run", str(QUICKSTART), *AERIA], workdir, private_ray, "killed.log")
    try:
        # the parent's first artifacts (never poll the store: the run may be creating it)
        wait_while_running(killed, lambda: list(workdir.glob(
            "mlartifacts/orphan/*/artifacts/versions.json")), 120, "the killed run's parent run",
            workdir / "killed.log")
    finally:
        kill_group(killed)
    _, [(orphan, _)] = parents("orphan", workdir)
    assert orphan.info.status == "RUNNING"
    assert leftovers(private_ray) == []
    assert main(["run", str(QUICKSTART), *AERIA]) == 0
    client, [(orphan, kids), (fresh, _)] = parents("orphan", workdir)
    assert orphan.info.status == "FAILED" and fresh.info.status == "FINISHED"
    assert all(k.info.status != "RUNNING" for k in kids)
    note = Path(client.download_artifacts(orphan.info.run_id, "error/traceback.txt")).read_text()
    assert "died without closing it (SIGKILL?" in note


def test_a_sigtermed_run_ends_failed_with_the_signal_attached(workdir, private_ray):
    """`ray job stop`, Kubernetes and `kill` send SIGTERM: the driver's handler (set by ray.init)
    raises SystemExit, which closes the open runs as FAILED on the way out."""
    longer = [*AERIA, "aeria.user_counts=[200,1000,5000,20000]", "aeria.num_seeds=6",
              "mlflow.experiment=sigterm"]
    proc = start_cli(["run", str(QUICKSTART), *longer], workdir, private_ray, "term.log")
    try:
        wait_while_running(proc, lambda: list(workdir.glob(
            ".orchestrator/state/sigterm/*/mlflow_run_id")), 120,
            "Ray to be up (the run id is recorded once it is)", workdir / "term.log")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        kill_group(proc)
    assert code != 0
    client, [(parent, kids)] = parents("sigterm", workdir)
    assert parent.info.status == "FAILED" and all(k.info.status == "FAILED" for k in kids)
    text = Path(client.download_artifacts(parent.info.run_id, "error/traceback.txt")).read_text()
    assert "SystemExit" in text
    assert leftovers(private_ray) == []


# --------------------------------------------------------------------------- a workload raises
@pytest.mark.usefixtures("local_ray")
def test_an_exception_inside_a_method_fails_its_open_child_and_the_parent_with_traceback(
        workdir, monkeypatch):
    from orchestrator import registry

    real = registry.get("aeria")

    def explode_in_a_child(cfg, ctx):
        with ctx.tracker.child("doomed"):
            raise RuntimeError("injected failure inside a method")

    monkeypatch.setattr(registry, "get",
                        lambda name: dataclasses.replace(real, run=explode_in_a_child))
    assert main(["run", str(QUICKSTART), *AERIA, "mlflow.experiment=raises"]) == 1
    client = MlflowClient(store())
    _, [(parent, [child])] = parents("raises", workdir)
    for run in (parent, child):
        assert run.info.status == "FAILED"
        text = Path(client.download_artifacts(run.info.run_id, "error/traceback.txt")).read_text()
        assert "injected failure inside a method" in text
