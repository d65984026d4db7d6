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
import json
import os
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
    import ray

    from orchestrator.federated.pool import DevicePool
    from workloads.prince import programs
    from workloads.prince.data import load_tenant_data

    c: PrinceConfig = cfg.prince
    fed, names = c.federation, [n for n, _ in c.tenants.enabled()]
    train = {n: load_tenant_data(n, "train", t.train_limit) for n, t in c.tenants.enabled()}
    labels = {n: d.labels.numpy() if d.labels.ndim == 1 else np.zeros(len(d), int)
              for n, d in train.items()}
    market = build_market(c, ctx.seed, ctx.rng, labels=labels)
    pool = DevicePool(functools.partial(programs.make_device_program, market.specs),
                      fed.num_actors, fed.cpus_per_actor, fed.gpus_per_actor)
    edge = ray.remote(num_cpus=c.training.server_cpus, num_gpus=c.training.server_gpus,
                      max_restarts=1)(programs.EdgeServer)
    servers = {n: edge.remote(s) for n, s in market.specs.items()}
    # Every method starts from these weights. Taken once, before any evaluation: the evaluator
    # loads each round's weights into the driver's cached split, so reading the initial state
    # from it per method warm-started every method with the previous method's trained model.
    init = initial_states(market)
    try:
        market = probe_grad_norms(c, market, pool, ctx.seed)
        outcomes, game = allocations(c, market, ctx.seed)
        _log_market(ctx.tracker, market, outcomes)
        runs = {method: _train_method(c, ctx, method, market, game, outcomes[method], pool,
                                      servers, init) for method in c.training.methods}
    finally:
        pool.shutdown()
        for s in servers.values():
            ray.kill(s)
    rows = [_row(c, market, method, outcomes[method], runs[method], m, name)
            for method in c.training.methods for m, name in enumerate(names)]
    ctx.tracker.log_table(speedups(rows), "speedups.csv")
    _figures(ctx.tracker, c, names, outcomes, runs)
    return rows


def _train_method(c: PrinceConfig, ctx: Any, method: str, market, game, alloc, pool,
                  servers, init: dict) -> dict:
    """Every tenant's SFL run under `method` from the initial weights `init`, in its own child
    run (each tenant saved as done)."""
    from workloads.prince.training import train_tenant

    out = {}
    with ctx.tracker.child(method) as child:
        for m, (name, t) in enumerate(c.tenants.enabled()):
            path = Path(ctx.checkpoint_dir) / f"{method}-{name}.json"
            if path.exists():
                out[name] = json.loads(path.read_text())
            else:
                evaluate = _evaluator(market.specs[name], t.test_limit, t.batch_size)
                log = lambda r, h, name=name: child.log_metrics(  # noqa: E731
                    {f"{name}_{k}": v for k, v in h.items() if k != "round"}, step=r)
                with ctx.progress(c.training.rounds, f"{method}: {name} rounds") as bar:
                    tr = train_tenant(t, m, name, market, game, alloc,
                                      method != "biased_aggregation", pool, servers[name],
                                      init[name], evaluate, c.training.rounds, ctx.seed,
                                      c.training.stop_at_target,
                                      lambda r, h: (log(r, h), bar.advance()))
                out[name] = {"history": tr.history, "time_to_target": tr.time_to_target,
                             "comm_bytes": tr.comm_bytes}
                _save_json(path, out[name])
            row = _row(c, market, method, alloc, out, m, name)
            child.log_metrics({f"{name}_{k}": float(v) for k, v in row.items()
                               if isinstance(v, (int, float, bool, np.floating))})
        child.log_params({"prices": [round(float(p), 4) for p in alloc.prices]})
    return out


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


def _save_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- reporting
def _row(c: PrinceConfig, market, method: str, alloc, runs: dict, m: int, name: str) -> dict:
    t = getattr(c.tenants, name)
    result = runs[name]
    hist = result["history"]
    time = float(result["time_to_target"])
    return {"method": method, "tenant": name, "time_to_target_s": time,
            "target_met": bool(np.isfinite(time) and time <= t.deadline_s),
            "rounds": len(hist), f"final_{t.target_metric}": hist[-1][t.target_metric]
            if hist else float("nan"), "price": float(alloc.prices[m]),
            "enrolled": int(alloc.enrolled[m]), "payment": float(alloc.payment[m]),
            "budget_ok": bool(alloc.budget_ok[m]),
            "predicted_time_s": float(alloc.time_to_target[m]),
            "comm_bytes": float(result["comm_bytes"])}


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
    """`run` holds the device pool and one edge-server actor per tenant at once (devices call
    their tenant's server mid-round); `trial` plays the game alone, on no Ray resources."""
    if kind == "trial":
        return []
    c, key = cfg.prince, "prince.training"
    servers = ResourceRequest("edge-server actors, one per tenant", c.training.server_cpus,
                              c.training.server_gpus, len(c.tenants.enabled()),
                              cpus_key=f"{key}.server_cpus", gpus_key=f"{key}.server_gpus",
                              phase="training")
    return [device_pool_request(c.federation, "prince.federation", phase="training"), servers]
