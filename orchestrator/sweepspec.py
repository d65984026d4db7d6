"""The YAML `sweep.params` section, parsed and checked against the experiment's typed schema.

    sweep:
      params:
        aeria.consensus_base: {grid: [1.5, 2.0, 3.0]}     # every value, in every sample
        aeria.values.distribution: {choice: [uniform, lognormal]}
        aeria.reserve_price:  {uniform: [0.0, 2.0]}
        aeria.edge.eip_price_per_gflop: {loguniform: [1.0e-3, 1.0]}
        aeria.num_users:      {randint: [200, 2000]}       # both ends included
        aeria: {posted_price: {grid: [1.0, 2.0]}}        # nested keys work too

On the command line: `sweep.params.aeria.reserve_price="{uniform: [0, 1]}"`.

Pure (no Ray): `config.load_experiment` calls `check_sweep` (which parses the spec with
`parse_params` and builds points of the search space) so a bad sweep fails before Ray starts;
`orchestrator.tuning` turns the parsed dimensions into Ray Tune objects and samples them for
batched trials.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from orchestrator.config import (SEARCH_KINDS, ConfigError, build, check_value, did_you_mean,
                                 leaf_fields, to_dict)

NOT_SWEEPABLE = ("workload", "ray.", "mlflow.", "sweep.")


@dataclass(frozen=True)
class Dim:
    path: str            # dotted config key, e.g. "aeria.reserve_price"
    kind: str            # one of SEARCH_KINDS
    values: tuple = ()   # grid / choice
    low: float = 0.0     # uniform / loguniform / randint
    high: float = 0.0

    @property
    def sampled(self) -> bool:
        """Grid axes are enumerated by Tune; every other kind is drawn at random."""
        return self.kind != "grid"

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.kind == "loguniform":
            return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))
        if self.kind == "randint":
            return int(rng.integers(int(self.low), int(self.high) + 1))
        raise ValueError(f"{self.path}: a grid axis is not sampled")


def parse_params(cfg: Any) -> list[Dim]:
    """Every `sweep.params` entry as a Dim, or one ConfigError naming the bad entry."""
    if not cfg.sweep.metric:
        raise ConfigError("sweep.metric", "missing: a sweep needs the metric to optimise",
                          "e.g. sweep.metric=revenue_aeria")
    leaves = leaf_fields(type(cfg))
    return [_dim(path, spec, leaves) for path, spec in _specs(cfg.sweep.params, leaves).items()]


def _specs(params: dict, leaves: Mapping[str, tuple], prefix: str = "") -> dict[str, Any]:
    """Accept dotted keys ('aeria.c': {...}) and nested ones (aeria: {c: {...}}) alike."""
    out = {}
    for key, value in params.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if path not in leaves and isinstance(value, dict) and not set(value) & set(SEARCH_KINDS):
            out.update(_specs(value, leaves, path))
        else:
            out[path] = value
    return out


def _dim(path: str, spec: Any, leaves: Mapping[str, tuple]) -> Dim:
    key = f"sweep.params.{path}"
    if path.startswith(NOT_SWEEPABLE) or path not in leaves:
        known = [p for p in leaves if not p.startswith(NOT_SWEEPABLE)]
        raise ConfigError(key, f"'{path}' is not a sweepable config key",
                          did_you_mean(path, known) + "sweep keys of the workload section or 'seed'")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SEARCH_KINDS:
        raise ConfigError(key, f"bad search spec {spec!r}",
                          f"use exactly one of {{{'|'.join(SEARCH_KINDS)}: ...}}")
    kind, arg = next(iter(spec.items()))
    tp, meta = leaves[path]
    if kind in ("grid", "choice"):
        if not isinstance(arg, list) or not arg:
            raise ConfigError(f"{key}.{kind}", "expected a non-empty list of values")
        values = tuple(check_value(tp, meta, v, f"{key}.{kind}[{i}]") for i, v in enumerate(arg))
        return Dim(path, kind, values=values)
    if not (isinstance(arg, list) and len(arg) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in arg)):
        raise ConfigError(f"{key}.{kind}", f"expected [low, high] numbers, got {arg!r}")
    low, high = arg
    if not low < high:
        raise ConfigError(f"{key}.{kind}", f"low {low} must be below high {high}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{key}.{kind}", f"loguniform needs low > 0, got {low}")
    if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"{key}.{kind}", "randint bounds must be integers")
    if kind != "randint" and _base_type(tp) is int:
        raise ConfigError(f"{key}.{kind}", f"'{path}' is an integer", "use randint or grid")
    for end, v in (("low", low), ("high", high)):
        check_value(tp, meta, v, f"{key}.{kind}.{end}")
    return Dim(path, kind, low=low, high=high)


def _base_type(tp: Any) -> Any:
    args = [a for a in getattr(tp, "__args__", ()) if a is not type(None)]
    return args[0] if args else tp


# --------------------------------------------------------------------------- points to check
COMBINATION_LIMIT = 256   # a cross product up to this size is checked whole
RANDINT_ENUMERATE = 32    # randint ranges up to this many integers are checked value by value
RANDINT_INTERIOR = 6      # else: its ends and this many deterministic integers inside


def check_points(d: Dim) -> tuple:
    """The values of one axis the up-front check builds: every grid/choice value; the two ends of
    a uniform/loguniform range (enough for the monotone rules, `low <= high`, `top_k <=
    num_experts`); every integer of a short randint range (divisibility rules are not monotone),
    else its ends and a few deterministic integers inside."""
    if d.values:
        return d.values
    low, high = d.low, d.high
    if d.kind != "randint":
        return (low, high)
    if high - low + 1 <= RANDINT_ENUMERATE:
        return tuple(range(int(low), int(high) + 1))
    rng = np.random.default_rng(0)
    inside = sorted({int(v) for v in rng.integers(int(low) + 1, int(high), RANDINT_INTERIOR)})
    return (int(low), *inside, int(high))


def edge_points(d: Dim) -> tuple:
    """An axis's extremes: min and max of numbers, else the first and last value listed."""
    points = check_points(d)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in points)
    return (min(points), max(points)) if numeric else (points[0], points[-1])


