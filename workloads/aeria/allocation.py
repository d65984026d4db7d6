"""The market with finite edge capacity: who is served, with which configuration, at what price.

Each service provider (ASP) has one edge server; a user's *size* is its dominant share of it
(market.py) and the sizes of the served users of a service must sum to at most its `capacity`
(1.0 = the whole server; less in `arrivals.py` while earlier jobs still run).

AERIA [OURS reconstruction of "joint partition, pricing and allocation"] posts every user a menu
that none of its own reports can move, then lets it take its best item:

1. Capacity price. Demand D(mu) is the total size of the users whose best item at capacity price
   mu (the one minimising cost + mu * size, `Items.cheapest`) still leaves a net value of at least
   the reserve markup. User i faces mu_i = the smallest point of a random geometric grid
   {0} U {base^(z+U)} with D_{-i}(mu) <= capacity - size_cap, where D_{-i} leaves i out and
   size_cap (= edge.phi_max) bounds any one user's size.
2. Markup. At its mu_i, user i's net value is x_i = b_i - cost - mu_i * size of its best item;
   its markup m_i is that of CostShare_{R_i} with R_i = r_c(F^(2)(x_{-i})) (mechanisms.aeria).
3. User i is served iff x_i >= m_i, with its best item at mu_i, and pays cost + mu_i*size + m_i.

Truthful in all three reports (bid, accuracy floor, deadline) for a fixed draw of the U's: mu_i
and m_i do not depend on i's reports, so i faces fixed prices per item; a stricter floor or
deadline only removes items or enlarges their shares (never cheaper), a laxer one either leaves
i's best item unchanged or gives it an item that misses its true floor or deadline (worth 0).

Within capacity, always: let j be the served user with the lowest mu_j. Every other served user
buys at its own mu >= mu_j, so it would buy at mu_j too, with a size at least as large (a
higher capacity price never picks a larger item); hence the others' sizes sum to at most
D_{-j}(mu_j) <= capacity - size_cap and j's own size is at most size_cap.

Envy-free whenever every user of a service faces the same (mu, m) (the consensus; it fails
only when one user's presence moves a grid point): then all face one menu and each takes its best
item. When capacity does not bind, mu = 0 for all and AERIA is the uncapacitated `aeria`.

Baselines see the same capacity: their configuration is the cheapest (cost_plus: Edgent's most
accurate), and a truthful greedy filter keeps the longest prefix of users by net bid that fits;
each winner pays at least its critical net bid for that prefix (`greedy_thresholds`). With equal
sizes this is the (k+1)-price auction, i.e. VCG for k identical units, which `vcg_capacity` is.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from workloads.aeria.market import Items, Market, most_accurate
from workloads.aeria.mechanisms import (MechanismParams, Outcome, consensus_round,
                                        cost_share_price, leave_one_out_f2,
                                        optimal_single_price, service_mechanism)

# AERIA's capacity prices live on {0} U {base^(z+U)}, in currency per whole server: from 1e-3 to
# 1e9, far beyond any market here; a price above the grid serves nobody with an edge share.
_GRID_LOW, _GRID_HIGH = 1e-3, 1e9


@dataclass(frozen=True)
class Allocation:
    """A market-level outcome: per user, whether and how it is served and what it pays."""

    served: np.ndarray          # bool
    payments: np.ndarray        # what each pays the ASP (0 when not served)
    cost: np.ndarray            # EIP charge of the user's item (what the ASP pays the EIP)
    size: np.ndarray            # dominant share of the user's item
    accuracy: np.ndarray        # of the user's item
    latency: np.ndarray         # of the user's item at its allocated share (ms)
    capacity_price: np.ndarray  # mu the user faced (0 for mechanisms without one)

    @property
    def charge(self) -> np.ndarray:
        """cost + mu * size: the part of the price that is not markup."""
        return self.cost + self.capacity_price * np.nan_to_num(self.size, posinf=0.0)

    @classmethod
    def empty(cls, n: int) -> "Allocation":
        return cls(np.zeros(n, bool), np.zeros(n), np.full(n, np.inf), np.full(n, np.inf),
                   np.full(n, np.nan), np.full(n, np.nan), np.zeros(n))


# --------------------------------------------------------------------------- greedy filter
def greedy_thresholds(net: np.ndarray, size: np.ndarray, capacity: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(in_prefix, threshold): the longest prefix of users by net bid (high first, stable) whose
    sizes fit `capacity`, and each user's critical net bid for it.

    User i is in the prefix iff fewer than m_i other users outbid it, where m_i is the most
    others that fit together with i; so the threshold is the net bid of the (m_i+1)-th other
    (-inf when all others fit, +inf when i alone does not fit). For i inside the overall prefix
    of length P that is the (P+1)-th user; for i outside it, the (Q_i+1)-th, Q_i = how many of
    the top users fit in capacity - size_i. Truthful: the threshold does not depend on i's bid.
    """
    net, size = np.asarray(net, float), np.asarray(size, float)
    n = net.size
    order = np.argsort(-net, kind="stable")
    xs, cum = net[order], np.cumsum(size[order])
    P = int(np.searchsorted(cum, capacity, side="right"))
    pos = np.empty(n, int)
    pos[order] = np.arange(n)
    Q = np.searchsorted(cum, capacity - size, side="right")
    beat = np.where(pos < P, P, Q)                        # index (sorted) of the user to beat
    padded = np.concatenate((xs, [-np.inf]))
    threshold = np.where(size > capacity, np.inf, padded[np.minimum(beat, n)])
    return pos < P, threshold


