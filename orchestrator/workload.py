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

`cfg` is the validated, typed experiment (`cfg.seed`, `cfg.section` is the workload's own
dataclass). Workload algorithms stay plain functions; only `run`/`trial` see the context.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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
    trial: Optional[Callable[[Any, "TrialContext"], Metrics]] = None
    trial_batch: Optional[Callable[[Sequence[Any], "TrialContext"], list[Metrics]]] = None
    trial_metrics: Optional[Callable[[Any], Sequence[str]]] = None  # names trial() returns
    resource_requests: Optional[Callable[[Any, str], Sequence["ResourceRequest"]]] = None
    description: str = ""

    def evaluate_batch(self, cfgs: Sequence[Any], ctx: "TrialContext") -> list[Metrics]:
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


def derive_rng(seed: int, *keys: int) -> np.random.Generator:
    """The one seeding helper: an independent generator for (seed, *keys), the same every time."""
    return np.random.default_rng([seed, *keys])


@dataclass
class TrialContext:
    """What a sweep trial may use: its seed, generators derived from it, and `cache_dir`, a
    directory shared by the trials of one sweep for work their configurations have in common."""

    seed: int
    cache_dir: Optional[Path] = None

    def rng(self, *keys: int) -> np.random.Generator:
        return derive_rng(self.seed, *keys)


@dataclass
class RunContext:
    """The core's services handed to `Workload.run`.

    tracker:        the parent MLflow run; `tracker.child(name)` opens a nested run per method
    progress:       `with ctx.progress(total, "rounds") as bar: bar.advance()`
    map:            `ctx.map(fn, items)` runs a pure function over items as Ray tasks, in order
    checkpoint_dir: per-config directory that survives the process, for per-round checkpoints
    resume:         True under `run --resume`: continue from what checkpoint_dir holds
    """

    cfg: Any
    tracker: Any
    progress: Callable[..., Any]
    map: Callable[..., list]
    checkpoint_dir: Path
    resume: bool = False
    extras: dict = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.cfg.seed

    def rng(self, *keys: int) -> np.random.Generator:
        """`ctx.rng(round, device)`: a generator derived from the run's seed and the keys."""
        return derive_rng(self.cfg.seed, *keys)


def rows_to_columns(rows: Iterable[Row]) -> dict[str, list]:
    """[{a:1,b:2},{a:3}] -> {a:[1,3], b:[2,None]}: the shape CSV writers and plots want."""
    rows = list(rows)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    return {k: [r.get(k) for r in rows] for k in keys}
