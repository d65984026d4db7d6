"""The federated engine a workload reaches as `ctx.federation`: it owns the round.

    with ctx.federation.session(c.federation, program, population, services) as fl:
        fl.map(devices, payload, instructions)             # one pass (one-shot uploads, probes)
        result = fl.run("fedprox", strategy, state, rounds, key=(c.model, c.data))

A session holds the device actors (`pool.DevicePool`) and the strategy's services (long-lived
actors such as split learning's edge servers, started, restarted by Ray on failure, and stopped
here) for as long as its `with` block. `run` is the round loop: the strategy picks the
participants and their instructions, the pool trains them, the strategy folds the updates; the
engine keeps the ledger (bytes up, down and to services), the simulated clock (a pluggable latency
model), progress, and an atomic checkpoint after every round, so a run killed at any point and
resumed reaches exactly the state of an uninterrupted one. Every round's randomness comes from
`derive_rng(seed, round, ...)`, never from carried state.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from orchestrator.federated.comm import round_summary, slowest_device
from orchestrator.federated.pool import Collect, DevicePool
from orchestrator.federated.population import Population
from orchestrator.state import atomic_save, digest
from orchestrator.workload import derive_rng

log = logging.getLogger(__name__)
SELECT_STREAM = 7  # derive_rng(seed, round, SELECT_STREAM): who is online and who is drawn


class Checkpointer:
    """`round_0003.pt` files in one directory; written atomically, loaded with weights_only."""

    def __init__(self, directory: Path, keep: int = 2):
        self.dir, self.keep = Path(directory), keep
        self.dir.mkdir(parents=True, exist_ok=True)

    def latest(self) -> Optional[dict]:
        import torch

        files = self._by_round()
        return torch.load(files[-1], weights_only=True) if files else None

    def _by_round(self) -> list[Path]:
        """Oldest first, by the round number (text order puts round_10000 before round_9999)."""
        return sorted(self.dir.glob("round_*.pt"), key=lambda p: int(p.stem.split("_")[1]))

    def save(self, round_idx: int, payload: dict) -> None:
        atomic_save(payload, self.dir / f"round_{round_idx:04d}.pt")
        for old in self._by_round()[:-self.keep]:
            old.unlink()


@dataclass(frozen=True)
class Service:
    """A long-lived actor a strategy needs (an edge server): `cls(*args)` on `cpus`/`gpus`."""

    cls: type
    args: tuple = ()
    cpus: float = 1.0
    gpus: float = 0.0
    max_restarts: int = 1


SHUTDOWN_S = 120  # how long a service's shutdown() may take before it is killed anyway


@dataclass
class FederatedRun:
    state: dict
    history: list[dict] = field(default_factory=list)  # one ledger + metrics entry per round


@dataclass
class Federation:
    """`ctx.federation`: the engine bound to one run's seed, checkpoint folder and progress."""

    seed: int
    checkpoint_dir: Optional[Path] = None
    progress: Optional[Callable[..., Any]] = None

    @contextlib.contextmanager
    def session(self, pool: Any, program: Callable[[], Any], population: Population,
                services: Optional[Mapping[str, Service]] = None) -> Iterator["Session"]:
        """Device actors built by `program` (sized by `pool`, a PoolConfig) and the services,
        held for the `with` block and stopped however it ends."""
        handles = start_services(services or {})
        actors = None
        try:
            actors = DevicePool(program, pool.num_actors, pool.cpus_per_actor, pool.gpus_per_actor)
            yield Session(self, actors, population, handles)
        finally:
            if actors is not None:
                actors.shutdown()
            stop_services(handles, services or {})


def start_services(specs: Mapping[str, Service]) -> dict[str, Any]:
    import ray

    return {name: ray.remote(num_cpus=s.cpus, num_gpus=s.gpus, max_restarts=s.max_restarts)(
        s.cls).remote(*s.args) for name, s in specs.items()}


def stop_services(handles: Mapping[str, Any], specs: Mapping[str, Service]) -> None:
    """Services with a `shutdown()` method (those that run a Ray Train group) are asked to stop
    cleanly, all at once; then every actor is killed."""
    import ray

    stopping = {name: handle.shutdown.remote() for name, handle in handles.items()
                if hasattr(specs[name].cls, "shutdown")}
    for name, ref in stopping.items():
        try:
            ray.get(ref, timeout=SHUTDOWN_S)
        except Exception as err:  # noqa: BLE001 - a dead service must not hide the run's result
            log.warning("service %s did not shut down cleanly: %s", name, err)
    for handle in handles.values():
        ray.kill(handle)


