"""The robustness workload's entry points: `run` (every model on every task, one MLflow child run
per (model, task), the paper's three tables beside ours) and `trial` (one prompt/decoding setting
of the first model, for a Tune sweep).

Per child run `<model>/<task>`: params (backend, prompt, parsing rule, examples), metrics (asr or
macro_f1 and accuracy, unparsed; or bleu/gleu/meteor; model_calls, resumed), and artifacts
`predictions.csv` (every example: input, gold, raw answer, parsed answer) and `bad_cases.csv`.
On the parent: `table_{adversarial,translation,ood}.{csv,png}`, the paper's rows then ours.
`run --resume` continues from the answers already written (evaluate.py), in the same MLflow runs.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

from orchestrator.state import digest
from orchestrator.workload import ResourceRequest
from workloads.robustness.backends import BackendSpec, Secret, missing_package, parse_style
from workloads.robustness.evaluate import Job, evaluate, plan_jobs
from workloads.robustness.report import bad_cases, headline, score_job, table_figure, tables

log = logging.getLogger(__name__)
SUMMARY_KEYS = ("asr", "macro_f1", "accuracy", "unparsed", "bleu", "gleu", "meteor")


def backend_specs(cfg: Any) -> list[BackendSpec]:
    """One spec per model; an http model's key is read from the environment here, and only here."""
    c = cfg.robustness
    specs = []
    for m in c.models:
        key = Secret(os.environ[m.api_key_env]) if m.kind == "http" and m.api_key_env else None
        specs.append(BackendSpec(model=m, prompt=c.prompt, decoding=c.decoding,
                                 finetune=c.finetune, cache_dir=str(Path(c.cache_dir).resolve()),
                                 seed=cfg.seed, api_key=key))
    return specs


# --------------------------------------------------------------------------- run
def run(cfg: Any, ctx: Any) -> list[dict]:
    c = cfg.robustness
    # per seed: a fine-tuned baseline and sampled answers differ between seeds
    jobs, skipped = plan_jobs(c, backend_specs(cfg), ctx.checkpoint_dir / "predictions" /
                              f"seed{cfg.seed}", cfg.seed)
    if skipped:
        log.warning("skipped optional models: %s", "; ".join(skipped))
        ctx.tracker.set_tags({"skipped_models": "; ".join(skipped)[:5000]})
    results: list[dict] = []
    started = time.time()
    evaluate(jobs, ctx.progress, lambda job: results.append(_report(ctx.tracker, job, c)))
    order = {(j.model, j.task.name): i for i, j in enumerate(jobs)}
    results.sort(key=lambda r: order[(r["model"], r["task"])])
    ctx.tracker.log_metrics({"evaluation_seconds": time.time() - started,
                             "model_calls": sum(j.calls for j in jobs)})
    for name, rows in tables(results).items():
        ctx.tracker.log_table(rows, f"table_{name}.csv")
        ctx.tracker.log_figure(table_figure(_paper_table(name), rows), f"table_{name}.png")
    return [_summary(r) for r in results]


def _paper_table(name: str):
    from workloads.robustness.paper_tables import PAPER_TABLES

    return PAPER_TABLES[name]


def _report(tracker: Any, job: Job, c: Any) -> dict:
    """Score one finished job into its own child run; the result feeds the paper tables."""
    style = parse_style(job.spec.model)
    metrics, rows = score_job(job.task, job.examples, job.answers, style, c.zh_tokenizer)
    metrics.update(model_calls=job.calls, resumed=job.resumed)
    with tracker.child(f"{job.model}/{job.task.name}") as child:
        child.log_params({"model": dataclasses.asdict(job.spec.model), "task": job.task.name,
                          "paper_column": job.task.column, "parse_style": style,
                          "prompt_style": job.spec.render_style(),
                          "prompt": "n/a: the authors' stored answers" if style == "chat" and
                          job.spec.model.kind == "stored" else job.spec.prompt_for(job.task),
                          "examples": len(job.examples),
                          "zh_tokenizer": metrics.get("tokenizer", "")})
        child.log_metrics(metrics)
        child.log_table(rows, "predictions.csv")
        bad = bad_cases(job.task, rows)
        if bad:
            child.log_table(bad, "bad_cases.csv")
        else:  # the header alone: no example went wrong
            child.log_text(",".join(rows[0]) + "\n", "bad_cases.csv")
    log.info("%s / %s: %s = %.2f on %d examples (%d answered now, %d resumed)", job.model,
             job.task.name, "bleu" if job.task.kind == "translation" else job.task.metric,
             headline(job.task, metrics), len(job.examples), job.calls, job.resumed)
    return {"model": job.model, "task": job.task.name, "table": job.task.table,
            "column": job.task.column, "metrics": metrics, "n": len(job.examples),
            "of": job.task.expected_rows}


