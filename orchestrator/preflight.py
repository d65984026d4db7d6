"""Checks before Ray starts: what would otherwise go wrong inside Ray becomes one line, exit 2.

An address `ray.init` cannot parse (or, for run and sweep, one nothing answers at), and work a
new local Ray could never schedule: Ray does not reject a request bigger than its node, it waits
for ever for resources that never come. Address parsing and the reachability probe are shared
with `submit` (job API) and `tracking` (MLflow store).
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from orchestrator.config import BadInput, ConfigError, RayConfig
from orchestrator.workload import FILL, ResourceRequest

ADDRESS_FORMS = ("'auto', 'local', host:port (the head's GCS, e.g. 10.0.0.1:6379) or "
                 "ray://host:10001")
PROBE_TIMEOUT_S = 3.0
EPS = 1e-9  # resource sums are floats (0.1 + 0.2)


def check_before_start(cfg: Any, workload: Any, kind: str, about_to_run: bool = False) -> None:
    """Everything about Ray that can be known before starting it (kind: run or sweep).

    A cluster address must be one `ray.init` parses; a new local Ray must be able to grant every
    request the work makes. `about_to_run` (run, sweep; not validate, which judges the config as
    a fresh process would run it): something must listen at the address, and a Ray this process
    started already, which `ray_session` reuses, is judged by its own CPUs and GPUs."""
    address, source = _address_and_source(cfg.ray)
    if address:
        check_address(address, source)
        if about_to_run:
            _check_listening(address, source)
        return
    started = _started_in_process(cfg.ray) if about_to_run else None
    if started is None and not starts_local_ray(cfg.ray, about_to_run):
        return
    cfg = dataclasses.replace(cfg, ray=started or cfg.ray)  # GPU defaults follow the real node
    for point, requests, held in _planned_requests(cfg, workload, kind):
        try:
            check_fits_local(cfg.ray, requests, held, in_process=started is not None)
        except ConfigError as err:
            raise _in_sweep(err, point) from None


def _started_in_process(cfg: RayConfig) -> RayConfig | None:
    """`cfg` with the CPUs and GPUs of the Ray this process started itself (a test's, a
    benchmark's), or None: a Ray this process only joined may grow, so it is not judged."""
    if not ray_is_initialized():
        return None
    import ray
    from ray._private import worker

    if not (ray.is_initialized() and getattr(worker._global_node, "ray_init_cluster", False)):
        return None
    total = ray.cluster_resources()
    return dataclasses.replace(cfg, num_cpus=int(total.get("CPU", 0)),
                               num_gpus=int(total.get("GPU", 0)))


def _address_and_source(cfg: RayConfig) -> tuple[str | None, str]:
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    return cfg.address, "ray.address"


def check_address(address: str, source: str = "ray.address") -> None:
    """Fail on an address `ray.init` cannot use: it fails only later, inside Ray, with a
    traceback, after the MLflow parent run opened. `source` is the config key or variable."""
    if address in ("auto", "local"):
        return
    scheme, sep, rest = address.partition("://")
    if sep and scheme != "ray":
        why = ("an http(s) URL is the job API's address (`orchestrator submit --address`), not "
               "Ray's" if scheme in ("http", "https") else f"Ray has no {scheme}:// addresses")
        raise _address_error(source, address, why)
    try:
        split_host_port(rest if sep else address, port_required=not sep)
    except ValueError as err:
        raise _address_error(source, address, str(err)) from None


def _address_error(source: str, address: str, why: str) -> BadInput:
    problem = f"'{address}' is not a Ray address: {why}"
    if source == "ray.address":
        return ConfigError(source, problem, f"use {ADDRESS_FORMS}, or null for a local Ray")
    return BadInput(f"{source}: {problem}; use {ADDRESS_FORMS}")


def split_host_port(text: str, port_required: bool = True) -> tuple[str, int | None]:
    """('10.0.0.1', 6379) from '10.0.0.1:6379' ('[::1]:6379' for IPv6); a ValueError that says
    what is wrong otherwise (one shared reading for Ray, job API and MLflow addresses)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("an IPv6 host is written [::1]:port")
        port = rest[1:] if rest else None
    else:
        host, sep, port = text.rpartition(":") if ":" in text else (text, "", None)
        if ":" in host:
            raise ValueError("more than one ':' (write an IPv6 host as [::1]:port)")
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"no host name in '{text}'")
    if port is None:
        if port_required:
            raise ValueError("no port: write host:port")
        return host, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"the port '{port}' is not a number from 1 to 65535")
    return host, int(port)


def unreachable(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why nothing answers at host:port (refused, unknown host, timed out), or None."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"the host name '{host}' does not resolve"
    except OSError as err:
        return f"nothing answers at {host}:{port} ({err.strerror or err})"


def _check_listening(address: str, source: str) -> None:
    """A Ray that is not there fails after the parent run opened, or after a 30 s timeout."""
    if address == "local":
        return
    if address == "auto":
        if not _recorded_ray_address():
            raise _address_error(source, address, "no Ray was started on this machine with "
                                 "`ray start` for 'auto' to find")
        return
    scheme, sep, rest = address.partition("://")
    host, port = split_host_port(rest if sep else address, port_required=not sep)
    why = unreachable(host, port or 10001)
    if why:
        fix = "start the cluster or forward its port here"
        if source == "ray.address":
            raise ConfigError(source, f"no Ray at '{address}': {why}", fix + ", or null for a "
                              "local Ray")
        raise BadInput(f"{source}: no Ray at '{address}': {why}; {fix}")


def _recorded_ray_address() -> str | None:
    """The address `ray start` recorded on this machine, if its Ray still answers there."""
    try:
        address = ray_address_file().read_text().strip()
    except OSError:  # not there: no `ray start` on this machine (or unreadable: none to join)
        return None
    if not address:
        return None
    try:
        host, port = split_host_port(address)
    except ValueError:
        return None
    return None if unreachable(host, port, timeout=1.0) else address


def ray_address_file() -> Path:
    """Where `ray start` records its address, as Ray finds it (`ray._common.utils.
    get_ray_address_file(None)`), without importing Ray: `validate` must stay light. The test
    tests/orchestrator/test_validate_is_light.py checks it against Ray's own."""
    if "RAY_TMPDIR" in os.environ:
        tmp = os.environ["RAY_TMPDIR"]
    elif sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        tmp = os.environ["TMPDIR"]
    elif sys.platform.startswith(("darwin", "linux")):
        tmp = "/tmp"
    else:
        tmp = tempfile.gettempdir()
    return Path(tmp) / "ray" / "ray_current_cluster"


def starts_local_ray(cfg: RayConfig, in_this_process: bool = True) -> bool:
    """Whether `ray_session` will start a new Ray from `cfg` (in this process, or in a fresh
    one): only then do ray.num_cpus and ray.num_gpus bound what the work gets (a joined cluster
    has its own, maybe autoscaled)."""
    return not (_address_and_source(cfg)[0] or (in_this_process and ray_is_initialized())
                or _recorded_ray_address())


def ray_is_initialized() -> bool:
    """`ray.is_initialized()`, without importing Ray: a process that never imported it runs
    none."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def check_fits_local(ray_cfg: RayConfig, requests: Sequence[ResourceRequest],
                     held: ResourceRequest | None = None, in_process: bool = False) -> None:
    """A ConfigError for the first phase of `requests` a local Ray of ray.num_cpus and
    ray.num_gpus can never hold at once; `held` is what the caller keeps meanwhile (a Tune
    trial's own reservation, while the work it starts runs beside it). `in_process`: those
    are the counts of the Ray this process runs already, not of one the config starts."""
    room_cpus = ray_cfg.num_cpus - (held.cpus if held else 0)
    room_gpus = ray_cfg.num_gpus - (held.gpus if held else 0)
    for phase in _phases(requests):
        bundles = [(r, _count(r, room_cpus, room_gpus)) for r in phase]
        with_held = bundles + ([(held, 1)] if held else [])
        for unit, need_of, have in (("CPU", _cpus_needed, ray_cfg.num_cpus),
                                    ("GPU", _gpus_needed, ray_cfg.num_gpus)):
            need = need_of(with_held)
            if need > have + EPS:
                raise _does_not_fit(unit, bundles, held, need, have, in_process,
                                    blame_held=held is not None and need_of(bundles) <= have + EPS)


def _phases(requests: Sequence[ResourceRequest]) -> list[list[ResourceRequest]]:
    """Requests grouped by phase, in order; a request with no phase is a phase of its own."""
    groups: dict[str, list[ResourceRequest]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(r.phase or f"#{i}", []).append(r)
    return list(groups.values())


def _count(r: ResourceRequest, room_cpus: float, room_gpus: float) -> int:
    """Bundles the request holds; FILL as `DevicePool` sizes itself (federated/pool.py)."""
    if r.count != FILL:
        return r.count
    k = math.floor(room_cpus / r.cpus + EPS) if r.cpus > 0 else 1
    if r.gpus > 0:
        k = min(k, math.floor(room_gpus / r.gpus + EPS))
    return max(k, 1)


def _cpus_needed(bundles: Sequence[tuple[ResourceRequest, int]]) -> float:
    return sum(r.cpus * n for r, n in bundles)


def _gpus_needed(bundles: Sequence[tuple[ResourceRequest, int]]) -> float:
    """A lower bound on the GPUs: their sum, and one GPU of its own for every share above one
    half (two 0.75 shares never fit on one GPU); whole GPUs are never shared."""
    shared = sum(r.gpus * n for r, n in bundles)
    exclusive = sum(math.ceil(r.gpus - EPS) * n for r, n in bundles if r.gpus > 0.5)
    return max(shared, exclusive)


def _does_not_fit(unit: str, bundles: list, held: ResourceRequest | None, need: float,
                  have: int, in_process: bool, blame_held: bool) -> ConfigError:
    """One line: who holds what, the total against the node, the knobs to turn: the trial's
    reservation first when the work alone would fit, else the biggest holder's."""
    attr, setting = ("cpus", "ray.num_cpus") if unit == "CPU" else ("gpus", "ray.num_gpus")
    asking = sorted([(r, n) for r, n in bundles if getattr(r, attr) > 0],
                    key=lambda rn: -getattr(rn[0], attr) * rn[1])
    if held is not None and getattr(held, attr) > 0:
        asking = [(held, 1), *asking] if blame_held else [*asking, (held, 1)]
    parts = [(f"{n} x " if n > 1 else "") + f"{getattr(r, attr):g} {unit} ({r.what})"
             for r, n in asking]
    keys = list(dict.fromkeys(k for r, _ in asking for k in (
        getattr(r, f"{attr}_key"), r.count_key if r.count != FILL else "") if k))
    pools = [(r.count_key, fit) for r, n in asking if r.count == FILL and r.count_key
             for fit in [math.floor((have - need) / getattr(r, attr) + n + EPS)] if fit >= 1]
    fixes = [f"set {k} to {fit}" for k, fit in pools] + [f"lower {' or '.join(keys)}"] * bool(keys)
    node = f"the Ray this process started has {have}" if in_process else \
        f"a local Ray has {setting}={have}"
    problem = f"{' + '.join(parts)} need {need:g} {unit} at once, and {node}: it would wait " \
        "for ever"
    raise_it = f"{'start it with' if in_process else 'raise ' + setting + ' to'} " \
        f"{math.ceil(need - EPS)}"
    key = [*(k for k, _ in pools), *keys, setting][0]
    return ConfigError(key, problem, ", or ".join([*fixes, raise_it]))


def _planned_requests(cfg: Any, workload: Any, kind: str) -> Iterator[tuple[dict, list, Any]]:
    """(swept values, requests, held) to check: the run's requests; for a sweep, each trial's
    own reservation, then what a trial starts beside it at the sweep's check points, and with
    `sweep.recheck` what a run at those points holds (the best trials are run for real)."""
    listed = workload.resource_requests or (lambda c, k: [])
    if kind != "sweep":
        yield {}, list(listed(cfg, "run")), None
        return
    trial = ResourceRequest("each Tune trial", cfg.sweep.cpus_per_trial, cfg.sweep.gpus_per_trial,
                            cpus_key="sweep.cpus_per_trial", gpus_key="sweep.gpus_per_trial")
    yield {}, [trial], None
    for point, point_cfg in _sweep_points(cfg, workload):
        yield point, list(listed(point_cfg, "trial")), trial
        if cfg.sweep.recheck:
            yield point, list(listed(point_cfg, "run")), None


def _sweep_points(cfg: Any, workload: Any) -> Iterator[tuple[dict, Any]]:
    """The configs the sweep's up-front check builds (`sweepspec.combinations`): trials whose
    swept values change what they start are checked at those values."""
    from orchestrator.config import build, experiment_schema, to_dict
    from orchestrator.sweepspec import combinations, parse_params, with_values

    dims = parse_params(cfg) if cfg.sweep.params else []
    if not dims:
        yield {}, cfg
        return
    schema, base = experiment_schema(cfg.workload, workload.config_cls), to_dict(cfg)
    seen = set()
    for combo in combinations(dims):
        if repr(combo) not in seen:
            seen.add(repr(combo))
            yield combo, build(schema, with_values(base, combo))


def _in_sweep(err: ConfigError, point: dict) -> ConfigError:
    """Name the sweep axis when a swept key is among the knobs of what does not fit."""
    named = re.findall(r"[\w.\[\]]+", f"{err.key} {err.allowed}")
    swept = next((p for p in named if p in point), None)
    if swept is None:
        return err
    return ConfigError(f"sweep.params.{swept}", f"the value {point[swept]!r}: {err.problem}",
                       err.allowed)
