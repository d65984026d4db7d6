"""The aeria workload's entry points: `run` (the full comparison) and `trial` (one sweep point).

One *cell* is one market (user count x seed). `run` evaluates every cell as a Ray task through
`ctx.map`, runs every configured mechanism on it (one auction per DNN service) and, if asked, the
envy-freeness check (whole market) and the truthfulness check (a random sub-market); then it
opens one child run per mechanism whose metrics are logged at step = index of the user count
(revenue vs users in MLflow), logs the plots on the parent and returns one row per mechanism at
the largest user count.

Determinism: market and mechanism generators come from `np.random.default_rng([seed, k])`, with
k = 0 for the market and 1 + the mechanism's index in MECHANISMS, so the same seed gives the same
numbers and adding a mechanism does not change the others.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from orchestrator.workload import ResourceRequest
from workloads.aeria.config import AeriaConfig
from workloads.aeria.market import Market, generate_market, value_median
from workloads.aeria.mechanisms import MECHANISMS, MechanismParams, eip_costs, run_mechanism
from workloads.aeria.profiles import DnnProfile, load_profiles
from workloads.aeria.properties import (check_market_envy, check_market_truthfulness,
                                        market_metrics)

TRIAL_METRICS = ("revenue", "competitive_ratio", "revenue_share", "served", "welfare",
                 "eip_income", "payments")
_MARKET_FIELDS = ("services", "service_weights", "profiles", "values", "users", "edge")


@dataclass(frozen=True)
class Cell:
    """One market of `run`: its size, its seed and where it sits in the results grid."""

    cfg: AeriaConfig
    num_users: int
    seed: int
    count_index: int
    seed_index: int


# --------------------------------------------------------------------------- building blocks
def market_seeds(seed: int, count: int) -> list[int]:
    """`count` independent integer seeds derived from the experiment seed."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(count)]


def mechanism_params(cfg: AeriaConfig) -> MechanismParams:
    median = value_median(cfg.values)
    return MechanismParams(consensus_base=cfg.consensus_base, reserve_price=cfg.reserve_price,
                           fixed_price=cfg.fixed_price or median, vcg_capacity=cfg.vcg_capacity,
                           cost_plus_margin=cfg.cost_plus_margin,
                           cost_share_per_user=cfg.cost_share_target * median)


@functools.lru_cache(maxsize=8)
def _profile_table(path: str) -> dict[str, DnnProfile]:
    return load_profiles(path)


def build_market(cfg: AeriaConfig, num_users: int, seed: int) -> Market:
    table = _profile_table(str(cfg.profiles_path()))
    profiles = [table[name] for name in (cfg.services or list(table))]
    return generate_market(profiles, num_users, np.random.default_rng([seed, 0]), cfg.values,
                           cfg.users, cfg.edge, cfg.service_weights or None)


def mechanism_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, 1 + MECHANISMS.index(name)])


def evaluate_mechanisms(cfg: AeriaConfig, market: Market, seed: int,
                        check_envy: bool = False) -> dict[str, dict]:
    """{mechanism: market metrics + seconds (+ envy-freeness)} for every configured mechanism."""
    params, out = mechanism_params(cfg), {}
    for name in cfg.mechanisms:
        started = time.perf_counter()
        outcome = run_mechanism(name, market, params, mechanism_rng(seed, name))
        seconds = time.perf_counter() - started
        out[name] = {**market_metrics(market, outcome, eip_costs(name, market)),
                     "seconds": seconds}
        if check_envy:
            out[name].update(check_market_envy(name, market, outcome))
    return out


def check_truthful(cfg: AeriaConfig, market: Market, seed: int) -> dict[str, dict]:
    """Truthfulness of every mechanism on a random sub-market of `property_users` users."""
    rng = np.random.default_rng([seed, 99])
    size = min(cfg.property_users, market.size)
    sub = market.take(np.sort(rng.choice(market.size, size, replace=False)))
    params, out = mechanism_params(cfg), {}
    for name in cfg.mechanisms:
        outcome = run_mechanism(name, sub, params, mechanism_rng(seed, name))
        out[name] = check_market_truthfulness(name, sub, params, outcome, cfg.property_probes,
                                              seed)
    return out


