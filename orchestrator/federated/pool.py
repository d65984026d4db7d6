"""A bounded pool of long-lived Ray actors, each multiplexing many simulated devices.

Not one actor per device: Flower's simulation pays a process (and a model copy) per client, which
is what makes it slow and memory-hungry at hundreds of clients. Here K actors (K = CPUs / CPUs per
actor by default) each build the workload's `DeviceProgram` once and run their share of the
round's devices one after another; each actor also pre-reduces its devices' updates, so the driver
receives K partial aggregates per round instead of N models.

Devices map to actors statically (device d -> actor d % K). Actors restart and their tasks retry
if a worker process dies mid-round: the retried share re-runs on a freshly built program with the
same inputs (tests/orchestrator/test_faults.py checks the round is then bit-identical). So a
`DeviceProgram.train` must be a function of its arguments: state it keeps between calls, and side
effects on other actors (an edge server's per-device copy), do not survive or get undone by a retry.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Sequence

from orchestrator.federated.comm import DeviceReport, tensor_bytes

log = logging.getLogger(__name__)


@dataclass
class DeviceUpdate:
    """A device's contribution: `update` (tensors) with aggregation `weight`, and its cost.

    `bytes_up` / `bytes_down` are what crossed the network when the program knows better than the
    tensors it hands back (FedJETS downloads a compact model, not the global one; bf16 on the
    wire): None measures `update` and the global state.
    """

    update: dict
    weight: float
    num_samples: int
    flops: float
    metrics: dict
    device: int = -1  # filled in by the engine
    bytes_up: Optional[int] = None
    bytes_down: Optional[int] = None
    bytes_side: int = 0  # exchanged mid-round with a service (split learning's smashed data)


@dataclass(frozen=True)
class DeviceTask:
    """What a device program is told for one round, beside the broadcast weights."""

    round: int
    seed: int
    instructions: Any = None                                   # the strategy's, for this device
    services: Mapping[str, Any] = field(default_factory=dict)  # name -> Ray actor handle


class DeviceProgram(Protocol):
    """What every simulated device runs; built once per actor by the workload's factory."""

    def train(self, device: int, global_state: dict, task: DeviceTask) -> DeviceUpdate:
        ...


def instructions_for(instructions: Any, device: int) -> Any:
    """One object for every device, or a `{device: object}` mapping."""
    return instructions.get(device) if isinstance(instructions, Mapping) else instructions


def share_of(instructions: Any, devices: Sequence[int]) -> Any:
    """The part of a per-device mapping an actor needs (one object: all of it)."""
    if isinstance(instructions, Mapping):
        return {d: instructions[d] for d in devices if d in instructions}
    return instructions


class WeightedSum:
    """Aggregation as a sum of weight * update: FedAvg (normalize) or unbiased p/q sums."""

    def __init__(self, normalize: bool = True):
        self.normalize = normalize

    def partial(self, updates: Iterable[DeviceUpdate]) -> tuple[dict | None, float]:
        total, acc = 0.0, None
        for u in updates:
            scaled = {k: v * u.weight for k, v in u.update.items()}
            acc = scaled if acc is None else {k: acc[k] + scaled[k] for k in acc}
            total += u.weight
        return acc, total

    def combine(self, partials: Sequence[tuple[dict | None, float]]) -> dict | None:
        parts = [(acc, w) for acc, w in partials if acc is not None]
        if not parts:
            return None
        acc = {k: sum(p[0][k] for p in parts) for k in parts[0][0]}
        total = sum(w for _, w in parts)
        return {k: v / total for k, v in acc.items()} if self.normalize else acc


class Collect:
    """No aggregation: hand every device's update to the driver (one-shot uploads of
    heterogeneous models, which cannot be averaged)."""

    def partial(self, updates: Iterable[DeviceUpdate]) -> list[DeviceUpdate]:
        return list(updates)

    def combine(self, partials: Sequence[list[DeviceUpdate]]) -> list[DeviceUpdate] | None:
        """None when no device took part (the round loop then keeps the state)."""
        updates = sorted((u for part in partials for u in part), key=lambda u: u.device)
        return updates or None


