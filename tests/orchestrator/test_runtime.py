"""Ray connection rules: join what is reachable, start only when nothing is."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.config import RayConfig, flatten
from orchestrator.runtime import (fetch, parallel_map, resolve_address, scheduling_autogroup,
                                  share)
from tests.conftest import QUICKSTART, REPO


def test_ray_address_env_overrides_the_config(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_address(RayConfig(address="auto")) == "10.0.0.1:6379"
    monkeypatch.delenv("RAY_ADDRESS")
    assert resolve_address(RayConfig(address="auto")) == "auto"
    assert resolve_address(RayConfig()) is None


@pytest.mark.slow
def test_parallel_map_keeps_item_order(local_ray):
    items = [{"a": {"b": i}} for i in range(5)]
    assert parallel_map(flatten, items, desc="flatten") == [{"a.b": i} for i in range(5)]


@pytest.mark.slow
def test_a_shared_object_is_stored_once_and_read_back_where_it_is_needed(local_ray):
    big = list(range(1000))
    ref = share(big)  # task items carry `ref` (a few bytes), not their own copy of `big`
    assert ref is not big and fetch(ref) == big
    assert fetch(big) is big  # anything that is not a reference is itself


@pytest.mark.slow
def test_a_run_with_ray_address_joins_that_cluster_instead_of_starting_one(local_ray, workdir):
    import ray

    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(QUICKSTART), "aeria.user_counts=[100]",
         "aeria.num_seeds=1", "aeria.check_properties=false"],
        env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"joining the Ray cluster at {address}" in out.stderr
    assert len(ray.nodes()) == 1, "no second Ray node may appear"


@pytest.mark.skipif(scheduling_autogroup() is None,
                    reason="Linux CFS autogroup is off or hidden here (gVisor): nothing to move")
def test_a_ray_worker_moves_to_its_own_scheduling_group_and_stays_its_own_group_leader(local_ray):
    """As torchrun gives each rank a session of its own; Ray's clean-up kills by pgid == pid."""
    import ray

    @ray.remote(num_cpus=0)
    def move():
        from orchestrator.runtime import own_scheduling_group, scheduling_autogroup

        before, moved = scheduling_autogroup(), own_scheduling_group()
        return {"before": before, "after": scheduling_autogroup(), "moved": moved,
                "again": own_scheduling_group(),
                "pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0)}

    seen = ray.get(move.remote())
    driver_group = scheduling_autogroup()
    assert seen["before"] == driver_group, "a local Ray's workers start in the driver's group"
    assert seen["moved"] and seen["after"] != driver_group
    assert seen["pid"] == seen["pgid"] == seen["sid"]
    assert seen["again"] is False, "a session leader stays where it is"


HIDDEN_AUTOGROUP = """
import os, pathlib, sys
from orchestrator import runtime
shown = {"/proc/sys/kernel/sched_autogroup_enabled": "1\\n", "/proc/self/autogroup": sys.argv[1]}
real = pathlib.Path.read_text
def read_text(self, *args, **kwargs):
    return shown[str(self)] if str(self) in shown else real(self, *args, **kwargs)
pathlib.Path.read_text = read_text
before = os.getsid(0)
assert before != os.getpid(), "the probe must not lead a session already"
print(runtime.scheduling_autogroup(), runtime.own_scheduling_group(), os.getsid(0) == before)
"""


@pytest.mark.parametrize("proc_text", ["", "\n", "garbage"])
def test_where_the_kernel_hides_autogroups_the_move_is_a_no_op(proc_text):
    """gVisor (CI) reports the autogroup sysctl on but shows an empty /proc/self/autogroup.

    Run in a child process: it is never a session leader, so only the hidden group can stop the
    move (and a move that did happen would not touch pytest's own session).
    """
    out = subprocess.run([sys.executable, "-c", HIDDEN_AUTOGROUP, proc_text], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["None", "False", "True"], "nothing may move when unseen"
