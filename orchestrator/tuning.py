"""Ray Tune around `Workload.trial`: the YAML sweep spec becomes a Tuner; each trial a child run.

Batching (for cheap simulators): with `sweep.batch_size: B`, each Tune trial evaluates B
configurations. The grid axes are fixed per trial by Tune; every sampled axis (choice, uniform,
loguniform, randint) is drawn B times inside the trial from a generator seeded by the trial's own
Tune-sampled values, so the run is reproducible. The trial calls `Workload.trial_batch` (vectorised
when the workload provides it) and reports the best configuration of its batch as its metrics and
the whole batch as `batch.csv` in its child run. 10,000 configurations are then 10,000 / B trials.
"""
from __future__ import annotations

import json
import logging
import math
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.config import build, experiment_schema, flatten, to_dict
from orchestrator.progress import progress
from orchestrator.sweepspec import Dim, parse_params, with_values
from orchestrator.workload import RunContext

log = logging.getLogger(__name__)
BATCH_KEY = "batch"


def run_sweep(cfg: Any, parent: Any) -> list[dict]:
    """Run the sweep of `cfg` under `parent`; returns one row per trial (params + metrics)."""
    from ray import tune

    dims = parse_params(cfg)
    storage = (Path(cfg.state_dir) / "ray_results").resolve()
    cache = storage / f"sweep-{parent.run_id}" / "cache"
    trainable = tune.with_resources(
        tune.with_parameters(evaluate_trial, base=to_dict(cfg), dims=dims,
                             batch_size=cfg.sweep.batch_size, cache_dir=str(cache)),
        {"cpu": cfg.sweep.cpus_per_trial, "gpu": cfg.sweep.gpus_per_trial})
    total = cfg.sweep.num_samples * math.prod(len(d.values) for d in dims if not d.sampled)
    with progress(total, "trials") as bar:
        callback = TrialRecorder(parent, cfg.sweep.metric, bar)
        tuner = tune.Tuner(
            trainable, param_space=param_space(dims),
            tune_config=tune.TuneConfig(
                metric=cfg.sweep.metric, mode=cfg.sweep.mode, num_samples=cfg.sweep.num_samples,
                search_alg=search_algorithm(cfg), scheduler=scheduler(cfg.sweep.scheduler),
                max_concurrent_trials=cfg.sweep.max_concurrent_trials, reuse_actors=True),
            run_config=tune.RunConfig(name=f"sweep-{parent.run_id}", verbose=0,
                                      storage_path=str(storage),
                                      failure_config=tune.FailureConfig(fail_fast=True),
                                      callbacks=[callback]))
        results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"{len(results.errors)} of {len(results)} trials failed; "
                           f"see the FAILED child runs. First error: {results.errors[0]}")
    parent.log_table(callback.configurations, "configurations.csv")
    for d in dims:
        parent.log_figure(metric_against(callback.configurations, d, cfg.sweep.metric),
                          f"sweep_{d.path}.png")
    return callback.rows


