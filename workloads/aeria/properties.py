"""What an outcome is worth and which promises it keeps: revenue metrics, the competitive ratio
against F^(2), and empirical truthfulness and envy-freeness checks a user can run on any market.

Truthfulness is checked by brute force: a probed user misreports (its bid times a factor, or on
a market its accuracy floor or deadline) while everyone else reports truthfully and the mechanism
sees the SAME random draws; the misreport must not raise the user's true utility (value - payment
when served with an item meeting its true needs, - payment when not, 0 when not served) by more
than a tolerance. Envy-freeness is checked in markup space (payment - charge), `check_envy_free`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from workloads.aeria.mechanisms import MechanismParams, Outcome, f2_benchmark

DEVIATIONS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.1, 1.25, 1.5, 2.0, 4.0)
MechanismFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], Outcome]


@dataclass(frozen=True)
class TruthReport:
    passed: bool
    max_gain: float   # largest utility gain of a misreport (<= tolerance when passed)
    user: int         # who gains it (-1: nobody)
    factor: float     # with bid = factor * value
    probes: int       # (user, factor) pairs tried


@dataclass(frozen=True)
class EnvyReport:
    passed: bool
    markup_spread: float  # max - min markup among served users
    max_envy: float       # largest utility a user would gain from another's (service, markup)


def utilities(outcome: Outcome, values: np.ndarray) -> np.ndarray:
    return np.where(outcome.served, np.asarray(values) - outcome.payments, 0.0)


def _tolerance(values: np.ndarray, tol: float) -> float:
    return tol * max(1.0, float(np.max(np.abs(values), initial=0.0)))


# --------------------------------------------------------------------------- truthfulness
def check_truthfulness(mechanism_fn: MechanismFn, values: np.ndarray, costs: np.ndarray,
                       deviations: Sequence[float] = DEVIATIONS, seed: int = 0,
                       users: Optional[Sequence[int]] = None, tol: float = 1e-9) -> TruthReport:
    """No probed user gains by bidding factor * value (others truthful, same seed)."""
    values = np.asarray(values, dtype=float)
    truthful = utilities(mechanism_fn(values, costs, np.random.default_rng(seed)), values)
    users = range(values.size) if users is None else users
    gain, who, factor, probes = 0.0, -1, 1.0, 0
    for i in users:
        for f in deviations:
            bids = values.copy()
            bids[i] = f * values[i]
            u = utilities(mechanism_fn(bids, costs, np.random.default_rng(seed)), values)[i]
            probes += 1
            if u - truthful[i] > gain:
                gain, who, factor = float(u - truthful[i]), int(i), float(f)
    return TruthReport(gain <= _tolerance(values, tol), gain, who, factor, probes)


def probe_users(net_values: np.ndarray, served: np.ndarray, count: int,
                rng: np.random.Generator) -> np.ndarray:
    """Users worth probing: the top net values, the marginal winners (lowest served net values,
    where price-setting misreports pay off) and a random rest; at most `count`, no repeats."""
    order = np.argsort(-net_values, kind="stable")
    marginal = order[served[order]][::-1]
    third = max(1, count // 3)
    picks = list(order[:third]) + list(marginal[:third])
    rest = rng.permutation(net_values.size)
    picks = list(dict.fromkeys(picks + list(rest)))[:count]
    return np.asarray(picks, dtype=int)


# --------------------------------------------------------------------------- envy-freeness
def check_envy_free(outcome: Outcome, values: np.ndarray, costs: np.ndarray,
                    groups: Optional[np.ndarray] = None, tol: float = 1e-9) -> EnvyReport:
    """Envy-free in markup space, within each group (service).

    Users differ in edge cost, so the comparable "price" is the markup m_i = payment_i - cost_i.
    The outcome is envy-free when all served users of a group pay the same markup m, every served
    user has net value (value - cost) >= m, and no unserved user's net value exceeds m.
    """
    values, costs = np.asarray(values, float), np.asarray(costs, float)
    groups = np.zeros(values.size, int) if groups is None else np.asarray(groups)
    spread, envy = 0.0, 0.0
    for g in np.unique(groups):
        in_g = groups == g
        won, lost = in_g & outcome.served, in_g & ~outcome.served
        if not won.any():
            continue
        markup = outcome.payments[won] - costs[won]
        net = values - costs
        spread = max(spread, float(markup.max() - markup.min()))
        envy = max(envy, float(markup.max() - markup.min()),           # winner vs cheaper winner
                   float(np.max(markup - net[won])),                  # winner would rather lose
                   float(np.max(net[lost] - markup.min(), initial=0.0)))  # loser vs winner
    return EnvyReport(envy <= _tolerance(values, tol), spread, envy)


# --------------------------------------------------------------------------- revenue
def benchmark_f2(net_values: np.ndarray, groups: Optional[np.ndarray] = None) -> float:
    """Sum over groups (services) of F^(2) of the net values: the competitive benchmark."""
    net_values = np.asarray(net_values, float)
    if groups is None:
        return f2_benchmark(net_values)
    return float(sum(f2_benchmark(net_values[groups == g]) for g in np.unique(groups)))


def competitive_ratio(net_values: np.ndarray, revenue: float,
                      groups: Optional[np.ndarray] = None) -> float:
    """F^(2)(net values) / revenue, summed over groups; inf when the revenue is not positive."""
    return benchmark_f2(net_values, groups) / revenue if revenue > 0 else float("inf")


def market_metrics(market, out) -> dict[str, float]:
    """ASP profit and friends for one `allocation.Allocation` on a market. The benchmark is
    F^(2) of the net values at the cheapest configurations within each service's capacity."""
    won = out.served
    payments = float(out.payments[won].sum())
    eip_income = float(out.cost[won].sum())
    revenue = payments - eip_income
    f2 = capacity_benchmark(market)
    used = [float(out.size[won & (market.service == s)].sum())
            for s in range(len(market.services))]
    return {"revenue": revenue, "served": float(won.sum()), "payments": payments,
            "eip_income": eip_income, "welfare": float((market.value[won] - out.cost[won]).sum()),
            "utilisation": float(np.mean(used)) if used else 0.0,
            "benchmark_f2": f2, "revenue_share": revenue / f2 if f2 > 0 else 0.0,
            "competitive_ratio": f2 / revenue if revenue > 0 else float("inf")}


