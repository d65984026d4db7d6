"""Specification of the market in workloads/aeria/market.py (users, configurations, costs), of the
market-level dispatch and checks, and of the config's cross-field rules. Uses tiny synthetic DNN
profiles, never the shipped profiles.json."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from orchestrator.config import ConfigError, build
from workloads.aeria.config import AeriaConfig, EdgeConfig, UserConfig, ValueConfig
from workloads.aeria.market import (configurations, draw_values, generate_market,
                                    most_accurate, value_median)
from workloads.aeria.allocation import run_mechanism
from workloads.aeria.mechanisms import MECHANISMS, MechanismParams, aeria
from workloads.aeria.profiles import DnnProfile
from workloads.aeria.properties import check_market_envy, check_market_truthfulness
from workloads.aeria.workload import TRIAL_METRICS, trial, trial_batch

EDGE = EdgeConfig(speed_gflops=200.0, phi_max=0.1, eip_base_cost=0.01, eip_price_per_gflop=2.0)
USERS = UserConfig(accuracy_floor_low=0.4, accuracy_floor_high=0.95, deadline_ms_low=2.0,
                   deadline_ms_high=60.0, device_gflops_low=0.1, device_gflops_high=3.0,
                   bandwidth_mbps_low=1.0, bandwidth_mbps_high=50.0)


def tiny_profile(name: str = "tiny", scale: float = 1.0) -> DnnProfile:
    """4 layers, exits after layers 1 and 3 (accuracy 0.6 and 0.9)."""
    return DnnProfile(
        name=name, dataset="synthetic", input_bytes=12288.0,
        layer_names=("c1", "c2", "c3", "fc"),
        layer_flops=np.array([4e6, 8e6, 6e6, 1e6]) * scale,
        layer_out_bytes=np.array([32768.0, 8192.0, 4096.0, 40.0]),
        layer_cpu_ms=np.ones(4), exit_after=np.array([1, 3]),
        exit_head_flops=np.array([0.5e6, 0.0]) * scale, exit_accuracy=np.array([0.6, 0.9]))


PROFILES = [tiny_profile("small"), tiny_profile("big", scale=4.0)]


def market(n: int = 300, seed: int = 0, values: ValueConfig = ValueConfig()):
    return generate_market(PROFILES, n, np.random.default_rng(seed), values, USERS, EDGE)


def brute_force_configs(profile: DnnProfile, m, u: int):
    """[(cost, size, accuracy)] of user u's feasible configs, by plain Python."""
    out = []
    for e, after in enumerate(profile.exit_after):
        for p in range(after + 2):
            on_device = p == after + 1
            dev = sum(profile.layer_flops[:p]) + (profile.exit_head_flops[e] if on_device else 0)
            sent = 0 if on_device else ([profile.input_bytes, *profile.layer_out_bytes])[p]
            edge = 0 if on_device else (sum(profile.layer_flops[p:after + 1])
                                        + profile.exit_head_flops[e])
            fixed = dev / (m.device_gflops[u] * 1e6) + sent * 8 / (m.bandwidth_mbps[u] * 1e3)
            slack = m.deadline_ms[u] - fixed
            phi = 0 if on_device else (edge / (EDGE.speed_gflops * 1e6 * slack) if slack > 0
                                       else np.inf)
            link = sent * 8 / 1e6 / (m.deadline_ms[u] / 1e3) / EDGE.link_mbps
            if profile.exit_accuracy[e] >= m.accuracy_floor[u] and slack >= 0 and \
                    phi <= EDGE.phi_max and link <= EDGE.phi_max:
                cost = EDGE.eip_base_cost + EDGE.eip_price_per_gflop * edge / 1e9
                out.append((cost, max(phi, link), profile.exit_accuracy[e]))
    return out


# --------------------------------------------------------------------------- configurations
def test_configurations_enumerate_every_exit_and_partition():
    p = tiny_profile()
    t = configurations(p)
    assert len(t.exit) == (1 + 2) + (3 + 2)
    on_device = t.edge_flops == 0
    assert on_device.sum() == 2 and np.all(t.sent_bytes[on_device] == 0)
    total = np.array([12.5e6, 19e6])[t.exit]             # backbone through the exit + its head
    np.testing.assert_allclose(t.device_flops + t.edge_flops, total)
    assert t.sent_bytes[(t.partition == 0) & ~on_device][0] == p.input_bytes


