"""Load an experiment YAML, apply `key=value` overrides and validate it against typed dataclasses.

Every bad input is turned into one `ConfigError` that names the key path, what was wrong and what
is allowed. The CLI prints it as a single line and exits 2, before Ray or MLflow are touched.

Config dataclasses declare their knobs with `knob(...)`: a default, a one-line help text and the
constraints (`ge`, `gt`, `le`, `lt`, `choices`, `must_exist`, `kind`) that `build` checks. Every
float must be finite (`.inf`/`.nan` are rejected, inside lists and mappings too) unless its knob
says `finite=False`. A dataclass may also define `validate(self)` for rules that span several
fields; it raises `ConfigError` with a key relative to itself and `build` prefixes the path
(`orchestrator.checks` has the helpers for what a named file must hold).
"""
from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class BadInput(ValueError):
    """Input the user must fix: the CLI prints it as one line and exits 2."""


class ConfigError(BadInput):
    """One bad config value: `key` is the dotted path, `problem` what is wrong, `allowed` the fix."""

    def __init__(self, key: str, problem: str, allowed: str | None = None):
        self.key, self.problem, self.allowed = key, problem, allowed
        super().__init__(str(self))

    def __str__(self) -> str:
        tail = f"; {self.allowed}" if self.allowed else ""
        return f"config error at '{self.key}': {self.problem}{tail}"

    def under(self, prefix: str) -> "ConfigError":
        key = f"{prefix}.{self.key}" if prefix and self.key else (prefix or self.key)
        return ConfigError(key, self.problem, self.allowed)


PATH_KINDS = ("file", "dir")


def knob(default: Any = dataclasses.MISSING, help: str = "", *, ge=None, gt=None, le=None,
         lt=None, choices: tuple | list | None = None, must_exist: bool = False,
         kind: str | None = None, finite: bool = True, factory: Any = None) -> Any:
    """A config field with its help text and the constraints `build` enforces.

    `kind` ("file" or "dir") is what a path knob must name when the path exists (with
    `must_exist`, it must exist too; "" means "unset" for both). `finite=False` lets a float
    knob that really means "unbounded" take .inf (none does today)."""
    if kind not in (None, *PATH_KINDS):
        raise ValueError(f"knob kind must be one of {PATH_KINDS}, got {kind!r}")
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt,
            "choices": tuple(choices) if choices else None, "must_exist": must_exist,
            "kind": kind, "finite": finite}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- common sections
@dataclass
class RayConfig:
    address: Optional[str] = knob(None, "Ray cluster to join ('auto', 'ray://host:10001'); "
                                        "null starts a local Ray. RAY_ADDRESS overrides it.")
    num_cpus: int = knob(2, "CPUs a local Ray may use", ge=1)
    num_gpus: int = knob(0, "GPUs a local Ray may use", ge=0)
    include_dashboard: bool = knob(False, "start Ray's dashboard with a local Ray")
    dashboard_host: str = knob("127.0.0.1", "interface the dashboard binds to")
    log_to_driver: bool = knob(False, "forward worker stdout/stderr to the console")


@dataclass
class MlflowConfig:
    tracking_uri: str = knob("sqlite:///mlflow.db", "MLflow store; MLFLOW_TRACKING_URI overrides it")
    experiment: Optional[str] = knob(None, "MLflow experiment; default '<workload>-<config name>'")
    run_name: Optional[str] = knob(None, "name of the parent run; default: the config's file "
                                         "name, the kind, the start time and the overrides")
    artifact_root: Optional[str] = knob(None, "artifact location for new experiments; default "
                                              "'mlartifacts/' beside a SQLite store")


SEARCH_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")


@dataclass
class SweepConfig:
    metric: str = knob("", "metric the search optimises (a key the workload's trial returns)")
    mode: str = knob("max", "optimise towards", choices=("max", "min"))
    num_samples: int = knob(1, "Tune samples (grid points are repeated num_samples times)", ge=1)
    search_alg: str = knob("random", "search algorithm", choices=("random", "optuna"))
    scheduler: str = knob("fifo", "trial scheduler", choices=("fifo", "asha", "median"))
    max_concurrent_trials: Optional[int] = knob(None, "cap on trials running at once", ge=1)
    cpus_per_trial: float = knob(1.0, "CPUs each trial reserves (work it starts on Ray reserves "
                                      "its own)", gt=0)
    gpus_per_trial: float = knob(0.0, "GPUs each trial reserves", ge=0)
    batch_size: int = knob(1, "configurations one trial evaluates: grid axes come from Tune, "
                              "sampled axes are drawn batch_size times inside the trial", ge=1)
    params: dict = knob({}, "dotted config key -> {grid|choice: [..]} or "
                            "{uniform|loguniform|randint: [low, high]}")
    recheck: int = knob(0, "after the search, run the best `recheck` trials' configurations for "
                           "real (the workload's `run`, child runs '<name> recheck <i>'): "
                           "recheck.csv puts each trial's metric beside what the run measured",
                        ge=0)

    def validate(self) -> None:
        if self.batch_size > 1 and self.search_alg != "random":
            raise ConfigError("batch_size", "batching needs search_alg 'random'",
                              "set sweep.batch_size=1 or sweep.search_alg=random")


