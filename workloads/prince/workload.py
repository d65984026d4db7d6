"""The prince workload's entry points: `run` (PRINCE and every baseline, one child run each) and
`trial` (one market configuration of a Tune sweep: the game alone, no training).

Per (method, tenant) a run reports the measured time to target (simulated seconds of real SFL
training), whether the target was met within the deadline, the price, devices enrolled, expected
payment, the bound's predicted time, and communication (model deltas + smashed data). The
parent run gets `results.csv` (one row per method and tenant), `speedups.csv` (PRINCE over each
baseline, per tenant) and the two figures. Each (method, tenant) result is saved as it finishes,
so `run --resume` continues after the last one.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.workload import ResourceRequest, device_pool_request
from workloads.prince.config import PrinceConfig
from workloads.prince.pipeline import (allocations, build_market, initial_states,
                                       probe_grad_norms)

CAP = 1e7  # seconds: a tenant that never reaches its target counts as this slow in ratios


# --------------------------------------------------------------------------- run
def run(cfg: Any, ctx: Any) -> list[dict]:
    from workloads.prince import programs
    from workloads.prince.data import load_tenant_data

    c: PrinceConfig = cfg.prince
    names = [n for n, _ in c.tenants.enabled()]
    train = {n: load_tenant_data(n, "train", t.train_limit) for n, t in c.tenants.enabled()}
    labels = {n: d.labels.numpy() if d.labels.ndim == 1 else np.zeros(len(d), int)
              for n, d in train.items()}
    market = build_market(c, ctx.seed, ctx.rng, labels=labels)
    servers = edge_servers(c, market.specs, ctx.checkpoint_dir)
    # Every method starts from these weights. Taken once, before any evaluation: the evaluator
    # loads each round's weights into the driver's cached split, so reading the initial state
    # from it per method warm-started every method with the previous method's trained model.
    init = initial_states(market)
    with ctx.federation.session(c.federation, functools.partial(
            programs.make_device_program, market.specs), market.population, servers) as fl:
        market = probe_grad_norms(c, market, fl)
        if c.calibration.measure:
            return calibrate(c, ctx, fl, market, init)
        outcomes, game = allocations(c, market, ctx.seed)
        _log_market(ctx.tracker, market, outcomes)
        runs = {method: _train_method(c, ctx, fl, method, market, game, outcomes[method], init)
                for method in c.training.methods}
    rows = with_prince_speedup([_row(c, market, method, outcomes[method], runs[method], m, name)
                                for method in c.training.methods for m, name in enumerate(names)])
    ctx.tracker.log_table(speedups(rows), "speedups.csv")
    _figures(ctx.tracker, c, names, outcomes, runs)
    return rows


def edge_servers(c: PrinceConfig, specs: dict, checkpoint_dir: Any) -> dict:
    """One engine service per tenant: the mailbox of its edge server on Ray Train, whose runs
    and checkpoints go under the run's checkpoint folder."""
    from orchestrator.federated.engine import Service
    from workloads.prince.edge_server import EdgeServer, ServerGroup

    storage = Path(checkpoint_dir).resolve() / "edge_servers"
    group = ServerGroup(c.training.server_workers, c.training.server_cpus,
                        c.training.server_gpus, str(storage))
    return {n: Service(EdgeServer, (spec, group), cpus=0) for n, spec in specs.items()}


def _train_method(c: PrinceConfig, ctx: Any, fl: Any, method: str, market, game, alloc,
                  init: dict) -> dict:
    """Every tenant's SFL run under `method` from the initial weights `init`, in its own child
    run; each tenant's result is kept as it finishes, each round checkpointed by the engine."""
    out = {}
    with ctx.tracker.child(method) as child:
        for m, (name, t) in enumerate(c.tenants.enabled()):
            out[name] = ctx.cached(f"{method}-{name}", (c,), lambda m=m, name=name, t=t: train_tenant(
                c, ctx, fl, method, m, name, t, market, game, alloc, init[name], child))
            row = _row(c, market, method, alloc, out, m, name)
            child.log_metrics({f"{name}_{k}": float(v) for k, v in row.items()
                               if isinstance(v, (int, float, bool, np.floating))})
        child.log_params({"prices": [round(float(p), 4) for p in alloc.prices]})
    return out


