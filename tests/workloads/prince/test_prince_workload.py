"""PRINCE end to end: bias-resilient aggregation, the quickstart on Ray + MLflow, the sweep.

The unbiased p/q aggregation must equal full participation in expectation (fixed seed, Monte
Carlo), while plain FedAvg over whoever showed up is biased toward devices with high q_n.
"""
from __future__ import annotations

import inspect
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from orchestrator.cli import main
from orchestrator.federated.pool import DeviceUpdate, WeightedSum
from orchestrator.tracking import KIND_TAG, PARENT_TAG
from tests.conftest import REPO, runs_by_parent, store
from workloads.prince.baselines import METHODS
from workloads.prince.training import participation_weights

EXPERIMENTS = REPO / "experiments" / "prince"
TINY = ["prince.federation.num_devices=8", "prince.training.rounds=2",
        "prince.tenants.vit.train_limit=200", "prince.tenants.vit.test_limit=32",
        "prince.tenants.bert.train_limit=200", "prince.tenants.bert.test_limit=32",
        "prince.tenants.bert.local_steps=2", "prince.tenants.whisper.test_limit=16",
        "prince.tenants.llama.train_limit=40", "prince.tenants.llama.test_limit=4",
        "prince.tenants.llama.local_steps=1", "prince.market.price_points=6"]


def _aggregate(deltas: np.ndarray, q: np.ndarray, data: np.ndarray, joined: np.ndarray,
               unbiased: bool) -> np.ndarray:
    """One round's aggregate through the engine's reducer, as training.BiasResilient does."""
    enrolled = np.arange(len(q))
    weights = participation_weights(q, data, enrolled, enrolled[joined], unbiased)
    updates = [DeviceUpdate({"w": torch.as_tensor(deltas[n])}, w, 1, 0.0, {})
               for n, w in weights.items()]
    reducer = WeightedSum(normalize=not unbiased)
    agg = reducer.combine([reducer.partial(updates)])
    return np.zeros(deltas.shape[1]) if agg is None else agg["w"].numpy()


def test_unbiased_aggregation_equals_full_participation_in_expectation_and_fedavg_does_not():
    rng = np.random.default_rng(0)
    n = 6
    q = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.2])
    data = rng.integers(20, 200, n).astype(float)
    deltas = rng.normal(size=(n, 3)) + np.arange(n)[:, None]  # low-q devices push elsewhere
    full = (data / data.sum()) @ deltas
    draws = rng.random((20_000, n)) < q
    unbiased = np.mean([_aggregate(deltas, q, data, j, True) for j in draws], axis=0)
    biased = np.mean([_aggregate(deltas, q, data, j, False) for j in draws if j.any()], axis=0)
    assert np.allclose(unbiased, full, atol=0.05 * np.abs(full).max())
    assert np.abs(biased - full).max() > 0.2, "FedAvg over participants leans to high q_n"


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_quickstart_runs_all_four_tenants_and_every_baseline_as_child_runs(workdir,
                                                                            monkeypatch):
    from workloads.prince import workload

    started: dict[str, list] = {}  # tenant -> the (device, server) weights each method began from
    real = workload.train_tenant

    def recording(*args, **kwargs):
        given = inspect.signature(real).bind(*args, **kwargs).arguments
        started.setdefault(given["name"], []).append(given["initial"])
        return real(*args, **kwargs)

    monkeypatch.setattr(workload, "train_tenant", recording)
    assert main(["run", str(EXPERIMENTS / "quickstart.yaml"), *TINY,
                 "mlflow.experiment=prince-e2e"]) == 0
    for tenant, inits in started.items():
        first = inits[0]
        assert all(all(torch.equal(side[k], first[i][k]) for i, side in enumerate(init)
                       for k in side) for init in inits[1:]), \
            f"{tenant}: every method starts from the same weights, not the last one's trained ones"
    client = MlflowClient(store())
    exp = client.get_experiment_by_name("prince-e2e")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(KIND_TAG) == "run"]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert {c.info.run_name for c in children} == set(METHODS)
    assert all(c.info.status == "FINISHED" for c in children)
    prince = next(c for c in children if c.info.run_name == "prince")
    for tenant in ("vit", "bert", "whisper", "llama"):
        assert f"{tenant}_price" in prince.data.metrics and f"{tenant}_payment" in prince.data.metrics
        assert prince.data.metrics[f"{tenant}_budget_ok"] == 1.0
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "speedups.csv", "equilibria.csv", "devices.csv", "equilibrium.png",
            "progress_vs_time.png"} <= artifacts


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_the_market_sweep_leaves_one_child_run_per_trial(workdir):
    assert main(["sweep", str(EXPERIMENTS / "sweep.yaml"), "sweep.num_samples=1",
                 "sweep.recheck=0", "prince.federation.num_devices=16", "mlflow.experiment=prince-sweep-test"]) == 0
    _, [(_, trials)] = runs_by_parent("prince-sweep-test", kind="sweep")
    assert len(trials) == 2, "grid over two congestion models x num_samples=1"
    assert all(t.info.status == "FINISHED" and "speedup_uniform_price" in t.data.metrics
               for t in trials)


