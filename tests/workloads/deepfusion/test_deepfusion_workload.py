"""DeepFusion end to end on the real Ray pool, Ray Train + DeepSpeed AutoEP, MLflow (tiny models).

One full run of the quickstart with tiny overrides, then a run of two of its methods killed in
Phase III (after Phases 0-I were kept) and resumed: the resumed run must end with exactly the
uninterrupted run's metrics (every seed derives from cfg.seed per phase and per job, so the
method subset changes nothing).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.conftest import REPO, runs_by_parent

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]
QUICKSTART = str(REPO / "experiments" / "deepfusion" / "quickstart.yaml")
TINY = ["deepfusion.data.max_records=400", "deepfusion.local.steps=3",
        "deepfusion.local.release_steps=3", "deepfusion.run.phase3=ray_train",
        "deepfusion.distill.steps=3", "deepfusion.moe.steps=2",
        "deepfusion.run.centralized_steps=2",
        "deepfusion.baselines.fedjets_rounds=2", "deepfusion.baselines.fedjets_local_steps=2",
        "deepfusion.run.eval_blocks=8", "deepfusion.run.round_eval_blocks=4",
        "mlflow.experiment=deepfusion-e2e"]
# DeepFusion, its control and the two other baselines; fedmkt, ofa_kd and deepfusion_no_vaa differ
# from these only in their Phase II step (test_deepfusion_distill.py), and take the same Phase III
METHODS = ["deepfusion", "student_ce_only", "centralized", "fedjets"]
FINAL = ("log_ppl", "token_accuracy", "comm_bytes", "peak_device_memory_bytes")


def _finals(children) -> dict:
    return {c.info.run_name: {k: c.data.metrics[k] for k in FINAL} for c in children}


def test_quickstart_runs_every_method_and_a_run_killed_in_phase3_resumes_to_the_same_metrics(
        workdir, monkeypatch):  # noqa: ARG001 (workdir: run in a scratch directory)
    assert main(["run", QUICKSTART, *TINY, f"deepfusion.run.methods=[{','.join(METHODS)}]"]) == 0
    client, [(parent, children)] = runs_by_parent("deepfusion-e2e")
    assert parent.info.status == "FINISHED"
    assert {c.info.run_name for c in children} == set(METHODS)
    assert all(c.info.status == "FINISHED" and "log_ppl" in c.data.metrics for c in children)
    for kd in ("deepfusion", "student_ce_only"):  # the same Phase III: expert-parallel, AutoEP
        child = next(c for c in children if c.info.run_name == kd)
        experts = eval(child.data.tags["experts_by_rank"])  # {block: [[rank 0's], [rank 1's]]}
        assert experts and all(sorted(r0 + r1) == [0, 1, 2, 3] and not set(r0) & set(r1)
                               for r0, r1 in experts.values())
    fedjets = next(c for c in children if c.info.run_name == "fedjets")
    cum_bytes = client.get_metric_history(fedjets.info.run_id, "cum_bytes")
    assert len(cum_bytes) == 2, "one per round"
    assert cum_bytes[-1].value == fedjets.data.metrics["comm_bytes"], "ledger sums to the total"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "tables_I_II.csv", "tables_I_II.png", "communication.png",
            "proxies.csv", "claims.csv", "claims.md"} <= artifacts
    uninterrupted = _finals(children)
    assert not list(Path(".orchestrator").rglob("phase0-uploads-*")), \
        "the devices' uploaded models are removed once Phase I has averaged them"

    import workloads.deepfusion.pipeline as pipeline

    def killed(*args, **kwargs):
        raise RuntimeError("killed in Phase III, after Phases 0-I were kept")

    subset = [*TINY, "deepfusion.run.methods=[deepfusion,fedjets]"]
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "tune_methods", killed)
        assert main(["run", QUICKSTART, *subset]) == 1
    assert main(["run", QUICKSTART, *subset, "--resume"]) == 0
    _, runs = runs_by_parent("deepfusion-e2e")
    resumed_parent, resumed_children = runs[-1]
    assert resumed_parent.info.status == "FINISHED" and len(runs) == 2, "resume reopens the run"
    resumed = _finals(resumed_children)
    assert set(resumed) == {"deepfusion", "fedjets"}
    assert resumed == {m: uninterrupted[m] for m in resumed}
