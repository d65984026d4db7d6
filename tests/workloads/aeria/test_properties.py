"""Specification of the property checks in workloads/aeria/properties.py, and of which
mechanisms keep which promise (truthfulness, envy-freeness) on random markets."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.aeria.mechanisms import (MechanismParams, Outcome, aeria, consensus_round,
                                        cost_share, leave_one_out_f2, rsop, service_mechanism)
from workloads.aeria.properties import (benchmark_f2, check_envy_free, check_truthfulness,
                                        competitive_ratio, probe_users, utilities)

TRUTHFUL = ("aeria", "cost_share", "rsop", "rspe", "vcg_capacity", "posted_price", "cost_plus",
            "oracle_median_price")


@st.composite
def markets(draw, min_size=2, max_size=14):
    """(values, costs) of one service; values on a coarse grid so ties are common."""
    n = draw(st.integers(min_size, max_size))
    values = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)).copy()
    costs = draw(st.lists(st.integers(0, 10), min_size=n, max_size=n))
    return np.array(values, float) / 4, np.array(costs, float) / 8


params_st = st.builds(MechanismParams, consensus_base=st.sampled_from([1.5, 2.0, 3.0]),
                      reserve_price=st.sampled_from([0.0, 0.5]),
                      posted_price=st.sampled_from([1.0, 3.0]),
                      oracle_price=st.sampled_from([1.0, 3.0]), cost_share_per_user=st.just(0.8))


# --------------------------------------------------------------------------- truthfulness
def test_truthfulness_checker_finds_the_profitable_misreport_of_the_oracle_single_price():
    fn = service_mechanism("oracle_single_price", MechanismParams())
    values, costs = np.array([10.0, 1.0, 1.0, 1.0]), np.zeros(4)
    report = check_truthfulness(fn, values, costs)
    # truthful: price 10, the top user's utility is 0; bidding 2.5 lowers the price to 1
    assert not report.passed
    assert report.user == 0 and report.max_gain == pytest.approx(9.0)
    assert report.probes == 4 * 10


def test_the_oracle_single_price_fails_the_checker_on_random_markets():
    fn = service_mechanism("oracle_single_price", MechanismParams())
    rng = np.random.default_rng(0)
    failures = [not check_truthfulness(fn, rng.lognormal(0, 1, 30), np.zeros(30), seed=s).passed
                for s in range(5)]
    assert any(failures)


@settings(max_examples=40, deadline=None)
@given(markets(), params_st, st.integers(0, 2**31))
def test_aeria_is_truthful_on_random_markets(market, params, seed):
    values, costs = market
    fn = service_mechanism("aeria", params)
    assert check_truthfulness(fn, values, costs, seed=seed).passed


@pytest.mark.parametrize("name", TRUTHFUL)
@settings(max_examples=25, deadline=None)
@given(market=markets(), params=params_st, seed=st.integers(0, 2**31))
def test_truthful_baselines_pass_the_checker(name, market, params, seed):
    values, costs = market
    report = check_truthfulness(service_mechanism(name, params), values, costs, seed=seed)
    assert report.passed, report


def test_checker_only_probes_the_users_it_is_given():
    fn = service_mechanism("oracle_single_price", MechanismParams())
    values = np.array([10.0, 1.0, 1.0, 1.0])
    report = check_truthfulness(fn, values, np.zeros(4), users=[1, 2], deviations=(0.5, 2.0))
    assert report.probes == 4


def test_probe_users_picks_the_top_and_the_marginal_winners_without_repeats():
    net = np.array([5.0, 1.0, 4.0, 3.0, 2.0, 0.5])
    served = net >= 2.0
    picks = probe_users(net, served, 4, np.random.default_rng(0))
    assert len(set(picks)) == 4
    assert 0 in picks and 4 in picks          # best net value, lowest served net value


# --------------------------------------------------------------------------- envy-freeness
@settings(max_examples=60, deadline=None)
@given(markets(), st.floats(0.1, 20), st.sampled_from([0.0, 0.3]))
def test_cost_share_is_envy_free(market, R, reserve):
    values, costs = market
    out = cost_share(values - costs, R, reserve, costs)
    assert check_envy_free(out, values, costs).passed


@settings(max_examples=60, deadline=None)
@given(markets(max_size=30), st.sampled_from([1.5, 2.0, 3.0]), st.integers(0, 2**31))
def test_aeria_is_envy_free_whenever_the_consensus_holds(market, c, seed):
    values, costs = market
    net = values - costs
    estimates = consensus_round(leave_one_out_f2(net), c, np.random.default_rng(seed).uniform())
    out = aeria(net, c, np.random.default_rng(seed), costs=costs)
    if np.unique(estimates).size == 1:
        assert check_envy_free(out, values, costs).passed


def test_aeria_is_envy_free_on_most_large_markets():
    rng = np.random.default_rng(0)
    passed = []
    for seed in range(40):
        costs = rng.uniform(0, 0.5, 500)
        values = rng.lognormal(0, 0.8, 500)
        out = aeria(values - costs, 2.0, np.random.default_rng(seed), costs=costs)
        passed.append(check_envy_free(out, values, costs).passed)
    assert np.mean(passed) >= 0.9


def test_rsop_is_generally_not_envy_free():
    rng = np.random.default_rng(0)
    values = rng.lognormal(0, 1, 200)
    verdicts = [check_envy_free(rsop(values, np.random.default_rng(s)), values,
                                np.zeros(200)).passed for s in range(10)]
    assert not all(verdicts)


def test_envy_checker_flags_unequal_markups_and_envious_losers():
    values, costs = np.array([5.0, 5.0, 4.0]), np.array([1.0, 2.0, 0.0])
    same = Outcome(np.array([True, True, False]), np.array([3.0, 4.0, 0.0]))  # markup 2, 2
    assert not check_envy_free(same, values, costs).passed     # loser's net 4 > markup 2
    unequal = Outcome(np.array([True, True, True]), np.array([3.0, 3.0, 2.0]))  # 2, 1, 2
    report = check_envy_free(unequal, values, costs)
    assert not report.passed and report.markup_spread == pytest.approx(1.0)
    fair = Outcome(np.array([True, True, True]), np.array([2.0, 3.0, 1.0]))
    assert check_envy_free(fair, values, costs).passed


def test_envy_is_only_checked_within_a_service():
    values, costs = np.array([5.0, 5.0]), np.zeros(2)
    out = Outcome(np.array([True, True]), np.array([1.0, 2.0]))
    assert not check_envy_free(out, values, costs).passed
    assert check_envy_free(out, values, costs, groups=np.array([0, 1])).passed


# --------------------------------------------------------------------------- competitive ratio
def test_competitive_ratio_is_f2_over_revenue_summed_over_services():
    net = np.array([4.0, 3.0, 1.0, 10.0, 10.0])
    groups = np.array([0, 0, 0, 1, 1])
    assert benchmark_f2(net, groups) == pytest.approx(6.0 + 20.0)
    assert competitive_ratio(net, 13.0, groups) == pytest.approx(2.0)
    assert competitive_ratio(net, 0.0, groups) == float("inf")


def test_utilities_are_value_minus_payment_for_winners_only():
    out = Outcome(np.array([True, False]), np.array([2.0, 0.0]))
    np.testing.assert_allclose(utilities(out, np.array([5.0, 7.0])), [3.0, 0.0])
