"""No workload imports another: what two workloads share lives in `workloads/common/`.

So a workload can be copied, deleted or changed without breaking its neighbours, and the registry
can import one workload without dragging in the others. Read from the source (ast), nothing runs.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

WORKLOADS = REPO / "workloads"
SHARED = "common"
PACKAGES = sorted(d.name for d in WORKLOADS.iterdir() if (d / "__init__.py").is_file())


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file `path` of module `module`,
    relative imports resolved, `from pkg import name` counted as `pkg.name` too (it may be one),
    and `importlib.import_module("...")` calls with a literal name."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found += [(node.lineno, name)] + [(node.lineno, f"{name}.{a.name}") for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def foreign_imports(root: Path, name: str) -> list[str]:
    """'file:line imports module' for each import of `<root.name>.<other>` in package `name`,
    where other is neither `name` nor the shared package."""
    allowed = {name, SHARED}
    bad = {}
    for path in sorted((root / name).rglob("*.py")):
        module = ".".join((root.name, *path.relative_to(root).with_suffix("").parts))
        for line, imported in sorted(imported_modules(path, module), key=lambda x: len(x[1])):
            parts = imported.split(".")
            if parts[0] == root.name and len(parts) > 1 and parts[1] not in allowed:
                bad.setdefault(f"{path.relative_to(root.parent)}:{line}", imported)
    return [f"{where} imports {imported}" for where, imported in sorted(bad.items())]


@pytest.mark.parametrize("name", PACKAGES)
def test_a_workload_imports_only_itself_and_the_common_package(name):
    bad = foreign_imports(WORKLOADS, name)
    assert not bad, ("move what is shared into workloads/common/:\n  " + "\n  ".join(bad))


def test_every_way_of_importing_a_neighbour_is_caught(tmp_path):
    root = tmp_path / "workloads"
    for package in ("alpha", "common", "deepfusion"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "alpha" / "ok.py").write_text(
        "from workloads.common.tokenizer import load_tokenizer\nfrom . import ok\n"
        "from workloads.alpha import ok\nimport workloads\n")
    (root / "alpha" / "bad.py").write_text(
        "import workloads.deepfusion.models\n"
        "from workloads.deepfusion.models import DEVICE_ZOO\n"
        "from workloads import deepfusion\n"
        "from ..deepfusion import models\n"
        "def f():\n"
        "    import importlib\n"
        "    return importlib.import_module('workloads.deepfusion')\n")
    bad = foreign_imports(root, "alpha")
    lines = {f"workloads/alpha/bad.py:{n}" for n in (1, 2, 3, 4, 7)}
    assert {b.split(" ")[0] for b in bad} == lines
