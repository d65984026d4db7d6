"""Digital-goods auctions for one service: benchmarks, profit extraction, consensus and baselines.

Every mechanism is a pure function over numpy arrays (one entry per bidder of ONE service) that
returns an `Outcome`: who is served and what each pays. Payments include the pass-through of the
bidder's edge cost where the mechanism prices net bids, so the ASP's profit is always
`sum(payments[served]) - sum(eip_cost[served])`. Randomised mechanisms take an explicit
`rng: np.random.Generator`; calling them twice with equally seeded generators gives equal outcomes.

Sources (see SEEDS.md section 3.2):
  [GHKSW]  Goldberg, Hartline, Karlin, Saks, Wright, "Competitive auctions", GEB 2006.
  [HK13]   Hartline & Karlin, "Profit Maximization in Mechanism Design", AGT ch. 13.
  [GH03]   Goldberg & Hartline, "Competitiveness via Consensus", SODA 2003 (consensus, CORE).
  [FGHK02] Fiat, Goldberg, Hartline, Karlin, "Competitive generalized auctions", STOC 2002 (RSPE).
  [M99]    Moulin, "Incremental cost sharing", Soc. Choice Welfare 1999.
AERIA itself (arXiv 2503.04521) is known only from its abstract: "randomized consensus estimate and
cost sharing"; `aeria` below is our reconstruction on net bids (workloads/aeria/README.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

MECHANISMS = ("aeria", "core", "cost_share", "rsop", "rspe", "vcg_capacity", "posted_price",
              "cost_plus", "oracle_single_price", "oracle_median_price")
# Told what no real seller knows (every bid, or the true value distribution): upper references,
# never "the state of the art" a claim compares against.
ORACLES = ("oracle_single_price", "oracle_median_price")


@dataclass(frozen=True)
class Outcome:
    served: np.ndarray    # (n,) bool: who gets the service
    payments: np.ndarray  # (n,) float: what each pays the ASP (0 when not served)


@dataclass(frozen=True)
class MechanismParams:
    """The mechanisms' own parameters (built from AeriaConfig by the workload)."""

    consensus_base: float = 2.0   # c > 1 of the consensus grid r_c
    reserve_price: float = 0.0    # minimum markup over cost (every auction)
    posted_price: float = 1.0     # the price of `posted_price` (tuned like any other knob)
    oracle_price: float = 1.0     # the price of `oracle_median_price`: the true median value
    cost_plus_margin: float = 0.2  # markup fraction of `cost_plus`
    cost_share_per_user: float = 0.05  # `cost_share` extracts R = this x (bidders of the service)
    capacity_grid_base: float = 1.25  # base of AERIA's capacity-price grid (allocation.py)
    size_cap: float = 0.02        # the largest size one user can take (edge.phi_max)


def _with_costs(served: np.ndarray, markup: np.ndarray | float,
                costs: Optional[np.ndarray]) -> Outcome:
    """Outcome whose served bidders pay cost + markup (cost 0 when `costs` is None)."""
    base = 0.0 if costs is None else costs
    pay = np.where(served, base + markup, 0.0)
    return Outcome(served, np.asarray(pay, dtype=float))


def _descending(x: np.ndarray) -> np.ndarray:
    return np.sort(np.asarray(x, dtype=float))[::-1]


# --------------------------------------------------------------------------- benchmarks [HK13]
def single_price_benchmark(x: np.ndarray) -> float:
    """F(x) = max_k k * x_(k): the best single-price revenue (0 if no bid is positive)."""
    xs = _descending(x)
    if xs.size == 0:
        return 0.0
    return float(max(0.0, np.max(np.arange(1, xs.size + 1) * xs)))


def f2_benchmark(x: np.ndarray, size: Optional[np.ndarray] = None,
                 capacity: float = np.inf) -> float:
    """F^(2)(x) = max_{k>=2} k * x_(k): F with at least two winners [GHKSW]; with sizes, only
    the k whose top-k users fit `capacity` count."""
    x = np.asarray(x, dtype=float)
    if x.size < 2:
        return 0.0
    order = np.argsort(-x, kind="stable")
    xs = x[order]
    k = np.arange(1, x.size + 1)
    revenue = k * xs
    if size is not None:
        revenue = np.where(np.cumsum(np.asarray(size, float)[order]) <= capacity, revenue, -np.inf)
    return float(max(0.0, np.max(revenue[1:])))


