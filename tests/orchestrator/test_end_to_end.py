"""The README's promises, end to end on the real Ray, Tune and MLflow (aeria, tiny markets)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator.cli import main
from orchestrator.tracking import KIND_TAG, PARENT_TAG
from tests.conftest import QUICKSTART, store

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]
SMALL = ["aeria.user_counts=[100,300]", "aeria.num_seeds=2", "aeria.property_users=60",
         "aeria.property_probes=2", "mlflow.experiment=e2e"]
SWEEP = str(Path(QUICKSTART).with_name("sweep.yaml"))


def _runs(experiment: str):
    client = MlflowClient(store())
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if r.data.tags.get(KIND_TAG) in ("run", "sweep")]
    children = {p.info.run_id: [r for r in runs if r.data.tags.get(PARENT_TAG) == p.info.run_id]
                for p in parents}
    return client, parents, children


def _final(run) -> dict:
    return {k: v for k, v in run.data.metrics.items() if "seconds" not in k}


def test_run_leaves_a_parent_with_one_child_per_mechanism(workdir, capsys):
    assert main(["run", str(QUICKSTART), *SMALL, "--output", "summary.json"]) == 0
    assert "mlflow ui --backend-store-uri sqlite:///" in capsys.readouterr().out
    client, parents, children = _runs("e2e")
    (parent,) = parents
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["run_id"] == parent.info.run_id and summary["rows"]
    assert f"/runs/{parent.info.run_id}?" in summary["run_url"]
    mechanisms = parent.data.params["aeria.mechanisms"]
    kids = children[parent.info.run_id]
    assert parent.info.status == "FINISHED"
    assert sorted(k.info.run_name for k in kids) == sorted(eval(mechanisms))
    assert all(k.info.status == "FINISHED" and "revenue_mean" in k.data.metrics for k in kids)
    steps = client.get_metric_history(kids[0].info.run_id, "revenue_mean")
    users = {int(n) for n in eval(parent.data.params["aeria.user_counts"])}
    assert {m.step for m in steps} == users and len(users) == 2, "step = number of users"
    assert all("mechanism_cells.csv" in {a.path for a in client.list_artifacts(k.info.run_id)}
               for k in kids), "one table name in every child: the UI compares them"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "results.csv", "versions.json"} <= artifacts
    assert any(a.endswith(".png") for a in artifacts)


def test_same_config_and_seed_give_the_same_final_metrics(workdir):
    assert main(["run", str(QUICKSTART), *SMALL, "mlflow.experiment=twice"]) == 0
    assert main(["run", str(QUICKSTART), *SMALL, "mlflow.experiment=twice"]) == 0
    _, parents, children = _runs("twice")
    first, second = ({k.info.run_name: _final(k) for k in children[p.info.run_id]} for p in parents)
    assert first == second and first


def test_compare_prints_the_latest_runs_mechanism_table_and_writes_csv(workdir, capsys):
    assert main(["run", str(QUICKSTART), *SMALL]) == 0
    capsys.readouterr()
    assert main(["compare", "e2e"]) == 0
    out = capsys.readouterr().out
    assert "aeria" in out and "rspe" in out and "revenue_mean" in out
    header = (workdir / "compare_e2e.csv").read_text().splitlines()[0]
    assert header.startswith("run,status") and "revenue_mean" in header


def test_sweep_leaves_one_child_run_per_trial_with_its_batch(workdir):
    args = ["sweep", SWEEP, "sweep.num_samples=2", "sweep.batch_size=5", "aeria.num_users=200",
            "mlflow.experiment=sweep-e2e"]
    assert main(args) == 0
    client, (parent,), children = _runs("sweep-e2e")
    trials = children[parent.info.run_id]
    grid = len(eval(parent.data.params["sweep.params.aeria.consensus_base.grid"]))
    assert len(trials) == 2 * grid
    assert all(t.info.status == "FINISHED" and "revenue_aeria" in t.data.metrics for t in trials)
    batch = client.download_artifacts(trials[0].info.run_id, "batch.csv")
    assert len(Path(batch).read_text().splitlines()) == 1 + 5
    configs = client.download_artifacts(parent.info.run_id, "configurations.csv")
    assert len(Path(configs).read_text().splitlines()) == 1 + 5 * len(trials)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "sweep_aeria.reserve_price.png" in artifacts


def test_a_sweeps_best_trial_is_rechecked_by_a_real_run_beside_its_trial_metric(workdir):
    args = ["sweep", SWEEP, "sweep.num_samples=1", "sweep.batch_size=2", "sweep.recheck=1",
            "sweep.params.aeria.consensus_base={grid: [2.0, 3.0]}", *SMALL,
            "mlflow.experiment=recheck"]
    assert main(args) == 0
    client, (parent,), children = _runs("recheck")
    names = {c.info.run_name for c in children[parent.info.run_id]}
    assert "aeria recheck 1" in names, names
    table = Path(client.download_artifacts(parent.info.run_id, "recheck.csv")).read_text()
    header, *rows = table.splitlines()
    assert "trial_revenue_share_aeria" in header and "aeria.reserve_price" in header and rows
    best = parent.data.metrics["best_revenue_share_aeria"]
    trial_metric = float(rows[0].split(",")[header.split(",").index("trial_revenue_share_aeria")])
    assert trial_metric == pytest.approx(best)


def test_a_run_that_raises_exits_1_and_its_run_is_failed_with_the_traceback(workdir, monkeypatch):
    from orchestrator import registry

    real = registry.get("aeria")

    def explode(cfg, ctx):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(registry, "get", lambda name: dataclasses.replace(real, run=explode))
    assert main(["run", str(QUICKSTART), *SMALL, "mlflow.experiment=fails"]) == 1
    client, (parent,), _ = _runs("fails")
    assert parent.info.status == "FAILED"
    text = Path(client.download_artifacts(parent.info.run_id, "error/traceback.txt")).read_text()
    assert "injected failure" in text


def test_resume_finds_a_shared_state_dir_from_another_working_directory(tmp_path, monkeypatch):
    """What two cluster jobs see: different working directories, one shared state_dir."""
    shared, uri = tmp_path / "shared", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", str(QUICKSTART), *SMALL, f"state_dir={shared}", f"mlflow.tracking_uri={uri}"]
    for job in ("job1", "job2"):
        (tmp_path / job).mkdir()
    monkeypatch.chdir(tmp_path / "job1")
    assert main(args) == 0
    (state,) = shared.glob("state/*/*")
    assert (state / "mlflow_run_id").is_file() and not Path(".orchestrator").exists()
    monkeypatch.chdir(tmp_path / "job2")
    assert main([*args, "--resume"]) == 0
    runs = MlflowClient(uri).search_runs(
        [e.experiment_id for e in MlflowClient(uri).search_experiments()],
        filter_string=f"tags.{KIND_TAG} = 'run'")
    assert len(runs) == 1, "the second job reopened the first job's run, found via state_dir"
    assert runs[0].data.tags["orchestrator.resumed"] == "true"