def capacity_benchmark(market, capacity: Optional[np.ndarray] = None) -> float:
    """Sum over services of F^(2) of the feasible users' net values (cheapest configuration),
    counting only the single prices whose buyers fit the service's capacity."""
    total = 0.0
    for s in range(len(market.services)):
        idx = np.flatnonzero((market.service == s) & market.feasible)
        cap = 1.0 if capacity is None else float(capacity[s])
        total += f2_benchmark(market.net_value[idx], market.size[idx], cap)
    return total


def offered_load(market) -> float:
    """Demand over capacity: the mean over services of the total size of the users who would
    buy at cost (net value >= 0) at their cheapest configuration; 1.0 fills every server."""
    ok = market.feasible & (market.net_value >= 0)
    return float(np.mean([market.size[ok & (market.service == s)].sum()
                          for s in range(len(market.services))]))


# --------------------------------------------------------------------------- on a market
# Misreports tried besides the bid: the accuracy floor moved by these amounts (clipped to [0, 1])
# and the deadline scaled by these factors. Laxer reports may win an item that misses the true
# need (worth nothing to the user); stricter ones must never pay off either.
FLOOR_SHIFTS = (-0.3, -0.1, 0.1, 0.3)
DEADLINE_FACTORS = (0.5, 0.8, 1.25, 2.0)


def true_utility(market, out, user: int) -> float:
    """What `user` (with its true value, floor and deadline in `market`) gets from `out`: value
    minus payment when served with an item meeting its true needs, minus payment when served
    with one that does not, 0 when not served."""
    if not out.served[user]:
        return 0.0
    meets = (out.accuracy[user] >= market.accuracy_floor[user] - 1e-12
             and out.latency[user] <= market.deadline_ms[user] * (1 + 1e-9))
    return (market.value[user] if meets else 0.0) - float(out.payments[user])


def misreports(market, user: int) -> list[dict[str, float]]:
    """Every report tried for `user`: bid factors, floor shifts, deadline factors."""
    v, a, d = market.value[user], market.accuracy_floor[user], market.deadline_ms[user]
    return ([{"bid": f * v} for f in DEVIATIONS]
            + [{"accuracy_floor": float(np.clip(a + s, 0.0, 1.0))} for s in FLOOR_SHIFTS]
            + [{"deadline_ms": f * d} for f in DEADLINE_FACTORS])


def check_market_truthfulness(name: str, market, params: MechanismParams, probes: int,
                              seed: int, capacity: Optional[np.ndarray] = None
                              ) -> dict[str, float]:
    """No probed user gains by misreporting its bid, accuracy floor or deadline (others
    truthful, the mechanism's random draws fixed by `seed`). Probed: per service the top and
    the marginal winners of the truthful outcome and random others, `probes` in all."""
    from workloads.aeria.allocation import run_mechanism

    def run(m):
        return run_mechanism(name, m, params, np.random.default_rng([seed, 1]), capacity)

    rng = np.random.default_rng(seed)
    gain, worst = 0.0, ""
    for s in range(len(market.services)):
        # services clear separately (each its own child generator): probe on this one alone
        one = market.take(np.flatnonzero((market.service == s) & market.feasible))
        if one.num_users == 0:
            continue
        outcome = run(one)
        for i in probe_users(one.net_value, outcome.served, probes, rng):
            truthful = true_utility(one, outcome, i)
            for report in misreports(one, i):
                g = true_utility(one, run(one.reported(i, **report)), i) - truthful
                if g > gain:
                    gain, worst = g, next(iter(report))
    tol = _tolerance(market.value, 1e-9)
    return {"truthful": float(gain <= tol), "max_truth_gain": gain,
            "truth_gain_by": worst if gain > tol else ""}


def check_market_envy(name: str, market, outcome) -> dict[str, float]:
    """`check_envy_free` of an allocation, service by service, in markup space: the part of
    each payment above the user's charge (cost + capacity price x size). Users of one service
    must also face one capacity price: otherwise their menus differ."""
    ok = market.feasible
    charge = outcome.charge[ok]
    report = check_envy_free(Outcome(outcome.served[ok], outcome.payments[ok]), market.value[ok],
                             charge, market.service[ok])
    mu, service = outcome.capacity_price[ok], market.service[ok]
    mu_spread = max((float(np.ptp(mu[service == s])) for s in np.unique(service)), default=0.0)
    envy_free = report.passed and mu_spread <= 1e-12
    return {"envy_free": float(envy_free), "max_envy": report.max_envy,
            "capacity_price_spread": mu_spread}
