"""The MLflow wrapper: nesting, params, tables, and runs that fail."""
from __future__ import annotations

import re
import time

import pytest
from mlflow import MlflowClient

from orchestrator.config import load_experiment
from orchestrator.tracking import (OVERRIDES_TAG, PARENT_TAG, default_run_name, latest_children,
                                   parent_run, rows_to_csv)
from tests.conftest import QUICKSTART, store


@pytest.fixture
def cfg(workdir):
    return load_experiment(QUICKSTART, ["mlflow.experiment=unit"])


def test_parent_run_logs_flattened_config_yaml_versions_and_commit(cfg):
    with parent_run(cfg, str(QUICKSTART), "run") as parent:
        pass
    run = MlflowClient(store()).get_run(parent.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["seed"] == str(cfg.seed)
    assert run.data.params["aeria.num_users"] == str(cfg.aeria.num_users)
    assert run.data.tags["mlflow.source.git.commit"]
    assert run.data.tags["version.mlflow"]
    artifacts = {a.path for a in MlflowClient(store()).list_artifacts(parent.run_id)}
    assert {"config.yaml", "versions.json"} <= artifacts


def test_child_runs_nest_under_the_parent_and_compare_reads_them_back(cfg):
    with parent_run(cfg, str(QUICKSTART), "run") as parent:
        for name, value in (("a", 1.0), ("b", 2.0)):
            with parent.child(name) as child:
                child.log_metrics({"revenue": value}, step=0)
                child.log_metrics({"revenue": value * 10}, step=1)
    client = MlflowClient(store())
    info, rows = latest_children(store(), "unit")
    assert info["run_id"] == parent.run_id
    assert [(r["run"], r["revenue"]) for r in rows] == [("a", 10.0), ("b", 20.0)]
    child_id = client.search_runs([parent.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.run_id}'")[0]
    assert [m.step for m in client.get_metric_history(child_id.info.run_id, "revenue")] == [0, 1]


def test_a_seeds_child_run_carries_its_seed_as_a_param(cfg):
    from orchestrator.tracking import SeedScope

    with parent_run(cfg, str(QUICKSTART), "run") as parent:
        with SeedScope(parent, 4).child("aeria") as child:
            pass
    run = MlflowClient(store()).get_run(child.run_id)
    assert run.info.run_name == "aeria seed 4" and run.data.params["seed"] == "4"


def test_a_grid_setting_logs_on_the_parent_under_keys_mlflow_accepts(cfg):
    from orchestrator.tracking import Scope, SeedScope

    label = "case=medical,num_devices=32"  # '=' and ',' are not allowed in MLflow keys
    with parent_run(cfg, str(QUICKSTART), "run") as parent:
        part = SeedScope(Scope(parent, "setting", label), 1)
        part.log_metrics({"devices": 32.0})
        part.log_params({"k": 1})
        part.set_tags({"t": "x"})
        part.log_table([{"a": 1}], "rows.csv")
        with Scope(parent, "setting", label).child("aeria") as child:
            pass
    client = MlflowClient(store())
    run = client.get_run(parent.run_id)
    prefix = "setting_case-medical_num_devices-32"
    assert run.data.metrics[f"{prefix}/seed1/devices"] == 32.0
    assert run.data.params[f"{prefix}.seed_1.k"] == "1"
    assert run.data.tags[f"{prefix}/seed_1/t"] == "x"
    assert client.get_run(child.run_id).data.params["setting"] == label


def test_a_figure_is_logged_as_a_200_dpi_png_and_a_vector_svg(cfg):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    fig.add_subplot().plot([1, 2], [3, 4])
    with parent_run(cfg, str(QUICKSTART), "run") as parent:
        parent.log_figure(fig, "plots/revenue.png")
    client = MlflowClient(store())
    assert {a.path for a in client.list_artifacts(parent.run_id, "plots")} == \
        {"plots/revenue.png", "plots/revenue.svg"}
    png = client.download_artifacts(parent.run_id, "plots/revenue.png")
    from PIL import Image

    assert Image.open(png).size[0] >= 4 * 200 * 0.8  # 200 dpi, less bbox trimming


def test_a_run_that_raises_ends_failed_with_its_traceback(cfg):
    with pytest.raises(ZeroDivisionError):
        with parent_run(cfg, str(QUICKSTART), "run") as parent:
            with parent.child("boom"):
                1 / 0
    client = MlflowClient(store())
    assert client.get_run(parent.run_id).info.status == "FAILED"
    child = client.search_runs([parent.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.run_id}'")[0]
    assert child.info.status == "FAILED"
    text = client.download_artifacts(child.info.run_id, "error/traceback.txt")
    assert "ZeroDivisionError" in open(text).read()


def test_secret_looking_params_are_redacted(cfg):
    with parent_run(cfg, str(QUICKSTART), "run") as parent:
        parent.log_params({"backend": {"api_key": "sk-123", "model": "m"}})
    params = MlflowClient(store()).get_run(parent.run_id).data.params
    assert params["backend.api_key"] == "***" and params["backend.model"] == "m"


def test_rows_to_csv_unions_columns_in_first_seen_order():
    assert rows_to_csv([{"a": 1}, {"b": 2, "a": 3}]).splitlines() == ["a,b", "1,", "3,2"]


def test_parent_runs_are_named_by_file_kind_time_and_overrides_and_tagged_with_them(cfg):
    """Every aeria parent used to be `quickstart-run`: runs could not be told apart in the UI."""
    with parent_run(cfg, str(QUICKSTART), "run",
                    overrides=["seed=3", "aeria.user_counts=[500,5000]"]) as first:
        pass
    with parent_run(cfg, str(QUICKSTART), "run", overrides=["seed=4"]) as second:
        pass
    client = MlflowClient(store())
    one, two = (client.get_run(p.run_id) for p in (first, second))
    assert re.fullmatch(r"quickstart-run \d{4}-\d\d-\d\d \d\d:\d\d seed=3 "
                        r"aeria\.user_counts=\[500,5000\]", one.info.run_name)
    assert one.info.run_name != two.info.run_name
    assert one.data.tags[OVERRIDES_TAG] == "seed=3 'aeria.user_counts=[500,5000]'"  # pasteable
    assert two.data.tags[OVERRIDES_TAG] == "seed=4"


def test_a_run_name_set_in_the_config_wins(workdir):
    cfg = load_experiment(QUICKSTART, ["mlflow.experiment=unit", "mlflow.run_name=baseline"])
    with parent_run(cfg, str(QUICKSTART), "run", overrides=["mlflow.run_name=baseline"]) as p:
        pass
    assert MlflowClient(store()).get_run(p.run_id).info.run_name == "baseline"


def test_a_default_run_name_leaves_out_where_it_ran_masks_secrets_and_stays_short():
    name = default_run_name("experiments/robustness/quickstart.yaml", "sweep", [
        "mlflow.tracking_uri=sqlite:////tmp/x/mlflow.db", "state_dir=/tmp/x", "ray.num_cpus=4",
        "backend.api_key=sk-123", "robustness.models=[{name: tiny, kind: generative, path: tiny}]",
        *[f"sweep.num_samples={i}" for i in range(10)]], now=0)
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(0))
    assert name.startswith(f"quickstart-sweep {stamp} backend.api_key=*** robustness.models=[{{")
    assert "/tmp" not in name and "ray." not in name and "sk-123" not in name
    assert len(name) == 100 and name.endswith("…")
