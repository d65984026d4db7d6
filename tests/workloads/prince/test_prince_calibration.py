"""The bound that prices devices is fitted to measured training: a calibration run measures rounds
to target over participation levels, fits alpha, beta (nonnegative least squares of R * eps on
S), stores them with the points they came from, and a later run's game uses them; a stored
calibration measured on other models or targets is refused before Ray starts."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mlflow import MlflowClient

from orchestrator.cli import main
from orchestrator.config import BadInput, load_experiment
from orchestrator.tracking import KIND_TAG
from tests.conftest import REPO, store
from workloads.prince import calibration
from workloads.prince.config import TenantConfig

QUICKSTART = str(REPO / "experiments" / "prince" / "quickstart.yaml")


def _points(alpha: float, beta: float, eps: float, S=(1.0, 2.0, 4.0, 8.0)) -> list[dict]:
    return [{"tenant": "vit", "aggregation": "unbiased", "S": s,
             "rounds": (alpha * s + beta) / eps} for s in S]


def test_the_fit_recovers_the_bound_that_generated_the_rounds():
    got = calibration.fit(_points(3.0, 5.0, 0.5), eps=0.5)
    assert got["alpha"] == pytest.approx(3.0) and got["beta"] == pytest.approx(5.0)
    assert got["r2"] == pytest.approx(1.0) and got["reached"] == 4


def test_the_fit_keeps_the_constants_nonnegative_and_ignores_censored_and_biased_points():
    falling = [{"tenant": "vit", "aggregation": "unbiased", "S": s, "rounds": r}
               for s, r in ((1.0, 9.0), (2.0, 7.0), (4.0, 5.0))]   # more variance, fewer rounds
    extra = [{"tenant": "vit", "aggregation": "unbiased", "S": 8.0, "rounds": math.nan},
             {"tenant": "vit", "aggregation": "biased", "S": 1.0, "rounds": 100.0}]
    got = calibration.fit(falling + extra, eps=1.0)
    assert got["alpha"] == 0.0 and got["beta"] == pytest.approx(7.0) and got["reached"] == 3


def test_a_run_that_never_reached_the_target_pushes_the_bound_above_the_rounds_it_ran():
    """BERT in the shipped calibration: the target at q = 1 in 1 round, never in 12 at q = 0.5
    or 0.25. Dropping the censored runs fitted alpha 0 ('participation does not matter')."""
    reached = {"tenant": "bert", "aggregation": "unbiased", "S": 0.186, "rounds": 1.0,
               "max_rounds": 12}
    never = [{"tenant": "bert", "aggregation": "unbiased", "S": s, "rounds": math.nan,
              "max_rounds": 12} for s in (0.372, 0.744)]
    got = calibration.fit([reached, *never], eps=0.4)
    assert got["alpha"] > 0 and got["censored"] == 2 and got["reached"] == 1
    for p in never:
        assert calibration.predicted_rounds(got, p["S"]) >= 13 - 1e-6
    alone = calibration.fit([reached], eps=0.4)
    assert alone["alpha"] == 0 and calibration.predicted_rounds(alone, 0.186) == pytest.approx(1)


def test_refit_recomputes_constants_and_predictions_from_the_stored_points(tmp_path):
    stored = calibration.build(_points(3.0, 5.0, 2.0), {"vit": TenantConfig()}, {})
    fitted = stored["tenants"]["vit"]["alpha"]
    stored["tenants"]["vit"]["alpha"] = 99.0
    again = calibration.refit(json.loads(calibration.dumps(stored)))["tenants"]["vit"]
    assert again["alpha"] == pytest.approx(fitted) and len(again["points"]) == 4
    assert all(p["predicted_rounds"] == pytest.approx(
        calibration.predicted_rounds(again, p["S"])) for p in again["points"])


def test_a_calibration_varies_s_through_q_and_through_how_many_owners_are_enrolled():
    data = np.array([0.0, 50, 10, 30, 0, 20])
    grad = np.ones(6)
    every = calibration.LevelAllocation.owners_at(data, 2, 1.0)
    half = calibration.LevelAllocation.owners_at(data, 2, 1.0, fraction=0.5)
    assert list(every.choice) == [-1, 2, 2, 2, -1, 2]
    assert list(half.choice) == [-1, 2, -1, 2, -1, -1]          # the two owners with most data
    s = [calibration.variance_term(data, grad, a.q) for a in (every, half)]
    assert s[1] > s[0]
    assert calibration.variance_term(data, grad, 0.5 * every.q) == pytest.approx(2 * s[0])
    assert calibration.LevelAllocation.owners_at(data, 2, 1.0, fraction=0.01).q.sum() == 1
    grid = calibration.measurement_grid([0.2, 0.5, 1.0], [1.0, 0.5], biased=True)
    assert grid == [(1.0, 0.2, True), (1.0, 0.2, False), (1.0, 0.5, True), (1.0, 0.5, False),
                    (1.0, 1.0, True), (0.5, 1.0, True)]


def test_eps_follows_the_target_and_rounds_count_from_the_first_of_two_hits():
    assert calibration.target_gap("loss", 2.1) == 2.1
    assert calibration.target_gap("accuracy", 0.8) == pytest.approx(0.2)
    hist = [{"participants": 3, "loss": v} for v in (2.5, 2.0, 2.4, 2.0, 1.9)]
    assert calibration.measured_rounds(hist, "loss", 2.1) == 4.0
    assert math.isnan(calibration.measured_rounds(hist[:3], "loss", 2.1))


def test_a_calibration_applies_only_to_the_tenant_it_was_measured_on():
    t = TenantConfig(target_metric="loss", target=2.0)
    stored = calibration.build(_points(3.0, 5.0, 2.0), {"vit": t}, {})
    assert calibration.check_matches(stored, "vit", t) is None
    assert "target=2.0" in calibration.check_matches(stored, "vit", TenantConfig(
        target_metric="loss", target=1.5))
    assert "no entry" in calibration.check_matches(stored, "bert", t)
    point = stored["tenants"]["vit"]["points"][0]
    assert point["predicted_rounds"] == pytest.approx(point["rounds"])


def test_a_calibration_for_other_targets_fails_before_ray_starts(tmp_path):
    path = tmp_path / "cal.json"
    calibration.save(calibration.build(_points(3.0, 5.0, 2.0), {"vit": TenantConfig()}, {}), path)
    with pytest.raises(BadInput, match=r"calibration\.file.*vit.*measured with"):
        load_experiment(QUICKSTART, [f"prince.calibration.file={path}"])
    with pytest.raises(BadInput, match=r"calibration\.file"):
        load_experiment(QUICKSTART, [f"prince.calibration.file={tmp_path / 'none.json'}"])


ONE_TENANT = ["prince.tenants.bert.enabled=false", "prince.tenants.whisper.enabled=false",
              "prince.tenants.llama.enabled=false", "prince.tenants.vit.train_limit=160",
              "prince.tenants.vit.test_limit=32", "prince.tenants.vit.target=2.4",
              "prince.federation.num_devices=6", "prince.training.rounds=3",
              "prince.market.price_points=4"]


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_calibration_run_stores_its_fit_and_a_later_run_prices_with_it(workdir):
    saved = workdir / "cal.json"
    assert main(["run", QUICKSTART, *ONE_TENANT, "prince.calibration.measure=true",
                 "prince.calibration.levels=[0.5,1.0]", "prince.calibration.repeats=1",
                 "prince.calibration.owner_fractions=[0.5]",
                 f"prince.calibration.save_to={saved}", "mlflow.experiment=prince-cal"]) == 0
    stored = json.loads(saved.read_text())
    vit = stored["tenants"]["vit"]
    runs = {(p["owner_fraction"], p["level"], p["aggregation"]) for p in vit["points"]}
    assert runs == {(1.0, 0.5, "unbiased"), (1.0, 0.5, "biased"), (1.0, 1.0, "unbiased"),
                    (0.5, 1.0, "unbiased")}
    every, half = (next(p for p in vit["points"] if p["owner_fraction"] == f and p["level"] == 1)
                   for f in (1.0, 0.5))
    assert half["owners"] < every["owners"] and half["S"] > every["S"]
    assert vit["eps"] == pytest.approx(2.4) and vit["settings"]["target"] == 2.4
    client = MlflowClient(store())
    exp = client.get_experiment_by_name("prince-cal")
    (parent,) = [r for r in client.search_runs([exp.experiment_id])
                 if r.data.tags.get(KIND_TAG) == "run"]
    assert {"calibration.json", "calibration.csv", "calibration.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    if not np.isfinite(vit["alpha"]):
        pytest.skip("the tiny ViT never reached its target: nothing to apply")
    cfg = load_experiment(QUICKSTART, [*ONE_TENANT, f"prince.calibration.file={saved}"])
    from workloads.prince.pipeline import bound_constants

    assert bound_constants(cfg.prince)["vit"] == (vit["alpha"], vit["beta"], vit["eps"])
