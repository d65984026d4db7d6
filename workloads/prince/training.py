"""SplitFed-V1 rounds of one tenant under one method's allocation: a strategy on the engine.

Bias-resilient aggregation (SEEDS 2.2, Luo et al. ICDCS'23): device n of the tenant joins round r
with probability q_n (independent Bernoulli draws); both sides aggregate
`w + sum_n 1_n p_n / q_n delta_n` with p_n the device's data share among the tenant's enrolled
devices, so E[update] is the full-participation update. `biased_aggregation` averages the
participants' deltas by p_n instead (FedAvg over whoever showed up: biased toward high q_n).

The engine (`ctx.federation`) runs the rounds, keeps the ledger (model deltas up and down, smashed
data and its gradients to the edge server as side bytes) and the clock, whose latency model here is
the game's: a round lasts as long as its slowest participant's compute + smashed-data exchange
(the game's `busy`) plus the edge latency of the tenant's k participants (congestion). A tenant
reaches its target at the first of two consecutive rounds (with participants) whose evaluation
meets it: one lucky evaluation of a small test set does not count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from orchestrator.federated.pool import WeightedSum
from orchestrator.federated.strategy import RoundPlan, Strategy
from orchestrator.workload import derive_rng


@dataclass(frozen=True)
class SflRound:
    """A participant's instructions: train on `tenant`'s split, upload its delta with `weight`."""

    tenant: str
    weight: float


@dataclass(frozen=True)
class Probe:
    """Measure G_n: the gradient norm at the broadcast model on one batch of `batch` samples."""

    tenant: str
    batch: int


def participation_weights(q: np.ndarray, data: np.ndarray, enrolled: np.ndarray,
                          participants: np.ndarray, unbiased: bool) -> dict[int, float]:
    """Aggregation weight per participant: p_n / q_n (unbiased) or p_n (plain FedAvg)."""
    p = data[enrolled] / data[enrolled].sum()
    share = dict(zip(enrolled.tolist(), p.tolist()))
    return {int(n): share[n] / q[n] if unbiased else share[n] for n in participants}


def reached(metric: str, value: float, target: float) -> bool:
    return value >= target if metric == "accuracy" else value <= target


def first_sustained_hit(history: list[dict], metric: str, target: float) -> int | None:
    """Index of the first of two consecutive rounds with participants that meet the target (one
    lucky evaluation of a small test set does not count); None if that never happened."""
    hit = [h["participants"] > 0 and reached(metric, h[metric], target) for h in history]
    return next((r - 1 for r in range(1, len(hit)) if hit[r - 1] and hit[r]), None)


def time_to_target(history: list[dict], metric: str, target: float) -> float:
    """Simulated seconds at `first_sustained_hit`; inf if that never happened."""
    r = first_sustained_hit(history, metric, target)
    return float("inf") if r is None else history[r]["cum_sim_seconds"]


class BiasResilient(Strategy):
    """One tenant's SFL rounds under a method's allocation `alloc`; state = {"device", "server"}
    (the trainable tensors of each side), the server side living in the tenant's edge server."""

    def __init__(self, tenant_cfg: Any, m: int, name: str, market: Any, alloc: Any,
                 unbiased: bool, seed: int, evaluate: Callable[[dict, dict], dict],
                 stop_at_target: bool = True):
        super().__init__()
        self.cfg, self.m, self.name, self.seed = tenant_cfg, m, name, seed
        self.enrolled = np.flatnonzero(alloc.choice == m)
        self.data, self.q, self.unbiased = market.devices.data[:, m], alloc.q, unbiased
        self.score, self.stop_at_target = evaluate, stop_at_target

    def configure(self, round_idx, state, online, rng, services) -> RoundPlan:
        import ray

        draw = derive_rng(self.seed, 20, self.m, round_idx).random(len(self.enrolled))
        participants = self.enrolled[draw < self.q[self.enrolled]]
        weights = self._weights(participants)
        ray.get(services[self.name].begin_round.remote(state["server"]))
        return RoundPlan(participants.tolist(),
                         {n: SflRound(self.name, w) for n, w in weights.items()},
                         WeightedSum(normalize=not self.unbiased), payload=state["device"])

    def _weights(self, participants: np.ndarray) -> dict[int, float]:
        return participation_weights(self.q, self.data, self.enrolled, participants,
                                     self.unbiased)

    def aggregate(self, round_idx, state, aggregate, reports, services) -> dict:
        import ray

        if aggregate is None:
            return state
        weights = self._weights(np.asarray([r.device for r in reports]))
        server = ray.get(services[self.name].aggregate.remote(weights, not self.unbiased))
        return {"device": {k: v + aggregate[k] for k, v in state["device"].items()},
                "server": server}

    def evaluate(self, round_idx, state) -> dict:
        return self.score(state["device"], state["server"])

    def finished(self, round_idx, history) -> bool:
        return self.stop_at_target and np.isfinite(
            time_to_target(history, self.cfg.target_metric, self.cfg.target))


def congestion_latency(game: Any, m: int) -> Callable[[int, list, Any], float]:
    """The clock of tenant m's rounds: slowest participant's busy time + the edge latency."""
    from workloads.prince.timing import edge_latency

    def latency(round_idx: int, reports: list, population: Any) -> float:
        participants = [r.device for r in reports]
        k = np.zeros(game.tenants.size)
        k[m] = len(participants)
        slowest = game.busy[participants, m].max() if participants else 0.0
        return float(slowest + edge_latency(k, game.tenants, game.params.timing)[m])
    return latency


def round_entry(h: dict) -> dict:
    """An engine round as the report reads it: the clock and the bytes so far, the scores."""
    return {"round": h["round"], "participants": h["participants"],
            "sim_seconds": h["cum_sim_seconds"], "comm_bytes": h["cum_bytes"],
            **{k: h[k] for k in ("loss", "accuracy") if k in h}}


def tenant_result(history: list[dict], tenant_cfg: Any) -> dict:
    """What the report needs: every round's entry, the time to target, the bytes."""
    return {"history": [round_entry(h) for h in history],
            "time_to_target": time_to_target(history, tenant_cfg.target_metric, tenant_cfg.target),
            "comm_bytes": history[-1]["cum_bytes"] if history else 0.0}
