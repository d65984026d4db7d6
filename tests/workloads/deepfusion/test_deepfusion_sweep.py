"""The deepfusion Tune sweeps: one child run per trial, shared phases computed once.

`experiments/deepfusion/sweep.yaml` tunes alpha, beta and the VAA sizes; Phases 0 and I do not
depend on them, so two trials must leave one Phase 0 file and two Phase II files in the sweep's
cache. The paper-scale configs sweep N, which every phase depends on.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator.cli import main
from orchestrator.config import load_experiment
from orchestrator.sweepspec import parse_params
from orchestrator.tracking import KIND_TAG, PARENT_TAG
from tests.conftest import REPO, store

EXPERIMENTS = REPO / "experiments" / "deepfusion"
TINY = ["deepfusion.data.max_records=400", "deepfusion.local.steps=3",
        "deepfusion.distill.steps=3", "deepfusion.moe.steps=2", "deepfusion.run.eval_blocks=8",
        "sweep.num_samples=2", "mlflow.experiment=deepfusion-sweep-test"]


@pytest.mark.parametrize("name", ["medical", "financial"])
def test_paper_configs_sweep_the_papers_device_counts(name):
    cfg = load_experiment(str(EXPERIMENTS / f"{name}.yaml"), [])
    (dim,) = parse_params(cfg)
    assert dim.path == "deepfusion.federation.num_devices" and list(dim.values) == [16, 32, 64, 128]
    assert cfg.sweep.metric == "log_ppl" and cfg.sweep.max_concurrent_trials == 1


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_alpha_beta_vaa_sweep_leaves_a_child_per_trial_and_runs_phases_0_and_1_once(workdir):
    assert main(["sweep", str(EXPERIMENTS / "sweep.yaml"), *TINY]) == 0
    client = MlflowClient(store())
    exp = client.get_experiment_by_name("deepfusion-sweep-test")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(KIND_TAG) == "sweep"]
    trials = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials)
    for t in trials:
        assert t.data.metrics["log_ppl"] == t.data.metrics["log_ppl_deepfusion"] > 0
        assert {"deepfusion.distill.alpha", "deepfusion.vaa.dim"} <= set(t.data.params)
    assert len({(t.data.params["deepfusion.distill.alpha"], t.data.params["deepfusion.vaa.dim"])
                for t in trials}) == 2, "the trials tried different configurations"
    (cache,) = Path(workdir, ".orchestrator", "ray_results").glob("sweep-*/cache")
    assert len(list(cache.glob("phase1-*.pt"))) == 1, "Phases 0-I are shared by every trial"
    assert len(list(cache.glob("phase3_deepfusion-*.pt"))) == 2, "Phases II-III are per trial"
    assert "configurations.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