def train_tenant(c: PrinceConfig, ctx: Any, fl: Any, method: str, m: int, name: str, t, market,
                 game, alloc, initial: tuple[dict, dict], child: Any) -> dict:
    """Tenant `name`'s SFL rounds under `method` on the engine (bias-resilient unless the method
    is `biased_aggregation`), stopping at its target unless told to run every round."""
    from workloads.prince.training import congestion_latency

    return sfl_run(c, fl, f"{method}-{name}", m, name, t, market, alloc,
                   method != "biased_aggregation", ctx.seed, initial, child,
                   latency=congestion_latency(game, m))


def sfl_run(c: PrinceConfig, fl: Any, run_name: str, m: int, name: str, t, market, alloc,
            unbiased: bool, seed: int, initial: tuple[dict, dict], child: Any,
            **engine: Any) -> dict:
    """One tenant's SFL rounds on the engine under `alloc` (who is enrolled, at which q), logged
    per round to `child` under `run_name`, stopping at the target unless told otherwise."""
    from workloads.prince.training import BiasResilient, round_entry, tenant_result

    strategy = BiasResilient(t, m, name, market, alloc, unbiased, seed,
                             _evaluator(market.specs[name], t.test_limit, t.batch_size),
                             c.training.stop_at_target)
    rounds = c.training.rounds if len(strategy.enrolled) else 0
    log = lambda r, h: child.log_metrics(  # noqa: E731
        {f"{run_name}_{k}": v for k, v in round_entry(h).items() if k != "round"}, step=r)
    result = fl.run(run_name, strategy, {"device": initial[0], "server": initial[1]},
                    rounds, key=(c,), on_round=log, **engine)
    return tenant_result(result.history, t)


def calibrate(c: PrinceConfig, ctx: Any, fl: Any, market, init: dict) -> list[dict]:
    """The calibration run (`calibration.measure`): for each tenant, level q and repeat, every
    owner joins each round with probability q and SFL trains from `init` to the target, with p/q
    re-weighting and (levels < 1) with plain FedAvg; then each `owner_fractions` share of the
    owners at q = 1; alpha, beta fitted per tenant. Logs
    calibration.json / calibration.csv / calibration.png, writes `save_to`, returns the points."""
    from workloads.prince import calibration, plots

    cal, points = c.calibration, []
    for m, (name, t) in enumerate(c.tenants.enabled()):
        data, grad = market.devices.data[:, m], market.devices.grad_norm[:, m]
        with ctx.tracker.child(f"calibrate-{name}") as child:
            for fraction, level, unbiased in calibration.measurement_grid(
                    cal.levels, cal.owner_fractions, cal.biased):
                alloc = calibration.LevelAllocation.owners_at(data, m, level, fraction)
                S = calibration.variance_term(data, grad, alloc.q)
                owners = f"-owners{fraction:g}" if fraction < 1 else ""
                for rep in range(cal.repeats):
                    run_name = (f"{name}{owners}-q{level:g}-"
                                f"{'unbiased' if unbiased else 'biased'}-{rep}")
                    out = ctx.cached(f"calibrate-{run_name}", (c,), lambda: sfl_run(
                        c, fl, run_name, m, name, t, market, alloc, unbiased,
                        1000 * ctx.seed + rep, init[name], child))
                    hist = out["history"]
                    points.append({
                        "tenant": name, "level": level, "owners": int((alloc.q > 0).sum()),
                        "owner_fraction": fraction, "repeat": rep, "S": S,
                        "aggregation": "unbiased" if unbiased else "biased",
                        "rounds": calibration.measured_rounds(hist, t.target_metric, t.target),
                        "max_rounds": c.training.rounds,
                        f"final_{t.target_metric}": hist[-1][t.target_metric] if hist
                        else float("nan")})
    stored = calibration.build(points, dict(c.tenants.enabled()), {
        "seed": ctx.seed, "num_devices": c.federation.num_devices, "rounds": c.training.rounds,
        "levels": list(cal.levels), "owner_fractions": list(cal.owner_fractions),
        "repeats": cal.repeats})
    ctx.tracker.log_text(calibration.dumps(stored), "calibration.json")
    rows = [dict(p) for p in points]
    ctx.tracker.log_table(rows, "calibration.csv")
    ctx.tracker.log_figure(plots.calibration(stored), "calibration.png")
    if cal.save_to:
        calibration.save(stored, cal.save_to)
    return rows


