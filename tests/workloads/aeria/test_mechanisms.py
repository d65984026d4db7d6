"""Specification of the auction primitives in workloads/aeria/mechanisms.py."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.aeria.mechanisms import (
    MECHANISMS, MechanismParams, aeria, consensus_round, core_auction, cost_plus, cost_share,
    equal_split, f2_benchmark, fixed_price, leave_one_out_f2, moulin, optimal_single_price, rsop,
    rspe, service_mechanism, single_price_benchmark, vcg_capacity)

bids_st = st.lists(st.floats(-2, 10, allow_nan=False, allow_infinity=False), min_size=0,
                   max_size=25).map(np.array)
# values on a coarse grid make ties (the hard cases) common
tied_bids_st = st.lists(st.integers(-3, 12).map(float), min_size=0, max_size=25).map(np.array)


def brute_f(x: np.ndarray, min_winners: int = 1) -> float:
    xs = sorted(x, reverse=True)
    return max([0.0] + [k * xs[k - 1] for k in range(min_winners, len(xs) + 1)])


def revenue(outcome, costs=None) -> float:
    paid = outcome.payments[outcome.served].sum()
    return float(paid - (0.0 if costs is None else costs[outcome.served].sum()))


# --------------------------------------------------------------------------- benchmarks
@given(bids_st)
def test_single_price_benchmark_is_max_over_k_of_k_times_kth_bid(x):
    assert single_price_benchmark(x) == pytest.approx(brute_f(x))


@given(bids_st)
def test_f2_benchmark_is_the_same_maximum_with_at_least_two_winners(x):
    assert f2_benchmark(x) == pytest.approx(brute_f(x, min_winners=2))
    assert f2_benchmark(x) <= single_price_benchmark(x) + 1e-12


def test_f2_excludes_the_single_winner_solution():
    assert single_price_benchmark(np.array([10.0, 1.0])) == 10.0
    assert f2_benchmark(np.array([10.0, 1.0])) == 2.0


@settings(max_examples=200)
@given(st.one_of(bids_st, tied_bids_st))
def test_leave_one_out_f2_matches_brute_force(x):
    expected = [f2_benchmark(np.delete(x, i)) for i in range(x.size)]
    np.testing.assert_allclose(leave_one_out_f2(x), expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- cost sharing
def test_cost_share_serves_largest_k_that_can_split_R():
    x = np.array([9.0, 5.0, 4.0, 3.0, 1.0])
    out = cost_share(x, R=12.0)          # k=3: 12/3 = 4 <= 4; k=4: 3 <= 3 -> the largest is 4
    np.testing.assert_array_equal(out.served, [True, True, True, True, False])
    np.testing.assert_allclose(out.payments, [3, 3, 3, 3, 0])


def test_cost_share_serves_nobody_when_R_cannot_be_split():
    out = cost_share(np.array([3.0, 2.0, 1.0]), R=5.0)   # F = 4 < 5
    assert not out.served.any() and revenue(out) == 0


def test_cost_share_passes_costs_through_and_respects_the_reserve():
    net, costs = np.array([5.0, 4.0, 0.5]), np.array([1.0, 2.0, 0.1])
    out = cost_share(net, R=2.0, reserve=1.5, costs=costs)   # k=3 needs 0.5 >= 1.5: no; k=2 ok
    np.testing.assert_array_equal(out.served, [True, True, False])
    np.testing.assert_allclose(out.payments, [2.5, 3.5, 0.0])


@settings(max_examples=200)
@given(st.one_of(bids_st, tied_bids_st), st.floats(0.01, 60))
def test_cost_share_revenue_is_R_iff_F_at_least_R(x, R):
    got = revenue(cost_share(x, R))
    if single_price_benchmark(x) >= R:
        assert got == pytest.approx(R)
    else:
        assert got == 0.0


@settings(max_examples=200)
@given(st.one_of(bids_st, tied_bids_st), st.floats(0, 40), st.floats(0, 3))
def test_cost_share_is_the_moulin_mechanism_of_equal_split(x, R, reserve):
    a, b = cost_share(x, R, reserve), moulin(x, equal_split(R, reserve))
    np.testing.assert_array_equal(a.served, b.served)
    np.testing.assert_allclose(a.payments, b.payments)


def test_moulin_drops_bidders_below_their_share_until_stable():
    weights = np.array([1.0, 1.0, 2.0])   # xi(i, S) = w_i * C / w(S): cross-monotonic

    def weighted(members):
        return np.where(members, weights * 6.0 / weights[members].sum(), 0.0)

    out = moulin(np.array([2.0, 1.0, 3.5]), weighted)
    # S={0,1,2}: shares 1.5,1.5,3 -> 1 drops; S={0,2}: shares 2,4 -> 2 drops; S={0}: 6 -> 0 drops
    assert not out.served.any()
    out = moulin(np.array([2.0, 1.6, 3.5]), weighted)
    np.testing.assert_array_equal(out.served, [True, True, True])
    np.testing.assert_allclose(out.payments, [1.5, 1.5, 3.0])


# --------------------------------------------------------------------------- consensus
@settings(max_examples=300)
@given(st.floats(1e-6, 1e6), st.floats(1.05, 10), st.floats(0, 0.999))
def test_consensus_round_lands_on_the_grid_and_rounds_down_within_a_factor_c(x, c, u):
    r = consensus_round(x, c, u)
    assert x / c * (1 - 1e-12) < r <= x * (1 + 1e-12)  # one ulp: c^u is 1.0 for u ~ 1e-16
    exponent = np.log(r) / np.log(c) - u
    assert exponent == pytest.approx(round(exponent), abs=1e-6)


def test_consensus_round_is_zero_for_nonpositive_inputs():
    np.testing.assert_array_equal(consensus_round(np.array([0.0, -3.0]), 2.0, 0.3), [0.0, 0.0])


def test_consensus_round_mean_is_x_times_c_minus_1_over_c_ln_c():
    u = np.random.default_rng(0).uniform(size=200_000)
    c, x = 2.0, 7.3
    assert consensus_round(np.full(u.size, x), c, u).mean() == pytest.approx(
        x * (c - 1) / (c * np.log(c)), rel=5e-3)


# --------------------------------------------------------------------------- aeria and core
def test_aeria_equals_cost_share_of_the_common_estimate_when_consensus_holds():
    rng = np.random.default_rng(3)
    for trial in range(50):
        x = rng.lognormal(0, 1, 60) - 0.5
        u = np.random.default_rng(trial).uniform()
        estimates = consensus_round(leave_one_out_f2(x), 2.0, u)
        got = aeria(x, 2.0, np.random.default_rng(trial))
        if np.unique(estimates).size == 1:
            want = cost_share(x, float(estimates[0]))
            np.testing.assert_array_equal(got.served, want.served)
            np.testing.assert_allclose(got.payments, want.payments)


def test_aeria_charges_each_winner_its_cost_plus_a_markup_it_can_afford():
    rng = np.random.default_rng(1)
    costs = rng.uniform(0, 1, 200)
    net = rng.lognormal(0, 1, 200) - costs
    out = aeria(net, 2.0, np.random.default_rng(5), reserve=0.2, costs=costs)
    markup = out.payments[out.served] - costs[out.served]
    assert out.served.any()
    assert np.all(markup >= 0.2 - 1e-12) and np.all(markup <= net[out.served] + 1e-12)


def test_aeria_on_100k_bidders_extracts_a_consensus_share_of_f2_at_one_price():
    """Large market: the consensus holds, so one markup r_c(F2)/k is charged, and the revenue
    lies between F2/c (rounding down by less than a factor c) and the single-price optimum F."""
    net = np.random.default_rng(0).lognormal(0, 1, 100_000) - 1.0
    out = aeria(net, 2.0, np.random.default_rng(1))
    revenue = out.payments.sum()
    assert len(np.unique(np.round(out.payments[out.served], 9))) == 1
    assert f2_benchmark(net) / 2.0 - 1e-6 <= revenue <= single_price_benchmark(net) + 1e-6


def test_core_passes_costs_through_and_shares_one_common_estimate():
    net, costs = np.array([5.0, 4.0, 3.0, 1.0]), np.array([1.0, 2.0, 0.5, 0.0])
    out = core_auction(net, 2.0, np.random.default_rng(0), costs=costs)
    markups = out.payments[out.served] - costs[out.served]
    assert out.served.any() and np.ptp(markups) < 1e-12   # one R: one markup for every winner
    assert revenue(out, costs) > 0


# --------------------------------------------------------------------------- baselines
def test_optimal_single_price_extracts_F():
    x = np.array([9.0, 5.0, 4.0, 3.0, 1.0])
    assert revenue(optimal_single_price(x)) == pytest.approx(single_price_benchmark(x))


@given(bids_st, st.integers(1, 6))
def test_vcg_serves_at_most_k_and_charges_the_k_plus_first_net_bid(x, k):
    out = vcg_capacity(x, k)
    assert out.served.sum() <= k
    assert np.all(x[out.served] > 0)
    threshold = max(sorted(x, reverse=True)[k], 0.0) if x.size > k else 0.0
    np.testing.assert_allclose(out.payments[out.served], threshold)


def test_fixed_price_never_sells_below_cost():
    out = fixed_price(np.array([5.0, 5.0, 1.0]), np.array([1.0, 3.0, 0.5]), price=2.0)
    np.testing.assert_array_equal(out.served, [True, False, False])
    np.testing.assert_allclose(out.payments, [2.0, 0.0, 0.0])


def test_cost_plus_prices_a_margin_over_edgent_cost():
    out = cost_plus(np.array([1.3, 1.1]), np.array([1.0, 1.0]), margin=0.2)
    np.testing.assert_array_equal(out.served, [True, False])
    assert out.payments[0] == pytest.approx(1.2)


@pytest.mark.parametrize("mechanism", [rsop, rspe])
def test_random_sampling_is_deterministic_given_the_seed(mechanism):
    x = np.random.default_rng(0).lognormal(0, 1, 300)
    a, b = mechanism(x, np.random.default_rng(7)), mechanism(x, np.random.default_rng(7))
    np.testing.assert_array_equal(a.served, b.served)
    np.testing.assert_array_equal(a.payments, b.payments)


@pytest.mark.parametrize("name", MECHANISMS)
@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_every_mechanism_handles_tiny_markets(name, n):
    fn = service_mechanism(name, MechanismParams())
    out = fn(np.linspace(1, 2, n), np.full(n, 0.5), np.random.default_rng(0))
    assert out.served.shape == (n,) and out.payments.shape == (n,)
    assert np.all(out.payments[~out.served] == 0)


def test_service_mechanism_rejects_unknown_names():
    with pytest.raises(KeyError, match="known"):
        service_mechanism("vickrey", MechanismParams())


def test_mechanism_names_are_unique():
    assert len(set(MECHANISMS)) == len(MECHANISMS)
    assert not list(itertools.filterfalse(str.isidentifier, MECHANISMS))