def evaluate_cell(cell: Cell) -> dict[str, Any]:
    """One Ray task: draw the market, run the mechanisms, optionally check the properties
    (envy-freeness on the whole market, truthfulness on a sub-market: it reruns the mechanism
    once per probed misreport)."""
    check = cell.cfg.check_properties
    market = build_market(cell.cfg, cell.num_users, cell.seed)
    metrics = evaluate_mechanisms(cell.cfg, market, cell.seed, check_envy=check)
    if check:
        for name, report in check_truthful(cell.cfg, market, cell.seed).items():
            metrics[name].update(report)
    return {"metrics": metrics, "feasible": int(market.feasible.sum())}


# --------------------------------------------------------------------------- trial
def _trial_metrics(cfg: AeriaConfig, market: Market, seed: int) -> dict[str, float]:
    flat = {"num_users": float(market.size), "feasible_users": float(market.feasible.sum())}
    for name, m in evaluate_mechanisms(cfg, market, seed).items():
        flat["benchmark_f2"] = m["benchmark_f2"]
        flat.update({f"{key}_{name}": float(m[key]) for key in TRIAL_METRICS})
    return flat


def trial_metrics(cfg: Any) -> list[str]:
    """The names `trial` returns for this config (checked against sweep.metric up front)."""
    return ["num_users", "feasible_users", "benchmark_f2",
            *[f"{key}_{name}" for name in cfg.aeria.mechanisms for key in TRIAL_METRICS]]


def trial(cfg: Any, ctx: Any) -> dict[str, float]:
    """One market of `aeria.num_users` users drawn from the experiment seed; every mechanism."""
    a, seed = cfg.aeria, market_seeds(cfg.seed, 1)[0]
    return _trial_metrics(a, build_market(a, a.num_users, seed), seed)


def trial_batch(cfgs: Sequence[Any], ctx: Any) -> list[dict[str, float]]:
    """Like `trial` for many configurations; configurations that differ only in mechanism
    knobs share one market."""
    markets: dict[str, Market] = {}
    out = []
    for cfg in cfgs:
        a, seed = cfg.aeria, market_seeds(cfg.seed, 1)[0]
        key = repr((a.num_users, seed, [getattr(a, f) for f in _MARKET_FIELDS]))
        if key not in markets:
            markets[key] = build_market(a, a.num_users, seed)
        out.append(_trial_metrics(a, markets[key], seed))
    return out


# --------------------------------------------------------------------------- resources
def resource_requests(cfg: Any, kind: str) -> list[ResourceRequest]:
    """`run` evaluates its markets as 1-CPU Ray tasks (`ctx.map`); a trial starts nothing."""
    return [] if kind == "trial" else [ResourceRequest("a market task", cpus=1.0)]


# --------------------------------------------------------------------------- run
def run(cfg: Any, ctx: Any) -> list[dict[str, Any]]:
    from workloads.aeria import plots  # matplotlib: only a run draws

    a: AeriaConfig = cfg.aeria
    seeds = market_seeds(cfg.seed, a.num_seeds)
    cells = [Cell(a, n, s, ci, si) for ci, n in enumerate(a.user_counts)
             for si, s in enumerate(seeds)]
    results = ctx.map(evaluate_cell, cells, desc="aeria markets")
    cell_rows = [_cell_row(cell, res, name) for cell, res in zip(cells, results)
                 for name in a.mechanisms]
    summary = {name: summarize([r for r in cell_rows if r["mechanism"] == name], a.user_counts)
               for name in a.mechanisms}
    with ctx.progress(len(a.mechanisms), "logging mechanisms") as bar:
        for name in a.mechanisms:
            _log_mechanism(ctx, a, name, summary[name],
                           [r for r in cell_rows if r["mechanism"] == name])
            bar.advance()
    ctx.tracker.log_table(cell_rows, "cells.csv")
    ctx.tracker.log_figure(plots.revenue_vs_users(summary, a.num_seeds), "revenue_vs_users.png")
    ctx.tracker.log_figure(plots.competitive_ratio_bars(summary), "competitive_ratio.png")
    ctx.tracker.log_figure(plots.served_vs_users(summary, a.num_seeds), "served_vs_users.png")
    rows = [results_row(name, summary[name], [r for r in cell_rows if r["mechanism"] == name])
            for name in a.mechanisms]
    ctx.tracker.log_metrics({f"revenue_{r['mechanism']}": r["revenue_mean"] for r in rows})
    return rows


