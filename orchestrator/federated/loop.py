"""The round loop: select devices, run them on the pool, aggregate, account, checkpoint.

Every round's randomness comes from `derive_rng(seed, round, ...)` (never from carried state), and
the state after each round is checkpointed atomically, so a run killed at any point and resumed
from its last checkpoint reaches exactly the final state of an uninterrupted run.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from orchestrator.federated.comm import round_summary
from orchestrator.federated.pool import DevicePool, WeightedSum
from orchestrator.federated.population import Population
from orchestrator.workload import derive_rng


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
        import torch

        path = self.dir / f"round_{round_idx:04d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)  # a kill mid-write never leaves a torn checkpoint
        for old in self._by_round()[:-self.keep]:
            old.unlink()


@dataclass
class RoundLoop:
    """One federated training run of `rounds` rounds over `population` on `pool`."""

    pool: DevicePool
    population: Population
    rounds: int
    seed: int
    participation: float = 1.0
    reducer: WeightedSum = field(default_factory=WeightedSum)
    apply: Callable[[dict, dict], dict] = lambda state, aggregate: aggregate  # FedAvg
    evaluate: Callable[[dict], dict] = lambda state: {}
    checkpointer: Optional[Checkpointer] = None

    def select(self, round_idx: int) -> np.ndarray:
        """This round's participants: online devices, then a `participation` share of them."""
        rng = derive_rng(self.seed, round_idx, 7)
        online = self.population.available(rng)
        k = math.ceil(self.participation * len(online))
        return np.sort(rng.choice(online, size=k, replace=False)) if k else online

    def run(self, state: dict, on_round: Callable[[int, dict], None] = lambda r, m: None,
            progress: Any = None) -> tuple[dict, list[dict]]:
        """Train to the last round, resuming from the latest checkpoint if there is one."""
        start, history = 0, []
        saved = self.checkpointer.latest() if self.checkpointer else None
        if saved is not None:
            start, state, history = saved["round"] + 1, saved["state"], saved["history"]
        cumulative = {k: history[-1][k] for k in ("cum_bytes", "cum_sim_seconds")} if history \
            else {"cum_bytes": 0.0, "cum_sim_seconds": 0.0}
        for _ in range(start):
            progress and progress.advance()
        for r in range(start, self.rounds):
            devices = self.select(r)
            aggregate, reports = self.pool.round(devices.tolist(), state, r, self.seed,
                                                 self.reducer)
            if aggregate is not None:
                state = self.apply(state, aggregate)
            metrics = {"round": r, **round_summary(reports, self.population),
                       **_mean_device_metrics(reports)}
            cumulative["cum_bytes"] += metrics["bytes_up"] + metrics["bytes_down"]
            cumulative["cum_sim_seconds"] += metrics["sim_seconds"]
            metrics.update(cumulative, **self.evaluate(state))
            metrics = {k: float(v) for k, v in metrics.items()}  # plain floats: weights_only loads
            history.append(metrics)
            # report, then checkpoint: a kill in between re-runs (and re-reports, identically) a
            # round on resume; the other order would lose that round's metrics for good
            on_round(r, metrics)
            if self.checkpointer:
                self.checkpointer.save(r, {"round": r, "state": state, "history": history})
            progress and progress.advance()
        return state, history


def _mean_device_metrics(reports: list) -> dict[str, float]:
    keys = sorted({k for r in reports for k in r.metrics})
    return {f"device_{k}": float(np.mean([r.metrics[k] for r in reports if k in r.metrics]))
            for k in keys}
