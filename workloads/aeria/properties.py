"""What an outcome is worth and which promises it keeps: revenue metrics, the competitive ratio
against F^(2), and empirical truthfulness and envy-freeness checks a user can run on any market.

Truthfulness is checked by brute force: for a probed user and each deviation factor f, the user
bids f * value while everyone else bids truthfully and the mechanism sees the SAME random seed; the
misreport must not raise the user's utility (value - payment when served, else 0) by more than a
tolerance. Envy-freeness is checked in markup space (payment - edge cost), see `check_envy_free`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from workloads.aeria.mechanisms import (MechanismParams, Outcome, eip_costs, f2_benchmark,
                                        service_mechanism)

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


def market_metrics(market, outcome: Outcome, eip_cost: np.ndarray) -> dict[str, float]:
    """ASP profit and friends for one outcome on a market (infeasible users are never served)."""
    won = outcome.served
    payments = float(outcome.payments[won].sum())
    eip_income = float(eip_cost[won].sum())
    revenue = payments - eip_income
    feasible = market.feasible
    f2 = benchmark_f2(market.net_value[feasible], market.service[feasible])
    return {"revenue": revenue, "served": float(won.sum()), "payments": payments,
            "eip_income": eip_income, "welfare": float((market.value[won] - eip_cost[won]).sum()),
            "benchmark_f2": f2, "revenue_share": revenue / f2 if f2 > 0 else 0.0,
            "competitive_ratio": f2 / revenue if revenue > 0 else float("inf")}


# --------------------------------------------------------------------------- on a market
def check_market_truthfulness(name: str, market, params: MechanismParams, outcome: Outcome,
                              probes: int, seed: int,
                              deviations: Sequence[float] = DEVIATIONS) -> dict[str, float]:
    """`check_truthfulness` of mechanism `name` on each service of `market` (`outcome` is the
    truthful outcome, used to pick the marginal winners to probe)."""
    fn = service_mechanism(name, params)
    costs = eip_costs(name, market)
    rng = np.random.default_rng(seed)
    gain, truthful = 0.0, True
    for s in range(len(market.services)):
        idx = np.flatnonzero((market.service == s) & market.feasible)
        if idx.size == 0:
            continue
        users = probe_users(market.value[idx] - costs[idx], outcome.served[idx], probes, rng)
        report = check_truthfulness(fn, market.value[idx], costs[idx], deviations,
                                    seed=seed + s, users=users)
        gain, truthful = max(gain, report.max_gain), truthful and report.passed
    return {"truthful": float(truthful), "max_truth_gain": gain}


def check_market_envy(name: str, market, outcome: Outcome) -> dict[str, float]:
    """`check_envy_free` of an outcome of `name` on `market`, service by service."""
    ok = market.feasible
    report = check_envy_free(Outcome(outcome.served[ok], outcome.payments[ok]), market.value[ok],
                             eip_costs(name, market)[ok], market.service[ok])
    return {"envy_free": float(report.passed), "max_envy": report.max_envy}
