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
from typing import Any, Optional, Sequence

import numpy as np

from orchestrator.sweepspec import Dim
from orchestrator.workload import ResourceRequest
from workloads.aeria.allocation import run_mechanism
from workloads.aeria.config import AeriaConfig
from workloads.aeria.market import Market, generate_market, value_median
from workloads.aeria.mechanisms import MECHANISMS, MechanismParams
from workloads.aeria.profiles import DnnProfile, load_profiles
from workloads.aeria.properties import (check_market_envy, check_market_truthfulness,
                                        market_metrics, offered_load)

TRIAL_METRICS = ("revenue", "competitive_ratio", "revenue_share", "served", "welfare",
                 "eip_income", "payments", "utilisation")
_MARKET_FIELDS = ("services", "service_weights", "profiles", "values", "users", "edge")

# What tuning may change per mechanism: (knob of AeriaConfig, "loguniform" | "uniform", low, high).
# Every mechanism with knobs gets the same number of random settings; the oracles have none.
SEARCH_SPACE: dict[str, tuple[tuple[str, str, float, float], ...]] = {
    "aeria": (("consensus_base", "loguniform", 1.2, 4.0), ("reserve_price", "uniform", 0.0, 1.0),
              ("capacity_grid_base", "loguniform", 1.05, 2.0)),
    "core": (("consensus_base", "loguniform", 1.2, 4.0), ("reserve_price", "uniform", 0.0, 1.0)),
    "cost_share": (("cost_share_target", "loguniform", 0.02, 2.0),),
    "rsop": (("reserve_price", "uniform", 0.0, 1.0),),
    "rspe": (("reserve_price", "uniform", 0.0, 1.0),),
    "vcg_capacity": (("reserve_price", "uniform", 0.0, 1.0),),
    "posted_price": (("posted_price", "loguniform", 0.1, 10.0),),
    "cost_plus": (("cost_plus_margin", "uniform", 0.0, 5.0),),
}


@dataclass(frozen=True)
class Cell:
    """One market of `run`: its size, its seed, where it sits in the results grid, and the
    mechanism knobs to run on it ({mechanism: AeriaConfig with that mechanism's knobs})."""

    cfg: AeriaConfig
    num_users: int
    seed: int
    count_index: int
    seed_index: int
    tuned: dict
    check: bool = False


# --------------------------------------------------------------------------- building blocks
def market_seeds(seed: int, count: int, stream: int = 0) -> list[int]:
    """`count` independent integer seeds derived from the experiment seed (stream 1: tuning)."""
    return [int(s) for s in np.random.SeedSequence([seed, stream] if stream else seed)
            .generate_state(count)]


def mechanism_params(cfg: AeriaConfig) -> MechanismParams:
    median = value_median(cfg.values)
    return MechanismParams(consensus_base=cfg.consensus_base, reserve_price=cfg.reserve_price,
                           posted_price=cfg.posted_price, oracle_price=median,
                           cost_plus_margin=cfg.cost_plus_margin,
                           cost_share_per_user=cfg.cost_share_target * median,
                           capacity_grid_base=cfg.capacity_grid_base,
                           size_cap=cfg.edge.phi_max)


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


def evaluate_mechanisms(cfg: AeriaConfig, market: Market, seed: int, check_envy: bool = False,
                        tuned: Optional[dict] = None) -> dict[str, dict]:
    """{mechanism: market metrics + seconds (+ envy-freeness)} for every configured mechanism,
    each with its own knobs from `tuned` (default: `cfg`'s)."""
    out = {}
    for name in cfg.mechanisms:
        params = mechanism_params((tuned or {}).get(name, cfg))
        started = time.perf_counter()
        outcome = run_mechanism(name, market, params, mechanism_rng(seed, name))
        seconds = time.perf_counter() - started
        out[name] = {**market_metrics(market, outcome), "seconds": seconds}
        if check_envy:
            out[name].update(check_market_envy(name, market, outcome))
    return out