def filtered(outcome: Outcome, net: np.ndarray, size: np.ndarray, cost: np.ndarray,
             capacity: float) -> tuple[np.ndarray, np.ndarray]:
    """A mechanism's outcome cut to the greedy prefix; winners pay at least cost + threshold."""
    keep, threshold = greedy_thresholds(net, size, capacity)
    served = outcome.served & keep
    pay = np.where(served, np.maximum(outcome.payments, cost + np.maximum(threshold, 0.0)), 0.0)
    return served, pay


# --------------------------------------------------------------------------- AERIA
def capacity_grid(base: float, u: float) -> np.ndarray:
    """{0} U {base^(z+u)} between _GRID_LOW and _GRID_HIGH, ascending."""
    z = np.arange(np.floor(np.log(_GRID_LOW) / np.log(base)) - 1,
                  np.ceil(np.log(_GRID_HIGH) / np.log(base)) + 1)
    return np.concatenate(([0.0], np.power(base, z + u)))


def _demand(bids: np.ndarray, items: Items, mu: float, reserve: float):
    """(total size, each user's size if it buys else 0, best items) at capacity price mu."""
    k = items.cheapest(mu)
    got = items.pick(k)
    with np.errstate(invalid="ignore"):
        net = bids - got["cost"] - mu * got["size"]
    own = np.where(np.isfinite(got["size"]) & (net >= reserve), got["size"], 0.0)
    return float(own.sum()), own, k


def capacity_prices(bids: np.ndarray, items: Items, capacity: float, params: MechanismParams,
                    u: float) -> np.ndarray:
    """mu_i for every user: the smallest grid price with D_{-i}(mu) <= capacity - size_cap
    (+inf when there is no room for even one user of the largest size)."""
    n, room = bids.size, capacity - params.size_cap
    if room < 0:
        return np.full(n, np.inf)
    grid = capacity_grid(params.capacity_grid_base, u)
    memo: dict[int, tuple] = {}

    def demand(i: int) -> tuple:
        if i not in memo:
            memo[i] = _demand(bids, items, grid[i], params.reserve_price)
        return memo[i]

    if demand(0)[0] <= room:          # capacity does not bind: no capacity price for anyone
        return np.zeros(n)
    hi = _first_index(lambda i: demand(i)[0] <= room, len(grid))      # everyone's price <= this
    lo = _first_index(lambda i: demand(i)[0] <= capacity, hi + 1)     # and >= this (own <= cap)
    mu = np.full(n, grid[hi] if hi < len(grid) else np.inf)
    undecided = np.ones(n, bool)
    for i in range(lo, min(hi, len(grid) - 1) + 1):
        d, own, _ = demand(i)
        fits = undecided & (d - own <= room)
        mu[fits], undecided = grid[i], undecided & ~fits
    return mu


