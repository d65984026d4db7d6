"""The sweep spec: parsing against the schema, and how batched trials draw their configurations."""
from __future__ import annotations

import json

from orchestrator.config import load_experiment
from orchestrator.sweepspec import Dim, parse_params, with_values
from orchestrator.tuning import batch_values, best_of_batch, param_space
from tests.conftest import QUICKSTART

SPEC = ["sweep.metric=revenue_aeria",
        "sweep.params.aeria.consensus_base={grid: [1.5, 2.0]}",
        "sweep.params.aeria.reserve_price={uniform: [0.0, 2.0]}",
        "sweep.params.aeria.num_users={randint: [100, 200]}"]


def test_dotted_and_nested_param_keys_parse_to_typed_dims(workdir):
    dims = {d.path: d for d in parse_params(load_experiment(QUICKSTART, SPEC))}
    assert dims["aeria.consensus_base"] == Dim("aeria.consensus_base", "grid", values=(1.5, 2.0))
    assert dims["aeria.reserve_price"].kind == "uniform"
    assert (dims["aeria.num_users"].low, dims["aeria.num_users"].high) == (100, 200)


def test_param_space_nests_tune_domains_and_randint_includes_high(workdir):
    space = param_space(parse_params(load_experiment(QUICKSTART, SPEC)))
    assert space["aeria"]["consensus_base"] == {"grid_search": [1.5, 2.0]}
    assert space["aeria"]["num_users"].upper == 201


def test_batch_keeps_grid_axes_redraws_sampled_axes_and_is_reproducible(workdir):
    dims = parse_params(load_experiment(QUICKSTART, SPEC))
    tuned = {"aeria.consensus_base": 2.0, "aeria.reserve_price": 0.5, "aeria.num_users": 150}
    batch = batch_values(tuned, dims, 50)
    assert batch[0] == tuned and len(batch) == 50
    assert {b["aeria.consensus_base"] for b in batch} == {2.0}
    assert all(0.0 <= b["aeria.reserve_price"] <= 2.0 for b in batch)
    assert all(100 <= b["aeria.num_users"] <= 200 for b in batch)
    assert len({b["aeria.reserve_price"] for b in batch}) == 50
    assert batch_values(tuned, dims, 50) == batch


def test_best_of_batch_reports_the_best_configuration_and_the_whole_batch():
    batch = [{"x": 1}, {"x": 2}, {"x": 3}]
    metrics = [{"m": 5.0}, {"m": 9.0}, {"m": 1.0}]
    assert best_of_batch(batch, metrics, "m", "max")["best.x"] == 2
    low = best_of_batch(batch, metrics, "m", "min")
    assert low["m"] == 1.0 and low["batch_size"] == 3 and len(json.loads(low["batch"])) == 3


def test_with_values_copies_instead_of_mutating():
    base = {"a": {"b": 1, "c": [1]}}
    out = with_values(base, {"a.b": 2})
    assert out == {"a": {"b": 2, "c": [1]}} and base["a"]["b"] == 1