def optimal_price(x: np.ndarray) -> float:
    """The price x_(k*) that attains F(x); inf when no price earns anything (nobody served)."""
    xs = _descending(x)
    if xs.size == 0 or xs[0] <= 0:
        return np.inf
    return float(xs[np.argmax(np.arange(1, xs.size + 1) * xs)])


def leave_one_out_f2(x: np.ndarray) -> np.ndarray:
    """F^(2)(x_{-i}) for every bidder i in O(n log n) with prefix/suffix maxima.

    With x sorted high to low and bidder i at sorted position j (1-based), dropping it shifts the
    later bids up by one place, so F^(2)(x_{-j}) = max(max_{2<=k<j} k x_(k), max_{m>=max(j+1,3)}
    (m-1) x_(m)).
    """
    x = np.asarray(x, dtype=float)
    n = x.size
    if n < 3:
        return np.zeros(n)
    order = np.argsort(-x, kind="stable")
    xs = x[order]
    pos = np.arange(1, n + 1)
    head = pos * xs
    head[0] = 0.0                                   # k = 1 is not allowed in F^(2)
    prefix = np.maximum.accumulate(np.maximum(head, 0.0))
    tail = (pos - 1) * xs
    tail[:2] = 0.0                                  # m >= 3
    suffix = np.maximum.accumulate(np.maximum(tail, 0.0)[::-1])[::-1]
    before = np.concatenate(([0.0], prefix[:-1]))   # max over k <= j-1
    start = np.maximum(pos + 1, 3)                  # suffix from m = max(j+1, 3)
    after = np.where(start <= n, suffix[np.minimum(start, n) - 1], 0.0)
    out = np.empty(n)
    out[order] = np.maximum(before, after)
    return out


# --------------------------------------------------------------------------- profit extraction
def cost_share_price(sorted_desc: np.ndarray, R: float, reserve: float = 0.0) -> float:
    """The markup CostShare_R charges, given net bids sorted high to low; inf if nobody is served.

    Serve the largest k whose top-k bids are all >= max(R/k, reserve) ([GHKSW] ProfitExtract_R;
    the reserve is our minimum markup). Served = {i : x_i >= price} has exactly k members.
    """
    n = sorted_desc.size
    if n == 0:
        return np.inf
    shares = np.maximum(R / np.arange(1, n + 1), reserve)
    ok = np.flatnonzero(sorted_desc >= shares)
    return float(shares[ok[-1]]) if ok.size else np.inf


def cost_share(net_bids: np.ndarray, R: float, reserve: float = 0.0,
               costs: Optional[np.ndarray] = None) -> Outcome:
    """CostShare_R: the largest k bidders that can split R equally win, each paying cost + R/k.

    Revenue (markup) is R when F(net_bids) >= R and 0 otherwise (with reserve 0); every winner pays
    the same markup, so the outcome is envy-free. Truthful: the Moulin mechanism of `equal_split`.
    """
    x = np.asarray(net_bids, dtype=float)
    price = cost_share_price(_descending(x), R, reserve)
    return _with_costs(x >= price, price, costs)


def equal_split(R: float, reserve: float = 0.0) -> Callable[[np.ndarray], np.ndarray]:
    """xi(S) = max(R/|S|, reserve) for every member of S: cross-monotonic (shrinks as S grows)."""
    def xi(members: np.ndarray) -> np.ndarray:
        k = int(members.sum())
        return np.where(members, max(R / k, reserve) if k else np.inf, 0.0)
    return xi


def moulin(bids: np.ndarray, xi: Callable[[np.ndarray], np.ndarray],
           costs: Optional[np.ndarray] = None) -> Outcome:
    """Moulin mechanism [M99] for a cross-monotonic cost-share function xi.

    xi(S) maps a boolean membership mask S to each member's share; cross-monotonic means a bidder's
    share never rises when S grows. Start from S = everyone and repeatedly drop every member whose
    bid is below its share, until nobody drops; the survivors are served and pay their shares
    (plus `costs`). Group-strategyproof and budget-balanced; `cost_share` is xi = `equal_split`.
    """
    b = np.asarray(bids, dtype=float)
    members = np.ones(b.size, dtype=bool)
    while members.any():
        shares = xi(members)
        drop = members & (b < shares)
        if not drop.any():
            return _with_costs(members, shares, costs)
        members &= ~drop
    return Outcome(members, np.zeros(b.size))