def metric_against(rows: list[dict], dim: Dim, metric: str) -> Any:
    """Scatter of the sweep metric over one swept key, every evaluated configuration a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r[dim.path] for r in rows]
    ax.scatter(xs if dim.kind not in ("grid", "choice") else [str(x) for x in xs],
               [r[metric] for r in rows], s=8, alpha=0.5)
    if dim.kind == "loguniform":
        ax.set_xscale("log")
    ax.set(xlabel=dim.path, ylabel=metric, title=f"{metric} over {dim.path} ({len(rows)} configs)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def param_space(dims: list[Dim]) -> dict:
    """Nested Tune search space: {'aeria': {'reserve_price': tune.uniform(0, 2)}}."""
    from ray import tune

    make = {"grid": lambda d: tune.grid_search(list(d.values)),
            "choice": lambda d: tune.choice(list(d.values)),
            "uniform": lambda d: tune.uniform(d.low, d.high),
            "loguniform": lambda d: tune.loguniform(d.low, d.high),
            "randint": lambda d: tune.randint(int(d.low), int(d.high) + 1)}  # Tune: high exclusive
    space: dict = {}
    for d in dims:
        *parents, last = d.path.split(".")
        node = space
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = make[d.kind](d)
    return space


def search_algorithm(cfg: Any) -> Any:
    if cfg.sweep.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=cfg.seed)
    from ray.tune.search import BasicVariantGenerator

    # Tune applies max_concurrent_trials to Searchers only: this generator takes it itself
    return BasicVariantGenerator(random_state=cfg.seed,
                                 max_concurrent=cfg.sweep.max_concurrent_trials or 0)


def scheduler(name: str) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    return {"fifo": FIFOScheduler, "asha": ASHAScheduler, "median": MedianStoppingRule}[name]()


# --------------------------------------------------------------------------- inside a run
def tune_function(fn: Any, dims: list[Dim], num_samples: int, seed: int, storage: Path,
                  first: dict | None = None, desc: str = "tuning",
                  progress_bar: Any = progress) -> list[tuple[dict, dict]]:
    """A Ray Tune random search of a pure `fn(setting) -> {metric: float}`, for a workload that
    tunes its methods inside `run` (each method its own search, the same `num_samples`).

    `dims` are sweep axes (`sweepspec.Dim`, the kinds `sweep.params` takes), turned into Tune's
    space by the same `param_space` a sweep uses; `first` (the configured setting) is the first
    of the `num_samples` trials. Returns ({dim path: value}, metrics) per trial in trial order;
    choosing the best is the caller's, since one search may serve several objectives."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    if not dims:
        raise ValueError(f"{desc}: nothing to tune (no search axes); run the method as "
                         "configured instead")
    searcher = BasicVariantGenerator(points_to_evaluate=[first] if first else None,
                                     random_state=seed)
    Path(storage).mkdir(parents=True, exist_ok=True)
    # Tune's own files are scratch: the results come back in memory
    with progress_bar(num_samples, desc) as bar, tempfile.TemporaryDirectory(dir=storage) as tmp:
        tuner = tune.Tuner(
            tune.with_parameters(_report, fn=fn), param_space=param_space(dims),
            tune_config=tune.TuneConfig(num_samples=num_samples, search_alg=searcher,
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=desc.replace(" ", "-"), verbose=0,
                                      storage_path=str(Path(tmp).resolve()),
                                      failure_config=tune.FailureConfig(fail_fast=True),
                                      callbacks=[TrialCounter(bar)]))
        grid = tuner.fit()
    if grid.errors:
        raise RuntimeError(f"{desc}: {len(grid.errors)} of {len(grid)} trials failed. "
                           f"First error: {grid.errors[0]}")
    # trial ids end in a creation counter: <experiment>_<NNNNN>
    done = sorted(grid, key=lambda r: int(r.metrics["trial_id"].rsplit("_", 1)[1]))
    return [({d.path: flatten(r.config)[d.path] for d in dims},
             {k: v for k, v in r.metrics.items() if _is_metric(k, v)}) for r in done]


def _report(config: dict, fn: Any) -> None:
    from ray import tune

    tune.report(fn(config))


# --------------------------------------------------------------------------- inside a trial
def evaluate_trial(config: dict, base: dict, dims: list[Dim], batch_size: int,
                   cache_dir: str) -> None:
    """One Tune trial: build the batch of typed configs, evaluate it, report the best."""
    from ray import tune

    from orchestrator import registry

    workload = registry.get(base["workload"])
    schema = experiment_schema(workload.name, workload.config_cls)
    batch = batch_values(flatten(config), dims, batch_size)
    cfgs = [build(schema, with_values(base, values)) for values in batch]
    ctx = RunContext.for_trial(cfgs[0], Path(cache_dir))
    metrics = workload.evaluate_batch(cfgs, ctx)
    tune.report(best_of_batch(batch, metrics, base["sweep"]["metric"], base["sweep"]["mode"]))


def batch_values(tuned: dict, dims: list[Dim], batch_size: int) -> list[dict]:
    """Tune's point first, then batch_size - 1 points with the sampled axes redrawn."""
    seed = zlib.crc32(repr(sorted(tuned.items())).encode())
    rng = np.random.default_rng(seed)
    sampled = [d for d in dims if d.sampled]
    return [tuned] + [{**tuned, **{d.path: d.sample(rng) for d in sampled}}
                      for _ in range(batch_size - 1)]


