"""`ctx.tune`: a workload tunes a method inside `run` with Ray Tune, the same budget for each."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from orchestrator.progress import progress
from orchestrator.sweepspec import Dim
from orchestrator.workload import RunContext

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]
SPACE = [Dim("lr", "loguniform", low=1e-4, high=1e-1),
         Dim("momentum", "uniform", low=0.0, high=0.9)]


def objective():
    """A known objective, best at lr = 1e-2, momentum = 0.5 (made in a function so Ray pickles
    it by value: Ray's workers cannot import a test module)."""
    def loss(setting: dict) -> dict:
        return {"loss": (math.log10(setting["lr"]) + 2) ** 2 + (setting["momentum"] - 0.5) ** 2}
    return loss


loss = objective()


def context(tmp_path, seed: int = 0) -> RunContext:
    return RunContext(cfg=SimpleNamespace(seed=seed), tracker=None, progress=progress,
                      map=None, checkpoint_dir=tmp_path)


def test_tune_runs_the_budget_with_the_configured_setting_first_inside_the_space(tmp_path):
    first = {"lr": 1e-3, "momentum": 0.9}
    trials = context(tmp_path).tune(loss, SPACE, num_samples=6, first=first)
    assert len(trials) == 6
    assert trials[0] == (first, loss(first))
    for setting, metrics in trials[1:]:
        assert 1e-4 <= setting["lr"] <= 1e-1 and 0 <= setting["momentum"] <= 0.9
        assert metrics == pytest.approx(loss(setting))
    assert len({s["lr"] for s, _ in trials}) == 6     # drawn, not repeated


def test_tune_draws_the_same_settings_from_the_same_seed_and_key(tmp_path):
    def settings(seed: int, key: int, sub: str) -> list[dict]:
        return [s for s, _ in context(tmp_path / sub, seed).tune(loss, SPACE, 4, key=key)]

    assert settings(0, 1, "a") == settings(0, 1, "b")
    assert settings(0, 1, "a") != settings(0, 2, "c")   # another method: its own draws


def test_an_empty_space_is_refused_instead_of_repeating_one_setting(tmp_path):
    with pytest.raises(ValueError, match="nothing to tune"):
        context(tmp_path).tune(loss, [], 4)


def test_a_failing_trial_fails_the_tuning_with_its_error(tmp_path):
    def broken(setting: dict) -> dict:
        raise ValueError("objective exploded")

    with pytest.raises(RuntimeError, match="objective exploded"):
        context(tmp_path).tune(broken, SPACE, 2)