def _evaluator(spec, test_limit: int, batch_size: int):
    from workloads.prince import programs
    from workloads.prince.data import batches, load_tenant_data
    from workloads.prince.split import evaluate, load_trainable

    test = load_tenant_data(spec.name, "test", test_limit)

    def score(device_state: dict, server_state: dict) -> dict:
        split = programs.split_of(spec)
        load_trainable(split.device, device_state)
        load_trainable(split.server, server_state)
        out = evaluate(split, batches(test, np.arange(len(test)), max(batch_size, 16)))
        return {"loss": out["loss"], "accuracy": out["accuracy"]}
    return score


# --------------------------------------------------------------------------- reporting
def _row(c: PrinceConfig, market, method: str, alloc, runs: dict, m: int, name: str) -> dict:
    from workloads.prince.calibration import measured_rounds

    t = getattr(c.tenants, name)
    result = runs[name]
    hist = result["history"]
    time = float(result["time_to_target"])
    return {"method": method, "tenant": name, "time_to_target_s": time,
            "target_met": bool(np.isfinite(time) and time <= t.deadline_s),
            "deadline_s": float(t.deadline_s),
            "rounds": len(hist), f"final_{t.target_metric}": hist[-1][t.target_metric]
            if hist else float("nan"), "price": float(alloc.prices[m]),
            "enrolled": int(alloc.enrolled[m]), "payment": float(alloc.payment[m]),
            "budget_ok": bool(alloc.budget_ok[m]),
            "predicted_time_s": float(alloc.time_to_target[m]),
            "predicted_rounds": float(alloc.rounds_to_target[m]),
            "measured_rounds": measured_rounds(hist, t.target_metric, t.target),
            "sim_seconds": float(hist[-1]["sim_seconds"]) if hist else 0.0,
            "comm_bytes": float(result["comm_bytes"])}


def with_prince_speedup(rows: list[dict]) -> list[dict]:
    """Each row with `prince_speedup`: its censored time over PRINCE's for the same tenant (> 1:
    PRINCE was faster; a missed target is charged `censored_time`'s penalty). Averaged over
    seeds, with intervals, in the core's seeds_summary.csv: the speed-up table."""
    prince = {r["tenant"]: censored_time(r) for r in rows if r["method"] == "prince"}
    return [{**r, "prince_speedup": censored_time(r) / prince[r["tenant"]]} for r in rows]


def speedups(rows: list[dict]) -> list[dict]:
    """time_to_target(baseline) / time_to_target(PRINCE), per tenant and baseline: inf when only
    PRINCE reached the target, 0 when only the baseline did, nan when neither did."""
    prince = {r["tenant"]: r["time_to_target_s"] for r in rows if r["method"] == "prince"}

    def ratio(base: float, ours: float) -> float:
        if np.isfinite(base) and np.isfinite(ours):
            return base / ours if ours > 0 else float("inf")
        return {(False, True): float("inf"), (True, False): 0.0}.get(
            (bool(np.isfinite(base)), bool(np.isfinite(ours))), float("nan"))
    return [{"baseline": r["method"], "tenant": r["tenant"],
             "speedup": ratio(r["time_to_target_s"], prince[r["tenant"]])}
            for r in rows if r["method"] != "prince"]


# The state of the art a claim compares with: the pricing mechanisms. full_participation (every
# device at q = 1, no incentives needed) is a reference, biased_aggregation PRINCE's own ablation.
STATE_OF_THE_ART = ("uniform_price", "independent_pricing", "random_assignment")


def censored_time(row: dict) -> float:
    """Time to target; a run that never got there is charged the longer of the time it ran and
    its deadline (a penalty, as a solver that times out is scored at the timeout): two runs that
    both miss tie near the deadline, and a run that enrolled nobody is not "fast"."""
    t = row["time_to_target_s"]
    return t if np.isfinite(t) else max(row["sim_seconds"], row["deadline_s"])


def _by_seed(rows: list[dict]) -> dict:
    out: dict = {}
    for r in (r for r in rows if "method" in r):  # a calibration run's points have none
        out.setdefault(r.get("seed", 0), {})[(r["method"], r["tenant"])] = r
    return out