def run_devices(program: DeviceProgram, devices: Sequence[int], global_state: dict,
                round_idx: int, seed: int, reducer: Any, instructions: Any = None,
                services: Optional[Mapping[str, Any]] = None) -> tuple[Any, list[DeviceReport]]:
    """One actor's share of a round (also the plain in-process loop the benchmark compares to).
    The reducer folds the updates as the devices finish, so a summing reducer holds one running
    sum, not every device's model."""
    down = tensor_bytes(global_state)
    reports: list[DeviceReport] = []

    def trained():
        for d in devices:
            task = DeviceTask(round_idx, seed, instructions_for(instructions, int(d)),
                              services or {})
            u = program.train(int(d), global_state, task)
            u.device = int(d)
            up = tensor_bytes(u.update) if u.bytes_up is None else u.bytes_up
            reports.append(DeviceReport(int(d), up, down if u.bytes_down is None else u.bytes_down,
                                        u.flops, u.num_samples, u.metrics, u.bytes_side))
            yield u

    return reducer.partial(trained()), reports


class _DeviceActor:
    def __init__(self, factory: Callable[[], DeviceProgram]):
        import torch

        torch.set_num_threads(1)  # one core per actor; also keeps float sums deterministic
        self.program = factory()

    def run(self, devices, global_state, round_idx, seed, reducer, instructions, services):
        return run_devices(self.program, devices, global_state, round_idx, seed, reducer,
                           instructions, services)

    def pid(self) -> int:
        import os

        return os.getpid()


def default_num_actors(cpus_per_actor: float, gpus_per_actor: float) -> int:
    """As many actors as the cluster's CPUs (and GPUs, if actors take them) allow, less what the
    calling task holds: inside a Tune trial, a pool sized to the whole cluster would wait forever
    for the trial's own CPU. From the cluster's totals, not what is free right now, so K (and the
    device -> actor map) is the same on every run and resume."""
    import ray

    ctx = ray.get_runtime_context()
    held = ctx.get_assigned_resources() if ctx.worker.mode == ray.WORKER_MODE else {}  # driver: {}
    res = ray.cluster_resources()
    k = math.floor((res.get("CPU", 1) - held.get("CPU", 0)) / cpus_per_actor)
    if gpus_per_actor > 0:
        gpus = res.get("GPU", 0) - held.get("GPU", 0)
        if gpus < gpus_per_actor:
            log.warning("device actors take %s GPU each but the Ray cluster has %s to give them: "
                        "the pool waits for a GPU node (an autoscaler's); set gpus_per_actor: 0 "
                        "to run devices on CPUs", gpus_per_actor, gpus)
        k = min(k, math.floor(gpus / gpus_per_actor))
    return max(k, 1)


class DevicePool:
    """K long-lived actors; `round(devices, state, ...)` -> (aggregate, per-device reports)."""

    def __init__(self, factory: Callable[[], DeviceProgram], num_actors: int = 0,
                 cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0):
        import ray

        k = num_actors or default_num_actors(cpus_per_actor, gpus_per_actor)
        # "DEFAULT": inside a Tune trial the actors take their own resources, not the trial's
        actor = ray.remote(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor, max_restarts=3,
                           max_task_retries=3, scheduling_strategy="DEFAULT")(_DeviceActor)
        # put once and held by the pool: a restarted actor (after a crash or an OOM kill) is
        # rebuilt from this argument, which Ray would otherwise free once the first build ends
        self.factory = ray.put(factory)
        self.actors = [actor.remote(self.factory) for _ in range(k)]

    @property
    def size(self) -> int:
        return len(self.actors)

    def round(self, devices: Sequence[int], global_state: dict, round_idx: int, seed: int,
              reducer: Any, instructions: Any = None,
              services: Optional[Mapping[str, Any]] = None) -> tuple[Any, list[DeviceReport]]:
        import ray

        state_ref = ray.put(global_state)  # sent once per round, shared by all actors
        shares = [[d for d in devices if d % self.size == i] for i in range(self.size)]
        refs = [a.run.remote(share, state_ref, round_idx, seed, reducer,
                             share_of(instructions, share), services or {})
                for a, share in zip(self.actors, shares) if share]
        results = ray.get(refs)
        reports = sorted((r for _, rs in results for r in rs), key=lambda r: r.device)
        return reducer.combine([partial for partial, _ in results]), reports

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []
        self.factory = None
