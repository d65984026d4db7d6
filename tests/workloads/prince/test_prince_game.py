"""Specification of PRINCE's economic core: the devices' congestion game (workloads/prince/game.py),
the tenants' Stackelberg pricing, the convergence-bound valuation, the time model and the pricing
baselines. Synthetic markets only; no Ray, no torch."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.prince import timing as tm
from workloads.prince.baselines import METHODS, allocate
from workloads.prince.game import (GameParams, best_participation, build_game, counts,
                                   equilibrium_path, follower_equilibrium, potential,
                                   tenant_metrics)
from workloads.prince.stackelberg import stackelberg_prices
from workloads.prince.market import Devices, Tenants
from workloads.prince.valuation import (marginal_value, participation_matrix,
                                        participation_value, rounds_to_target)

M = 4


def tenants(budget: float = 800.0, **over) -> Tenants:
    fields = dict(
        names=("vit", "bert", "whisper", "llama"), target=np.full(M, 0.05),
        deadline_s=np.array([300.0, 300.0, 600.0, 600.0]), budget=np.full(M, budget),
        alpha=np.full(M, 20.0), beta=np.array([2.0, 3.0, 3.0, 5.0]),
        server_flops=np.array([2e8, 3e8, 4e8, 8e8]), device_flops=np.array([1e8, 1.5e8, 2e8, 4e8]),
        smashed_bytes=np.array([8e3, 1.6e4, 2e4, 3.2e4]), samples_per_round=np.full(M, 32.0),
        edge_flops=np.full(M, 1e12), price_min=np.zeros(M), price_max=np.full(M, 2.0))
    fields.update(over)
    return Tenants(**{k: np.asarray(v, float) if k != "names" else v for k, v in fields.items()})


def devices(n: int = 40, seed: int = 0, share: float = 0.5) -> Devices:
    rng = np.random.default_rng(seed)
    data = rng.integers(50, 500, (n, M)) * (rng.random((n, M)) < share)
    return Devices(data=data.astype(float), grad_norm=rng.uniform(0.5, 2.0, (n, M)),
                   flops=rng.uniform(5e9, 5e10, n), uplink=rng.uniform(1e6, 2e7, n),
                   kappa=rng.uniform(0.5, 2.0, n), energy_cost=rng.uniform(0.01, 0.1, n))


PARAMS = GameParams(price_points=8)
GAME = build_game(tenants(), devices(), PARAMS)
PRICES = np.array([0.6, 0.9, 1.2, 1.5])


def direct_utilities(game, prices, choice):
    """(N, M) u_n if n alone moved to m, straight from the SEEDS 2.3 formula (-inf: ineligible)."""
    k = counts(choice, M)
    k_after = k + (choice[:, None] != np.arange(M))
    tau = tm.edge_latency(k_after, game.tenants, game.params.timing)
    x = prices - game.devices.energy_cost[:, None] * game.busy - game.params.psi * tau
    kappa = game.devices.kappa[:, None]
    q = np.clip(x / kappa, game.params.q_min, 1.0)
    return np.where(game.devices.eligible, x * q - 0.5 * kappa * q ** 2, -np.inf)


def assert_nash(game, prices, fol):
    u = direct_utilities(game, prices, fol.choice)
    rows = np.arange(game.devices.size)
    mine = np.where(fol.choice >= 0, u[rows, np.maximum(fol.choice, 0)], 0.0)
    for n in rows:                                   # every device, every alternative, and "none"
        for m in range(M):
            assert u[n, m] <= mine[n] + 1e-9, (n, m, u[n, m], mine[n])
        assert mine[n] >= -1e-12, (n, mine[n])


# --------------------------------------------------------------------------- followers
def test_followers_converge_to_an_equilibrium_where_no_device_gains_by_switching():
    fol = follower_equilibrium(GAME, PRICES, np.random.default_rng(1))
    assert fol.converged and fol.moves > 0
    assert_nash(GAME, PRICES, fol)


def test_potential_strictly_decreases_on_every_switch_and_matches_the_profile():
    fol = follower_equilibrium(GAME, PRICES, np.random.default_rng(2))
    assert fol.potential.shape == (fol.moves + 1,)
    assert np.all(np.diff(fol.potential) < 0)
    assert fol.potential[0] == pytest.approx(potential(GAME, PRICES, np.full(40, -1)))
    assert fol.potential[-1] == pytest.approx(potential(GAME, PRICES, fol.choice))


def test_participation_is_the_closed_form_best_level():
    fol = follower_equilibrium(GAME, PRICES, np.random.default_rng(3))
    on = fol.choice >= 0
    assert np.all((fol.q[on] >= PARAMS.q_min) & (fol.q[on] <= 1.0)) and np.all(fol.q[~on] == 0)
    x, kappa = np.linspace(-2, 3, 11), 1.5
    grid = np.linspace(PARAMS.q_min, 1.0, 2001)
    brute = grid[np.argmax(x[:, None] * grid - 0.5 * kappa * grid ** 2, axis=1)]
    assert np.allclose(best_participation(x, kappa, PARAMS.q_min), brute, atol=1e-3)


def test_a_device_without_data_for_a_tenant_never_joins_it():
    game = build_game(tenants(), devices(share=0.3), PARAMS)
    for prices in (PRICES, np.full(M, 2.0)):
        fol = follower_equilibrium(game, prices, np.random.default_rng(4))
        joined = fol.choice >= 0
        assert np.all(game.devices.eligible[joined, fol.choice[joined]])
    eq = stackelberg_prices(game, np.random.default_rng(4))
    joined = eq.choice >= 0
    assert np.all(game.devices.eligible[joined, eq.choice[joined]])


def test_followers_are_deterministic_given_the_seed_and_batches_solve_each_game():
    a = follower_equilibrium(GAME, PRICES, np.random.default_rng(7))
    b = follower_equilibrium(GAME, PRICES, np.random.default_rng(7))
    assert np.array_equal(a.choice, b.choice) and np.array_equal(a.potential, b.potential)
    batch = follower_equilibrium(GAME, np.stack([PRICES, PRICES * 0.5]), np.random.default_rng(7))
    assert batch.choice.shape == (2, 40) and np.all(batch.converged)
    assert_nash(GAME, PRICES * 0.5, batch.pick(1))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30),
       psi=st.floats(0.1, 20.0), congestion=st.sampled_from(tm.CONGESTION_MODELS))
def test_better_response_dynamics_always_reach_a_nash_equilibrium(seed, n, psi, congestion):
    rng = np.random.default_rng(seed)
    params = GameParams(psi=psi, timing=tm.TimingParams(congestion=congestion, edge_capacity=8))
    game = build_game(tenants(), devices(n, seed), params)
    prices = rng.uniform(0.0, 2.0, M)
    fol = follower_equilibrium(game, prices, rng, init=rng.integers(-1, M, n))
    assert fol.converged and np.all(np.diff(fol.potential) < 0)
    assert_nash(game, prices, fol)


# --------------------------------------------------------------------------- leaders
def test_stackelberg_payments_stay_within_every_tenants_budget():
    eq = stackelberg_prices(GAME, np.random.default_rng(5))
    assert eq.converged and eq.iterations >= 1
    assert np.all(eq.payment <= GAME.tenants.budget + 1e-9) and np.all(eq.budget_ok)
    assert np.all((eq.prices >= GAME.tenants.price_min) & (eq.prices <= GAME.tenants.price_max))
    assert np.array_equal(eq.deadline_met, eq.time_to_target <= GAME.tenants.deadline_s)
    assert eq.price_trace.shape == (eq.iterations + 1, M)


def test_at_the_stackelberg_equilibrium_no_tenant_gains_by_changing_its_price():
    eq = stackelberg_prices(GAME, np.random.default_rng(6))
    assert eq.converged
    grid = GAME.tenants.price_grid(PARAMS.price_points)
    for m in range(M):
        batch = np.repeat(eq.prices[None], len(grid), axis=0)
        batch[:, m] = grid[:, m]
        start = int(np.argmin(np.abs(grid[:, m] - eq.prices[m])))
        fol = equilibrium_path(GAME, batch, np.random.default_rng(0), start, init=eq.choice)
        met = tenant_metrics(GAME, batch, fol.choice, fol.q)
        ok = met.payment[:, m] <= GAME.tenants.budget[m] + 1e-9
        assert np.all(met.time[ok, m] >= eq.time_to_target[m] * (1 - PARAMS.min_improvement))


def test_a_tenant_with_a_tiny_budget_prices_lower_and_gets_fewer_devices():
    rich = stackelberg_prices(GAME, np.random.default_rng(8))
    poor_game = build_game(tenants(budget=np.array([5.0, 800, 800, 800])), devices(), PARAMS)
    poor = stackelberg_prices(poor_game, np.random.default_rng(8))
    assert poor.payment[0] <= 5.0 + 1e-9
    assert poor.prices[0] < rich.prices[0] and poor.enrolled[0] < rich.enrolled[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_tenant_outbid_at_its_price_cap_raises_its_price_and_attracts_devices(seed):
    """LLaMA's edge is 10x slower (psi tau_m(1) = 0.26 per round vs <= 0.013), so at the common cap
    0.3 every device prefers a rival and, capped there, it ends with nobody (quickstart issue 1).
    With budget left the empty leader raises its price past the cap: in the SE every tenant with a
    positive budget enrols devices, within budget, and the followers are at a Nash equilibrium."""
    slow_edge = tenants(edge_flops=np.array([1e12, 1e12, 1e12, 1e11]), price_max=np.full(M, 0.3))
    market = devices(n=30, seed=3, share=1.0)
    capped = stackelberg_prices(build_game(slow_edge, market, GameParams(price_points=8,
                                                                          raise_steps=0)),
                                np.random.default_rng(seed))
    assert capped.enrolled[3] == 0 and capped.prices[3] <= 0.3 + 1e-12
    game = build_game(slow_edge, market, PARAMS)
    eq = stackelberg_prices(game, np.random.default_rng(seed))
    assert np.all(eq.enrolled > 0) and np.all(np.isfinite(eq.time_to_target))
    assert np.all(eq.budget_ok)      # a grid SE, or the cycle's pass that serves every tenant
    assert eq.prices[3] > 0.3 and np.all(eq.prices[:3] <= 0.3 + 1e-12)  # only the empty one rose
    assert_nash(game, eq.prices, follower_equilibrium(game, eq.prices, np.random.default_rng(0),
                                                      init=eq.choice))
    assert np.all(np.diff(eq.potential) < 0)


def test_stackelberg_is_deterministic_given_the_seed():
    a, b = (stackelberg_prices(GAME, np.random.default_rng(9)) for _ in range(2))
    assert np.array_equal(a.prices, b.prices) and np.array_equal(a.choice, b.choice)


# --------------------------------------------------------------------------- valuation
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), rise=st.floats(1e-3, 0.5))
def test_rounds_to_target_fall_when_any_participation_level_rises(seed, rise):
    rng = np.random.default_rng(seed)
    devs = devices(12, seed)
    choice = np.where(devs.eligible.any(1), np.argmax(devs.eligible * rng.random((12, M)), 1), -1)
    q = np.where(choice >= 0, rng.uniform(0.05, 0.5, 12), 0.0)
    before = rounds_to_target(participation_matrix(choice, q, M), devs, tenants())
    for n in np.flatnonzero(choice >= 0):
        q2 = q.copy()
        q2[n] += rise
        after = rounds_to_target(participation_matrix(choice, q2, M), devs, tenants())
        assert after[choice[n]] < before[choice[n]]
        assert np.array_equal(np.delete(after, choice[n]), np.delete(before, choice[n]))


def test_marginal_value_is_the_slope_of_the_rounds_and_nobody_means_infinite_rounds():
    devs, ten = devices(10, 3), tenants()
    choice = np.where(devs.eligible[:, 0], 0, -1)
    q = np.where(choice >= 0, 0.3, 0.0)
    q_nm = participation_matrix(choice, q, M)
    n, h = np.flatnonzero(choice == 0)[0], 1e-6
    bumped = q_nm.copy()
    bumped[n, 0] += h
    slope = (rounds_to_target(q_nm, devs, ten)[0] - rounds_to_target(bumped, devs, ten)[0]) / h
    assert marginal_value(q_nm, devs, ten)[n, 0] == pytest.approx(slope, rel=1e-4)
    assert np.all(np.isinf(rounds_to_target(q_nm, devs, ten)[1:]))
    drop = participation_value(q_nm, devs, ten)
    alone = q_nm.copy()
    alone[n] = 0.0
    assert drop[n, 0] == pytest.approx(rounds_to_target(alone, devs, ten)[0]
                                       - rounds_to_target(q_nm, devs, ten)[0])


# --------------------------------------------------------------------------- timing
@pytest.mark.parametrize("congestion", tm.CONGESTION_MODELS)
def test_more_congestion_means_longer_rounds(congestion):
    timing = tm.TimingParams(congestion=congestion, edge_capacity=10)
    tau = tm.edge_latency(np.arange(40)[:, None] * np.ones(M), tenants(), timing)
    assert np.all(np.diff(tau, axis=0) >= 0) and np.all(tau[0] == 0)
    if congestion != "none":
        assert np.all(np.diff(tau, axis=0) > 0)
    mm1 = tm.edge_latency(np.full(M, 9.0), tenants(), tm.TimingParams("mm1", edge_capacity=10))
    assert np.all(mm1 > tm.edge_latency(np.full(M, 9.0), tenants(), tm.TimingParams("linear")))
    busy, few, many = np.full((6, M), 0.1), np.zeros((6, M)), np.zeros((6, M))
    few[:3, 0], many[:, 0] = 0.5, 0.5
    assert (tm.round_time(busy, many, tenants(), timing)[0]
            > tm.round_time(busy, few, tenants(), timing)[0])


def test_expected_straggler_matches_monte_carlo_and_worst_case_bounds_it():
    rng = np.random.default_rng(0)
    busy, q = rng.uniform(0.1, 2.0, (8, 1)), rng.uniform(0.05, 1.0, (8, 1))
    joins = rng.random((200_000, 8, 1)) < q
    sampled = np.where(joins, busy, 0.0).max(axis=1).mean()
    assert tm.expected_straggler(busy, q)[0] == pytest.approx(sampled, rel=0.01)
    assert tm.expected_straggler(busy, q, worst=True)[0] == busy.max()


# --------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("method", METHODS)
def test_every_baseline_returns_a_valid_allocation(method):
    rng = np.random.default_rng(10)
    eq = allocate(method, GAME, rng)
    on = eq.choice >= 0
    assert eq.method == method and eq.choice.shape == eq.q.shape == (40,)
    assert np.all(GAME.devices.eligible[on, eq.choice[on]]) and np.all(eq.q[~on] == 0)
    assert np.all((eq.q[on] >= PARAMS.q_min) & (eq.q[on] <= 1.0))
    assert np.array_equal(eq.enrolled, counts(eq.choice, M))
    assert np.all(np.isfinite(eq.payment)) and eq.time_to_target.shape == (M,)
    if method == "uniform_price":
        assert np.all(eq.prices == eq.prices[0])
        assert eq.payment.sum() <= GAME.tenants.budget.sum() + 1e-9
    if method == "full_participation":
        assert np.all(eq.q[on] == 1.0) and np.all(eq.prices == 0)
        assert on.sum() == GAME.devices.eligible.any(1).sum()
    if method not in ("full_participation", "random_assignment"):
        assert_nash(GAME, eq.prices, eq)


def test_full_participation_by_modality_serves_the_tenant_a_device_holds_most_data_for():
    eq = allocate("full_participation", GAME, np.random.default_rng(0), pick="modality")
    on = eq.choice >= 0
    assert np.array_equal(eq.choice[on], GAME.devices.data[on].argmax(axis=1))
    assert np.all(eq.payment == 0) and np.all(eq.device_utility[on] < 0)


def test_bad_inputs_fail_at_the_edge():
    with pytest.raises(ValueError, match="q_min"):
        build_game(tenants(), devices(), GameParams(q_min=0.0))
    with pytest.raises(ValueError, match="shape"):
        build_game(tenants(), dataclasses.replace(devices(), kappa=np.ones(3)), PARAMS)
    with pytest.raises(ValueError, match="unknown method"):
        allocate("nope", GAME, np.random.default_rng(0))


def test_a_tenant_late_for_its_deadline_moves_even_for_a_small_time_gain():
    """The eps-best response (keep the price unless time falls by min_improvement) never keeps a
    price that misses the deadline when another in-budget grid price meets it."""
    from types import SimpleNamespace

    from workloads.prince.stackelberg import _content, best_price

    grid = np.array([0.5, 1.0, 1.5])
    time = np.array([[110.0], [100.0], [95.0]])            # 1.0 -> 1.5 saves only 5%
    met = SimpleNamespace(time=time, payment=np.array([[10.0], [20.0], [30.0]]))

    def game(deadline):
        return SimpleNamespace(tenants=SimpleNamespace(budget=np.array([100.0]),
                                                       deadline_s=np.array([deadline])),
                               params=SimpleNamespace(min_improvement=0.2))
    assert _content(met, grid, 1.0, 2, 0, game(deadline=500.0))      # small gain: stays
    assert not _content(met, grid, 1.0, 2, 0, game(deadline=97.0))   # late at 1.0: moves
    assert best_price(grid, time[:, 0], met.payment[:, 0], 100.0, 97.0) == 2
    assert best_price(grid, time[:, 0], met.payment[:, 0], 25.0, 97.0) == 1  # budget first
    assert best_price(grid, time[:, 0], met.payment[:, 0], 5.0, 97.0) == 0   # none: cheapest
