"""Workload name -> `Workload` object. The only place the core names workload modules.

Built-in workloads are listed below as import paths (so a Ray job whose working directory holds
this repo finds them without installing it); third-party packages add theirs through the entry
point group `orchestrator.workloads` (`myname = "mypkg.workload:WORKLOAD"`).
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path

from orchestrator.config import ConfigError, did_you_mean
from orchestrator.workload import Workload

BUILTIN = {
    "aeria": "workloads.aeria:WORKLOAD",
    "deepfusion": "workloads.deepfusion:WORKLOAD",
    "robustness": "workloads.robustness:WORKLOAD",
    "prince": "workloads.prince:WORKLOAD",
}
ENTRY_POINT_GROUP = "orchestrator.workloads"
REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS_DIR = REPO_ROOT / "experiments"


def _targets() -> dict[str, str]:
    targets = dict(BUILTIN)
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
    return workload


def shipped_experiments() -> dict[str, list[Path]]:
    """Workload folder name -> the YAML experiments shipped under experiments/."""
    if not EXPERIMENTS_DIR.is_dir():
        return {}
    return {d.name: sorted(d.glob("*.yaml")) for d in sorted(EXPERIMENTS_DIR.iterdir()) if d.is_dir()}