def _cell_row(cell: Cell, result: dict, name: str) -> dict[str, Any]:
    row = {"mechanism": name, "num_users": cell.num_users, "seed": cell.seed,
           "count_index": cell.count_index, "seed_index": cell.seed_index,
           "feasible_users": result["feasible"], **result["metrics"][name]}
    return row


def summarize(rows: list[dict], user_counts: Sequence[int]) -> dict[str, np.ndarray]:
    """Per user count: mean and std over seeds; the ratio is mean F^(2) / mean revenue."""
    out: dict[str, list] = {}
    for n in user_counts:
        cell = [r for r in rows if r["num_users"] == n]
        stats = {"num_users": n}
        for key in ("revenue", "served", "welfare", "eip_income", "revenue_share", "seconds"):
            vals = np.array([r[key] for r in cell], dtype=float)
            stats[f"{key}_mean"], stats[f"{key}_std"] = vals.mean(), vals.std()
        revenue = stats["revenue_mean"]
        f2 = np.mean([r["benchmark_f2"] for r in cell])
        stats["competitive_ratio"] = f2 / revenue if revenue > 0 else np.inf
        for key, value in stats.items():
            out.setdefault(key, []).append(value)
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def _log_mechanism(ctx: Any, a: AeriaConfig, name: str, stats: dict[str, np.ndarray],
                   rows: list[dict]) -> None:
    params = dataclasses.asdict(mechanism_params(a))
    with ctx.tracker.child(name) as child:
        child.log_params({"mechanism": name, **params})
        for i, users in enumerate(a.user_counts):  # step = number of users: the UI's x-axis
            child.log_metrics({k: float(v[i]) for k, v in stats.items()}, step=int(users))
        child.log_metrics({f"overall_{k}": float(np.mean(v)) for k, v in stats.items()
                           if k.endswith("_mean")})
        child.log_metrics(_check_summary(rows))
        child.log_table(rows, "mechanism_cells.csv")  # one name: the UI compares children


def _check_summary(rows: list[dict]) -> dict[str, float]:
    checked = [r for r in rows if "truthful" in r]
    if not checked:
        return {}
    return {"truthful": float(all(r["truthful"] for r in checked)),
            "max_truth_gain": max(r["max_truth_gain"] for r in checked),
            "envy_free_rate": float(np.mean([r["envy_free"] for r in checked]))}


def results_row(name: str, stats: dict[str, np.ndarray], rows: list[dict]) -> dict[str, Any]:
    """The results-table row of one mechanism, at the largest user count."""
    checks, at = _check_summary(rows), int(np.argmax(stats["num_users"]))
    pick = lambda key: float(stats[key][at])  # noqa: E731
    return {"mechanism": name, "num_users": int(pick("num_users")),
            "revenue_mean": pick("revenue_mean"), "revenue_std": pick("revenue_std"),
            "competitive_ratio": pick("competitive_ratio"),
            "revenue_share": pick("revenue_share_mean"), "served": pick("served_mean"),
            "welfare": pick("welfare_mean"), "eip_income": pick("eip_income_mean"),
            "truthful": bool(checks["truthful"]) if checks else None,
            "max_truth_gain": checks.get("max_truth_gain"),
            "envy_free_rate": checks.get("envy_free_rate"), "seconds": pick("seconds_mean")}
