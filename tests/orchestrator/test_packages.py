"""The installed packages are the ones requirements.lock verified, and the ranges agree with it.

A fresh `bash setup.sh` installs exactly the lock; pyproject.toml keeps ranges for GPU users whose
upper bounds stop where the lock verified. A pair that cannot run expert parallelism is stopped by
one line that names both versions and the fix.
"""
from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from orchestrator.train import (AUTOEP_BREAKING_TRANSFORMERS, IncompatiblePackages,
                                autoep_incompatibility, check_autoep_compatible)

REPO = Path(__file__).resolve().parents[2]


def locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            name, _, ver = line.partition("==")
            pins[canonicalize_name(name)] = ver
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + extras["test"] + extras["pretrained"]]


@pytest.mark.parametrize("transformers, deepspeed, broken", [
    ("5.22.2", "0.19.8", False),
    ("5.17.0", "0.19.8", False),
    ("5.23.0", "0.19.8", True),
    ("5.25.0", "0.19.8", True),
    ("5.25.0", "0.19.9", False),   # a DeepSpeed newer than the one checked is given its chance
])
def test_autoep_pairs_known_to_break_are_named_with_both_versions_and_the_fix(
        transformers, deepspeed, broken):
    problem = autoep_incompatibility(transformers, deepspeed)
    assert (problem is not None) == broken
    if broken:
        assert transformers in problem and deepspeed in problem
        assert "pip install -c requirements.lock" in problem and "\n" not in problem


def test_the_installed_pair_runs_expert_parallelism():
    check_autoep_compatible()


def test_a_broken_pair_stops_the_cli_with_one_line_and_exit_2(monkeypatch, capsys):
    """IncompatiblePackages is BadInput: the CLI prints it as one line and exits 2."""
    from orchestrator import cli, train

    def validate_then_build_ds_config(args):
        monkeypatch.setattr(train, "autoep_incompatibility", lambda t, d: f"{t} with {d}: fix it")
        train.deepspeed_config(micro_batch_size=1, ep_size=1, preset=None)
        return 0

    monkeypatch.setattr(cli, "cmd_list", validate_then_build_ds_config)
    assert cli.main(["list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "fix it" in err[0]
    assert issubclass(IncompatiblePackages, ValueError)


def test_every_range_admits_its_locked_version_and_stops_at_the_next_minor():
    pins = locked()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared but not in requirements.lock: relock"
        assert req.specifier.contains(pins[name]), f"{req} excludes the locked {pins[name]}"
        uppers = [Version(s.version) for s in req.specifier if s.operator == "<"]
        assert uppers, f"{req} has no upper bound; stop it after the locked {pins[name]}"
        major, minor = Version(pins[name]).release[:2]
        assert uppers[0] <= Version(f"{major}.{minor + 1}"), f"{req} admits unverified minors"


def test_the_transformers_range_stops_before_the_release_that_breaks_autoep():
    (req,) = [r for r in declared() if r.name == "transformers" and not r.extras]
    assert not req.specifier.contains(AUTOEP_BREAKING_TRANSFORMERS + ".0")


def test_this_environment_is_the_lock():
    """What the tests run on is what the lock says was verified (a torch build label aside)."""
    drift = {}
    for name, pinned in locked().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            drift[name] = (pinned, None)
            continue
        if Version(installed).public != Version(pinned).public:
            drift[name] = (pinned, installed)
    assert not drift, f"installed != requirements.lock (pinned, installed): {drift}; " \
                      "run `bash setup.sh` in a fresh virtual environment"


def test_setup_installs_with_the_lock_as_constraints():
    script = (REPO / "setup.sh").read_text()
    assert re.search(r"^LOCK=requirements\.lock$", script, re.M)
    assert 'pip_install -c "$c" -e ".[test,pretrained]"' in script
