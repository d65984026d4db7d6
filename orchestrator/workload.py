"""The one seam between the core and a workload.

A workload is a package exposing one `Workload` object (see `workloads/aeria/__init__.py`):

    WORKLOAD = Workload(name="aeria", config_cls=AeriaConfig, run=run, trial=trial)

* `run(cfg, ctx)` runs a full experiment. It decides what to compare and opens one child run per
  compared method with `ctx.tracker.child(name)`; it returns a results table (a list of dicts, one
  row per method) that the core logs as CSV and prints.
* `trial(cfg, ctx)` (optional) evaluates one configuration for a Tune sweep and returns its metrics.
* `trial_batch(cfgs, ctx)` (optional) evaluates many configurations in one call, for workloads whose
  trials are cheap (vectorised simulators); without it the core loops over `trial`.
* `trial_metrics(cfg)` (optional) names the metrics `trial` returns, so a mistyped
  `sweep.metric` is caught before Ray starts.
* `resource_requests(cfg, kind)` (optional) lists what `run` (kind "run") or one `trial` (kind
  "trial") holds on Ray at once, as `ResourceRequest`s, so a request a local Ray can never
  grant fails before Ray starts instead of waiting for ever (`preflight.check_fits_local`).

* `summarize(rows, tracker)` (optional) draws the tables and figures over every seed and grid
  setting of a run (the rows carry `seed` and `setting` columns) on the parent run, after the
  core's `seeds_summary.csv`; a failure there is logged, never failing the finished run.

* `claims` (optional) are the paper's claims as data (`orchestrator.claims.Claim`): after `run`,
  the core writes `claims.csv`/`claims.md` to the parent run with a verdict per claim, and
  `orchestrator reproduce <name>` runs `experiments/<name>/reproduce.yaml` and prints them.

`cfg` is the validated, typed experiment (`cfg.seed`, `cfg.section` is the workload's own
dataclass). Workload algorithms stay plain functions; only `run`/`trial` see the context.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

Metrics = dict[str, float]
Row = dict[str, Any]


@dataclass(frozen=True)
class Workload:
    name: str
    config_cls: type
    run: Callable[[Any, "RunContext"], list[Row]]
    trial: Optional[Callable[[Any, "RunContext"], Metrics]] = None
    trial_batch: Optional[Callable[[Sequence[Any], "RunContext"], list[Metrics]]] = None
    trial_metrics: Optional[Callable[[Any], Sequence[str]]] = None  # names trial() returns
    resource_requests: Optional[Callable[[Any, str], Sequence["ResourceRequest"]]] = None
    description: str = ""
    claims: Sequence[Any] = ()  # orchestrator.claims.Claim: the paper's claims, checked per run
    reference: str = ""  # the proposed method: a multi-seed run's summary pairs the rest with it
    readme_figure: str = ""  # a parent-run figure of `reproduce` that its README embeds (stem)
    summarize: Optional[Callable[[list[Row], Any], None]] = None  # figures over seeds, settings

    def evaluate_batch(self, cfgs: Sequence[Any], ctx: "RunContext") -> list[Metrics]:
        """Metrics for each configuration: vectorised if the workload can, else one by one."""
        if self.trial_batch is not None:
            return self.trial_batch(cfgs, ctx)
        if self.trial is None:
            raise TypeError(f"workload {self.name!r} cannot be swept: it defines no trial()")
        return [self.trial(c, ctx) for c in cfgs]


FILL = 0  # ResourceRequest.count: as many as the room allows, at least one (DevicePool's sizing)


@dataclass(frozen=True)
class ResourceRequest:
    """`count` bundles of `cpus`/`gpus` each that the work holds on Ray at the same time.

    Ray starts an actor or task only once a node has its whole bundle free, and a Ray Train
    worker group (a placement group) or an actor pool whose rounds wait on every actor needs all
    its bundles at once; on a local Ray, one node, they must fit together. Requests with the same
    `phase` are held together (prince's device pool beside its edge servers); phases come one
    after another. The keys name the knobs a fix lowers ("" where none sets it).
    """

    what: str                 # who holds it, in words: "Ray Train workers"
    cpus: float = 0.0         # per bundle
    gpus: float = 0.0         # per bundle
    count: int = 1            # bundles held at once; FILL: sized to the cluster like DevicePool
    cpus_key: str = ""        # e.g. "deepfusion.run.ep_cpus_per_worker"
    gpus_key: str = ""        # e.g. "deepfusion.run.task_gpus"
    count_key: str = ""       # e.g. "deepfusion.run.ep_workers"
    phase: str = ""           # "": a phase of its own


def device_pool_request(fed: Any, prefix: str, phase: str = "") -> ResourceRequest:
    """The federated engine's actor pool (`DevicePool(fed.num_actors, fed.cpus_per_actor,
    fed.gpus_per_actor)`); its round over every device waits on each actor that got devices."""
    count = min(fed.num_actors, fed.num_devices) if fed.num_actors else FILL
    return ResourceRequest("device actors", fed.cpus_per_actor, fed.gpus_per_actor, count,
                           cpus_key=f"{prefix}.cpus_per_actor", gpus_key=f"{prefix}.gpus_per_actor",
                           count_key=f"{prefix}.num_actors", phase=phase)


TUNE_STREAM = 7_919  # first key of `ctx.tune`'s generators (a prime no other stream uses)


def derive_rng(seed: int, *keys: int) -> np.random.Generator:
    """The one seeding helper: an independent generator for (seed, *keys), the same every time."""
    return np.random.default_rng([seed, *keys])


@dataclass
class RunContext:
    """The core's services handed to `Workload.run` and to `trial` (one type for both).

    tracker:        the parent MLflow run; `tracker.child(name)` opens a nested run per method
    progress:       `with ctx.progress(total, "rounds") as bar: bar.advance()`
    map:            `ctx.map(fn, items)` runs a pure function over items as Ray tasks, in order
    checkpoint_dir: per-config directory that survives the process (`run --resume` keeps it); in
                    a sweep, one directory the trials share for work their configs have in common
    federation:     the federated engine (orchestrator/federated/engine.py), checkpointing here
    cached:         `ctx.cached(name, inputs, compute)`: a result kept by a digest of its inputs
    tune:           `ctx.tune(fn, dims, num_samples, first=..)`: a Ray Tune search of a pure
                    function inside `run` (a method tuned before it is compared)
    """

    cfg: Any
    tracker: Any                    # None in a sweep trial: the sweep logs each trial's metrics
    progress: Callable[..., Any]
    map: Callable[..., list]
    checkpoint_dir: Path

    @classmethod
    def for_trial(cls, cfg: Any, shared_dir: Path) -> "RunContext":
        """A sweep trial's context: no MLflow run of its own, `shared_dir` shared by the trials."""
        from orchestrator.progress import progress
        from orchestrator.runtime import parallel_map

        Path(shared_dir).mkdir(parents=True, exist_ok=True)
        return cls(cfg=cfg, tracker=None, progress=progress, map=parallel_map,
                   checkpoint_dir=Path(shared_dir))

    @property
    def seed(self) -> int:
        return self.cfg.seed

    def rng(self, *keys: int) -> np.random.Generator:
        """`ctx.rng(round, device)`: a generator derived from the run's seed and the keys."""
        return derive_rng(self.cfg.seed, *keys)

    def with_seed(self, seed: int) -> "RunContext":
        """This context for another seed (a workload that repeats its comparison over seeds)."""
        import dataclasses

        return dataclasses.replace(self, cfg=dataclasses.replace(self.cfg, seed=seed))

    @property
    def federation(self):
        from orchestrator.federated.engine import Federation

        return Federation(self.seed, Path(self.checkpoint_dir), self.progress)

    def cached(self, name: str, inputs: tuple, compute: Callable[[], Any],
               per_seed: bool = True) -> Any:
        """`compute()` once per distinct `inputs` (the config dataclasses it reads) and seed:
        kept in checkpoint_dir, so a resumed run or a later trial with the same inputs loads it.
        `per_seed=False`: once for every seed (and grid setting) with these inputs, for what
        the seed does not change (a released model every seed starts from)."""
        from orchestrator.state import cached

        return cached(Path(self.checkpoint_dir), name,
                      (self.seed, *inputs) if per_seed else inputs, compute)

    def tune(self, fn: Callable[[dict], dict], dims: list, num_samples: int, key: int = 0,
             first: Optional[dict] = None, desc: str = "tuning") -> list[tuple[dict, dict]]:
        """(setting, metrics) of each of `num_samples` Ray Tune trials of `fn` over `dims`
        (`sweepspec.Dim` axes, as in `sweep.params`), drawn from the run's seed and `key`."""
        from orchestrator.tuning import tune_function

        draws = derive_rng(self.cfg.seed, TUNE_STREAM, key)  # apart from every ctx.rng(...)
        return tune_function(fn, dims, num_samples, seed=int(draws.integers(2**31)),
                             storage=Path(self.checkpoint_dir) / "tune", first=first,
                             desc=desc, progress_bar=self.progress)

    def is_cached(self, name: str, inputs: tuple) -> bool:
        from orchestrator.state import cache_path

        return cache_path(Path(self.checkpoint_dir), name, (self.seed, *inputs)).exists()


def rows_to_columns(rows: Iterable[Row]) -> dict[str, list]:
    """[{a:1,b:2},{a:3}] -> {a:[1,3], b:[2,None]}: the shape CSV writers and plots want."""
    rows = list(rows)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    return {k: [r.get(k) for r in rows] for k in keys}
