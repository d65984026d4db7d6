"""`validate` is light: it judges every shipped experiment without importing the libraries that
only a run needs (torch, transformers, MLflow, Ray, matplotlib, DeepSpeed), so it answers in a
fraction of a second instead of seconds. Configs, the core's checks and workload packages keep
those imports inside the functions that use them (docs: DESIGN.md).

Two checks read what MLflow and Ray would decide without importing them; the last tests here hold
those readings to the libraries' own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.registry import REPO_ROOT, shipped_experiments

HEAVY = ("torch", "transformers", "mlflow", "ray", "matplotlib", "deepspeed")
# Validate each given config in this fresh process, then name the heavy libraries it imported.
VALIDATE_ALL = f"""
import json, sys
from orchestrator.cli import main
for path in sys.argv[1:]:
    if main(["validate", path]) != 0:
        sys.exit(f"validate {{path}} failed")
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
# Known to be heavy, with why: each entry must go once its cause is fixed (strict xfail).
HEAVY_STILL: dict[str, str] = {}


def _workloads():
    for folder, paths in sorted(shipped_experiments().items()):
        marks = [pytest.mark.xfail(strict=True, reason=HEAVY_STILL[folder])] \
            if folder in HEAVY_STILL else []
        yield pytest.param(folder, [str(p) for p in paths], id=folder, marks=marks)


@pytest.mark.parametrize("folder, paths", list(_workloads()))
def test_validating_the_shipped_experiments_imports_no_heavy_library(folder, paths):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    done = subprocess.run([sys.executable, "-c", VALIDATE_ALL, *paths], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert imported == [], f"validating experiments/{folder}/*.yaml imported {imported}"


# --------------------------------------------------------------------------- the light readings
@pytest.mark.parametrize("uri", [
    "sqlite:///mlflow.db", "SQLite:///x.db", "sqlite+pysqlite:///x.db", "sqlitex:///x.db",
    "sqlite+a+b:///x.db", "postgresql://u@h/db", "postgresql+psycopg2://h/db", "postgres://h/db",
    "mysql://h/db", "mssql+pyodbc://h/db", "http://127.0.0.1:5000", "HTTPS://h", "file:///tmp/m",
    "/tmp/mlruns", "mlruns", "C:\\mlruns", "databricks", "databricks://profile", "databricks-uc",
    "uc", "uc:x", "foo://bar", "s3://bucket/x", "ftp://h", "",
])
def test_a_store_uri_is_read_as_mlflow_reads_it(uri):
    """`tracking._store_scheme` knows MLflow's stores; MLflow's own registry must agree."""
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    from mlflow.utils.uri import get_uri_scheme

    from orchestrator.tracking import _store_scheme

    try:
        _tracking_store_registry.get_store_builder(uri)
        mlflows = uri if uri in ("databricks", "databricks-uc", "uc") else get_uri_scheme(uri)
    except Exception:  # noqa: BLE001 - MLflow has no store for it (its exception type varies)
        mlflows = None
    assert _store_scheme(uri) == mlflows


@pytest.mark.parametrize("env", [{}, {"TMPDIR": "/var/tmp/x"}, {"RAY_TMPDIR": "/scratch/ray"}],
                         ids=["default", "TMPDIR", "RAY_TMPDIR"])
def test_the_ray_address_file_is_where_ray_looks(env, monkeypatch):
    """`preflight.ray_address_file` finds `ray start`'s address file as Ray itself does."""
    try:
        from ray._common.utils import get_ray_address_file
    except ImportError:  # older Ray
        from ray._private.utils import get_ray_address_file

    from orchestrator.preflight import ray_address_file

    for name in ("TMPDIR", "RAY_TMPDIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ray_address_file() == Path(get_ray_address_file(None))