def _first_index(ok: Callable[[int], bool], stop: int) -> int:
    """The first index in [0, stop) that is ok (ok is monotone: false, then true), or stop."""
    lo, hi = 0, stop
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def aeria_with_capacity(bids: np.ndarray, items: Items, capacity: float,
                        params: MechanismParams, rng: np.random.Generator) -> Allocation:
    """AERIA on one service's feasible users (module docstring: steps 1-3)."""
    n = bids.size
    u_estimate, u_grid = rng.uniform(), rng.uniform()
    mu = capacity_prices(bids, items, capacity, params, u_grid)
    served, pay, k = np.zeros(n, bool), np.zeros(n), np.zeros(n, int)
    for g in np.unique(mu[np.isfinite(mu)]):          # one or two prices, not a loop over users
        best = items.cheapest(g)
        got = items.pick(best)
        x = bids - got["cost"] - g * got["size"]
        R = consensus_round(leave_one_out_f2(x), params.consensus_base, u_estimate)
        xs = np.sort(x)[::-1]
        faces = mu == g
        markup = np.empty(n)
        for r in np.unique(R[faces]):
            markup[faces & (R == r)] = cost_share_price(xs, r, params.reserve_price)
        win = faces & (x >= markup)
        served |= win
        pay = np.where(win, bids - x + markup, pay)     # cost + g*size + markup
        k = np.where(faces, best, k)
    return _allocation(items, k, served, pay, np.where(np.isfinite(mu), mu, 0.0))


def _allocation(items: Items, k: np.ndarray, served: np.ndarray, pay: np.ndarray,
                mu: np.ndarray) -> Allocation:
    got = items.pick(k)
    return Allocation(served, pay, got["cost"], got["size"], got["accuracy"], got["latency"],
                      mu)


# --------------------------------------------------------------------------- baselines
def baseline_with_capacity(name: str, bids: np.ndarray, items: Items, capacity: float,
                           params: MechanismParams, rng: np.random.Generator) -> Allocation:
    """A baseline at its fixed configuration, cut to capacity by the greedy filter."""
    k = most_accurate(items) if name == "cost_plus" else items.cheapest(0.0)
    got = items.pick(k)
    cost, size = got["cost"], got["size"]
    net = bids - cost
    if name == "oracle_single_price":
        out = optimal_single_price(net, cost, size, capacity)
        return _allocation(items, k, out.served, out.payments, np.zeros(bids.size))
    if name == "vcg_capacity":
        keep, threshold = greedy_thresholds(net, size, capacity)
        markup = np.maximum(threshold, max(params.reserve_price, 0.0))
        served = keep & (net >= markup)
        return _allocation(items, k, served, np.where(served, cost + markup, 0.0),
                           np.zeros(bids.size))
    out = service_mechanism(name, params)(bids, cost, rng)
    served, pay = filtered(out, net, size, cost, capacity)
    return _allocation(items, k, served, pay, np.zeros(bids.size))


# --------------------------------------------------------------------------- the market
def run_mechanism(name: str, market: Market, params: MechanismParams, rng: np.random.Generator,
                  capacity: Optional[np.ndarray] = None) -> Allocation:
    """`name` as one auction per service over its feasible users, each service within its
    capacity (default 1.0: a whole server). Each service gets its own child generator, so
    outcomes are deterministic per seed; infeasible users are never served."""
    service_count = len(market.services)
    capacity = np.ones(service_count) if capacity is None else np.asarray(capacity, float)
    out = Allocation.empty(market.num_users)
    fields = {f.name: getattr(out, f.name).copy() for f in dataclasses.fields(out)}
    for s, child in enumerate(rng.spawn(service_count)):
        idx = np.flatnonzero((market.service == s) & market.feasible)
        if not idx.size:
            continue
        items = market.items(s, idx)
        run = aeria_with_capacity if name == "aeria" else \
            (lambda *a: baseline_with_capacity(name, *a))
        one = run(market.bid[idx], items, float(capacity[s]), params, child)
        for key in fields:
            fields[key][idx] = getattr(one, key)
    return Allocation(**fields)
