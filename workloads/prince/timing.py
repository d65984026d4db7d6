"""Wall-clock model of one SFL round and of the whole fine-tuning run, per tenant [OURS, SEEDS 2.3].

    busy_{n,m}   = S_m * (d_m / f_n + x * z_m / b_n)          device compute + smashed exchange
    tau_m(k)     = edge latency when k devices share tenant m's edge F_m (the congestion)
    round_m      = E[max_{n in N_m, joins} busy_{n,m}] + tau_m(k_m)
    time_m       = R_m(q) * round_m,  deadline met <=> time_m <= T_m

S_m samples per round, d_m / z_m device FLOPs / smashed bytes per sample, x = 2 by default
(activations up, their gradients down at the same rate). The straggler term is the exact
expectation of the slowest participant when device n joins independently with probability q_n
(Bernoulli, SEEDS 2.2); "worst" takes the slowest enrolled device instead. The edge term counts the
k_m *enrolled* devices (the edge reserves a slot for each), so the followers face a congestion game
in counts (Rosenthal) and devices and tenants see the same tau.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workloads.prince.market import Devices, Tenants

CONGESTION_MODELS = ("linear", "mm1", "none")
STRAGGLER_MODELS = ("expected", "worst")


@dataclass(frozen=True)
class TimingParams:
    congestion: str = "linear"    # tau(k): "linear" t0 k | "mm1" t0 k/(1 - min(k/C, max_load))
                                  # | "none" t0 (t0 = s_m S_m / F_m: one device's batch)
    edge_capacity: float = 50.0   # C: devices an edge serves before the mm1 queue saturates
    max_load: float = 0.95        # mm1 utilisation cap (keeps tau finite beyond C)
    exchange_factor: float = 2.0  # smashed bytes crossing the link per sample (up + down)
    straggler: str = "expected"   # "expected" max over Bernoulli participants | "worst" enrolled


def device_busy(tenants: Tenants, devices: Devices, timing: TimingParams) -> np.ndarray:
    """(N, M) seconds device n is busy in one round of tenant m (compute + smashed exchange)."""
    compute = tenants.device_flops[None, :] / devices.flops[:, None]
    link = timing.exchange_factor * tenants.smashed_bytes[None, :] / devices.uplink[:, None]
    return tenants.samples_per_round[None, :] * (compute + link)


def edge_latency(k: np.ndarray, tenants: Tenants, timing: TimingParams) -> np.ndarray:
    """tau_m(k): edge seconds per round with k enrolled devices; k is (..., M), int or float."""
    k = np.asarray(k, dtype=float)
    t0 = tenants.server_flops * tenants.samples_per_round / tenants.edge_flops  # one device's batch
    if timing.congestion == "linear":
        return t0 * k
    if timing.congestion == "mm1":
        load = np.minimum(k / timing.edge_capacity, timing.max_load)
        return t0 * k / (1.0 - load)
    if timing.congestion == "none":
        return t0 * (k > 0)
    raise ValueError(f"unknown congestion model {timing.congestion!r}")


def congestion_table(tenants: Tenants, timing: TimingParams, num_devices: int) -> np.ndarray:
    """(num_devices + 2, M): tau_m(k) for k = 0..N+1, so the game looks congestion up by index."""
    k = np.arange(num_devices + 2, dtype=float)[:, None] * np.ones(tenants.size)
    return edge_latency(k, tenants, timing)


def expected_straggler(busy: np.ndarray, q_nm: np.ndarray, worst: bool = False) -> np.ndarray:
    """(..., M) expected busy time of the slowest participant; 0 when nobody joins.

    With busy sorted high to low, E[max] = sum_i t_i q_i prod_{j<i} (1 - q_j) (independent joins).
    """
    if worst:
        return np.max(np.where(q_nm > 0, busy, 0.0), axis=-2)
    order = np.argsort(-busy, axis=0)                      # (N, M), same for every batch entry
    t = np.take_along_axis(busy, order, axis=0)
    q = np.take_along_axis(q_nm, np.broadcast_to(order, q_nm.shape), axis=-2)
    survive = np.cumprod(1.0 - q, axis=-2)
    before = np.concatenate([np.ones_like(survive[..., :1, :]), survive[..., :-1, :]], axis=-2)
    return np.sum(t * q * before, axis=-2)


def round_time(busy: np.ndarray, q_nm: np.ndarray, tenants: Tenants,
               timing: TimingParams) -> np.ndarray:
    """(..., M) seconds per round: straggler + congested edge compute (q_nm 0 = not enrolled)."""
    k = np.sum(q_nm > 0, axis=-2)
    straggler = expected_straggler(busy, q_nm, worst=timing.straggler == "worst")
    return straggler + edge_latency(k, tenants, timing)


def time_to_target(rounds: np.ndarray, per_round: np.ndarray) -> np.ndarray:
    """Wall-clock seconds to reach the target: rounds x round time (inf when nobody joined)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(rounds), rounds * per_round, np.inf)


def deadline_met(time_s: np.ndarray, tenants: Tenants) -> np.ndarray:
    return time_s <= tenants.deadline_s