# --------------------------------------------------------------------------- consensus [GH03]
def consensus_round(x, c: float, u: float):
    """r_c(x) = c^(floor(log_c x - u) + u): x rounded down onto the grid {c^(i+u)}; 0 for x <= 0."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log(x) / np.log(c) - u) + u
        out = np.where(x > 0, np.power(c, exponent), 0.0)
    return out if out.ndim else float(out)


def core_auction(net_bids: np.ndarray, c: float, rng: np.random.Generator,
                 reserve: float = 0.0, costs: Optional[np.ndarray] = None) -> Outcome:
    """CORE [GH03] on net bids with cost pass-through: R = r_c(F^(2)(net bids)) from ALL bids,
    then CostShare_R; winners pay cost + R/k. Truthful with high probability only (when the
    consensus holds: a bidder can move the common estimate R)."""
    x = np.asarray(net_bids, dtype=float)
    R = consensus_round(f2_benchmark(x), c, rng.uniform())
    return cost_share(x, R, reserve, costs)


def aeria(net_bids: np.ndarray, c: float, rng: np.random.Generator, reserve: float = 0.0,
          costs: Optional[np.ndarray] = None) -> Outcome:
    """AERIA [OURS reconstruction]: bid-independent consensus estimate + cost sharing on net bids.

    Bidder i faces R_i = r_c(F^(2)(x_{-i})) (Eq. consensus estimate, shared U ~ U[0,1]) and gets
    its own outcome of CostShare_{R_i} run on all net bids, with the reserve as minimum markup.
    R_i does not depend on i's bid, so the mechanism is exactly truthful for a fixed U; when all
    R_i agree (the consensus) it equals CostShare_R and is envy-free. Pays cost + markup.
    """
    x = np.asarray(net_bids, dtype=float)
    R = consensus_round(leave_one_out_f2(x), c, rng.uniform())
    xs = _descending(x)
    price = np.empty(x.size)
    for r in np.unique(R):        # a handful of grid points, not a loop over bidders
        price[R == r] = cost_share_price(xs, r, reserve)
    return _with_costs(x >= price, price, costs)


# --------------------------------------------------------------------------- baselines [OURS]
def optimal_single_price(net_bids: np.ndarray, costs: Optional[np.ndarray] = None,
                         size: Optional[np.ndarray] = None, capacity: float = np.inf) -> Outcome:
    """Omniscient single markup attaining F(net bids), among the markups whose buyers fit
    `capacity` (when sizes are given): the revenue upper bound; NOT truthful."""
    x = np.asarray(net_bids, dtype=float)
    if size is None or x.size == 0:
        price = optimal_price(x)
        return _with_costs(x >= price, price, costs)
    order = np.argsort(-x, kind="stable")
    xs, fits = x[order], np.cumsum(np.asarray(size, float)[order]) <= capacity
    revenue = np.where(fits & (xs > 0), np.arange(1, x.size + 1) * xs, -np.inf)
    served = np.zeros(x.size, dtype=bool)
    if np.isfinite(revenue).any():
        k = int(np.argmax(revenue))
        served[order[:k + 1]] = True
        return _with_costs(served, xs[k], costs)
    return Outcome(served, np.zeros(x.size))


def _random_halves(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.random(n) < 0.5


def rsop(net_bids: np.ndarray, rng: np.random.Generator,
         costs: Optional[np.ndarray] = None, reserve: float = 0.0) -> Outcome:
    """Random Sampling Optimal Price [GHKSW]: each random half gets the other's optimal price
    (at least the reserve markup)."""
    x = np.asarray(net_bids, dtype=float)
    in_a = _random_halves(x.size, rng)
    price = np.maximum(np.where(in_a, optimal_price(x[~in_a]), optimal_price(x[in_a])), reserve)
    return _with_costs(x >= price, price, costs)


def rspe(net_bids: np.ndarray, rng: np.random.Generator,
         costs: Optional[np.ndarray] = None, reserve: float = 0.0) -> Outcome:
    """Random Sampling Profit Extraction [FGHK02]: CostShare_{F(B)} on A, CostShare_{F(A)} on B."""
    x = np.asarray(net_bids, dtype=float)
    in_a = _random_halves(x.size, rng)
    price_a = cost_share_price(_descending(x[in_a]), single_price_benchmark(x[~in_a]), reserve)
    price_b = cost_share_price(_descending(x[~in_a]), single_price_benchmark(x[in_a]), reserve)
    price = np.where(in_a, price_a, price_b)
    return _with_costs(x >= price, price, costs)


def fixed_price(bids: np.ndarray, costs: np.ndarray, price: float) -> Outcome:
    """Posted price: serve whoever bids >= price, but only where the price covers the edge cost."""
    b = np.asarray(bids, dtype=float)
    served = (b >= price) & (price >= np.asarray(costs))
    return Outcome(served, np.where(served, float(price), 0.0))


def vcg_capacity(net_bids: np.ndarray, k: int, costs: Optional[np.ndarray] = None) -> Outcome:
    """(k+1)-price auction with capacity k: the top k positive net bids win, each paying cost plus
    the (k+1)-th highest net bid (floored at 0). Truthful (VCG for k identical units). With users
    of unequal size, `allocation.greedy_thresholds` generalises it to a capacity in shares."""
    x = np.asarray(net_bids, dtype=float)
    order = np.argsort(-x, kind="stable")
    served = np.zeros(x.size, dtype=bool)
    served[order[:k]] = True
    served &= x > 0
    threshold = max(float(x[order[k]]), 0.0) if x.size > k else 0.0
    return _with_costs(served, threshold, costs)


def cost_plus(bids: np.ndarray, edgent_costs: np.ndarray, margin: float) -> Outcome:
    """Edgent allocation, cost-plus pricing: price (1+margin)*cost at the max-accuracy config."""
    price = (1.0 + margin) * np.asarray(edgent_costs, dtype=float)
    served = np.asarray(bids, dtype=float) >= price
    return Outcome(served, np.where(served, price, 0.0))


# --------------------------------------------------------------------------- dispatch
ServiceMechanism = Callable[[np.ndarray, np.ndarray, np.random.Generator], Outcome]


def service_mechanism(name: str, params: MechanismParams) -> ServiceMechanism:
    """`fn(bids, eip_costs, rng) -> Outcome` for one service's bidders (bids are gross values),
    without capacity: every user can be served. `allocation.run_mechanism` adds the edge
    capacity (and AERIA's joint choice of configuration) on top of these."""
    p = params
    table: dict[str, ServiceMechanism] = {
        "aeria": lambda b, c, r: aeria(b - c, p.consensus_base, r, p.reserve_price, c),
        "core": lambda b, c, r: core_auction(b - c, p.consensus_base, r, p.reserve_price, c),
        "cost_share": lambda b, c, r: cost_share(
            b - c, p.cost_share_per_user * b.size, p.reserve_price, c),
        "rsop": lambda b, c, r: rsop(b - c, r, c, p.reserve_price),
        "rspe": lambda b, c, r: rspe(b - c, r, c, p.reserve_price),
        # with no capacity every user with a net bid above the reserve wins at cost + reserve
        "vcg_capacity": lambda b, c, r: _with_costs(b - c >= max(p.reserve_price, 0.0),
                                                    max(p.reserve_price, 0.0), c),
        "posted_price": lambda b, c, r: fixed_price(b, c, p.posted_price),
        "cost_plus": lambda b, c, r: cost_plus(b, c, p.cost_plus_margin),
        "oracle_single_price": lambda b, c, r: optimal_single_price(b - c, c),
        "oracle_median_price": lambda b, c, r: fixed_price(b, c, p.oracle_price),
    }
    if name not in table:
        raise KeyError(f"unknown mechanism {name!r}; known: {', '.join(MECHANISMS)}")
    return table[name]