@dataclass
class Session:
    fed: Federation
    pool: DevicePool
    population: Population
    services: dict[str, Any]

    def map(self, devices: Sequence[int], payload: dict, instructions: Any = None,
            reducer: Any = None, round_idx: int = 0) -> tuple[Any, list]:
        """One pass of `devices` over `payload` outside any round loop: (updates, reports)."""
        return self.pool.round(list(devices), payload, round_idx, self.fed.seed,
                               reducer or Collect(), instructions, self.services)

    def online(self, round_idx: int) -> tuple[np.ndarray, np.random.Generator]:
        """Who is online this round, and the generator the strategy draws participants from."""
        rng = derive_rng(self.fed.seed, round_idx, SELECT_STREAM)
        return self.population.available(rng), rng

    def run(self, name: str, strategy: Any, state: dict, rounds: int, *, key: tuple = (),
            latency: Callable[[int, list, Population], float] = slowest_device,
            on_round: Callable[[int, dict], None] = lambda r, m: None) -> FederatedRun:
        """Up to `rounds` rounds of `strategy` from `state`, resumed from the checkpoints of the
        run called `name` with the same seed and `key` (the configs its result depends on)."""
        ckpt = Checkpointer(self.fed.checkpoint_dir / f"{name}-{digest(self.fed.seed, *key)}") \
            if self.fed.checkpoint_dir else None
        saved = ckpt.latest() if ckpt else None
        start, history = (saved["round"] + 1, saved["history"]) if saved else (0, [])
        state = saved["state"] if saved else state
        stopped = bool(history) and strategy.finished(start - 1, history)
        with self._bar(rounds, name, done=start) as bar:
            for r in range(start, 0 if stopped else rounds):
                state, entry = self._round(r, strategy, state, history, latency)
                history.append(entry)
                # report, then checkpoint: a kill in between re-runs (and re-reports,
                # identically) a round on resume; the other order would lose its metrics for good
                on_round(r, entry)
                if ckpt:
                    ckpt.save(r, {"round": r, "state": state, "history": history})
                bar.advance()
                if strategy.finished(r, history):
                    break
        return FederatedRun(state, history)

    def _round(self, r: int, strategy: Any, state: dict, history: list[dict],
               latency: Callable) -> tuple[dict, dict]:
        online, rng = self.online(r)
        plan = strategy.configure(r, state, online, rng, self.services)
        payload = state if plan.payload is None else plan.payload
        aggregate, reports = self.pool.round(list(plan.devices), payload, r, self.fed.seed,
                                             plan.reducer, plan.instructions, self.services)
        state = strategy.aggregate(r, state, aggregate, reports, self.services)
        entry = {"round": r, **round_summary(reports, self.population, r, latency),
                 **_mean_device_metrics(reports)}
        last = history[-1] if history else {"cum_bytes": 0.0, "cum_sim_seconds": 0.0}
        entry["cum_bytes"] = last["cum_bytes"] + entry["bytes_up"] + entry["bytes_down"] \
            + entry["bytes_side"]
        entry["cum_sim_seconds"] = last["cum_sim_seconds"] + entry["sim_seconds"]
        entry.update(strategy.evaluate(r, state))
        return state, {k: float(v) for k, v in entry.items()}  # plain floats: weights_only loads

    def _bar(self, total: int, name: str, done: int):
        if self.fed.progress is None:
            return contextlib.nullcontext(_NoBar())
        bar_cm = self.fed.progress(total, f"{name} rounds")
        return _Advanced(bar_cm, done)


class _NoBar:
    def advance(self, n: int = 1) -> None:
        pass


class _Advanced(contextlib.AbstractContextManager):
    """A progress bar that starts with the rounds a resumed run already has."""

    def __init__(self, cm, done: int):
        self.cm, self.done = cm, done

    def __enter__(self):
        bar = self.cm.__enter__()
        for _ in range(self.done):
            bar.advance()
        return bar

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)


def _mean_device_metrics(reports: list) -> dict[str, float]:
    keys = sorted({k for r in reports for k in r.metrics})
    return {f"device_{k}": float(np.mean([r.metrics[k] for r in reports if k in r.metrics]))
            for k in keys}