def speedup_over(baselines: tuple[str, ...], reduce: str):
    """`per_seed` of a speed-up claim: per seed, over tenants (geometric mean or max), the time
    of the tenant's strongest baseline (lowest mean censored time over seeds, chosen once) over
    PRINCE's."""
    def per_seed(rows: list[dict]) -> list[float]:
        seeds = _by_seed(rows)
        tenants = sorted({r["tenant"] for r in rows})
        present = [b for b in baselines if any((b, t) in s for s in seeds.values()
                                               for t in tenants)]
        if not present:
            return []
        strongest = {t: min(present, key=lambda b: np.mean(
            [censored_time(s[b, t]) for s in seeds.values() if (b, t) in s])) for t in tenants}
        out = []
        for s in seeds.values():
            ratios = [censored_time(s[strongest[t], t]) / censored_time(s["prince", t])
                      for t in tenants]
            out.append(float(np.exp(np.mean(np.log(ratios))) if reduce == "geomean"
                             else np.max(ratios)))
        return out
    return per_seed


def targets_met_percent(rows: list[dict]) -> list[float]:
    """Per seed: the share of tenants PRINCE brought to their target within the deadline (%)."""
    return [100.0 * np.mean([r["target_met"] for (m, _), r in s.items() if m == "prince"])
            for s in _by_seed(rows).values()]


def _log_market(tracker, market, outcomes: dict) -> None:
    d = market.devices
    tracker.log_table([{"device": n, **{f"data_{t}": d.data[n, m] for m, t in enumerate(
        market.names)}, **{f"G_{t}": d.grad_norm[n, m] for m, t in enumerate(market.names)},
        "gflops": d.flops[n] / 1e9, "uplink_MBps": d.uplink[n] / 1e6, "kappa": d.kappa[n]}
        for n in range(d.size)], "devices.csv")
    tracker.log_table([{"method": k, "tenant": t, "price": eq.prices[m],
                        "enrolled": int(eq.enrolled[m]), "payment": eq.payment[m],
                        "converged": eq.converged, "leader_iterations": eq.iterations}
                       for k, eq in outcomes.items() for m, t in enumerate(market.names)],
                      "equilibria.csv")


def _figures(tracker, c: PrinceConfig, names: list[str], outcomes: dict, runs: dict) -> None:
    from workloads.prince import plots

    targets = {n: (t.target_metric, t.target) for n, t in c.tenants.enabled()}
    tracker.log_figure(plots.equilibrium(names, outcomes), "equilibrium.png")
    tracker.log_figure(plots.progress_vs_time(names, runs, targets), "progress_vs_time.png")


# --------------------------------------------------------------------------- sweeps
def trial_metrics(cfg: Any) -> list[str]:
    methods = cfg.prince.training.methods
    return ["prince_mean_time_s", "prince_deadlines_met", "prince_budgets_ok",
            *(f"speedup_{m}" for m in methods if m != "prince")]


def trial(cfg: Any, ctx: Any) -> dict[str, float]:
    """The game alone on a drawn market (G_n drawn, not measured): predicted times to target from
    the convergence bound and the time model, for PRINCE and every pricing baseline."""
    from workloads.prince.data import TRAIN_ROWS

    c: PrinceConfig = cfg.prince
    sizes = {n: t.train_limit or TRAIN_ROWS[n] for n, t in c.tenants.enabled()}
    market = build_market(c, cfg.seed, ctx.rng, train_sizes=sizes)
    outcomes, _ = allocations(c, market, cfg.seed)
    prince = np.minimum(outcomes["prince"].time_to_target, CAP)
    out = {"prince_mean_time_s": float(prince.mean()),
           "prince_deadlines_met": float(outcomes["prince"].deadline_met.mean()),
           "prince_budgets_ok": float(outcomes["prince"].budget_ok.mean())}
    for method, eq in outcomes.items():
        if method != "prince":  # geometric mean over tenants of baseline time / PRINCE time
            ratio = np.minimum(eq.time_to_target, CAP) / prince
            out[f"speedup_{method}"] = float(np.exp(np.log(ratio).mean()))
    return out


# --------------------------------------------------------------------------- resources
def resource_requests(cfg: Any, kind: str) -> list[ResourceRequest]:
    """`run` holds the device pool and every tenant's edge-server ranks (Ray Train workers) at
    once (devices call their tenant's server mid-round); `trial` plays the game alone, on no
    Ray resources."""
    if kind == "trial":
        return []
    c, key = cfg.prince, "prince.training"
    servers = ResourceRequest("edge-server ranks (Ray Train workers), server_workers per tenant",
                              c.training.server_cpus, c.training.server_gpus,
                              len(c.tenants.enabled()) * c.training.server_workers,
                              cpus_key=f"{key}.server_cpus", gpus_key=f"{key}.server_gpus",
                              phase="training")
    return [device_pool_request(c.federation, "prince.federation", phase="training"), servers]