@dataclass
class ExperimentBase:
    """Sections every experiment has; the workload's own section is added by `experiment_schema`."""

    workload: str = knob(dataclasses.MISSING, "registered workload name (see `orchestrator list`)")
    seed: int = knob(0, "seed for every random choice of the run", ge=0)
    seeds: int = knob(1, "run the experiment for seeds seed, seed+1, ..., seed+seeds-1: child runs "
                      "'<name> seed <s>', a seed column in results.csv, 95% intervals in the "
                      "paper-claims table (`run` only; a sweep varies `seed` in sweep.params)", ge=1)
    grid: dict = knob({}, "settings to repeat the run over, dotted config key -> list of values, "
                      "e.g. {deepfusion.data.case: [financial, medical]}: every combination "
                      "runs (times `seeds`) as child runs '<name> setting <label>', with a "
                      "setting column in results.csv and the paper's claims checked per "
                      "setting (`run` only; a sweep uses sweep.params)")
    state_dir: str = knob(".orchestrator", "what must outlive a process: run checkpoints and "
                          "--resume state (state/), Tune results (ray_results/). On a cluster, "
                          "an absolute path every node shares (NFS, a PVC), so Ray Train "
                          "checkpoints reach every worker and --resume works across jobs",
                          kind="dir")
    ray: RayConfig = knob(factory=RayConfig)
    mlflow: MlflowConfig = knob(factory=MlflowConfig)
    sweep: SweepConfig = knob(factory=SweepConfig)

    @property
    def section(self) -> Any:
        """The workload's own typed section (`cfg.aeria` for workload 'aeria')."""
        return getattr(self, self.workload)



def experiment_schema(name: str, section_cls: type) -> type:
    """The full typed experiment for one workload: the common sections plus `name: section_cls`."""
    return dataclasses.make_dataclass(
        f"{section_cls.__name__}Experiment",
        [(name, section_cls, field(default_factory=section_cls))], bases=(ExperimentBase,))


def check_ranges(obj: Any, names: typing.Iterable[str]) -> None:
    """For each name, `<name>_low <= <name>_high` on `obj`, or a ConfigError naming the pair."""
    for name in names:
        low, high = getattr(obj, f"{name}_low"), getattr(obj, f"{name}_high")
        if low > high:
            raise ConfigError(f"{name}_low", f"low {low} exceeds high {high}",
                              f"set {name}_low <= {name}_high")


