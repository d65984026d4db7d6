"""The deepfusion workload's entry points: `run` (every method, one MLflow child run each) and
`trial` (one configuration of a Tune sweep). The phases themselves live in `pipeline.py`.

Final metrics per method: log_ppl, ppl, token_accuracy (every next token), answer_token_accuracy
(the answer tokens of one held-out record per row, Table II), comm_bytes, peak_device_memory_bytes,
and comm_bytes_at_quality: FedJETS' bytes until it first matches DeepFusion's log-PPL (NaN: never
within its rounds; DeepFusion's own is its one-shot comm_bytes).
A trial returns them as `<metric>_<method>` for every method of `run.methods`, plus the unprefixed
metrics of the first method, so `sweep.metric: log_ppl` tunes DeepFusion itself while the
baselines' figures land beside it (one row of Table I per trial in `configurations.csv`).
"""
from __future__ import annotations

import contextlib
from typing import Any

from orchestrator.workload import ResourceRequest, device_pool_request
from workloads.deepfusion.config import KD_METHODS, DeepFusionConfig
from workloads.deepfusion.pipeline import bytes_at_quality, prepare, run_methods

FINAL = ("log_ppl", "ppl", "token_accuracy", "answer_token_accuracy", "comm_bytes",
         "peak_device_memory_bytes", "comm_bytes_at_quality")


# --------------------------------------------------------------------------- reporting
def _log_series(tracker, name: str, values: list[float]) -> None:
    for step, v in enumerate(values):
        tracker.log_metrics({name: v}, step=step)


def _row(method: str, result: dict, results: dict) -> dict:
    f = result["final"]
    return {"method": method, "log_ppl": f["log_ppl"], "ppl": f["ppl"],
            "token_accuracy": f["token_accuracy"],
            "answer_token_accuracy": f.get("answer_token_accuracy", float("nan")),
            "comm_bytes": float(result["comm_bytes"]),
            "peak_device_memory_bytes": float(result["peak_device_memory_bytes"]),
            "comm_bytes_at_quality": _at_quality(method, result, results)}


def _at_quality(method: str, result: dict, results: dict) -> float:
    """Bytes spent reaching DeepFusion's quality: its own one-shot traffic for DeepFusion,
    FedJETS' cumulative traffic until its round log-PPL first matches it, else NaN."""
    if method == "deepfusion":
        return float(result["comm_bytes"])
    if method == "fedjets" and "deepfusion" in results:
        return bytes_at_quality(result, results["deepfusion"]["round_blocks_log_ppl"])
    return float("nan")


def _report(child, method: str, result: dict, results: dict) -> dict:
    """Histories with steps, experts_by_rank, and the final metrics of one method's child run."""
    for i, losses in enumerate(result.get("distill_losses", [])):
        _log_series(child, f"distill_loss_cluster{i}", losses)
    _log_series(child, "tune_loss", result.get("losses", []))
    if result.get("experts_by_rank"):
        child.log_text(repr(result["experts_by_rank"]), "experts_by_rank.txt")
        child.set_tags({"experts_by_rank": str(result["experts_by_rank"])[:5000]})
    if "ep_resumed_from_step" in result:  # > 0: a worker failed and Ray Train restarted the group
        child.log_metrics({"ep_resumed_from_step": result["ep_resumed_from_step"]})
    row = _row(method, result, results)
    child.log_metrics({k: v for k, v in row.items() if k != "method" and v == v})  # NaN: none
    return row


def _figures(rows: list[dict]):
    from matplotlib.figure import Figure

    names = [r["method"] for r in rows]
    table = Figure(figsize=(13, 3.8), layout="constrained")
    for ax, key, label in zip(table.subplots(1, 3),
                              ("log_ppl", "token_accuracy", "answer_token_accuracy"),
                              ("token perplexity (log)", "token accuracy (all tokens)",
                               "token accuracy (answer only)")):
        ax.bar(names, [r[key] for r in rows], color="tab:blue")
        ax.set_ylabel(label)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    comm = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = comm.add_subplot()
    ax.bar(names, [r["comm_bytes"] for r in rows], color="tab:orange")
    ax.set_yscale("log")
    ax.set_ylabel("total communication (bytes)")
    ax.tick_params(axis="x", rotation=30)
    return table, comm


