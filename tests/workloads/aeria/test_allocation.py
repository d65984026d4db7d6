"""Specification of the capacity-aware market (workloads/aeria/allocation.py, arrivals.py): every
mechanism stays within each edge server's capacity; AERIA chooses configurations jointly with
prices and stays truthful in bid, accuracy floor and deadline, and envy-free under consensus."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.workloads.aeria.test_market import EDGE, PROFILES, USERS
from workloads.aeria.allocation import (capacity_prices, greedy_thresholds, run_mechanism)
from workloads.aeria.arrivals import simulate_arrivals
from workloads.aeria.config import ValueConfig
from workloads.aeria.market import generate_market
from workloads.aeria.mechanisms import MECHANISMS, ORACLES, MechanismParams
from workloads.aeria.properties import (check_market_envy, check_market_truthfulness,
                                        misreports, offered_load, true_utility)

PARAMS = MechanismParams(size_cap=EDGE.phi_max, posted_price=1.0, oracle_price=1.0)


def market(n: int, seed: int = 0):
    return generate_market(PROFILES, n, np.random.default_rng(seed), ValueConfig(), USERS, EDGE)


def used_per_service(m, out) -> np.ndarray:
    return np.array([out.size[out.served & (m.service == s)].sum()
                     for s in range(len(m.services))])


# --------------------------------------------------------------------------- greedy filter
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 6)), min_size=1, max_size=9),
       st.integers(1, 15))
def test_greedy_threshold_is_the_lowest_net_bid_that_keeps_a_user_in_the_prefix(users, cap):
    net = np.array([u[0] for u in users], float)
    size = np.array([u[1] for u in users], float)
    keep, threshold = greedy_thresholds(net, size, cap)
    for i in range(net.size):
        def kept(bid):
            x = net.copy()
            x[i] = bid
            return greedy_thresholds(x, size, cap)[0][i]
        if size[i] > cap:
            assert not keep[i] and threshold[i] == np.inf
            continue
        above, below = threshold[i] + 1e-6, threshold[i] - 1e-6
        assert kept(max(above, -1e9)), (i, threshold[i])
        if np.isfinite(threshold[i]):
            assert not kept(below)


def test_the_greedy_prefix_fits_and_stops_at_the_first_user_that_does_not():
    keep, _ = greedy_thresholds(np.array([9.0, 8.0, 7.0, 6.0]), np.array([0.5, 0.4, 0.3, 0.05]),
                                1.0)
    np.testing.assert_array_equal(keep, [True, True, False, False])


# --------------------------------------------------------------------------- capacity
@pytest.mark.parametrize("n", [200, 2000])
@pytest.mark.parametrize("capacity", [1.0, 0.3])
def test_every_mechanism_stays_within_each_servers_capacity(n, capacity):
    m = market(n, seed=n)
    for name in MECHANISMS:
        out = run_mechanism(name, m, PARAMS, np.random.default_rng(1),
                            np.full(len(m.services), capacity))
        assert np.all(used_per_service(m, out) <= capacity + 1e-9), name
        assert not out.served[~m.feasible].any()


def test_a_loaded_market_gets_a_capacity_price_and_smaller_configurations():
    m = market(4000, seed=2)
    assert offered_load(m) > 1.5
    out = run_mechanism("aeria", m, PARAMS, np.random.default_rng(0))
    assert np.all(out.capacity_price[m.feasible] > 0)
    # at mu > 0 users trade EIP cost for size: never a larger item than the cheapest one
    ok = m.feasible
    assert np.all(out.size[ok] <= m.size[ok] + 1e-12)
    assert np.any(out.size[ok] < m.size[ok] - 1e-12)


def test_a_higher_capacity_price_never_picks_a_larger_item():
    m = market(500, seed=3)
    for s in range(len(m.services)):
        idx = np.flatnonzero((m.service == s) & m.feasible)
        items = m.items(s, idx)
        sizes = [items.pick(items.cheapest(mu))["size"] for mu in (0.0, 1.0, 10.0, 100.0, 1e4)]
        assert all(np.all(b <= a + 1e-12) for a, b in zip(sizes, sizes[1:]))


def test_capacity_prices_leave_room_for_one_more_user_of_the_largest_size():
    m = market(3000, seed=4)
    idx = np.flatnonzero((m.service == 0) & m.feasible)
    items = m.items(0, idx)
    mu = capacity_prices(m.bid[idx], items, 1.0, PARAMS, u=0.3)
    assert np.isfinite(mu).all() and mu.max() > 0
    # no room for even one user of the largest size: nobody gets a price
    assert np.isinf(capacity_prices(m.bid[idx], items, PARAMS.size_cap / 2, PARAMS, 0.3)).all()


# --------------------------------------------------------------------------- truthful, envy-free
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("capacity", [1.0, 0.15])
def test_aeria_is_truthful_in_bid_floor_and_deadline_with_and_without_binding_capacity(
        seed, capacity):
    m = market(240, seed=seed)
    report = check_market_truthfulness("aeria", m, PARAMS, probes=6, seed=seed,
                                       capacity=np.full(2, capacity))
    assert report["truthful"] == 1.0, report


def test_the_checker_catches_a_mechanism_whose_configuration_depends_on_a_lax_report():
    """cost_plus serves Edgent's most accurate item: reporting a lower floor does not change it,
    but the oracle single price is not truthful and the multi-dimensional checker says so."""
    m = market(240, seed=0)
    report = check_market_truthfulness("oracle_single_price", m, PARAMS, probes=6, seed=0)
    assert report["truthful"] == 0.0 and report["truth_gain_by"] == "bid"


def test_a_user_served_an_item_below_its_true_floor_gains_nothing_from_it():
    m = market(300, seed=5)
    user = int(np.flatnonzero(m.feasible & (m.accuracy_floor > 0.7))[0])
    lax = m.reported(user, accuracy_floor=0.0)
    out = run_mechanism("oracle_median_price", lax, PARAMS, np.random.default_rng(0),
                        np.full(2, 10.0))
    if out.served[user] and out.accuracy[user] < m.accuracy_floor[user]:
        assert true_utility(m, out, user) == -out.payments[user]
    kinds = {next(iter(r)) for r in misreports(m, user)}
    assert kinds == {"bid", "accuracy_floor", "deadline_ms"}


def test_aeria_is_envy_free_when_every_user_faces_one_menu():
    passed = []
    for seed in range(6):
        m = market(3000, seed=seed)
        out = run_mechanism("aeria", m, PARAMS, np.random.default_rng(seed))
        envy = check_market_envy("aeria", m, out)
        if envy["capacity_price_spread"] == 0:
            passed.append(envy["envy_free"])
    assert passed and np.mean(passed) >= 0.5


def test_oracles_are_labelled_and_are_mechanisms():
    assert set(ORACLES) <= set(MECHANISMS) and "aeria" not in ORACLES


# --------------------------------------------------------------------------- arrivals
def test_arrivals_never_exceed_capacity_and_released_jobs_free_it():
    m = market(3000, seed=6)
    rows = simulate_arrivals("aeria", m, PARAMS, seed=0, windows=12, max_job_windows=3)
    assert [r["window"] for r in rows] == list(range(12))
    assert sum(r["arrivals"] for r in rows) == m.num_users
    assert all(0 <= r["utilisation"] <= 1 + 1e-9 for r in rows)
    assert sum(r["served"] for r in rows) > 0
    # the same seed gives the same run; every mechanism sees the same arrivals
    assert rows == simulate_arrivals("aeria", m, PARAMS, seed=0, windows=12, max_job_windows=3)
    other = simulate_arrivals("rsop", m, PARAMS, seed=0, windows=12, max_job_windows=3)
    assert [r["arrivals"] for r in other] == [r["arrivals"] for r in rows]


def test_one_window_jobs_release_capacity_every_window():
    m = market(2000, seed=7)
    long = simulate_arrivals("vcg_capacity", m, PARAMS, seed=1, windows=8, max_job_windows=4)
    short = simulate_arrivals("vcg_capacity", m, PARAMS, seed=1, windows=8, max_job_windows=1)
    assert sum(r["served"] for r in short) >= sum(r["served"] for r in long)


# --------------------------------------------------------------------------- the claim per load
def test_the_revenue_claim_pairs_aeria_with_the_strongest_non_oracle_baseline_per_load_level():
    from workloads.aeria import CLAIMS, gain_over_strongest_baseline

    def rows(n, load, revenue):
        return [{"mechanism": m, "num_users": n, "seed": s, "load": load, "revenue": r[s]}
                for m, r in revenue.items() for s in (0, 1)]
    data = (rows(100, 0.2, {"aeria": [10, 12], "rsop": [8, 8], "core": [11, 11],
                            "oracle_single_price": [50, 50]})
            + rows(5000, 3.0, {"aeria": [110, 90], "rsop": [100, 100], "core": [50, 50]}))
    under = gain_over_strongest_baseline(0.0, 0.8)(data)      # core is the strongest: 11 > 8
    assert under == pytest.approx([100 * (10 / 11 - 1), 100 * (12 / 11 - 1)])
    over = gain_over_strongest_baseline(1.5, np.inf)(data)    # rsop; the oracle never counts
    assert over == pytest.approx([10.0, -10.0])
    assert gain_over_strongest_baseline(0.8, 1.5)(data) == []  # no market at that load
    assert len(CLAIMS) == 3
