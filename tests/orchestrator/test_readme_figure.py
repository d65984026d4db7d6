"""`orchestrator reproduce W` refreshes the figure W's README embeds, from the unmodified
reproduction only: a run with overrides measured something else and leaves it alone."""
from __future__ import annotations

import pytest
from orchestrator import registry, runner
from orchestrator.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]
TINY_REPRODUCTION = """workload: aeria
seed: 0
ray: {num_cpus: 2}
mlflow: {experiment: aeria-readme}
aeria: {user_counts: [200, 400], num_seeds: 2, check_properties: false}
"""


@pytest.fixture
def tiny_tree(workdir, monkeypatch):
    """An experiments/ and workloads/ tree whose aeria reproduction takes seconds."""
    (workdir / "experiments" / "aeria").mkdir(parents=True)
    (workdir / "experiments" / "aeria" / "reproduce.yaml").write_text(TINY_REPRODUCTION)
    (workdir / "workloads" / "aeria").mkdir(parents=True)
    (workdir / "workloads" / "aeria" / "README.md").write_text("![revenue](figures/x.svg)\n")
    monkeypatch.setattr(registry, "EXPERIMENTS_DIR", workdir / "experiments")
    monkeypatch.setattr(runner, "readme_folder", lambda workload: workdir / "workloads" / "aeria")
    return workdir / "workloads" / "aeria" / "figures"


def test_only_the_unmodified_reproduction_writes_the_readme_figure(tiny_tree, capsys):
    assert main(["reproduce", "aeria", "seed=1"]) == 0
    assert not tiny_tree.exists()                      # overridden: not what the README shows

    assert main(["reproduce", "aeria"]) == 0
    out = capsys.readouterr()
    assert "README figure:" in out.out and "Downloading artifacts" not in out.err
    svg = (tiny_tree / "revenue_vs_users.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "Revenue vs users" in svg
    assert (tiny_tree / "revenue_vs_users.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tiny_tree.glob("*.part"))


def test_the_readme_folder_is_beside_the_workload_module():
    folder = runner.readme_folder(registry.get("aeria"))
    assert folder == registry.WORKLOADS_DIR / "aeria" and (folder / "README.md").is_file()


def test_a_missing_figure_replaces_nothing(workdir, monkeypatch):
    from types import SimpleNamespace

    from matplotlib.figure import Figure
    from orchestrator.config import load_experiment
    from orchestrator.tracking import parent_run
    from tests.conftest import QUICKSTART

    cfg = load_experiment(QUICKSTART, ["mlflow.experiment=figs"])
    fig = Figure()
    fig.add_subplot().plot([1, 2])
    with parent_run(cfg, str(QUICKSTART), "run") as parent:
        parent.log_figure(fig, "seed_0/curve.png")
    (workdir / "README.md").write_text("![](figures/curve.svg)\n")
    (workdir / "figures").mkdir()
    (workdir / "figures" / "curve.png").write_bytes(b"old")
    monkeypatch.setattr(runner, "readme_folder", lambda workload: workdir)

    gone = SimpleNamespace(readme_figure="seed_0/gone")
    with pytest.raises(Exception):
        runner.refresh_readme_figure(cfg, gone, parent.run_id)
    assert sorted(p.name for p in (workdir / "figures").iterdir()) == ["curve.png"]
    assert (workdir / "figures" / "curve.png").read_bytes() == b"old"

    there = SimpleNamespace(readme_figure="seed_0/curve")
    written = runner.refresh_readme_figure(cfg, there, parent.run_id)
    assert sorted(p.name for p in written) == ["curve.png", "curve.svg"]
    assert (workdir / "figures" / "curve.png").read_bytes()[:4] == b"\x89PNG"