def best_index(rows: list[dict], metric: str, mode: str) -> int:
    """Index of the best row by `metric` (the one place that decides what 'best' means)."""
    if any(metric not in r for r in rows):
        raise KeyError(f"sweep.metric '{metric}' is not among the trial's metrics: "
                       f"{', '.join(sorted(rows[0]))}")
    pick = max if mode == "max" else min
    return pick(range(len(rows)), key=lambda i: rows[i][metric])


def ranked(rows: list[dict], metric: str, mode: str) -> list[dict]:
    return sorted(rows, key=lambda r: r[metric], reverse=mode == "max")


def best_of_batch(batch: list[dict], metrics: list[dict], metric: str, mode: str) -> dict:
    best = best_index(metrics, metric, mode)
    result = {**metrics[best], "batch_size": len(batch),
              **{f"best.{k}": v for k, v in batch[best].items()}}
    if len(batch) > 1:
        # a JSON string: Tune's loggers take strings quietly but warn on lists
        result[BATCH_KEY] = json.dumps([{**values, **m} for values, m in zip(batch, metrics)])
    return result


# --------------------------------------------------------------------------- in the driver
def _tune_callback_base() -> type:
    from ray.tune import Callback

    return Callback


class TrialCounter(_tune_callback_base()):
    """Tune callback (driver side): advances a progress bar per finished trial.

    Tune runs this object in the driver but also pickles it (into `tuner.pkl`, for
    `Tuner.restore`); the progress bar is live state of this process (on a terminal a rich
    `Progress` with its refresh thread and locks), so the pickled copy leaves it out.
    """

    def __init__(self, bar: Any):
        self.bar = bar

    def __getstate__(self) -> dict:
        return {**self.__dict__, "bar": None}

    def _advance(self) -> None:
        if self.bar is not None:  # None in a copy unpickled from tuner.pkl
            self.bar.advance()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._advance()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._advance()


class TrialRecorder(TrialCounter):
    """Tune callback (driver side): a child run per trial with its params, metrics and batch."""

    def __init__(self, parent: Any, metric: str, bar: Any):
        super().__init__(bar)
        self.parent, self.metric = parent, metric
        self.children: dict[str, Any] = {}
        self.last: dict[str, dict] = {}        # trial id -> its latest reported result
        self.rows: list[dict] = []             # one per trial: its best configuration
        self.configurations: list[dict] = []   # every configuration evaluated, batches unrolled

    def on_trial_start(self, iteration, trials, trial, **info):
        child = self.parent.start_child(f"trial-{len(self.children):04d}", kind="trial")
        child.set_tags({"tune.trial_id": trial.trial_id})
        self.children[trial.trial_id] = child

    def on_trial_result(self, iteration, trials, trial, result, **info):
        child = self.children[trial.trial_id]
        child.log_metrics({k: v for k, v in result.items() if _is_metric(k, v)},
                          step=result.get("training_iteration"))
        self.last[trial.trial_id] = result

    def on_trial_complete(self, iteration, trials, trial, **info):
        child, result = self.children[trial.trial_id], self.last.get(trial.trial_id, {})
        best = {k[len("best."):]: v for k, v in result.items() if k.startswith("best.")}
        metrics = {k: v for k, v in result.items() if _is_metric(k, v)}
        batch = json.loads(result[BATCH_KEY]) if result.get(BATCH_KEY) else [{**best, **metrics}]
        child.log_params(best)  # the configuration the child's metrics belong to
        if len(batch) > 1:
            child.log_table(batch, "batch.csv")
            child.log_params({f"tune.{k}": v for k, v in flatten(trial.config).items()})
        child.end("FINISHED")
        name = child.client.get_run(child.run_id).info.run_name
        self.rows.append({"trial": name, **best, **metrics})
        self.configurations += [{"trial": name, **row} for row in batch]
        self._advance()

    def on_trial_error(self, iteration, trials, trial, **info):
        error = _read(getattr(trial, "error_file", None)) or "trial failed (no error file)"
        self.children[trial.trial_id].log_params(trial.config)
        self.children[trial.trial_id].end("FAILED", error)
        self._advance()


_TUNE_BOOKKEEPING = ("training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "pid",
                     "time_since_restore", "iterations_since_restore", "done")


def _is_metric(key: str, value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and key not in _TUNE_BOOKKEEPING and not key.startswith("best."))


def _read(path: Any) -> str:
    try:
        return Path(path).read_text() if path else ""
    except OSError:
        return ""