def combinations(dims: list[Dim], limit: int = COMBINATION_LIMIT) -> Iterator[dict[str, Any]]:
    """Points of the sweep to build, each a {path: value} of every axis at once.

    The whole cross product of `check_points` when it has at most `limit` points. Beyond that:
    every corner (each axis at an extreme, at most `limit` of them), every value of every axis at
    least once, and `limit` deterministic random points of the product. Not covered then: a rule
    broken only by some interior combination the sample misses, and, for uniform/loguniform
    axes, a rule that is not monotone in that axis (only the ends are tried)."""
    points = [check_points(d) for d in dims]
    paths = [d.path for d in dims]
    if math.prod(len(p) for p in points) <= limit:
        for combo in itertools.product(*points):
            yield dict(zip(paths, combo))
        return
    for combo in itertools.islice(itertools.product(*(edge_points(d) for d in dims)), limit):
        yield dict(zip(paths, combo))
    rng = np.random.default_rng(0)
    for i, values in enumerate(points):
        for v in values:
            combo = [p[int(rng.integers(len(p)))] for p in points]
            combo[i] = v
            yield dict(zip(paths, combo))
    for _ in range(limit):
        yield dict(zip(paths, (p[int(rng.integers(len(p)))] for p in points)))


# --------------------------------------------------------------------------- the up-front check
def check_sweep(cfg: Any, schema: type, workload: Any) -> None:
    """A sweep fails here, not in its trials: the spec, the metric name, and points of the search
    space built into full configs, every swept axis set at once, so cross-field rules see each
    value next to the other axes' values (`combinations` says which points: the whole
    product when small, else corners, every value once and a deterministic sample)."""
    dims = parse_params(cfg)
    metric = cfg.sweep.metric
    if workload.trial_metrics is not None:
        known = list(workload.trial_metrics(cfg))
        if metric not in known:
            raise ConfigError("sweep.metric", f"'{metric}' is not a metric of the trial",
                              did_you_mean(metric, known) + f"known: {', '.join(known)}")
    base, seen = to_dict(cfg), set()
    for combo in combinations(dims):
        if repr(combo) in seen:
            continue
        seen.add(repr(combo))
        err = _build_error(schema, base, combo)
        if err is not None:
            raise _blame(schema, base, dims, combo, err)