def check_truthful(cfg: AeriaConfig, market: Market, seed: int,
                   tuned: Optional[dict] = None) -> dict[str, dict]:
    """Truthfulness in bid, accuracy floor and deadline of every mechanism, on a random
    sub-market of `property_users` users (its capacity scaled down with it, so it is as
    loaded as the whole market)."""
    rng = np.random.default_rng([seed, 99])
    size = min(cfg.property_users, market.num_users)
    sub = market.take(np.sort(rng.choice(market.num_users, size, replace=False)))
    capacity = np.full(len(market.services), size / market.num_users)
    out = {}
    for name in cfg.mechanisms:
        params = mechanism_params((tuned or {}).get(name, cfg))
        out[name] = check_market_truthfulness(name, sub, params, cfg.property_probes, seed,
                                              capacity)
    return out


def evaluate_cell(cell: Cell) -> dict[str, Any]:
    """One Ray task: draw the market, run the mechanisms, optionally check the properties
    (envy-freeness on the whole market, truthfulness on a sub-market: it reruns the mechanism
    once per probed misreport)."""
    market = build_market(cell.cfg, cell.num_users, cell.seed)
    metrics = evaluate_mechanisms(cell.cfg, market, cell.seed, cell.check, cell.tuned)
    if cell.check:
        for name, report in check_truthful(cell.cfg, market, cell.seed, cell.tuned).items():
            metrics[name].update(report)
    return {"metrics": metrics, "feasible": int(market.feasible.sum()),
            "load": offered_load(market)}


# --------------------------------------------------------------------------- tuning
def tuning_space(name: str) -> list[Dim]:
    """`name`'s knobs as search axes for `ctx.tune` (the kinds `sweep.params` takes)."""
    return [Dim(key, kind, low=lo, high=hi) for key, kind, lo, hi in SEARCH_SPACE.get(name, ())]


def score_setting(setting: dict, cfg: AeriaConfig, name: str,
                  seeds: Sequence[int]) -> dict[str, float]:
    """One Tune trial: `name` with `setting`'s knobs on every tuning market at once;
    `revenue_<n>` is its mean revenue over the markets of n users."""
    params = mechanism_params(dataclasses.replace(cfg, **setting))
    out = {}
    for n in cfg.user_counts:
        revenues = []
        for s in seeds:
            market = build_market(cfg, n, s)
            outcome = run_mechanism(name, market, params, mechanism_rng(s, name))
            revenues.append(market_metrics(market, outcome)["revenue"])
        out[f"revenue_{n}"] = float(np.mean(revenues))
    return out


def tune(ctx: Any, a: AeriaConfig, seed: int) -> tuple[dict[int, dict], list[dict]]:
    """{user count: {mechanism: best AeriaConfig}} by mean revenue over `tune_seeds` markets
    of their own seeds (never the evaluation markets), and the table of every setting's score.

    Each mechanism with knobs gets its own Ray Tune search with the same budget (`tune_samples`
    trials, the configured setting first); the oracles have none and run as configured."""
    seeds = market_seeds(seed, a.tune_seeds, stream=1)
    best: dict[int, dict] = {n: {} for n in a.user_counts}
    table = []
    for name in a.mechanisms:
        if not SEARCH_SPACE.get(name):
            continue
        trials = ctx.tune(functools.partial(score_setting, cfg=a, name=name, seeds=seeds),
                          tuning_space(name), a.tune_samples, key=MECHANISMS.index(name),
                          first=_knobs(name, a), desc=f"tuning {name}")
        for n in a.user_counts:
            scores = [metrics[f"revenue_{n}"] for _, metrics in trials]
            j = int(np.argmax(scores))
            best[n][name] = dataclasses.replace(a, **trials[j][0])
            table += [{"num_users": n, "mechanism": name, "setting": i, "chosen": i == j,
                       "revenue_mean": score, **setting}
                      for i, ((setting, _), score) in enumerate(zip(trials, scores))]
    return best, table


def _knobs(name: str, cfg: AeriaConfig) -> dict[str, float]:
    return {key: float(getattr(cfg, key)) for key, *_ in SEARCH_SPACE.get(name, ())}


