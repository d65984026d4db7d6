"""SplitFed-V1 rounds of one tenant under one method's allocation, on the engine's pool.

Bias-resilient aggregation (SEEDS 2.2, Luo et al. ICDCS'23): device n of the tenant joins round r
with probability q_n (independent Bernoulli draws); both sides aggregate
`w + sum_n 1_n p_n / q_n delta_n` with p_n the device's data share among the tenant's enrolled
devices, so E[update] is the full-participation update. `biased_aggregation` averages the
participants' deltas by p_n instead (FedAvg over whoever showed up: biased toward high q_n).

The simulated clock: a round lasts as long as its slowest participant's compute + smashed-data
exchange (the game's `busy`) plus the edge latency of the tenant's k participants (congestion).
A tenant reaches its target at the first of two consecutive rounds (with participants) whose
evaluation meets it: one lucky evaluation of a small test set does not count.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from orchestrator.federated.pool import WeightedSum
from orchestrator.workload import derive_rng


@dataclass
class TenantRun:
    """One tenant's training under one method: what the report needs."""

    history: list[dict] = field(default_factory=list)  # one dict per round
    time_to_target: float = float("inf")              # simulated seconds; inf: never reached
    comm_bytes: float = 0.0


def participation_weights(q: np.ndarray, data: np.ndarray, enrolled: np.ndarray,
                          participants: np.ndarray, unbiased: bool) -> dict[int, float]:
    """Aggregation weight per participant: p_n / q_n (unbiased) or p_n (plain FedAvg)."""
    p = data[enrolled] / data[enrolled].sum()
    share = dict(zip(enrolled.tolist(), p.tolist()))
    return {int(n): share[n] / q[n] if unbiased else share[n] for n in participants}


def reached(metric: str, value: float, target: float) -> bool:
    return value >= target if metric == "accuracy" else value <= target


def train_tenant(tenant_cfg: Any, m: int, name: str, market: Any, game: Any, alloc: Any,
                 unbiased: bool, pool: Any, server: Any, initial: tuple[dict, dict],
                 evaluate: Callable[[dict, dict], dict], rounds: int, seed: int,
                 stop_at_target: bool = True,
                 on_round: Callable[[int, dict], None] = lambda r, h: None) -> TenantRun:
    """Up to `rounds` SFL rounds of tenant `name`; stops once its target is reached."""
    import ray

    from workloads.prince.timing import TimingParams, edge_latency

    enrolled = np.flatnonzero(alloc.choice == m)
    data, q = market.devices.data[:, m], alloc.q
    device_state, server_state = initial
    run, clock, hits, first_hit = TenantRun(), 0.0, 0, 0.0
    timing: TimingParams = game.params.timing
    for r in range(rounds if len(enrolled) else 0):
        draw = derive_rng(seed, 20, m, r).random(len(enrolled))
        participants = enrolled[draw < q[enrolled]]
        weights = participation_weights(q, data, enrolled, participants, unbiased)
        ray.get(server.begin_round.remote(server_state))
        state = {"tenant": name, "mode": "train", "device": device_state, "server": server,
                 "weights": weights}
        aggregate, reports = pool.round(participants.tolist(), state, r, seed,
                                        WeightedSum(normalize=not unbiased))
        if aggregate is not None:
            device_state = {k: v + aggregate[k] for k, v in device_state.items()}
            server_state = ray.get(server.aggregate.remote(weights, not unbiased))
        k = np.zeros(game.tenants.size)
        k[m] = len(participants)
        slowest = game.busy[participants, m].max() if len(participants) else 0.0
        clock += float(slowest + edge_latency(k, game.tenants, timing)[m])
        model_bytes = sum(rep.bytes_up + rep.bytes_down for rep in reports)
        smashed = sum(rep.metrics.get("smashed_bytes", 0.0) for rep in reports)
        run.comm_bytes += float(model_bytes + smashed)
        scores = evaluate(device_state, server_state)
        entry = {"round": r, "participants": len(participants), "sim_seconds": clock,
                 "comm_bytes": run.comm_bytes, **scores}
        run.history.append(entry)
        on_round(r, entry)
        hits = hits + 1 if reached(tenant_cfg.target_metric, scores[tenant_cfg.target_metric],
                                   tenant_cfg.target) and len(participants) else 0
        if hits == 1:
            first_hit = clock
        if hits == 2:  # held for two rounds in a row: not a lucky evaluation
            run.time_to_target = min(run.time_to_target, first_hit)
            if stop_at_target:
                break
    return run
