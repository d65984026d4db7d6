"""PRINCE's leaders: tenants set prices on top of the devices' congestion game (SEEDS 2.2-2.3).

Multi-leader Stackelberg by backward induction: for a price vector the followers settle in their
equilibrium (game.follower_equilibrium); tenant m then picks, on its price grid and with the others'
prices fixed, the price minimising its time to target R_m * round_m subject to its expected payment
sum_n P_m q_n R_m <= B_m (no price within budget: the cheapest). The followers' reply to every grid
price is found by continuation from the current allocation (game.equilibrium_path), and the tenant
objective is evaluated on the whole grid at once. Tenants respond in turn until a pass
changes no price: the SE on the grid. A tenant moves only when that cuts its time by
`min_improvement` (an eps-best response; exact ones cycle between neighbouring grid prices).

`Equilibrium` is also the outcome type of the baselines (baselines.py), which fill the same fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from workloads.prince import timing as tm
from workloads.prince.game import (Followers, Game, TenantMetrics, equilibrium_path,
                                   follower_equilibrium, tenant_metrics)


@dataclass(frozen=True)
class Equilibrium:
    """A market outcome: prices, the followers' allocation and every tenant's metrics.

    PRINCE's is the Stackelberg equilibrium on the price grid; the baselines fill the same fields.
    """

    method: str
    prices: np.ndarray           # (M,) P_m
    choice: np.ndarray           # (N,) tenant of each device, -1 = none
    q: np.ndarray                # (N,) participation level (0 for none)
    enrolled: np.ndarray         # (M,) k_m
    rounds_to_target: np.ndarray  # (M,) R_m(q)
    round_time: np.ndarray       # (M,) seconds per round
    time_to_target: np.ndarray   # (M,) seconds (inf when nobody joined)
    payment: np.ndarray          # (M,) expected total payment
    deadline_met: np.ndarray     # (M,) bool: time_to_target <= T_m
    budget_ok: np.ndarray        # (M,) bool: payment <= B_m
    device_utility: np.ndarray   # (N,) u_n at the outcome (0 for none)
    iterations: int              # leader passes (0 for fixed prices)
    converged: bool              # leaders reached a fixed point and followers an equilibrium
    potential: np.ndarray        # Phi after every move of the followers' last solve at `prices`
    price_trace: np.ndarray      # (iterations + 1, M) prices after each leader pass


def outcome(game: Game, method: str, prices: np.ndarray, followers: Followers,
            iterations: int = 0, converged: bool = True,
            price_trace: Optional[np.ndarray] = None) -> Equilibrium:
    """Assemble the Equilibrium of an allocation at `prices` (q = followers.q, taken as given)."""
    prices = np.asarray(prices, dtype=float)
    met = tenant_metrics(game, prices, followers.choice, followers.q)
    m = np.maximum(followers.choice, 0)     # realised u_n, also when a baseline fixes q (not q*)
    margin = prices[m] - game.cost[np.arange(game.devices.size), m] - game.tau[met.enrolled[m], m]
    utility = np.where(followers.choice >= 0,
                       margin * followers.q - 0.5 * game.devices.kappa * followers.q ** 2, 0.0)
    trace = prices[None] if price_trace is None else price_trace
    return Equilibrium(method, prices, followers.choice, followers.q, met.enrolled, met.rounds,
                       met.round_time, met.time, met.payment,
                       tm.deadline_met(met.time, game.tenants),
                       met.payment <= game.tenants.budget * (1 + 1e-9), utility, iterations,
                       bool(converged and np.all(followers.converged)), followers.potential,
                       trace)


def best_price(grid: np.ndarray, time: np.ndarray, payment: np.ndarray, budget: float,
               deadline: float = np.inf) -> int:
    """Index of the grid price a tenant picks: the shortest time among prices within budget that
    meet its deadline; when none meets it, the shortest time within budget (ties: lower payment,
    then price); the cheapest price when none is within budget."""
    ok = payment <= budget * (1 + 1e-9)
    if not ok.any():
        return int(np.argmin(payment))
    meets = ok & (time <= deadline)
    return int(np.lexsort((grid, payment, np.where(ok, time, np.inf), ~ok, ~meets))[0])


def _content(met: TenantMetrics, grid: np.ndarray, price: float, g: int, m: int,
             game: Game) -> bool:
    """Tenant m keeps its (in-budget) price unless grid point g meets the deadline it misses or
    cuts its time by min_improvement: an eps-best response, which stops one-step price cycles
    between near-equal prices without ever trading the deadline away."""
    here = np.flatnonzero(grid == price)
    if not here.size or met.payment[here[0], m] > game.tenants.budget[m] * (1 + 1e-9):
        return False
    deadline = game.tenants.deadline_s[m]
    if met.time[g, m] <= deadline < met.time[here[0], m]:
        return False
    return not met.time[g, m] < met.time[here[0], m] * (1 - game.params.min_improvement)


def stackelberg_prices(game: Game, rng: np.random.Generator,
                       init_prices: Optional[np.ndarray] = None) -> Equilibrium:
    """PRINCE: tenants eps-best-respond in price in turn over their grids until a pass changes no
    price. A pure SE need not exist on a grid: when prices and allocation after a pass repeat an
    earlier pass (a cycle) or the passes run out, return the pass of the cycle (or of all passes)
    that meets most budgets, then leaves fewest tenants empty, then has the least total time,
    flagged converged=False."""
    grid = game.tenants.price_grid(game.params.price_points)           # (G, M)
    prices = grid[0].copy() if init_prices is None else np.asarray(init_prices, float).copy()
    passes = [(prices.copy(), follower_equilibrium(game, prices, rng))]
    state, converged, it = passes[0][1], False, 0
    for it in range(1, game.params.max_leader_iterations + 1):
        changed = False
        for m in range(game.tenants.size):
            batch = np.repeat(prices[None], grid.shape[0], axis=0)
            batch[:, m] = grid[:, m]
            start = int(np.argmin(np.abs(grid[:, m] - prices[m])))
            fol = equilibrium_path(game, batch, rng, start, init=state.choice)
            met = tenant_metrics(game, batch, fol.choice, fol.q)
            g = best_price(grid[:, m], met.time[:, m], met.payment[:, m],
                           game.tenants.budget[m], game.tenants.deadline_s[m])
            if not np.isfinite(met.time[:, m]).any():   # empty at every grid price: raise it
                new, follow = _raise_when_empty(game, rng, batch[-1], fol.pick(-1), m)
                if new != prices[m]:
                    changed, prices[m], state = True, new, follow
            elif grid[g, m] != prices[m] and not _content(met, grid[:, m], prices[m], g, m, game):
                changed, prices[m], state = True, grid[g, m], fol.pick(g)
        seen = [i for i, (p, f) in enumerate(passes)
                if np.array_equal(p, prices) and np.array_equal(f.choice, state.choice)]
        passes.append((prices.copy(), state))
        if not changed or seen:
            converged = not changed
            break
    trace = np.array([p for p, _ in passes])
    if not converged:
        prices, state = _least_total_time(game, passes[seen[0] + 1 if seen else 1:])
    return outcome(game, "prince", prices, state, it, converged, trace)


def _raise_when_empty(game: Game, rng: np.random.Generator, top: np.ndarray, at_top: Followers,
                      m: int) -> tuple[float, Followers]:
    """Tenant m attracts nobody at any grid price (competitors outbid its congestion, e.g. a
    tenant whose edge latency per device is large). With budget left it raises its price above
    price_max by grid steps (up to `raise_steps` of them) and takes the best response among those
    that fill it within budget; when none does (or raising is off) it posts price_max, its most
    attractive grid price, instead of idling at a price that cannot matter."""
    steps = game.params.raise_steps
    spacing = (game.tenants.price_max[m] - game.tenants.price_min[m]) / max(
        game.params.price_points - 1, 1)
    if steps == 0 or spacing <= 0:
        return float(top[m]), at_top
    ext = top[m] + spacing * np.arange(1, steps + 1)
    batch = np.repeat(top[None], steps, axis=0)
    batch[:, m] = ext
    fol = equilibrium_path(game, batch, rng, 0, init=at_top.choice)
    met = tenant_metrics(game, batch, fol.choice, fol.q)
    within = met.payment[:, m] <= game.tenants.budget[m] * (1 + 1e-9)
    if not np.any(np.isfinite(met.time[:, m]) & within):
        return float(top[m]), at_top
    g = best_price(ext, met.time[:, m], met.payment[:, m], game.tenants.budget[m],
                   game.tenants.deadline_s[m])
    return float(ext[g]), fol.pick(g)


def _least_total_time(game: Game, passes: list) -> tuple[np.ndarray, Followers]:
    """The (prices, followers) among `passes` within most budgets, then meeting most deadlines,
    then serving most tenants (a tenant nobody joined never reaches its target), then with least
    total time of those served."""
    def key(entry):
        met = tenant_metrics(game, entry[0], entry[1].choice, entry[1].q)
        over = np.sum(met.payment > game.tenants.budget * (1 + 1e-9))
        late = int(np.sum(~tm.deadline_met(met.time, game.tenants)))
        served = np.isfinite(met.time)
        return over, late, int(np.sum(~served)), float(np.sum(met.time[served]))
    return min(passes, key=key)