# --------------------------------------------------------------------------- feasibility, cost
def test_market_feasibility_respects_accuracy_floors_and_deadlines():
    m = market(120)
    for u in range(m.num_users):
        configs = brute_force_configs(PROFILES[m.service[u]], m, u)
        assert m.feasible[u] == bool(configs)
        if m.feasible[u]:
            assert m.accuracy[u] >= m.accuracy_floor[u]
            assert m.latency_ms[u] <= m.deadline_ms[u] * (1 + 1e-9)
            assert 0 <= m.share[u] <= EDGE.phi_max


def test_market_cost_is_the_cheapest_feasible_configuration_and_size_its_dominant_share():
    m = market(120, seed=1)
    for u in np.flatnonzero(m.feasible):
        configs = brute_force_configs(PROFILES[m.service[u]], m, u)
        cost, size = min((c, z) for c, z, _ in configs)
        assert m.cost[u] == pytest.approx(cost) and m.size[u] == pytest.approx(size)


def test_edgent_cost_is_at_the_most_accurate_feasible_configuration():
    m = market(120, seed=2)
    for u in np.flatnonzero(m.feasible):
        configs = brute_force_configs(PROFILES[m.service[u]], m, u)
        best = max(a for _, _, a in configs)
        smallest = min((z, c) for c, z, a in configs if a == best)
        items = m.items(m.service[u], np.array([u]))
        k = most_accurate(items)
        assert items.accuracy[k[0]] == best
        assert items.size[0, k[0]] == pytest.approx(smallest[0])
        assert items.cost[k[0]] == pytest.approx(smallest[1]) and items.cost[k[0]] >= m.cost[u]


def test_infeasible_users_cost_infinity_and_are_never_served():
    m = market(400)
    assert (~m.feasible).any(), "the tiny market should have some infeasible users"
    assert np.all(np.isinf(m.cost[~m.feasible])) and np.all(m.exit[~m.feasible] == -1)
    for name in MECHANISMS:
        out = run_mechanism(name, m, MechanismParams(), np.random.default_rng(0))
        assert not out.served[~m.feasible].any()


def test_a_market_of_100k_users_is_generated():
    m = market(100_000)
    assert m.num_users == 100_000 and m.feasible.sum() > 0


# --------------------------------------------------------------------------- users, determinism
def test_same_seed_same_market_and_another_seed_another():
    a, b, c = market(seed=4), market(seed=4), market(seed=5)
    for f in dataclasses.fields(a):
        if f.name not in a._NOT_PER_USER:
            np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
    assert not np.array_equal(a.value, c.value)


def test_same_seed_same_mechanism_outcome():
    m = market(500)
    for name in MECHANISMS:
        x = run_mechanism(name, m, MechanismParams(), np.random.default_rng(9))
        y = run_mechanism(name, m, MechanismParams(), np.random.default_rng(9))
        np.testing.assert_array_equal(x.payments, y.payments)


@pytest.mark.parametrize("dist", ["uniform", "lognormal", "exponential"])
def test_value_median_is_the_median_of_the_drawn_values(dist):
    cfg = ValueConfig(distribution=dist, low=0.0, high=2.0, mu=0.3, sigma=0.5, scale=1.5)
    draws = draw_values(cfg, 200_000, np.random.default_rng(0))
    assert np.median(draws) == pytest.approx(value_median(cfg), rel=0.02)


def test_take_and_with_bids_keep_the_market_consistent():
    m = market(50)
    sub = m.take(np.arange(10, 20)).with_bids(np.ones(10))
    assert sub.num_users == 10 and sub.services == m.services
    np.testing.assert_array_equal(sub.value, m.value[10:20])
    assert np.all(sub.bid == 1.0)


