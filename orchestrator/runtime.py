"""Connecting to Ray, and running pure functions over many items as Ray tasks.

Address resolution: `RAY_ADDRESS` in the environment (set by `ray job submit`), else `ray.address`
from the config, else a Ray started on this machine with `ray start`, else a new local Ray with
the configured CPU count. A Ray that is already initialised in this process is reused and left running.

What can be known before Ray starts (a malformed address, work a local Ray can never schedule)
is checked in `orchestrator/preflight.py`.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from orchestrator.config import RayConfig
from orchestrator.progress import progress

log = logging.getLogger(__name__)

QUIET_ENV = {
    "RAY_DEDUP_LOGS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "60",
}


def resolve_address(cfg: RayConfig) -> str | None:
    return os.environ.get("RAY_ADDRESS") or cfg.address


@contextlib.contextmanager
def ray_session(cfg: RayConfig) -> Iterator[None]:
    """Join or start Ray for the duration of a command; shut down only a Ray we started."""
    import ray

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        yield
        return
    common = dict(logging_level=logging.ERROR, log_to_driver=cfg.log_to_driver)
    address = resolve_address(cfg)
    if address:
        log.info("joining the Ray cluster at %s", address)
        ray.init(address=address, **common)
    elif not _join_running_local_ray(common):
        start_local_ray(cfg)
    try:
        yield
    finally:
        ray.shutdown()


def start_local_ray(cfg: RayConfig) -> None:
    """Start a Ray on this machine, as `run` does; tests and benchmarks start theirs here too."""
    import ray

    ray.init(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, include_dashboard=cfg.include_dashboard,
             dashboard_host=cfg.dashboard_host, logging_level=logging.ERROR,
             log_to_driver=cfg.log_to_driver)


def _join_running_local_ray(common: dict) -> bool:
    """Join a Ray started with `ray start` on this machine, so we never start a second one.

    Only `ray start` writes the address file; another program's in-process Ray is not joined
    (it would vanish when that program exits, taking our tasks with it).
    """
    import ray
    from ray._private.utils import read_ray_address

    address = read_ray_address()
    if not address:
        return False
    try:
        ray.init(address=address, **common)
    except (ConnectionError, RuntimeError) as err:
        log.warning("the Ray recorded by `ray start` at %s is gone (%s); starting a local one",
                    address, err)
        return False
    log.info("joined the Ray started by `ray start` at %s", address)
    return True


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], desc: str = "tasks",
                 num_cpus: float = 1, num_gpus: float = 0) -> list[Any]:
    """`[fn(x) for x in items]` as Ray tasks (retried if a worker dies), with a progress bar;
    with `num_gpus` each task gets that GPU share and `torch_device()` there says `cuda`."""
    import ray

    # "DEFAULT": from inside a Tune trial the tasks take their own resources, not the trial's
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=3,
                        scheduling_strategy="DEFAULT")(fn)
    refs = [remote.remote(item) for item in items]
    pending = list(refs)
    with progress(len(refs), desc) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            bar.advance(len(done))
    return ray.get(refs)


def share(obj: Any) -> Any:
    """`obj` in the Ray object store once (a reference every task item can carry instead of its
    own copy: large weights shipped to many tasks); `obj` itself when Ray is not running."""
    import ray

    return ray.put(obj) if ray.is_initialized() else obj


def fetch(value: Any) -> Any:
    """The object behind a `share` reference (anything else is returned as it is)."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def trim_memory() -> None:
    """Hand freed memory back to the OS: collect garbage, then glibc's `malloc_trim(0)`. A driver
    that loaded and dropped gigabytes of weights (many tensors of a few MB each, below glibc's
    mmap threshold) otherwise keeps them resident, and the workers it starts next run out."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def cluster_gpus() -> float:
    """GPUs the joined Ray cluster offers (0 on a CPU machine): what `auto` placements ask."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0


def torch_device():
    """Where this process should compute: `cuda` when Ray gave the calling task/actor a GPU
    (whole or a fractional share) and CUDA works here, else `cpu`.

    Ray sets CUDA_VISIBLE_DEVICES for each worker to the GPUs it was assigned, so plain "cuda" is
    this worker's share. The driver and CPU-only tasks get no GPU ids, hence `cpu`.
    """
    import ray
    import torch

    on_gpu = ray.is_initialized() and bool(ray.get_gpu_ids()) and torch.cuda.is_available()
    return torch.device("cuda" if on_gpu else "cpu")


def own_scheduling_group() -> bool:
    """Put this worker process in its own Linux scheduling autogroup, as torchrun does per rank.

    With CFS autogroup on (`/proc/sys/kernel/sched_autogroup_enabled`, the default of most
    distributions), every process of one session shares one scheduling group: a local Ray's
    workers share it with the driver, raylet and GCS. torchrun starts each rank in a new session,
    hence its own group. Ranks that wait on each other's gloo messages lose to this:
    `python3 bench/moe_ep.py --shared-group` measured Ray Train +4.8% over torchrun with this
    move and +14.1% without it (4 interleaved sets, 2 cores); on a later day +11.1% and +14.0%.
    A Ray worker leads its own process group, so it cannot `setsid()` at once; it first joins its
    parent's group (same session, allowed), then starts the session, which makes it group leader
    again (pgid == pid), so Ray's process-group clean-up still reaches it and its children.
    Returns whether the process moved; a no-op where autogroup is off or hidden (gVisor), in
    containers' own cgroups (autogroup applies only to the root group), where the kernel
    refuses, or with ORCHESTRATOR_SHARED_AUTOGROUP=1 (bench/moe_ep.py's
    `--shared-group` arm, to measure the difference).
    """
    if os.environ.get("ORCHESTRATOR_SHARED_AUTOGROUP") == "1":
        return False
    before = scheduling_autogroup()
    if before is None or os.getsid(0) == os.getpid():
        return False  # autogroup off or hidden (e.g. gVisor), or already a session leader
    try:
        if os.getpgid(0) == os.getpid():
            os.setpgid(0, os.getpgid(os.getppid()))
        os.setsid()
    except OSError as err:
        log.debug("kept the shared scheduling group: %s", err)
        return False
    return scheduling_autogroup() not in (None, before)


def scheduling_autogroup() -> str | None:
    """This process's CFS autogroup ("/autogroup-42"), or None where autogroup is off or unreadable.

    Sandboxed kernels (gVisor, as on CI) show the sysctl as on but `/proc/self/autogroup` empty.
    """
    try:
        if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
            return None
        fields = Path("/proc/self/autogroup").read_text().split()
    except OSError:
        return None
    return fields[0] if fields and fields[0].startswith("/autogroup-") else None