# --------------------------------------------------------------------------- trial
def _trial_metrics(cfg: AeriaConfig, market: Market, seed: int) -> dict[str, float]:
    flat = {"num_users": float(market.num_users), "feasible_users": float(market.feasible.sum()),
            "load": offered_load(market)}
    for name, m in evaluate_mechanisms(cfg, market, seed).items():
        flat["benchmark_f2"] = m["benchmark_f2"]
        flat.update({f"{key}_{name}": float(m[key]) for key in TRIAL_METRICS})
    return flat


def trial_metrics(cfg: Any) -> list[str]:
    """The names `trial` returns for this config (checked against sweep.metric up front)."""
    return ["num_users", "feasible_users", "load", "benchmark_f2",
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
    """Tune (if asked), evaluate every market, simulate arrivals (if asked), log and plot.
    Returns one row per (mechanism, user count, market seed): what the claims read."""
    from workloads.aeria import plots  # matplotlib: only a run draws

    a: AeriaConfig = cfg.aeria
    tuned: dict[int, dict] = {n: {} for n in a.user_counts}
    if a.tune_samples:
        tuned, table = tune(ctx, a, cfg.seed)
        ctx.tracker.log_table(table, "tuning.csv")
    seeds = market_seeds(cfg.seed, a.num_seeds)
    cells = [Cell(a, n, s, ci, si, tuned[n], a.check_properties and si == 0)
             for ci, n in enumerate(a.user_counts) for si, s in enumerate(seeds)]
    results = ctx.map(evaluate_cell, cells, desc="aeria markets")
    cell_rows = [_cell_row(cell, res, name) for cell, res in zip(cells, results)
                 for name in a.mechanisms]
    by_name = {name: [r for r in cell_rows if r["mechanism"] == name] for name in a.mechanisms}
    summary = {name: summarize(by_name[name], a.user_counts) for name in a.mechanisms}
    arrivals = _arrivals(ctx, a, seeds, tuned) if a.arrival_windows else {}
    with ctx.progress(len(a.mechanisms), "logging mechanisms") as bar:
        for name in a.mechanisms:
            _log_mechanism(ctx, a, name, summary[name], by_name[name], tuned,
                           arrivals.get(name, []))
            bar.advance()
    ctx.tracker.log_table(cell_rows, "cells.csv")
    _log_figures(ctx, plots, summary, a.num_seeds, arrivals)
    ctx.tracker.log_metrics({f"revenue_{name}": float(summary[name]["revenue_mean"][-1])
                             for name in a.mechanisms})
    return [results_row(r) for r in cell_rows]


def _log_figures(ctx: Any, plots: Any, summary: dict, seeds: int, arrivals: dict) -> None:
    ctx.tracker.log_figure(plots.revenue_vs_users(summary, seeds), "revenue_vs_users.png")
    ctx.tracker.log_figure(plots.competitive_ratio_bars(summary), "competitive_ratio.png")
    ctx.tracker.log_figure(plots.served_vs_users(summary, seeds), "served_vs_users.png")
    ctx.tracker.log_figure(plots.utilisation_vs_users(summary, seeds),
                           "utilisation_vs_users.png")
    if arrivals:
        ctx.tracker.log_figure(plots.arrivals_over_time(arrivals), "arrivals_over_time.png")


def _arrivals(ctx: Any, a: AeriaConfig, seeds: list[int], tuned: dict) -> dict[str, list]:
    """{mechanism: rows of every (seed, window)} of the arrivals simulation on markets of
    `num_users` users, with the knobs tuned for the nearest user count."""
    nearest = min(a.user_counts, key=lambda n: abs(np.log(n / a.num_users)))
    jobs = [(a, s, tuned[nearest]) for s in seeds]
    per_seed = ctx.map(simulate_cell, jobs, desc="arrivals over time")
    return {name: [{**row, "seed": s} for s, rows in zip(seeds, per_seed) for row in rows[name]]
            for name in a.mechanisms}


def simulate_cell(job: tuple) -> dict[str, list[dict]]:
    """One Ray task: every mechanism through the arrival windows of one seed's market."""
    from workloads.aeria.arrivals import simulate_arrivals

    a, seed, tuned = job
    market = build_market(a, a.num_users, seed)
    return {name: simulate_arrivals(name, market, mechanism_params(tuned.get(name, a)), seed,
                                    a.arrival_windows, a.max_job_windows)
            for name in a.mechanisms}


def _cell_row(cell: Cell, result: dict, name: str) -> dict[str, Any]:
    return {"mechanism": name, "num_users": cell.num_users, "seed": cell.seed,
            "count_index": cell.count_index, "seed_index": cell.seed_index,
            "feasible_users": result["feasible"], "load": result["load"],
            **result["metrics"][name]}


_SUMMARY_KEYS = ("revenue", "served", "welfare", "eip_income", "revenue_share", "seconds",
                 "utilisation", "load")


def summarize(rows: list[dict], user_counts: Sequence[int]) -> dict[str, np.ndarray]:
    """Per user count: mean and std over seeds; the ratio is mean F^(2) / mean revenue."""
    out: dict[str, list] = {}
    for n in user_counts:
        cell = [r for r in rows if r["num_users"] == n]
        stats = {"num_users": n}
        for key in _SUMMARY_KEYS:
            vals = np.array([r[key] for r in cell], dtype=float)
            stats[f"{key}_mean"], stats[f"{key}_std"] = vals.mean(), vals.std()
        revenue = stats["revenue_mean"]
        f2 = np.mean([r["benchmark_f2"] for r in cell])
        stats["competitive_ratio"] = f2 / revenue if revenue > 0 else np.inf
        for key, value in stats.items():
            out.setdefault(key, []).append(value)
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def _log_mechanism(ctx: Any, a: AeriaConfig, name: str, stats: dict[str, np.ndarray],
                   rows: list[dict], tuned: dict, arrivals: list[dict]) -> None:
    with ctx.tracker.child(name) as child:
        params = dataclasses.asdict(mechanism_params(a))
        child.log_params({"mechanism": name, **{k: v for k, v in params.items()
                                                if k not in _tuned_keys(name)}})
        for i, users in enumerate(a.user_counts):  # step = number of users: the UI's x-axis
            child.log_metrics({k: float(v[i]) for k, v in stats.items()}, step=int(users))
            child.log_metrics({f"tuned_{k}": v for k, v in
                               _knobs(name, tuned[users].get(name, a)).items()}, step=int(users))
        child.log_metrics({f"overall_{k}": float(np.mean(v)) for k, v in stats.items()
                           if k.endswith("_mean")})
        child.log_metrics(_check_summary(rows))
        child.log_table(rows, "mechanism_cells.csv")  # one name: the UI compares children
        if arrivals:
            child.log_table(arrivals, "arrivals.csv")


def _tuned_keys(name: str) -> set[str]:
    """MechanismParams fields a tuned knob sets (logged per user count, not as one param)."""
    fields = {"consensus_base": "consensus_base", "reserve_price": "reserve_price",
              "capacity_grid_base": "capacity_grid_base", "posted_price": "posted_price",
              "cost_plus_margin": "cost_plus_margin", "cost_share_target": "cost_share_per_user"}
    return {fields[key] for key, *_ in SEARCH_SPACE.get(name, ())}


def _check_summary(rows: list[dict]) -> dict[str, float]:
    checked = [r for r in rows if "truthful" in r]
    if not checked:
        return {}
    return {"truthful": float(all(r["truthful"] for r in checked)),
            "max_truth_gain": max(r["max_truth_gain"] for r in checked),
            "envy_free_rate": float(np.mean([r["envy_free"] for r in checked]))}


def results_row(row: dict) -> dict[str, Any]:
    """The results-table row of one mechanism on one market."""
    out = {"mechanism": row["mechanism"], "market": f"{row['num_users']} users",
           "num_users": row["num_users"], "seed": row["seed"], "load": row["load"]}
    for key in ("revenue", "served", "utilisation", "revenue_share", "welfare", "eip_income",
                "seconds"):
        out[key] = row[key]
    for key in ("truthful", "max_truth_gain", "envy_free"):
        if key in row:
            out[key] = row[key]
    return out