# --------------------------------------------------------------------------- market-level auctions
def test_without_binding_capacity_aeria_is_one_uncapacitated_auction_per_service():
    m = market(600)
    params = MechanismParams(consensus_base=2.0)
    out = run_mechanism("aeria", m, params, np.random.default_rng(3), capacity=np.full(2, 1e6))
    assert np.all(out.capacity_price == 0)
    for s, child in enumerate(np.random.default_rng(3).spawn(len(m.services))):
        idx = np.flatnonzero((m.service == s) & m.feasible)
        want = aeria(m.bid[idx] - m.cost[idx], 2.0, child, costs=m.cost[idx])
        np.testing.assert_array_equal(out.served[idx], want.served)
        np.testing.assert_allclose(out.payments[idx], want.payments)


def test_market_checks_pass_for_aeria_and_report_their_findings():
    m = market(300)
    params = MechanismParams()
    truth = check_market_truthfulness("aeria", m, params, probes=5, seed=0)
    assert truth["truthful"] == 1.0 and truth["max_truth_gain"] < 1e-9
    envy = check_market_envy("cost_share", m, run_mechanism("cost_share", m, params,
                                                            np.random.default_rng(0)))
    assert envy["envy_free"] == 1.0


# --------------------------------------------------------------------------- config rules
@pytest.fixture
def profiles_file(tmp_path):
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"dnns": {"tiny": {
        "dataset": "synthetic", "input_bytes": 100,
        "layers": [{"name": "l0", "flops": 10, "out_bytes": 4, "cpu_ms": 0.1}],
        "exits": [{"after_layer": 0, "head_flops": 0, "accuracy": 0.5}]}}}))
    return str(path)


def test_config_builds_with_defaults_and_a_profile_table(profiles_file):
    cfg = build(AeriaConfig, {"profiles": profiles_file})
    assert cfg.service_names() == ["tiny"] and set(cfg.mechanisms) == set(MECHANISMS)


@pytest.mark.parametrize("data, key", [
    ({"users": {"deadline_ms_low": 50.0, "deadline_ms_high": 10.0}}, "users.deadline_ms_low"),
    ({"values": {"distribution": "uniform", "low": 2.0, "high": 1.0}}, "values.low"),
    ({"services": ["resnet"]}, "services[0]"),
    ({"service_weights": [1.0, 2.0]}, "service_weights"),
    ({"mechanisms": ["aeria", "aeria"]}, "mechanisms"),
    ({"mechanisms": ["vickrey"]}, "mechanisms[0]"),
    ({"consensus_base": 1.0}, "consensus_base"),
    ({"user_counts": []}, "user_counts"),
])
def test_config_rejects_bad_values_naming_the_key(profiles_file, data, key):
    with pytest.raises(ConfigError) as err:
        build(AeriaConfig, {"profiles": profiles_file, **data}, "aeria")
    assert err.value.key == f"aeria.{key}"


# --------------------------------------------------------------------------- trial
def write_profiles(path, profiles) -> str:
    """PROFILES in the schema of profiles.json."""
    dnns = {p.name: {
        "dataset": p.dataset, "input_bytes": p.input_bytes,
        "layers": [{"name": n, "flops": f, "out_bytes": b, "cpu_ms": 1.0}
                   for n, f, b in zip(p.layer_names, p.layer_flops, p.layer_out_bytes)],
        "exits": [{"after_layer": int(a), "head_flops": h, "accuracy": acc}
                  for a, h, acc in zip(p.exit_after, p.exit_head_flops, p.exit_accuracy)]}
        for p in profiles}
    path.write_text(json.dumps({"dnns": dnns}))
    return str(path)


def test_trial_is_deterministic_and_reports_each_metric_per_mechanism(tmp_path):
    aeria_cfg = AeriaConfig(profiles=write_profiles(tmp_path / "p.json", PROFILES),
                            num_users=800, users=USERS, edge=EDGE)
    cfg = SimpleNamespace(seed=3, aeria=aeria_cfg)
    first, second = trial(cfg, None), trial(cfg, None)
    assert first == second
    for name in MECHANISMS:
        assert {f"{key}_{name}" for key in TRIAL_METRICS} <= set(first)
    assert first["num_users"] == 800 and first["revenue_aeria"] > 0
    other = SimpleNamespace(seed=3, aeria=dataclasses.replace(aeria_cfg, reserve_price=0.2))
    assert trial_batch([cfg, other], None) == [first, trial(other, None)]
