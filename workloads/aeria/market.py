"""The edge-inference market: users, their feasible (exit, partition) configurations and costs.

A user u of service w picks a configuration (exit e, partition p) with p <= exit_after[e] + 1 (SEEDS
3.3, Edgent/Neurosurgeon style). The device runs layers [0, p), sends the activation of layer p-1
(the raw input when p == 0), the edge runs layers [p, exit_after[e]] and the exit head. The value
p == exit_after[e] + 1 is the pure on-device configuration: the device runs everything including
the head, nothing is sent and no edge share is needed [OURS].

    t_u(e, p) = dev_flops/f_u + bytes*8/B_u + edge_flops/(phi*F_edge)          # latency model
    feasible  <=>  acc(e) >= A_u  and  t_u <= L_u with  phi = phi_min <= phi_max
                   and the uplink load lambda <= phi_max
    c_u = eip_base_cost + eip_price_per_gflop * edge_GFLOPs                     # EIP cost

Capacity [OURS]: each service provider runs one edge server of `edge.speed_gflops` behind a link
of `edge.link_mbps`. A served user holds its compute share phi_min for its session and streams one
request per deadline period, so it loads the link with lambda = 8*bytes/L_u / link_mbps. Its
*size* is its dominant share max(phi_min, lambda) (as in Dominant Resource Fairness): a set of
users whose sizes sum to at most 1 fits both resources. `Items` holds every (user, configuration)
pair of one service: cost, size, accuracy and latency; a mechanism picks one item per user.

The market's own fields describe the configuration at capacity price 0: the cheapest feasible one
(tie: smaller size, then lower latency), the allocated share phi_min. Edgent's choice
(`most_accurate`, for the cost-plus baseline) maximises accuracy (tie: smaller size, then lower
cost). Everything is vectorised over users x configurations; the only Python loop is over the
(few) services.
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


_TABLES: dict[int, tuple[DnnProfile, ConfigTable]] = {}


def configurations(profile: DnnProfile) -> ConfigTable:
    """Enumerate the configurations of one multi-exit DNN (once per profile object)."""
    if id(profile) in _TABLES and _TABLES[id(profile)][0] is profile:
        return _TABLES[id(profile)][1]
    table = _enumerate(profile)
    _TABLES[id(profile)] = (profile, table)
    return table


def _enumerate(profile: DnnProfile) -> ConfigTable:
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
class Items:
    """Every (user, configuration) pair of one service's users: what serving it takes and costs."""

    cost: np.ndarray      # (K,) EIP charge of each configuration
    size: np.ndarray      # (n, K) dominant share max(phi_min, lambda); inf where infeasible
    share: np.ndarray     # (n, K) compute share phi_min (0 on device)
    accuracy: np.ndarray  # (K,) acc(e)
    latency: np.ndarray   # (n, K) latency at phi_min (ms)

    def take(self, rows: np.ndarray) -> "Items":
        return Items(self.cost, self.size[rows], self.share[rows], self.accuracy,
                     self.latency[rows])

    def __post_init__(self):
        finite = np.isfinite(self.size)
        object.__setattr__(self, "_base", np.where(finite, self.cost[None, :], np.inf))
        object.__setattr__(self, "_finite_size", np.where(finite, self.size, 0.0))
        object.__setattr__(self, "_chosen", {})   # scalar mu -> cheapest items (reused)

    def cheapest(self, mu: float | np.ndarray = 0.0) -> np.ndarray:
        """Each user's item minimising cost + mu * size (mu: one capacity price, or one per
        user); ties go to the smaller size, then the lower latency. A higher mu never picks a
        larger item (add the two optimality inequalities), which keeps capacity prices
        monotone. Users with no feasible item get index 0 (their size there is inf)."""
        mu = np.asarray(mu, float)
        if mu.ndim == 0 and float(mu) in self._chosen:
            return self._chosen[float(mu)]
        price = self._base + (mu[:, None] if mu.ndim else mu) * self._finite_size
        candidates = price == price.min(axis=1, keepdims=True)
        k = np.argmax(candidates, axis=1)
        tied = np.flatnonzero(candidates.sum(axis=1) > 1)    # on-device items tie often
        if tied.size:
            k[tied] = _lexargmin(price[tied], self.size[tied], self.latency[tied])
        if mu.ndim == 0:
            self._chosen[float(mu)] = k
        return k

    def pick(self, k: np.ndarray) -> dict[str, np.ndarray]:
        """The cost, size, share, accuracy and latency of item k[i] of each user i."""
        rows = np.arange(k.size)
        return {"cost": self.cost[k], "size": self.size[rows, k], "share": self.share[rows, k],
                "accuracy": self.accuracy[k], "latency": self.latency[rows, k]}


