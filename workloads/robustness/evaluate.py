"""Ray-parallel, batched, resumable evaluation of (model, task) jobs.

Each model gets a small pool of Ray actors (`workers`, with its `num_cpus`/`num_gpus`); each actor
builds the backend once, so a model is loaded once per worker, not per batch. The driver feeds
every pool one batch per actor at a time and, as each batch comes back, appends its answers to the
job's JSONL file (`<root>/<model>__<task>.jsonl`, one `{"id", "raw"}` per line, flushed and
fsynced per batch). A killed evaluation loses at most the batches in flight; run again over the
same root, a job skips every example id already in its file, so no example that has an answer is
sent to the model again. `workers: 0` runs the backend in the driver (the stored answers need no
worker).
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from orchestrator.workload import derive_rng
from workloads.robustness.backends import BackendSpec, build_backend, missing_package
from workloads.robustness.tasks import TASKS, Example, Task

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One (model, task) evaluation and where its answers are kept."""

    spec: BackendSpec
    task: Task
    examples: list[Example]
    path: Path
    answers: dict[str, str] = field(default_factory=dict)   # id -> raw answer
    calls: int = 0                                          # examples sent this invocation
    resumed: int = 0                                        # answers read back from disk

    @property
    def model(self) -> str:
        return self.spec.model.name

    def done(self) -> bool:
        return all(e.id in self.answers for e in self.examples)


def subset(examples: list[Example], k: Optional[int], seed: int, task: Task) -> list[Example]:
    """A seeded random subset of k examples in file order (the same for every model)."""
    if k is None or k >= len(examples):
        return examples
    rng = derive_rng(seed, list(TASKS).index(task.name), k)
    keep = sorted(rng.choice(len(examples), size=k, replace=False).tolist())
    return [examples[i] for i in keep]


def plan_jobs(section: Any, specs: Sequence[BackendSpec], root: Path,
              seed: int) -> tuple[list[Job], list[str]]:
    """Every (model, task) job of the run, and the optional models skipped (with why)."""
    jobs, skipped, loaded = [], [], {}
    for spec in specs:
        m = spec.model
        why = missing_package(m.path, m.kind) if m.path in ("smollm2", "minilm-sst2") else ""
        if why:
            skipped.append(f"{m.name}: {why}")
            continue
        for name in section.tasks_of(m):
            task = TASKS[name]
            if name not in loaded:
                loaded[name] = task.load(section.data_paths.get(name))
            examples = subset(loaded[name], m.max_examples, seed, task)
            jobs.append(Job(spec, task, examples, root / f"{_safe(m.name)}__{name}.jsonl"))
    return jobs, skipped


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# --------------------------------------------------------------------------- the answers file
def read_predictions(path: Path) -> dict[str, str]:
    """id -> raw answer from a JSONL file; a torn last line (killed mid-write) is ignored."""
    if not path.is_file():
        return {}
    answers = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        answers[str(row["id"])] = row["raw"]
    return answers


def append_predictions(path: Path, records: Sequence[dict]) -> None:
    """Append records and make them durable before the next batch is sent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- workers
class BackendWorker:
    """A Ray actor (or, with workers: 0, a plain object) holding one loaded backend."""

    def __init__(self, spec: BackendSpec, threads: int = 0):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.backend = build_backend(spec)

    def predict(self, task_name: str, examples: list[Example]) -> list[str]:
        answers = self.backend.predict(TASKS[task_name], examples)
        if len(answers) != len(examples):
            raise RuntimeError(f"backend gave {len(answers)} answers for {len(examples)} examples")
        return answers


class Pool:
    """The workers of one model and the batches waiting for them."""

    def __init__(self, spec: BackendSpec):
        m = spec.model
        threads = max(1, int(m.cpus)) if m.kind in ("generative", "zero_shot", "classifier") \
            else 0
        self.queue: deque = deque()
        if m.n_workers == 0:
            self.local, self.actors = BackendWorker(spec), []
            return
        import ray

        # "DEFAULT": inside a Tune trial the actors take their own resources, not the trial's
        actor = ray.remote(num_cpus=m.cpus, num_gpus=m.num_gpus,
                           scheduling_strategy="DEFAULT")(BackendWorker)
        self.local, self.actors = None, [actor.remote(spec, threads) for _ in range(m.n_workers)]
        self.free = list(self.actors)   # actors holding no batch

    def release_if_idle(self) -> None:
        """Free the workers' CPUs/GPUs once this model has no batch left, so that a model
        waiting for those resources (a cluster smaller than all pools together) can start."""
        if self.actors and not self.queue and len(self.free) == len(self.actors):
            self.shutdown()

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors, self.free = [], []


def _record(job: Job, batch: list[Example], answers: list[str]) -> None:
    append_predictions(job.path, [{"id": e.id, "raw": a} for e, a in zip(batch, answers)])
    job.answers.update({e.id: a for e, a in zip(batch, answers)})
    job.calls += len(batch)


def evaluate(jobs: Sequence[Job], progress: Callable, on_done: Callable[[Job], None]) -> None:
    """Answer every example of every job, resuming from the jobs' files; `on_done(job)` runs
    in the driver as soon as a job's last answer is written."""
    pending = 0
    for job in jobs:
        ids = {e.id for e in job.examples}
        job.answers = {k: v for k, v in read_predictions(job.path).items() if k in ids}
        job.resumed = len(job.answers)
        pending += len(job.examples) - job.resumed
    pools: dict[str, Pool] = {}
    try:
        for job in jobs:
            if job.done():
                on_done(job)
                continue
            if job.model not in pools:
                pools[job.model] = Pool(job.spec)
            pool = pools[job.model]
            todo = [e for e in job.examples if e.id not in job.answers]
            size = job.spec.model.batch_size
            pool.queue.extend((job, todo[i:i + size]) for i in range(0, len(todo), size))
        with progress(pending, "examples") as bar:
            _drain(pools, bar, on_done)
    finally:
        for pool in pools.values():
            pool.shutdown()


def _drain(pools: dict[str, Pool], bar: Any, on_done: Callable[[Job], None]) -> None:
    """Keep every actor busy with one batch; record each batch as it returns."""
    import ray

    inflight: dict[Any, tuple[Pool, Any, Job, list[Example]]] = {}

    def finish(job: Job, batch: list[Example], answers: list[str]) -> None:
        _record(job, batch, answers)
        bar.advance(len(batch))
        if job.done():
            on_done(job)

    while any(p.queue for p in pools.values()) or inflight:
        for pool in pools.values():
            while pool.queue and pool.actors and pool.free:
                job, batch = pool.queue.popleft()
                actor = pool.free.pop()
                inflight[actor.predict.remote(job.task.name, batch)] = (pool, actor, job, batch)
        local = next((p for p in pools.values() if p.local is not None and p.queue), None)
        if local is not None:  # one in-driver batch, while the actors work on theirs
            job, batch = local.queue.popleft()
            finish(job, batch, local.local.predict(job.task.name, batch))
            continue
        if not inflight:
            continue
        [ref], _ = ray.wait(list(inflight), num_returns=1)
        pool, actor, job, batch = inflight.pop(ref)
        pool.free.append(actor)
        finish(job, batch, ray.get(ref))
        pool.release_if_idle()
