"""Workload name -> `Workload` object. The only place the core names workload modules.

Built-in workloads are found by convention, lm-evaluation-harness style: every package
`workloads/<name>/` (a folder with an `__init__.py`, next to the `orchestrator` package) whose
`__init__.py` assigns or imports a module-level `WORKLOAD` is the workload `<name>`. Adding one
needs no edit anywhere else; a Ray job whose working directory holds this repo finds it without
installing anything. Helper packages such as `workloads/common` define no `WORKLOAD` and are
skipped. Names come from the folder names and a parse of each `__init__.py`, so listing names
imports no workload; `get(name)` imports `workloads.<name>` and checks that `WORKLOAD.name` is the
folder's name.

Third-party packages add theirs through the entry point group `orchestrator.workloads`
(`myname = "mypkg.workload:WORKLOAD"`); a built-in folder wins over an entry point of its name.
"""
from __future__ import annotations

import ast
import importlib
from importlib.metadata import entry_points
from pathlib import Path

from orchestrator.config import ConfigError, did_you_mean
from orchestrator.workload import Workload

ENTRY_POINT_GROUP = "orchestrator.workloads"
REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
# The built-in workloads' root; its folder name is the package they are imported from.
WORKLOADS_DIR = REPO_ROOT / "workloads"
ATTR = "WORKLOAD"


def _defines_workload(init: Path) -> bool:
    """Whether `init` (a package's `__init__.py`) binds `WORKLOAD` at module level, read not run."""
    try:
        tree = ast.parse(init.read_text(encoding="utf-8"), filename=str(init))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return True  # let `get` import it and raise the real error
    for node in tree.body:
        if isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == ATTR for t in node.targets):
                return True
        elif isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Name) and node.target.id == ATTR:
                return True
        elif isinstance(node, ast.ImportFrom):
            if any((a.asname or a.name) == ATTR for a in node.names):
                return True
    return False


def _builtin() -> dict[str, str]:
    """Folder name -> "package.folder:WORKLOAD" for each workload package under WORKLOADS_DIR."""
    if not WORKLOADS_DIR.is_dir():
        return {}
    return {d.name: f"{WORKLOADS_DIR.name}.{d.name}:{ATTR}"
            for d in sorted(WORKLOADS_DIR.iterdir())
            if d.name.isidentifier() and (d / "__init__.py").is_file()
            and _defines_workload(d / "__init__.py")}


def _targets() -> dict[str, str]:
    targets = _builtin()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        targets.setdefault(ep.name, ep.value)
    return targets


def names() -> list[str]:
    return sorted(_targets())


def get(name: str) -> Workload:
    """Import and return the workload registered as `name`, or a ConfigError naming the known ones."""
    targets = _targets()
    if name not in targets:
        raise ConfigError("workload", f"unknown workload '{name}'", did_you_mean(name, targets)
                          + f"known workloads: {', '.join(sorted(targets))}")
    module, _, attr = targets[name].partition(":")
    workload = getattr(importlib.import_module(module), attr)
    if not isinstance(workload, Workload):
        raise TypeError(f"{targets[name]} is not an orchestrator.workload.Workload")
    if workload.name != name:
        raise TypeError(f"{targets[name]} is named '{workload.name}' but registered as '{name}'; "
                        f"a workload's name must be its folder (or entry point) name")
    return workload


def shipped_experiments() -> dict[str, list[Path]]:
    """Workload folder name -> the YAML experiments shipped under experiments/."""
    if not EXPERIMENTS_DIR.is_dir():
        return {}
    return {d.name: sorted(d.glob("*.yaml")) for d in sorted(EXPERIMENTS_DIR.iterdir()) if d.is_dir()}


RUNTIME_PREFIX = "runtime:"


def experiment_runtime(path: Path) -> str | None:
    """The `# runtime: ...` line of an experiment's header comment: how long it took where it
    was measured (or why it was not), which `list` shows; None if the file states none."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            return None
        text = line.lstrip("# ").strip()
        if text.startswith(RUNTIME_PREFIX):
            return text[len(RUNTIME_PREFIX):].strip()
    return None


def experiment_summary(path: Path) -> str:
    """An experiment file's first comment sentence: what it runs and, by the convention of the
    shipped files, how long ("seconds on a laptop", "minutes on 2 CPUs", "GPU-sized")."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if not line.lstrip("# ").startswith(RUNTIME_PREFIX):
            lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    end = text.find(". ")
    return text[:end + 1] if end >= 0 else text