@dataclass(frozen=True)
class Market:
    """One drawn market: per-user arrays (index = user) and the services' configuration tables."""

    services: tuple[str, ...]   # service index -> DNN name
    tables: tuple               # service index -> ConfigTable
    edge: EdgeConfig
    service: np.ndarray         # (n,) int
    value: np.ndarray           # private value v_u
    bid: np.ndarray             # reported bid b_u (= value: truthful reports)
    accuracy_floor: np.ndarray  # reported A_u
    deadline_ms: np.ndarray     # reported L_u
    device_gflops: np.ndarray   # f_u
    bandwidth_mbps: np.ndarray  # B_u
    feasible: np.ndarray        # bool: some configuration meets A_u and L_u within the caps
    cost: np.ndarray            # EIP cost at the cheapest feasible config (inf if infeasible)
    size: np.ndarray            # its dominant share (inf if infeasible)
    exit: np.ndarray            # its exit (-1 if infeasible)
    partition: np.ndarray       # its partition point (-1 if infeasible)
    share: np.ndarray           # its compute share phi_min (0 on device, nan if infeasible)
    accuracy: np.ndarray        # its accuracy (nan if infeasible)
    latency_ms: np.ndarray      # its latency at phi_min (nan if infeasible)
    # Items per (service, users): mechanisms and sweep settings on one market share them
    _items: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    _NOT_PER_USER = ("services", "tables", "edge", "_items")

    @property
    def num_users(self) -> int:
        return int(self.service.size)

    @property
    def net_value(self) -> np.ndarray:
        return self.value - self.cost

    def take(self, idx: np.ndarray) -> "Market":
        """The sub-market of users `idx` (same services)."""
        arrays = {f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)
                  if f.name not in self._NOT_PER_USER}
        return dataclasses.replace(self, **arrays, _items={})

    def with_bids(self, bids: np.ndarray) -> "Market":
        return dataclasses.replace(self, bid=np.asarray(bids, dtype=float), _items={})

    def reported(self, user: int, **reports: float) -> "Market":
        """The market after `user` reports another bid, accuracy_floor or deadline_ms (its true
        value is unchanged); the configuration fields are recomputed from the reports."""
        fields = {}
        for key, value in reports.items():
            arr = getattr(self, key).copy()
            arr[user] = value
            fields[key] = arr
        cache: dict = {}
        m = dataclasses.replace(self, **fields, _items=cache)
        return dataclasses.replace(m, **choose_configurations(
            m.tables, m.service, m.accuracy_floor, m.deadline_ms, m.device_gflops,
            m.bandwidth_mbps, m.edge, cache))

    def items(self, s: int, users: np.ndarray) -> Items:
        """The items of `users` (all of service s) from their reported types (computed once)."""
        key = (s, users.tobytes())
        if key not in self._items and ("all", s) in self._items:   # drawn with the market
            everyone, items = self._items["all", s]
            self._items[key] = items.take(np.searchsorted(everyone, users))
        if key not in self._items:
            self._items[key] = service_items(
                self.tables[s], self.accuracy_floor[users], self.deadline_ms[users],
                self.device_gflops[users], self.bandwidth_mbps[users], self.edge)
        return self._items[key]


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
    tables = tuple(configurations(pr) for pr in profiles)
    cache: dict = {}
    chosen = choose_configurations(tables, service, floor, deadline, speed, bandwidth, edge, cache)
    return Market(services=tuple(pr.name for pr in profiles), tables=tables, edge=edge,
                  service=service, value=value, bid=value.copy(), accuracy_floor=floor,
                  deadline_ms=deadline, device_gflops=speed, bandwidth_mbps=bandwidth, **chosen,
                  _items=cache)


