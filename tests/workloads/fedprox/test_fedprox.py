"""The template workload, and through it the seam every workload plugs into, without aeria:
discovery by folder, the typed config, a run with one MLflow child per method, exact resume, a
sweep with one child run per trial."""
from __future__ import annotations

import csv

import pytest

from orchestrator import registry
from orchestrator.cli import main
from tests.conftest import REPO, runs_by_parent, store

EXPERIMENTS = REPO / "experiments" / "fedprox"
TINY = ["fedprox.train_digits=400", "fedprox.federation.num_devices=4",
        "fedprox.federation.rounds=3", "fedprox.federation.num_actors=1"]


def test_the_template_is_found_by_its_folder_and_validates():
    assert "fedprox" in registry.names()
    assert main(["validate", str(EXPERIMENTS / "quickstart.yaml")]) == 0


def test_a_knob_the_template_does_not_have_is_one_error_naming_it(capsys):
    assert main(["validate", str(EXPERIMENTS / "quickstart.yaml"), "fedprox.federation.mu=1"]) == 2
    assert "fedprox.federation.mu" in capsys.readouterr().err


def _finals(experiment: str) -> list[dict]:
    _, runs = runs_by_parent(experiment)
    parent, children = runs[-1]
    assert parent.info.status == "FINISHED"
    return sorted(({"method": c.info.run_name, **c.data.metrics} for c in children),
                  key=lambda r: r["method"])


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_run_killed_mid_method_resumes_to_the_metrics_of_an_uninterrupted_run(workdir,
                                                                                 monkeypatch):
    from workloads.fedprox import workload

    args = ["run", str(EXPERIMENTS / "quickstart.yaml"), *TINY]
    assert main([*args, "mlflow.experiment=fp-straight"]) == 0
    straight = _finals("fp-straight")
    assert [r["method"] for r in straight] == ["fedavg", "fedprox"]
    assert all(r["accuracy"] > 0.15 for r in straight), "better than chance (0.1) in 3 rounds"

    calls, real = [], workload.accuracy

    def dies_in_the_second_method(*a):
        calls.append(1)
        if len(calls) == 5:  # fedavg's 3 rounds, then fedprox's second
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(workload, "accuracy", dies_in_the_second_method)
    assert main([*args, "mlflow.experiment=fp-resumed"]) == 130   # Ctrl-C: one line, exit 130
    monkeypatch.setattr(workload, "accuracy", real)
    assert main([*args, "mlflow.experiment=fp-resumed", "--resume"]) == 0
    assert _finals("fp-resumed") == straight


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_the_mu_sweep_leaves_one_child_run_per_trial(workdir):
    assert main(["sweep", str(EXPERIMENTS / "sweep.yaml"), "fedprox.federation.rounds=2",
                 "fedprox.train_digits=300", "mlflow.experiment=fp-sweep"]) == 0
    _, [(_, trials)] = runs_by_parent("fp-sweep", kind="sweep")
    assert len(trials) == 3, "a grid of three mu values"
    assert all(t.info.status == "FINISHED" and "accuracy_fedprox" in t.data.metrics
               for t in trials)


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_reproduce_runs_every_seed_and_logs_the_claims_table_to_the_parent_run(workdir, capsys):
    from mlflow import MlflowClient

    assert main(["reproduce", "fedprox", *TINY, "fedprox.federation.rounds=2",
                 "seeds=2", "mlflow.experiment=fp-reproduce"]) == 0
    _, runs = runs_by_parent("fp-reproduce")
    parent, children = runs[-1]
    assert sorted(c.info.run_name for c in children) == [
        "fedavg seed 0", "fedavg seed 1", "fedprox seed 0", "fedprox seed 1"]
    table = MlflowClient(store()).download_artifacts(parent.info.run_id, "claims.csv", str(workdir))
    header, row = open(table).read().splitlines()[:2]
    assert header.startswith("claim,paper,ours,ci95_low,ci95_high,seeds")
    assert ",2," in row and row.split(",")[-1] in ("reproduced", "same direction", "not reproduced")
    assert "the paper's claims" in capsys.readouterr().out
    summary = MlflowClient(store()).download_artifacts(parent.info.run_id, "seeds_summary.csv",
                                                      str(workdir))
    rows = list(csv.DictReader(open(summary)))
    fedavg = next(r for r in rows if r["method"] == "fedavg" and r["metric"] == "accuracy")
    assert fedavg["seeds"] == "2" and float(fedavg["ci95_low"]) <= float(fedavg["mean"])
    assert fedavg["minus_fedprox"] != ""  # paired with the proposed method, seed by seed


def test_reproduce_of_a_workload_without_claims_is_one_error(capsys, monkeypatch):
    import dataclasses

    shipped = registry.get
    monkeypatch.setattr(registry, "get", lambda name: dataclasses.replace(shipped(name), claims=()))
    assert main(["reproduce", "fedprox"]) == 2
    assert "declares no paper claims" in capsys.readouterr().err


def test_seeds_repeat_a_run_and_a_sweep_that_asks_for_them_is_one_error(capsys):
    assert main(["sweep", str(EXPERIMENTS / "sweep.yaml"), "seeds=3"]) == 2
    assert "config error at 'seeds'" in capsys.readouterr().err
