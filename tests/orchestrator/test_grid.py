"""A run's `grid`: one experiment repeated over settings (the paper's columns), checked up
front, with the claims read setting by setting."""
from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator.claims import Claim, check, markdown, paired_difference
from orchestrator.cli import main
from orchestrator.config import ConfigError, load_experiment
from orchestrator.sweepspec import grid_settings
from orchestrator.tracking import PARENT_TAG
from tests.conftest import QUICKSTART, store

FEDPROX = Path(QUICKSTART).parents[1] / "fedprox" / "reproduce.yaml"
TINY = ["fedprox.federation.rounds=2", "fedprox.train_digits=400",
        "fedprox.federation.num_devices=4", "mlflow.experiment=grid"]


def test_every_combination_is_a_full_config_in_the_order_listed():
    cfg = load_experiment(FEDPROX, ["grid={fedprox.mu: [0.0, 0.5], fedprox.federation.rounds: [2, 3]}"])
    settings = grid_settings(cfg)
    assert [label for label, _ in settings] == ["mu=0.0,rounds=2", "mu=0.0,rounds=3",
                                                "mu=0.5,rounds=2", "mu=0.5,rounds=3"]
    _, last = settings[-1]
    assert (last.fedprox.mu, last.fedprox.federation.rounds, last.grid) == (0.5, 3, {})
    assert last.seeds == cfg.seeds, "each setting keeps the run's seeds"


@pytest.mark.parametrize("grid, key, words", [
    ("{fedprox.muu: [0.1]}", "grid.fedprox.muu", "did you mean 'fedprox.mu'"),
    ("{fedprox.mu: 0.1}", "grid.fedprox.mu", "non-empty list"),
    ("{fedprox.mu: [0.1, fast]}", "grid.fedprox.mu[1]", ""),
    ("{seeds: [1, 2]}", "grid.seeds", "not a config key a grid can vary"),
    ("{fedprox.federation.memory_mb_low: [100, 99999]}",  # above memory_mb_high: a cross-field rule
     "grid.fedprox.federation.memory_mb_low", "the setting memory_mb_low=99999"),
])
def test_a_bad_grid_is_one_error_naming_its_key_before_anything_runs(grid, key, words):
    with pytest.raises(ConfigError) as err:
        load_experiment(FEDPROX, [f"grid={grid}"])
    assert err.value.key.startswith(key.split("[")[0]) and words in str(err.value)


def test_a_sweep_refuses_a_grid_and_says_where_the_settings_go(workdir):
    sweep = Path(QUICKSTART).with_name("sweep.yaml")
    assert main(["sweep", str(sweep), "grid={aeria.num_users: [100, 200]}"]) == 2


def test_claims_are_checked_setting_by_setting():
    rows = [{"method": m, "seed": s, "setting": g, "acc": v}
            for g, gain in (("easy", 0.1), ("hard", -0.1)) for s in range(3)
            for m, v in (("base", 0.5 + 0.01 * s), ("ours", 0.5 + gain + 0.02 * s))]
    claim = Claim("ours beats base", "+10 points", 0.1, paired_difference("acc", "ours", "base"))
    table = check([claim], rows)
    assert [(r["setting"], r["verdict"]) for r in table] == [("easy", "reproduced"),
                                                              ("hard", "not reproduced")]
    assert markdown(table).splitlines()[0].startswith("| setting | claim |")


@pytest.mark.usefixtures("local_ray")
def test_a_grid_run_names_each_settings_children_and_summarises_per_setting(workdir, capsys):
    assert main(["run", str(FEDPROX), *TINY, "seeds=2", "grid={fedprox.mu: [0.0, 0.5]}"]) == 0
    bars = capsys.readouterr().err  # not a terminal: each bar's plain lines, named
    assert "mu=0.5 seed 1 · " in bars and "mu=0.0 seed 0 · " in bars
    client = MlflowClient(store())
    exp = client.get_experiment_by_name("grid")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if PARENT_TAG not in r.data.tags]
    names = {r.info.run_name for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id}
    assert "fedprox seed 1 setting mu=0.5" in names and "fedavg seed 0 setting mu=0.0" in names
    results = client.download_artifacts(parent.info.run_id, "results.csv")
    header, *lines = Path(results).read_text().splitlines()
    assert header.endswith(",setting") and len(lines) == 2 * 2 * 2  # settings x seeds x methods
    claims = Path(client.download_artifacts(parent.info.run_id, "claims.csv")).read_text()
    assert claims.startswith("setting,") and "mu=0.0" in claims and "mu=0.5" in claims
    summary = Path(client.download_artifacts(parent.info.run_id, "seeds_summary.csv")).read_text()
    assert "fedavg,mu=0.5" in summary