# --------------------------------------------------------------------------- configurations
def service_items(t: ConfigTable, floor, deadline, speed, bandwidth, edge: EdgeConfig) -> Items:
    """Feasibility, minimal share, link load, size and latency of each (user, config)."""
    fixed = (t.device_flops[None, :] * _MS_PER_FLOP_AT_1GFLOPS / speed[:, None]
             + t.sent_bytes[None, :] * 8 * _MS_PER_BIT_AT_1MBPS / bandwidth[:, None])
    slack = deadline[:, None] - fixed
    edge_ms_at_full = t.edge_flops[None, :] * _MS_PER_FLOP_AT_1GFLOPS / edge.speed_gflops
    on_device = t.edge_flops[None, :] == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(on_device, 0.0, np.where(slack > 0, edge_ms_at_full / slack, np.inf))
        link = t.sent_bytes[None, :] * 8 * _MS_PER_BIT_AT_1MBPS / edge.link_mbps \
            / deadline[:, None]
        latency = fixed + np.where(on_device, 0.0, edge_ms_at_full / share)
    ok = (t.accuracy[None, :] >= floor[:, None]) & np.where(
        on_device, slack >= 0, (share <= edge.phi_max) & (link <= edge.phi_max))
    size = np.where(ok, np.maximum(share, link), np.inf)
    cost = edge.eip_base_cost + edge.eip_price_per_gflop * t.edge_flops / 1e9
    return Items(cost=cost, size=size, share=np.where(ok, share, np.nan), accuracy=t.accuracy,
                 latency=np.where(ok, latency, np.nan))


def choose_configurations(tables: Sequence[ConfigTable], service: np.ndarray, floor: np.ndarray,
                          deadline: np.ndarray, speed: np.ndarray, bandwidth: np.ndarray,
                          edge: EdgeConfig, keep: Optional[dict] = None
                          ) -> dict[str, np.ndarray]:
    """The cheapest configuration of every user: the Market fields after the draws
    (`keep`, a Market's item cache, receives each service's items for reuse)."""
    n = service.size
    out = {"feasible": np.zeros(n, bool), "cost": np.full(n, np.inf), "size": np.full(n, np.inf),
           "exit": np.full(n, -1), "partition": np.full(n, -1), "share": np.full(n, np.nan),
           "accuracy": np.full(n, np.nan), "latency_ms": np.full(n, np.nan)}
    for s, table in enumerate(tables):
        idx = np.flatnonzero(service == s)
        if idx.size:
            items = service_items(table, floor[idx], deadline[idx], speed[idx], bandwidth[idx],
                                  edge)
            if keep is not None:
                keep["all", s] = (idx, items)
            for key, val in _choose_for_service(table, items).items():
                out[key][idx] = val
    return out


def _choose_for_service(t: ConfigTable, items: Items) -> dict[str, np.ndarray]:
    feasible = np.isfinite(items.size).any(axis=1)
    cheap = items.cheapest(0.0)
    pick = lambda a: np.where(feasible, a, np.nan)  # noqa: E731
    chosen = items.pick(cheap)
    return {"feasible": feasible, "cost": np.where(feasible, chosen["cost"], np.inf),
            "size": np.where(feasible, chosen["size"], np.inf),
            "exit": np.where(feasible, t.exit[cheap], -1),
            "partition": np.where(feasible, t.partition[cheap], -1),
            "share": pick(chosen["share"]), "accuracy": pick(chosen["accuracy"]),
            "latency_ms": pick(chosen["latency"])}


def most_accurate(items: Items) -> np.ndarray:
    """Edgent's item: the most accurate feasible one, tie: smaller size, then lower cost."""
    accuracy = np.where(np.isfinite(items.size), -items.accuracy[None, :], np.inf)
    return _lexargmin(accuracy, items.size, np.broadcast_to(items.cost, items.size.shape))


def _lexargmin(primary: np.ndarray, *tiebreaks: np.ndarray) -> np.ndarray:
    """Row-wise argmin of `primary`, ties broken by each of `tiebreaks` in turn (nan = last)."""
    candidates = primary == primary.min(axis=1, keepdims=True)
    for key in tiebreaks:
        key = np.where(candidates & ~np.isnan(key), key, np.inf)
        candidates &= key == key.min(axis=1, keepdims=True)
    return np.argmax(candidates, axis=1)
