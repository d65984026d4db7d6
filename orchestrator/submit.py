"""Submit an experiment to a Ray cluster as a Ray job: `orchestrator submit CONFIG [overrides]`.

A Ray job uploads a working directory to the cluster and runs an entrypoint in it on the head
node. Here the working directory is this repository, so the job runs the code and YAML you have,
and the entrypoint is `python -m orchestrator run|sweep CONFIG [overrides]`. That command joins
the cluster through the RAY_ADDRESS Ray sets for every job (see `runtime.ray_session`).

Ray refuses an upload of 100 MiB or more (zipped). `EXCLUDES` leaves out what only matters on
this machine: git history, local MLflow stores and run state, caches and build output. The
shipped data subsets under `data/` stay in, because every workload reads its own from there (about
19 MB). The zip is about 23 MiB; `--dry-run` measures it with Ray's own packer.

Values reach the job through `runtime_env.env_vars`: MLFLOW_TRACKING_URI when it is set here, and
each variable named with `--env NAME`. The job goes through Ray's `JobSubmissionClient`, not the
`ray job submit` CLI, so those values are never on a command line. The equivalent CLI command is
printed with every forwarded value redacted. The config is validated here first, so a typo fails
in a second with exit status 2, not after an upload.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from orchestrator.config import BadInput, load_experiment
from orchestrator.registry import REPO_ROOT
from orchestrator.preflight import split_host_port, unreachable

log = logging.getLogger(__name__)

RAY_UPLOAD_LIMIT = 100 * 2**20
EXCLUDES = (".git", "mlflow.db*", "mlartifacts", "mlruns", ".orchestrator", "checkpoints",
            "__pycache__", "*.pyc", "*.egg-info", ".venv", ".pytest_cache", ".hypothesis",
            ".benchmarks", "/build/", "/dist/", "compare_*.csv")
FORWARDED = ("MLFLOW_TRACKING_URI",)  # passed on whenever set here
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class Job:
    """One submission: the entrypoint argv and the runtime_env it runs in."""

    entrypoint: list[str]
    runtime_env: dict = field(default_factory=dict)

    @property
    def command(self) -> str:
        return shlex.join(self.entrypoint)


def build(config: str, overrides: Sequence[str], kind: str = "run",
          env_names: Sequence[str] = (), excludes: Sequence[str] = (),
          resume: bool = False, probe_address: bool = False,
          address: str | None = None) -> Job:
    """Validate the experiment here, then describe the job that runs it from the repo root.

    `probe_address`: check something listens at the job API (`address`, else the environment's),
    after the config is found valid and before the warnings: bad input stays one line."""
    cfg = load_experiment(config, list(overrides))
    entry_config = _repo_relative(config)
    env_vars = {name: os.environ[name] for name in FORWARDED if os.environ.get(name)}
    for name in env_names:
        if name not in os.environ:
            raise BadInput(f"--env {name}: no such variable in this environment")
        env_vars[name] = os.environ[name]
    if probe_address:
        check_address(address, probe=True)
    uri = cfg.mlflow.tracking_uri
    if "MLFLOW_TRACKING_URI" not in env_vars and uri.startswith("sqlite:///") \
            and not uri.startswith("sqlite:////"):
        log.warning("MLFLOW_TRACKING_URI is not set here: the job logs to the cluster's "
                    "MLFLOW_TRACKING_URI if its nodes set one, else to %s inside the job's "
                    "temporary working directory, which is deleted with it", uri)
    if not os.path.isabs(cfg.state_dir):
        log.warning("state_dir=%s is relative: the job's checkpoints and `run --resume` state die "
                    "with its temporary working directory; pass state_dir=/a/shared/path to keep "
                    "them (and to give a multi-node Ray Train run storage every node reaches)",
                    cfg.state_dir)
    from orchestrator.tracking import COMMIT_ENV, git_commit

    env_vars[COMMIT_ENV] = git_commit()  # .git is not uploaded: the job's runs record this one
    runtime_env = {"working_dir": str(REPO_ROOT), "excludes": [*EXCLUDES, *excludes],
                   "env_vars": env_vars}
    return Job(["python", "-m", "orchestrator", kind, entry_config, *overrides,
                *(["--resume"] if resume else [])], runtime_env)


def _repo_relative(config: str) -> str:
    """The config's path as the job sees it: relative to the uploaded repository root."""
    path = Path(config).resolve()
    if not path.is_relative_to(REPO_ROOT):
        raise BadInput(f"{config} is outside {REPO_ROOT}, so the job would not have it: "
                       "put the YAML under experiments/")
    return path.relative_to(REPO_ROOT).as_posix()


def redacted(job: Job) -> dict:
    """The runtime_env as it may be printed: forwarded values hidden, a URI keeps its host."""
    from orchestrator.tracking import COMMIT_ENV

    env = {k: v if k == COMMIT_ENV else _redact_uri(v) if k in FORWARDED else "***"
           for k, v in job.runtime_env.get("env_vars", {}).items()}
    return {**job.runtime_env, **({"env_vars": env} if env else {})}


def _redact_uri(uri: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", uri)


def ray_command(job: Job, address: str | None = None) -> str:
    """The equivalent `ray job submit` command, run from the repo root (values redacted)."""
    env = {k: v for k, v in redacted(job).items() if k != "working_dir"}
    parts = ["ray", "job", "submit", *(["--address", address] if address else []),
             "--working-dir", ".", "--runtime-env-json", json.dumps(env), "--", *job.entrypoint]
    return shlex.join(parts)


def package_size(job: Job) -> int:
    """Bytes of the zip Ray would upload for this job, built by Ray's own packer."""
    from ray._private.runtime_env.packaging import create_package

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "package.zip"
        create_package(job.runtime_env["working_dir"], target, include_gitignore=True,
                       excludes=job.runtime_env["excludes"])
        return target.stat().st_size


def job_api_address(address: str | None = None) -> tuple[str, str]:
    """(address, where it came from): `--address`, else RAY_API_SERVER_ADDRESS / RAY_ADDRESS,
    else loopback."""
    if address:
        return address, "--address"
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        if os.environ.get(name):
            return os.environ[name], name
    return DEFAULT_ADDRESS, "the default address"


def check_address(address: str | None = None, probe: bool = False) -> None:
    """A BadInput naming the flag or variable when the job API address is malformed (Ray fails
    on one with a ValueError, InvalidURL or RuntimeError traceback) or, with `probe`, when
    nothing listens there (Ray waits 30 s on a GCS address first). Forms: http(s)://host:port
    (the dashboard), ray://host:port (Ray Client), host:port (the GCS), auto."""
    address, source = job_api_address(address)
    if address == "auto":
        return
    scheme, sep, rest = address.partition("://")
    try:
        if sep and scheme not in ("http", "https", "ray"):
            raise ValueError(f"Ray jobs have no {scheme}:// addresses")
        netloc = rest.split("/", 1)[0].rpartition("@")[2] if sep else address
        host, port = split_host_port(netloc, port_required=not sep)
    except ValueError as err:
        raise BadInput(f"{source} {address}: not a Ray job API address: {err}; use "
                       f"http://HEAD:8265 (the dashboard), ray://HEAD:10001 or HEAD:6379") from None
    why = unreachable(host, port or {"https": 443, "ray": 10001}.get(scheme, 80)) \
        if probe else None
    if why:
        raise BadInput(f"{source} {address}: no Ray job API there ({why}); start the cluster "
                       "with its dashboard, forward its port 8265 here, or pass --address")


def client(address: str | None = None):
    """A job client for `address`, else RAY_API_SERVER_ADDRESS / RAY_ADDRESS, else loopback."""
    from ray.exceptions import RpcError
    from ray.job_submission import JobSubmissionClient

    check_address(address, probe=True)
    address = job_api_address(address)[0]
    _use_ray_token_if_present()
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RpcError) as err:
        raise BadInput(f"no Ray job API at {address} ({err}); start the cluster with its "
                       "dashboard, forward its port 8265 here, or pass --address") from err


def _use_ray_token_if_present() -> None:
    """Send Ray's auth token when one is found (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or
    RAY_AUTH_TOKEN) and RAY_AUTH_MODE is unset, as `ray start` and `ray.init` do.

    Ray 2.60 starts clusters with token authentication on, but its job client sends the token
    only under RAY_AUTH_MODE=token. The token itself is never read or printed here."""
    try:
        from ray._private.authentication import authentication_token_setup as auth
    except ImportError:  # a Ray without token authentication
        return
    quiet = logging.getLogger(auth.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its warning speaks of starting a cluster, not joining one
    try:
        auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        quiet.setLevel(level)


def submit(job: Job, address: str | None = None) -> tuple[object, str]:
    """Upload the working directory and start the job; returns (client, submission id)."""
    jobs = client(address)
    return jobs, jobs.submit_job(entrypoint=job.command, runtime_env=job.runtime_env)


def follow(jobs, job_id: str) -> str:
    """Stream the job's output to stdout until it ends; returns its final status."""
    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            sys.stdout.write(chunk)  # the job's own output, verbatim
            sys.stdout.flush()

    asyncio.run(tail())
    return wait(jobs, job_id)


def wait(jobs, job_id: str, poll_s: float = 1.0) -> str:
    """Block until the job ends (its log stream can close a moment before); its final status."""
    while (status := str(jobs.get_job_status(job_id).value)) not in FINAL:
        time.sleep(poll_s)
    return status