def test_speedup_is_the_baselines_time_over_princes_and_says_who_never_got_there():
    from workloads.prince.workload import speedups

    inf = float("inf")
    rows = [{"method": m, "tenant": "vit", "time_to_target_s": t}
            for m, t in (("prince", 2.0), ("uniform_price", 5.0), ("random_assignment", inf))]
    rows += [{"method": m, "tenant": "bert", "time_to_target_s": t}
             for m, t in (("prince", inf), ("uniform_price", 3.0), ("random_assignment", inf))]
    got = {(r["baseline"], r["tenant"]): r["speedup"] for r in speedups(rows)}
    assert got[("uniform_price", "vit")] == 2.5 and got[("random_assignment", "vit")] == inf
    assert got[("uniform_price", "bert")] == 0.0 and np.isnan(got[("random_assignment", "bert")])


def _row(seed, method, tenant, time, ran=10.0, met=True, deadline=6.0):
    return {"seed": seed, "method": method, "tenant": tenant, "time_to_target_s": time,
            "sim_seconds": ran, "target_met": met, "deadline_s": deadline}


def test_a_missed_target_is_charged_the_longer_of_the_time_run_and_the_deadline():
    from workloads.prince.workload import with_prince_speedup

    inf = float("inf")
    rows = with_prince_speedup([_row(0, "prince", "vit", 2.0), _row(0, "uniform_price", "vit", 5.0),
                                _row(0, "random_assignment", "vit", inf, ran=8.0),
                                _row(0, "independent_pricing", "vit", inf, ran=0.0)])
    assert [r["prince_speedup"] for r in rows] == [1.0, 2.5, 4.0, 3.0]  # nobody enrolled: 6 s
    both_missed = with_prince_speedup([_row(0, "prince", "bert", inf, ran=3.0),
                                       _row(0, "uniform_price", "bert", inf, ran=0.0)])
    assert [r["prince_speedup"] for r in both_missed] == [1.0, 1.0]


def test_the_claims_pick_each_tenants_strongest_baseline_once_and_pair_it_seed_by_seed():
    from workloads.prince import CLAIMS

    largest, mean, met, bias = CLAIMS
    rows = []
    for seed, (vit_u, vit_i) in enumerate(((4.0, 6.0), (2.0, 8.0))):  # uniform strongest on vit
        rows += [_row(seed, "prince", "vit", 1.0), _row(seed, "uniform_price", "vit", vit_u),
                 _row(seed, "independent_pricing", "vit", vit_i),
                 _row(seed, "prince", "bert", 2.0, met=seed == 0),
                 _row(seed, "uniform_price", "bert", 3.0),
                 _row(seed, "independent_pricing", "bert", 1.0),   # faster than PRINCE
                 _row(seed, "biased_aggregation", "vit", 2.0),
                 _row(seed, "biased_aggregation", "bert", 2.0)]
    assert largest.per_seed(rows) == [4.0, 2.0]                     # vit over uniform_price
    assert mean.per_seed(rows) == pytest.approx([np.sqrt(4 * 0.5), np.sqrt(2 * 0.5)])
    assert met.per_seed(rows) == [100.0, 50.0]
    assert bias.per_seed(rows) == pytest.approx([np.sqrt(2.0), np.sqrt(2.0)])
