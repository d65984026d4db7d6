"""The YAML `sweep.params` section, parsed and checked against the experiment's typed schema.

    sweep:
      params:
        aeria.consensus_base: {grid: [1.5, 2.0, 3.0]}     # every value, in every sample
        aeria.values.distribution: {choice: [uniform, lognormal]}
        aeria.reserve_price:  {uniform: [0.0, 2.0]}
        aeria.edge.eip_price_per_gflop: {loguniform: [1.0e-3, 1.0]}
        aeria.num_users:      {randint: [200, 2000]}       # both ends included
        aeria: {fixed_price: {grid: [1.0, 2.0]}}         # nested keys work too

On the command line: `sweep.params.aeria.reserve_price="{uniform: [0, 1]}"`.

Pure (no Ray): `config.load_experiment` calls `parse_params` so a bad spec fails before Ray starts;
`orchestrator.tuning` turns the parsed dimensions into Ray Tune objects and samples them for
batched trials.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from orchestrator.config import SEARCH_KINDS, ConfigError, check_value, did_you_mean, leaf_fields

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


__all__ = ["Dim", "parse_params", "with_values", "set_path"]
