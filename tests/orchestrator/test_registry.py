"""The registry finds a workload because its folder exists: no central list to edit."""
from __future__ import annotations

import itertools
import textwrap

import pytest

from orchestrator import registry
from orchestrator.config import ConfigError, load_experiment

_PACKAGES = itertools.count()
WORKLOAD_INIT = textwrap.dedent("""
    from dataclasses import dataclass

    from orchestrator.workload import Workload


    @dataclass
    class Config:
        steps: int = 1


    WORKLOAD = Workload(name={name!r}, config_cls=Config, run=lambda cfg, ctx: [],
                        description="a workload made by the test")
""")


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An empty workloads root, importable as its own package, with no entry points around."""
    package = tmp_path / f"test_workloads_{next(_PACKAGES)}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "WORKLOADS_DIR", package)
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    return package


def add_package(root, folder: str, init: str) -> None:
    (root / folder).mkdir()
    (root / folder / "__init__.py").write_text(init)


def test_every_shipped_workload_is_listed_and_the_common_helpers_are_not():
    names = registry.names()
    assert {"aeria", "deepfusion", "prince", "robustness"} <= set(names)
    assert "common" not in names


def test_a_new_folder_exposing_WORKLOAD_is_found_listed_and_loaded(root):
    add_package(root, "hello", WORKLOAD_INIT.format(name="hello"))
    assert registry.names() == ["hello"]
    workload = registry.get("hello")
    assert workload.name == "hello" and workload.description == "a workload made by the test"


def test_a_new_workload_folder_runs_from_yaml_with_no_other_edit(root, tmp_path):
    add_package(root, "hello", WORKLOAD_INIT.format(name="hello"))
    path = tmp_path / "hello.yaml"
    path.write_text("workload: hello\nhello:\n  steps: 3\n")
    assert load_experiment(path).section.steps == 3


def test_listing_names_imports_no_workload(root):
    add_package(root, "heavy", "raise RuntimeError('imported')\nWORKLOAD = None\n")
    assert registry.names() == ["heavy"]
    with pytest.raises(RuntimeError, match="imported"):
        registry.get("heavy")


def test_a_package_without_WORKLOAD_is_not_a_workload(root):
    add_package(root, "helpers", '"""Shared helpers."""\nWORKLOADS = ()\n')
    (root / "notes").mkdir()  # a folder that is not a package at all
    add_package(root, "hello", WORKLOAD_INIT.format(name="hello"))
    assert registry.names() == ["hello"]
    with pytest.raises(ConfigError, match="unknown workload 'helpers'"):
        registry.get("helpers")


def test_WORKLOAD_may_be_imported_into_the_package_rather_than_assigned(root):
    add_package(root, "hello", "")
    (root / "hello" / "entry.py").write_text(WORKLOAD_INIT.format(name="hello"))
    (root / "hello" / "__init__.py").write_text(f"from {root.name}.hello.entry import WORKLOAD\n")
    assert registry.get("hello").name == "hello"


def test_a_WORKLOAD_named_unlike_its_folder_is_one_clear_error(root):
    add_package(root, "hello", WORKLOAD_INIT.format(name="goodbye"))
    with pytest.raises(TypeError) as err:
        registry.get("hello")
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "'goodbye'" in message and "'hello'" in message and "folder" in message


def test_an_unknown_name_suggests_the_closest_and_lists_the_known(root):
    add_package(root, "hello", WORKLOAD_INIT.format(name="hello"))
    with pytest.raises(ConfigError) as err:
        registry.get("helo")
    assert "unknown workload 'helo'" in str(err.value)
    assert "did you mean 'hello'" in str(err.value) and "known workloads: hello" in str(err.value)


def test_every_shipped_experiment_says_how_long_it_takes_and_list_shows_it(capsys):
    """`list` is where a user picks an experiment: each shows its measured runtime (or why it
    was not measured), from the `# runtime:` line of its header."""
    from orchestrator import cli

    shipped = [p for paths in registry.shipped_experiments().values() for p in paths]
    missing = [p.name for p in shipped if not registry.experiment_runtime(p)
               or "TBD" in registry.experiment_runtime(p)]
    assert shipped and not missing, missing
    assert "runtime" not in registry.experiment_summary(shipped[0])
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.count("runtime: ") == len(shipped)