def _summary(result: dict) -> dict:
    m = result["metrics"]
    return {"model": result["model"], "task": result["task"], "examples": result["n"],
            **{k: m[k] for k in SUMMARY_KEYS if k in m},
            "model_calls": m["model_calls"], "resumed": m["resumed"]}


# --------------------------------------------------------------------------- sweeps
def _swept_tasks(cfg: Any) -> list[str]:
    return cfg.robustness.tasks_of(cfg.robustness.models[0])


def trial_metrics(cfg: Any) -> list[str]:
    """What `trial` returns: aggregates over the first model's tasks, and per-task figures."""
    from workloads.robustness.tasks import TASKS

    tasks = [TASKS[t] for t in _swept_tasks(cfg)]
    names = []
    if any(t.kind == "classification" for t in tasks):
        names += ["mean_accuracy", "unparsed_rate"]
    names += ["mean_asr"] if any(t.metric == "asr" for t in tasks) else []
    names += ["mean_macro_f1"] if any(t.metric == "macro_f1" for t in tasks) else []
    names += ["bleu", "gleu", "meteor"] if any(t.kind == "translation" for t in tasks) else []
    for t in tasks:
        names += [f"{k}_{t.name}" for k in (("bleu",) if t.kind == "translation"
                                            else (t.metric, "accuracy"))]
    return names


def trial(cfg: Any, ctx: Any) -> dict[str, float]:
    """The first model under this trial's prompt and decoding settings, on its tasks.

    Answers are kept in the sweep's cache under a digest of everything they depend on, so a
    configuration Tune draws twice is answered once.
    """
    from orchestrator.progress import progress

    c = cfg.robustness
    spec = backend_specs(cfg)[0]
    root = Path(ctx.checkpoint_dir) / "answers" / digest(spec.model, c.prompt, c.decoding,
                                                       c.tasks, c.data_paths, c.finetune, cfg.seed)
    jobs, skipped = plan_jobs(c, [spec], root, cfg.seed)
    if skipped:
        raise RuntimeError(f"the swept model is not available: {skipped[0]}")
    evaluate(jobs, progress, lambda job: None)
    return _trial_metrics(jobs, c.zh_tokenizer)


def _trial_metrics(jobs: list[Job], zh_tokenizer: str) -> dict[str, float]:
    out: dict[str, float] = {}
    per = {j.task.name: score_job(j.task, j.examples, j.answers, parse_style(j.spec.model),
                                  zh_tokenizer)[0] for j in jobs}
    kinds = {j.task.name: j.task for j in jobs}
    for name, m in per.items():
        task = kinds[name]
        keys = ("bleu",) if task.kind == "translation" else (task.metric, "accuracy")
        out.update({f"{k}_{name}": m[k] for k in keys})
    classify = [m for n, m in per.items() if kinds[n].kind == "classification"]
    if classify:
        out["mean_accuracy"] = sum(m["accuracy"] for m in classify) / len(classify)
        out["unparsed_rate"] = 100 * sum(m["unparsed"] for m in classify) / sum(
            m["n"] for m in classify)
    for metric in ("asr", "macro_f1"):
        vals = [m[metric] for m in classify if metric in m]
        if vals:
            out[f"mean_{metric}"] = sum(vals) / len(vals)
    for m in (m for n, m in per.items() if kinds[n].kind == "translation"):
        out.update(bleu=m["bleu"], gleu=m["gleu"], meteor=m["meteor"])
    return out


# --------------------------------------------------------------------------- resources
def resource_requests(cfg: Any, kind: str) -> list[ResourceRequest]:
    """Each model's pool of Ray actors, all of whose workers must run for its batches to end
    (`evaluate.Pool`); a pool frees its resources once done, so pools are phases of their own.
    `trial` evaluates the first model only; optional models `plan_jobs` skips hold nothing."""
    models = cfg.robustness.models[:1] if kind == "trial" else cfg.robustness.models
    out = []
    for i, m in enumerate(models):
        skipped = m.path in ("smollm2", "minilm-sst2") and missing_package(m.path, m.kind)
        if m.n_workers and not skipped:
            key = f"robustness.models[{i}]"
            out.append(ResourceRequest(f"workers of model '{m.name}'", m.cpus, m.num_gpus,
                                       m.n_workers, cpus_key=f"{key}.num_cpus",
                                       gpus_key=f"{key}.num_gpus", count_key=f"{key}.workers"))
    return out