# --------------------------------------------------------------------------- run
def run(cfg: Any, ctx: Any) -> list[dict]:
    c: DeepFusionConfig = cfg.deepfusion
    setup = prepare(c, ctx)
    ctx.tracker.log_metrics({"devices": len(setup.device_models),
                             "test_blocks": len(setup.test_blocks),
                             "public_blocks": len(setup.public_blocks)})
    ctx.tracker.log_table([{"device": n, "model": m, "records": len(t)} for n, (m, t)
                           in enumerate(zip(setup.device_models, setup.device_texts))],
                          "devices.csv")
    with contextlib.ExitStack() as stack:  # FedJETS logs each round live into its child run
        live = {"fedjets": stack.enter_context(ctx.tracker.child("fedjets"))} \
            if "fedjets" in c.run.methods else {}
        on_round = (lambda r, m: live["fedjets"].log_metrics(m, step=r)) if live else None
        results = run_methods(c, setup, ctx, on_round or (lambda r, m: None))
        kd = [r for r in results.values() if "phase0" in r]
        if kd:  # Phases 0 and I are shared by every KD method: logged once, on the parent
            _log_phase0(ctx.tracker, kd[0]["phase0"], kd[0]["clusters"], kd[0]["proxies"])
        rows = []
        for method in c.run.methods:
            child = live.get(method) or stack.enter_context(ctx.tracker.child(method))
            rows.append(_report(child, method, results[method], results))
    ctx.tracker.log_table(rows, "tables_I_II.csv")
    table, comm = _figures(rows)
    ctx.tracker.log_figure(table, "tables_I_II.png")
    ctx.tracker.log_figure(comm, "communication.png")
    return rows


TABLE_I = ("log_ppl", "ppl", "comm_bytes", "comm_bytes_at_quality")
TABLE_II = ("token_accuracy", "answer_token_accuracy")


def summarize(rows: list[dict], tracker: Any) -> None:
    """Tables I and II over seeds on the parent run: per setting and method, each metric's mean,
    95% interval and paired difference against DeepFusion (`table_I.csv`, `table_II.csv`), and
    the dot plot `tables_over_seeds` (the README's figure)."""
    from orchestrator.claims import seed_summary
    from workloads.deepfusion import plots

    summary = seed_summary(rows, "deepfusion")
    tracker.log_table([r for r in summary if r["metric"] in TABLE_I], "table_I.csv")
    tracker.log_table([r for r in summary if r["metric"] in TABLE_II], "table_II.csv")
    tracker.log_figure(plots.tables_over_seeds(summary), "tables_over_seeds.png")


def _log_phase0(tracker, device_metrics: dict, clusters: list, proxies: list[dict]) -> None:
    """Phase 0 per device, and Phase I's proxies against their members (proxies.csv)."""
    for n in range(len(next(iter(device_metrics.values())))):
        tracker.log_metrics({f"phase0_{k}": v[n] for k, v in device_metrics.items()}, step=n)
    tracker.log_text(repr(clusters), "clusters.txt")
    tracker.log_table(proxies, "proxies.csv")
    for row in proxies:
        tracker.log_metrics({k: row[k] for k in ("proxy_log_ppl", "worst_member_log_ppl")},
                            step=row["cluster"])


# --------------------------------------------------------------------------- sweeps
def trial_metrics(cfg: Any) -> list[str]:
    methods = cfg.deepfusion.run.methods
    return [*FINAL, *(f"{k}_{m}" for m in methods for k in FINAL)]


def trial(cfg: Any, ctx: Any) -> dict[str, float]:
    """One sweep configuration: every method of `run.methods` on Ray from inside the trial.

    Phase outputs go to the sweep's shared cache, so trials that differ only in later phases
    (alpha, beta, the VAA sizes) compute Phases 0 and I once.
    """
    c: DeepFusionConfig = cfg.deepfusion
    results = run_methods(c, prepare(c, ctx), ctx)
    rows = {m: _row(m, r, results) for m, r in results.items()}
    first = rows[c.run.methods[0]]
    return {**{k: first[k] for k in FINAL},
            **{f"{k}_{m}": row[k] for m, row in rows.items() for k in FINAL}}


# --------------------------------------------------------------------------- resources
def resource_requests(cfg: Any, kind: str) -> list[ResourceRequest]:
    """What `run` and `trial` (the same methods) hold on Ray, phase by phase: the device pool
    (Phase 0, FedJETS), the Phase II / in-process Phase III tasks, the Ray Train worker group.
    GPU defaults as `pipeline.task_gpus` and `_ep_run` resolve them on a local Ray."""
    c, key = cfg.deepfusion, "deepfusion.run"
    r, gpus = c.run, cfg.ray.num_gpus
    kd = [m for m in r.methods if m in KD_METHODS]
    out = [device_pool_request(c.federation, "deepfusion.federation")] \
        if kd or "fedjets" in r.methods else []
    if kd:
        task_gpus = r.task_gpus if r.task_gpus is not None else float(gpus > 0)
        out.append(ResourceRequest("a distillation or tuning task", 1.0, task_gpus,
                                   gpus_key=f"{key}.task_gpus"))
    if c.uses_ray_train():
        use_gpu = r.use_gpu if r.use_gpu is not None else gpus >= r.ep_workers
        out.append(ResourceRequest("Ray Train workers", r.ep_cpus_per_worker, float(use_gpu),
                                   r.ep_workers, cpus_key=f"{key}.ep_cpus_per_worker",
                                   gpus_key=f"{key}.use_gpu", count_key=f"{key}.ep_workers"))
    return out