# --------------------------------------------------------------------------- building
def build(cls: type, data: Any, path: str = "", base: Any = None) -> Any:
    """Turn plain YAML data into an instance of dataclass `cls`, or raise one ConfigError.

    Keys the data leaves out keep `base`'s values (else the field defaults); a nested section
    given in part is laid over its field's default instance, so a `knob(factory=...)` default
    with its own values (one tenant's defaults) survives a YAML that sets only some keys."""
    if not isinstance(data, dict):
        raise ConfigError(path or "<root>", f"expected a mapping, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(_join(path, key), "unknown key",
                              did_you_mean(str(key), fields) + f"known keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = _join(path, name)
        default = getattr(base, name) if base is not None else _default(f)
        if name in data:
            if dataclasses.is_dataclass(default) and isinstance(data[name], dict):
                values[name] = build(type(default), data[name], key, base=default)
            else:
                values[name] = _check(coerce(hints[name], data[name], key), f.metadata, key)
        elif base is not None:
            values[name] = default
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(key, "missing required key", f.metadata.get("help") or None)
    obj = cls(**values)
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except ConfigError as err:
            raise err.under(path) from None
    return obj


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against type `tp` (int widens to float, nothing else converts)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(inner[0], value, key)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {_kind(value)}")
        item = args[0] if args else Any
        return [coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {_kind(value)}")
        item = args[1] if len(args) == 2 else Any
        return {k: coerce(item, v, _join(key, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {_kind(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected an integer, got {_kind(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _as_float(value, key)
        raise ConfigError(key, f"expected a number, got {_kind(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {_kind(value)}")
    raise TypeError(f"config type {tp!r} at {key} is not supported")


def _as_float(value: int | float, key: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ConfigError(key, f"{str(value)[:12]}... is too large for a number",
                          "give a finite number below 1e308") from None


def _check(value: Any, meta: typing.Mapping, key: str) -> Any:
    """Enforce a knob's constraints; lists are checked item by item."""
    if meta.get("finite", True):
        _check_finite(value, key)
    if isinstance(value, list) and (meta.get("choices") or _has_bounds(meta)
                                    or meta.get("must_exist") or meta.get("kind")):
        for i, v in enumerate(value):
            _check(v, meta, f"{key}[{i}]")
        return value
    if value is None:
        return value
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(key, f"'{value}' is not allowed",
                          did_you_mean(str(value), choices)
                          + f"choose one of: {', '.join(map(str, choices))}")
    for bound, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                            ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        b = meta.get(bound)
        if b is not None and isinstance(value, (int, float)) and not ok(value, b):
            raise ConfigError(key, f"{value} is out of range", f"must be {word} {b}")
    if meta.get("must_exist") or meta.get("kind"):
        _check_path(value, meta, key)
    return value


def _check_finite(value: Any, key: str) -> None:
    """No .inf/.nan where a number is meant: they pass `ge`/`le` bounds (inf >= 0) or slip past
    unbounded knobs, and then poison every result. Walks lists and mappings."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"{value} is not a finite number",
                          "give a finite number (.inf, -.inf and .nan are not allowed here)")
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, _join(key, str(k)))


def _check_path(value: Any, meta: typing.Mapping, key: str) -> None:
    """`must_exist`: the path exists; `kind`: an existing path is a file / a folder. "" = unset."""
    if not isinstance(value, str) or value == "":
        return
    path = Path(os.path.expanduser(value))
    what = (meta.get("help") or "").split(";")[0].split(". ")[0]
    if meta.get("must_exist") and not path.exists():
        raise ConfigError(key, f"no such file or directory: {value}",
                          "give an existing path (relative paths start at the working directory)")
    if meta.get("kind") == "file" and path.is_dir():
        raise ConfigError(key, f"{value} is a folder, not a file", f"give a file: {what}")
    if meta.get("kind") == "dir" and path.exists() and not path.is_dir():
        raise ConfigError(key, f"{value} is a file, not a folder", f"give a folder: {what}")


def _has_bounds(meta: typing.Mapping) -> bool:
    return any(meta.get(b) is not None for b in ("ge", "gt", "le", "lt"))


# --------------------------------------------------------------------------- loading
def read_yaml(path: str | Path, overrides: typing.Sequence[str] = ()) -> dict:
    """Read YAML with OmegaConf, merge dotlist overrides, resolve interpolations: plain data."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(str(path), "is a folder, not a config file",
                          "give a YAML file, e.g. experiments/aeria/quickstart.yaml")
    if not p.is_file():
        raise ConfigError(str(path), "no such config file",
                          "give a YAML path, e.g. experiments/aeria/quickstart.yaml")
    _check_utf8(p)
    try:
        base = OmegaConf.load(p)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(str(path), f"malformed YAML{where}: {problem}",
                          "fix the YAML syntax") from None
    except OmegaConfBaseException as err:
        raise ConfigError(str(path), f"unreadable config: {err}".splitlines()[0]) from None
    if not OmegaConf.is_dict(base):
        raise ConfigError(str(path), "the file must hold a mapping of sections",
                          "start with 'workload: <name>'")
    merged = base
    for ov in overrides:
        merged = _merge(merged, _parse_override(ov))
    try:
        return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "<interpolation>"
        raise ConfigError(str(key), str(err).splitlines()[0]) from None


def _check_utf8(path: Path) -> None:
    """A config must be UTF-8 text: a Latin-1 or binary file is named, not a UnicodeDecodeError."""
    problem = text_problem(path.read_bytes())
    if problem:
        raise ConfigError(str(path), problem, "save the config as UTF-8 YAML text")


def text_problem(data: bytes) -> str | None:
    """Why `data` is not UTF-8 text ('is a binary file', 'is not UTF-8 ... on line 3'), or None."""
    for bom, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                      (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if data.startswith(bom):
            return f"is not UTF-8 text ({name}, by its byte-order mark)"
    if b"\x00" in data[:8192]:
        return "is a binary file, not text"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        return f"is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line})"
    return None


def _merge(config: Any, override: Any) -> Any:
    """Lay one override over the config. OmegaConf refuses to merge a list onto a mapping (or the
    reverse: `prince.tenants=[1,2]`); then the override replaces the value, so `build` reports the
    key with the type its schema expects, as it does for the same mistake in the YAML file."""
    try:
        return OmegaConf.merge(config, override)
    except (TypeError, ValueError, OmegaConfBaseException):
        plain = _replaced(OmegaConf.to_container(config), OmegaConf.to_container(override))
        return OmegaConf.create(plain)


def _replaced(base: Any, override: Any) -> Any:
    """Plain-data merge: mappings merge key by key, anything else replaces."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    out = dict(base)
    for key, value in override.items():
        out[key] = _replaced(base.get(key), value) if key in base else value
    return out


def _parse_override(ov: str) -> Any:
    """One `key=value` override as a config, or a ConfigError that names it."""
    key, eq, value = ov.partition("=")
    if not eq or not key:
        raise ConfigError(ov, "an override must look like key=value",
                          "e.g. aeria.user_counts=[500,5000]")
    try:
        return OmegaConf.from_dotlist([ov])
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(key, f"cannot parse the value {value!r}: {problem}",
                          "write YAML, e.g. [1,2] or {uniform: [0, 1]} (a space after ':')") from None


def load_experiment(path: str | Path, overrides: typing.Sequence[str] = ()) -> Any:
    """The one config loader: YAML + overrides -> validated, typed experiment config."""
    from orchestrator import registry

    data = read_yaml(path, overrides)
    name = data.get("workload")
    if name is None:
        raise ConfigError("workload", "missing required key",
                          f"known workloads: {', '.join(registry.names())}")
    if not isinstance(name, str):
        raise ConfigError("workload", f"expected a string, got {_kind(name)}")
    workload = registry.get(name)
    schema = experiment_schema(name, workload.config_cls)
    cfg = build(schema, data)
    if cfg.sweep.params:
        from orchestrator.sweepspec import check_sweep

        check_sweep(cfg, schema, workload)
    if cfg.grid:
        from orchestrator.sweepspec import grid_settings

        grid_settings(cfg)  # every setting builds, or one error naming the grid key
    return cfg


# --------------------------------------------------------------------------- the schema, listed
def schema_keys(cls: type, prefix: str = "") -> list[dict]:
    """Every knob of dataclass `cls`, nested sections flattened to dotted keys: key, type,
    default, constraints and help (what `orchestrator keys WORKLOAD` prints)."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        key, hint = _join(prefix, f.name), hints[f.name]
        if dataclasses.is_dataclass(hint):
            rows += schema_keys(hint, key)
            continue
        default = f.default if f.default is not dataclasses.MISSING else \
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)"
        meta = f.metadata
        rules = [f"{op} {meta[name]}" for name, op in (("ge", ">="), ("gt", ">"), ("le", "<="),
                                                       ("lt", "<")) if meta.get(name) is not None]
        if meta.get("choices"):
            rules.append("one of " + ", ".join(map(str, meta["choices"])))
        rows.append({"key": key, "type": _type_name(hint), "default": default,
                     "rules": "; ".join(rules), "help": meta.get("help", "")})
    return rows


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return f"{' | '.join(map(_type_name, rest))} | null"
    if args:
        return f"{getattr(typing.get_origin(hint), '__name__', str(hint))}" \
               f"[{', '.join(map(_type_name, args))}]"
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


# --------------------------------------------------------------------------- serialising
def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {'a.b.c': leaf}; lists stay leaves (MLflow params are strings anyway)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = _join(prefix, str(k))
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def leaf_fields(cls: type, prefix: str = "") -> dict[str, tuple[Any, typing.Mapping]]:
    """Every settable leaf of a config dataclass: dotted path -> (type, knob metadata)."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, tp = _join(prefix, f.name), hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(leaf_fields(tp, key))
        else:
            out[key] = (tp, f.metadata)
    return out


def check_value(tp: Any, meta: typing.Mapping, value: Any, key: str) -> Any:
    """Type-check and constraint-check one value as `build` would (used for sweep values)."""
    return _check(coerce(tp, value, key), meta, key)


# --------------------------------------------------------------------------- messages
def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return type(value).__name__
    return f"{type(value).__name__} {value!r}"


def did_you_mean(word: str, known: typing.Iterable[Any]) -> str:
    """"did you mean 'x'? " for the closest known word, or "" (the one place that guesses)."""
    close = difflib.get_close_matches(word, [str(k) for k in known], n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""
