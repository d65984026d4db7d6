"""The edge-inference market: users, their feasible (exit, partition) configurations and costs.

A user u of service w picks a configuration (exit e, partition p) with p <= exit_after[e] + 1 (SEEDS
3.3, Edgent/Neurosurgeon style). The device runs layers [0, p), sends the activation of layer p-1
(the raw input when p == 0), the edge runs layers [p, exit_after[e]] and the exit head. The value
p == exit_after[e] + 1 is the pure on-device configuration: the device runs everything including
the head, nothing is sent and no edge share is needed [OURS].

    t_u(e, p) = dev_flops/f_u + bytes*8/B_u + edge_flops/(phi*F_edge)          # latency model
    feasible  <=>  acc(e) >= A_u  and  t_u <= L_u with  phi = phi_min <= phi_max
    c_u = eip_base_cost + eip_price_per_gflop * edge_GFLOPs                     # EIP cost

AERIA's choice is the cheapest feasible configuration (tie: lower latency at phi_max), the share
allocated is the minimal phi_min meeting the deadline [OURS]. Edgent's choice (for the cost-plus
baseline) maximises accuracy (tie: lower latency at phi_max). Everything is vectorised over
users x configurations; the only Python loop is over the (few) services.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from workloads.aeria.config import EdgeConfig, UserConfig, ValueConfig
from workloads.aeria.profiles import DnnProfile

_MS_PER_FLOP_AT_1GFLOPS = 1e-6   # 1 FLOP at 1 GFLOP/s takes 1e-9 s = 1e-6 ms
_MS_PER_BIT_AT_1MBPS = 1e-3      # 1 bit at 1 Mbit/s takes 1e-6 s = 1e-3 ms


@dataclass(frozen=True)
class ConfigTable:
    """Every (exit, partition) configuration of one service, one entry per configuration."""

    exit: np.ndarray          # (K,) exit index e
    partition: np.ndarray     # (K,) partition point p (layers [0, p) on the device)
    device_flops: np.ndarray  # (K,)
    sent_bytes: np.ndarray    # (K,) uplink bytes (0 on device only)
    edge_flops: np.ndarray    # (K,) 0 means pure on-device
    accuracy: np.ndarray      # (K,) acc(e)


def configurations(profile: DnnProfile) -> ConfigTable:
    """Enumerate the configurations of one multi-exit DNN."""
    cum = np.concatenate(([0.0], np.cumsum(profile.layer_flops)))
    sent = np.concatenate(([profile.input_bytes], profile.layer_out_bytes))
    rows = []
    for e, after in enumerate(profile.exit_after):
        head, total = profile.exit_head_flops[e], cum[after + 1]
        for p in range(after + 2):
            on_device = p == after + 1
            rows.append((e, p, cum[p] + (head if on_device else 0.0),
                         0.0 if on_device else sent[p],
                         0.0 if on_device else total - cum[p] + head, profile.exit_accuracy[e]))
    cols = [np.asarray(c) for c in zip(*rows)]
    return ConfigTable(cols[0].astype(int), cols[1].astype(int),
                       *(c.astype(float) for c in cols[2:]))


@dataclass(frozen=True)
class Market:
    """One drawn market: per-user arrays (index = user)."""

    services: tuple[str, ...]   # service index -> DNN name
    service: np.ndarray         # (n,) int
    value: np.ndarray           # private value v_u
    bid: np.ndarray             # reported bid b_u (= value: truthful reports)
    accuracy_floor: np.ndarray  # A_u
    deadline_ms: np.ndarray     # L_u
    device_gflops: np.ndarray   # f_u
    bandwidth_mbps: np.ndarray  # B_u
    feasible: np.ndarray        # bool: some configuration meets A_u and L_u
    cost: np.ndarray            # EIP cost at AERIA's cheapest feasible config (inf if infeasible)
    exit: np.ndarray            # chosen exit (-1 if infeasible)
    partition: np.ndarray       # chosen partition point (-1 if infeasible)
    share: np.ndarray           # allocated edge share phi_min (0 on device, nan if infeasible)
    accuracy: np.ndarray        # acc at the chosen config (nan if infeasible)
    latency_ms: np.ndarray      # latency at the allocated share (nan if infeasible)
    edgent_cost: np.ndarray     # EIP cost at Edgent's max-accuracy config (inf if infeasible)
    edgent_accuracy: np.ndarray

    @property
    def size(self) -> int:
        return int(self.service.size)

    @property
    def net_value(self) -> np.ndarray:
        return self.value - self.cost

    def take(self, idx: np.ndarray) -> "Market":
        """The sub-market of users `idx` (same services)."""
        arrays = {f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)
                  if f.name != "services"}
        return dataclasses.replace(self, **arrays)

    def with_bids(self, bids: np.ndarray) -> "Market":
        return dataclasses.replace(self, bid=np.asarray(bids, dtype=float))


# --------------------------------------------------------------------------- drawing users
def draw_values(cfg: ValueConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    if cfg.distribution == "uniform":
        return rng.uniform(cfg.low, cfg.high, n)
    if cfg.distribution == "lognormal":
        return rng.lognormal(cfg.mu, cfg.sigma, n)
    if cfg.distribution == "exponential":
        return rng.exponential(cfg.scale, n)
    raise ValueError(f"unknown value distribution {cfg.distribution!r}")


def value_median(cfg: ValueConfig) -> float:
    """Median of the value distribution (a bid-independent posted price)."""
    return {"uniform": (cfg.low + cfg.high) / 2, "lognormal": float(np.exp(cfg.mu)),
            "exponential": cfg.scale * float(np.log(2.0))}[cfg.distribution]


def _spread(low: float, high: float, n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "loguniform":
        return np.exp(rng.uniform(np.log(low), np.log(high), n))
    return rng.uniform(low, high, n)


def generate_market(profiles: Sequence[DnnProfile], num_users: int, rng: np.random.Generator,
                    values: ValueConfig, users: UserConfig, edge: EdgeConfig,
                    service_weights: Optional[Sequence[float]] = None) -> Market:
    """Draw `num_users` users over `profiles` (the services) and price their configurations."""
    n, s = num_users, len(profiles)
    p = None if not service_weights else np.asarray(service_weights, float) / sum(service_weights)
    service = rng.choice(s, size=n, p=p)
    value = draw_values(values, n, rng)
    floor = rng.uniform(users.accuracy_floor_low, users.accuracy_floor_high, n)
    deadline = _spread(users.deadline_ms_low, users.deadline_ms_high, n, users.spread, rng)
    speed = _spread(users.device_gflops_low, users.device_gflops_high, n, users.spread, rng)
    bandwidth = _spread(users.bandwidth_mbps_low, users.bandwidth_mbps_high, n, users.spread, rng)
    chosen = choose_configurations([configurations(pr) for pr in profiles], service, floor,
                                   deadline, speed, bandwidth, edge)
    return Market(services=tuple(pr.name for pr in profiles), service=service, value=value,
                  bid=value.copy(), accuracy_floor=floor, deadline_ms=deadline,
                  device_gflops=speed, bandwidth_mbps=bandwidth, **chosen)


# --------------------------------------------------------------------------- configurations
def choose_configurations(tables: Sequence[ConfigTable], service: np.ndarray, floor: np.ndarray,
                          deadline: np.ndarray, speed: np.ndarray, bandwidth: np.ndarray,
                          edge: EdgeConfig) -> dict[str, np.ndarray]:
    """AERIA's and Edgent's configuration of every user: the Market fields after the user draws."""
    n = service.size
    out = {"feasible": np.zeros(n, bool), "cost": np.full(n, np.inf), "exit": np.full(n, -1),
           "partition": np.full(n, -1), "share": np.full(n, np.nan),
           "accuracy": np.full(n, np.nan), "latency_ms": np.full(n, np.nan),
           "edgent_cost": np.full(n, np.inf), "edgent_accuracy": np.full(n, np.nan)}
    for s, table in enumerate(tables):
        idx = np.flatnonzero(service == s)
        if idx.size:
            for key, val in _choose_for_service(table, floor[idx], deadline[idx], speed[idx],
                                                bandwidth[idx], edge).items():
                out[key][idx] = val
    return out


def _choose_for_service(t: ConfigTable, floor, deadline, speed, bandwidth,
                        edge: EdgeConfig) -> dict[str, np.ndarray]:
    """Feasibility, share and cost of each (user, config) of one service, then both choices."""
    fixed = (t.device_flops[None, :] * _MS_PER_FLOP_AT_1GFLOPS / speed[:, None]
             + t.sent_bytes[None, :] * 8 * _MS_PER_BIT_AT_1MBPS / bandwidth[:, None])
    slack = deadline[:, None] - fixed
    edge_ms_at_full = t.edge_flops[None, :] * _MS_PER_FLOP_AT_1GFLOPS / edge.speed_gflops
    on_device = t.edge_flops[None, :] == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(on_device, 0.0, np.where(slack > 0, edge_ms_at_full / slack, np.inf))
    ok = (t.accuracy[None, :] >= floor[:, None]) & np.where(on_device, slack >= 0,
                                                            share <= edge.phi_max)
    cost = edge.eip_base_cost + edge.eip_price_per_gflop * t.edge_flops / 1e9   # (K,)
    best_latency = fixed + edge_ms_at_full / edge.phi_max                       # tie-breaker
    cheap = _lexargmin(np.where(ok, cost[None, :], np.inf), best_latency)
    accurate = _lexargmin(np.where(ok, -t.accuracy[None, :], np.inf), best_latency)
    rows, feasible = np.arange(ok.shape[0]), ok.any(axis=1)
    phi = share[rows, cheap]
    with np.errstate(divide="ignore", invalid="ignore"):
        latency = fixed[rows, cheap] + np.where(phi > 0, edge_ms_at_full[0, cheap] / phi, 0.0)
    pick = lambda a: np.where(feasible, a, np.nan)  # noqa: E731
    return {"feasible": feasible, "cost": np.where(feasible, cost[cheap], np.inf),
            "exit": np.where(feasible, t.exit[cheap], -1),
            "partition": np.where(feasible, t.partition[cheap], -1),
            "share": pick(phi), "accuracy": pick(t.accuracy[cheap]), "latency_ms": pick(latency),
            "edgent_cost": np.where(feasible, cost[accurate], np.inf),
            "edgent_accuracy": pick(t.accuracy[accurate])}


def _lexargmin(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Row-wise argmin of `primary`, ties broken by the smaller `secondary`."""
    best = primary.min(axis=1, keepdims=True)
    return np.argmin(np.where(primary == best, secondary, np.inf), axis=1)