def _build_error(schema: type, base: dict, combo: Mapping[str, Any]) -> ConfigError | None:
    """The ConfigError building `base` with the swept `combo` raises, or None if it builds."""
    try:
        build(schema, with_values(base, combo))
    except ConfigError as err:
        return err
    return None


def _blame(schema: type, base: dict, dims: list, combo: dict, err: ConfigError) -> ConfigError:
    """Name the axes that make `combo` fail: those where another of the axis's own values (the
    others kept) makes it build. A failure no single axis can fix names the axis of the broken
    key if it is swept, else every axis."""
    culprits = [d.path for d in dims
                if any(_build_error(schema, base, {**combo, d.path: v}) is None
                       for v in check_points(d) if v != combo[d.path])]
    culprits = culprits or [d.path for d in dims if d.path == err.key] or list(combo)
    first = next((p for p in culprits if p == err.key), culprits[0])
    others = ", ".join(f"{p}={combo[p]!r}" for p in culprits if p != first)
    fixes = [err.allowed] if err.allowed else []
    if others:
        fixes.append("narrow the axes so every combination is valid")
    return ConfigError(f"sweep.params.{first}", f"the value {combo[first]!r}"
                       f"{f' with {others}' if others else ''} makes '{err.key}' invalid: "
                       f"{err.problem}", "; ".join(fixes) or None)


# --------------------------------------------------------------------------- a run's grid
NOT_GRIDDABLE = (*NOT_SWEEPABLE, "seed", "seeds", "grid", "state_dir")


def parse_grid(cfg: Any) -> list[Dim]:
    """The top-level `grid` (dotted key -> list of values) as grid axes, each value checked."""
    leaves = leaf_fields(type(cfg))
    dims = []
    for path, values in _specs(cfg.grid, leaves).items():
        key = f"grid.{path}"
        if path.startswith(NOT_GRIDDABLE) or path not in leaves:
            known = [p for p in leaves if not p.startswith(NOT_GRIDDABLE)]
            raise ConfigError(key, f"'{path}' is not a config key a grid can vary",
                              did_you_mean(path, known) + "keys of the workload section")
        if not isinstance(values, list) or not values:
            raise ConfigError(key, f"expected a non-empty list of values, got {values!r}",
                              f"e.g. grid.{path}=[a,b]")
        tp, meta = leaves[path]
        dims.append(Dim(path, "grid", tuple(check_value(tp, meta, v, f"{key}[{i}]")
                                            for i, v in enumerate(values))))
    return dims


def grid_settings(cfg: Any) -> list[tuple[str, Any]]:
    """Every combination of the `grid` values as (label, full config with those values and an
    empty grid), in the order listed; the label ('case=medical,num_devices=32') names it in
    child runs and the results' `setting` column. A combination that breaks a cross-field rule
    is one ConfigError naming the grid."""
    dims = parse_grid(cfg)
    base = to_dict(cfg)
    base["grid"] = {}
    out = []
    for combo in itertools.product(*(d.values for d in dims)):
        values = {d.path: v for d, v in zip(dims, combo)}
        label = ",".join(f"{p.rsplit('.', 1)[-1]}={v}" for p, v in values.items())
        try:
            out.append((label, build(type(cfg), with_values(base, values))))
        except ConfigError as err:
            raise ConfigError(f"grid.{dims[0].path}" if len(dims) == 1 else "grid",
                              f"the setting {label} makes '{err.key}' invalid: {err.problem}",
                              err.allowed or "narrow the grid so every setting is valid") from None
    return out


def set_path(data: dict, path: str, value: Any) -> None:
    """data['a']['b'] = value for path 'a.b' (the nested dicts must exist)."""
    *parents, last = path.split(".")
    for p in parents:
        data = data[p]
    data[last] = value


def with_values(base: dict, values: Mapping[str, Any]) -> dict:
    """A copy of the plain config `base` with dotted keys replaced."""
    out = copy.deepcopy(base)
    for path, value in values.items():
        set_path(out, path, value)
    return out


__all__ = ["Dim", "parse_params", "with_values", "set_path", "check_points", "combinations",
           "check_sweep", "parse_grid", "grid_settings"]
