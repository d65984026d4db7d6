"""PRINCE's followers: devices in a congestion game over tenants, at prices the tenants post.

Followers [OURS, SEEDS 2.3]. Device n picks a tenant a in M or none and a level q in [q_min, 1]:

    u_n = (P_a - c_{n,a} - psi * tau_a(k_a)) q - 1/2 kappa_n q^2 ,   u_n(none) = 0
    q*  = clip(x / kappa_n, q_min, 1)  with  x = P_a - c_{n,a} - psi * tau_a(k_a)      # closed form

c_{n,a} = energy_cost_n * busy_{n,a} is the per-round cost of device work, tau_a(k) the congested
edge latency (timing.py). u* = f_n(x) is strictly increasing in x (slope q* >= q_min > 0) and 0 at
x0_n = kappa_n q_min / 2, so ranking options by f_n equals ranking them by x with x(none) = x0_n.
The game is then ordinally equivalent to the Rosenthal game x = b_{n,a} - psi tau_a(k_a), and

    Phi = psi * sum_m sum_{k=1..k_m} tau_m(k) - sum_n b_{n,a_n},  b_{n,none} = x0_n   # potential

falls by exactly x_new - x_old > 0 on every strictly improving switch, so better-response dynamics
stop at a pure Nash equilibrium. A device joins only when it strictly gains (u* > 0).

Tenant side here: `tenant_metrics` turns an allocation into every tenant's rounds, round time,
time to target and expected payment, vectorised over a batch of price vectors (a price grid). The
leaders' price game that uses it lives in stackelberg.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from workloads.prince import timing as tm
from workloads.prince.market import Devices, Tenants
from workloads.prince.valuation import participation_matrix, rounds_to_target


@dataclass(frozen=True)
class GameParams:
    psi: float = 1.0               # currency per second of edge latency, per round of participation
    q_min: float = 0.05            # lowest participation level of a device that joins (> 0)
    price_points: int = 20         # grid points per tenant over [price_min, price_max]
    max_leader_iterations: int = 20    # passes of tenant best responses
    max_follower_moves: int = 100_000  # switches before the follower dynamics give up
    tol: float = 1e-9              # smallest utility gain that counts as an improvement
    min_improvement: float = 0.02  # relative time gain a tenant needs to move its price (eps-SE)
    raise_steps: int = 24          # grid steps above price_max a tenant empty at every grid
                                   # price may raise to (within budget); 0: never above price_max
    timing: tm.TimingParams = field(default_factory=tm.TimingParams)


@dataclass(frozen=True)
class Game:
    """Everything the solvers reuse across prices, computed once by `build_game`."""

    tenants: Tenants
    devices: Devices
    params: GameParams
    busy: np.ndarray      # (N, M) device seconds per round
    cost: np.ndarray      # (N, M) c_{n,m}
    tau: np.ndarray       # (N + 2, M) psi * tau_m(k), k = 0..N+1
    cum_tau: np.ndarray   # (N + 2, M) sum_{j=1..k} psi * tau_m(j)
    outside: np.ndarray   # (N,) x0_n: the margin at which joining is worth exactly nothing


def build_game(tenants: Tenants, devices: Devices, params: GameParams = GameParams()) -> Game:
    tenants.validate()
    devices.validate(tenants.size)
    if not 0 < params.q_min <= 1:
        raise ValueError("q_min must be in (0, 1]: the potential argument needs f_n increasing")
    if params.raise_steps < 0:
        raise ValueError("raise_steps must be >= 0")
    busy = tm.device_busy(tenants, devices, params.timing)
    tau = params.psi * tm.congestion_table(tenants, params.timing, devices.size)
    return Game(tenants, devices, params, busy, devices.energy_cost[:, None] * busy, tau,
                np.cumsum(tau, axis=0), 0.5 * devices.kappa * params.q_min)


@dataclass(frozen=True)
class Followers:
    """The devices' equilibrium; arrays gain a leading batch axis when prices were (B, M)."""

    choice: np.ndarray     # (N,) tenant index, -1 = none
    q: np.ndarray          # (N,) participation level (0 for none)
    potential: np.ndarray  # (moves + 1,) Phi after every move (batched: (steps + 1, B))
    moves: np.ndarray      # switches made (int; batched (B,))
    converged: np.ndarray  # no device can gain by switching (bool; batched (B,))

    def pick(self, b: int) -> "Followers":
        steps = int(self.moves[b]) + 1
        return Followers(self.choice[b], self.q[b], self.potential[:steps, b],
                         self.moves[b], self.converged[b])

    @staticmethod
    def stack(solved: list["Followers"]) -> "Followers":
        """Single solves as one batch (traces padded with their last value, as in a batch)."""
        steps = max(f.potential.size for f in solved)
        trace = np.stack([np.pad(f.potential, (0, steps - f.potential.size), mode="edge")
                          for f in solved], axis=1)
        return Followers(np.stack([f.choice for f in solved]), np.stack([f.q for f in solved]),
                         trace, np.array([f.moves for f in solved]),
                         np.array([f.converged for f in solved]))


def best_participation(x: np.ndarray, kappa: np.ndarray, q_min: float) -> np.ndarray:
    """q* = clip(x / kappa, q_min, 1): the closed-form best level for margin x."""
    return np.clip(x / kappa, q_min, 1.0)


def margins(game: Game, prices: np.ndarray, choice: np.ndarray,
            allowed: Optional[np.ndarray] = None) -> np.ndarray:
    """(..., N, M) margin x_{n,m} if n alone moves to tenant m (-inf: not allowed)."""
    m = np.arange(game.tenants.size)
    k = counts(choice, game.tenants.size)
    k_after = k[..., None, :] + (choice[..., None] != m)
    x = prices[..., None, :] - game.cost - game.tau[k_after, m]
    ok = game.devices.eligible if allowed is None else allowed & game.devices.eligible
    return np.where(ok, x, -np.inf)


def counts(choice: np.ndarray, num_tenants: int) -> np.ndarray:
    """(..., M) k_m: devices enrolled with each tenant."""
    return np.sum(choice[..., None] == np.arange(num_tenants), axis=-2)


def potential(game: Game, prices: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """(...,) Phi of the choice profile (the Rosenthal potential of the ordinal game)."""
    m = np.arange(game.tenants.size)
    congestion = game.cum_tau[counts(choice, game.tenants.size), m].sum(axis=-1)
    b = prices[..., None, :] - game.cost
    own = np.where(choice >= 0, np.take_along_axis(b, np.maximum(choice, 0)[..., None], -1)[..., 0],
                   game.outside)
    return congestion - own.sum(axis=-1)


def levels(game: Game, prices: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """(..., N) q* of every device at its current choice (0 for none)."""
    x = margins(game, prices, choice)
    x_own = np.take_along_axis(x, np.maximum(choice, 0)[..., None], -1)[..., 0]
    q = best_participation(np.where(np.isfinite(x_own), x_own, 0.0), game.devices.kappa,
                           game.params.q_min)
    return np.where(choice >= 0, q, 0.0)


def follower_equilibrium(game: Game, prices: np.ndarray, rng: np.random.Generator,
                         init: Optional[np.ndarray] = None,
                         allowed: Optional[np.ndarray] = None) -> Followers:
    """Better-response dynamics: a random improving device switches to its best option, until none.

    prices (M,) solves one game; (B, M) solves B games side by side (one move per game per step).
    init: starting choices (N,) or (B, N) (default: everyone out); allowed: (N, M) restriction.
    """
    P = np.atleast_2d(np.asarray(prices, dtype=float))
    B, N, M = P.shape[0], game.devices.size, game.tenants.size
    choice = np.full((B, N), -1) if init is None else np.broadcast_to(init, (B, N)).copy()
    ok = game.devices.eligible if allowed is None else allowed & game.devices.eligible
    choice[(choice >= 0) & ~ok[np.arange(N), np.maximum(choice, 0)]] = -1
    phi = potential(game, P, choice)
    # Options 0..M-1 are tenants, M is none (margin x0_n, no congestion). Devices compare margins
    # x: f_n is strictly increasing, so a larger x is exactly a better utility; switching to
    # another option a meets congestion tau_a(k_a + 1), staying meets tau_a(k_a).
    base = np.where(ok.T, P[:, :, None] - game.cost.T, -np.inf)                   # (B, M, N)
    base = np.concatenate([base, np.broadcast_to(game.outside, (B, 1, N))], axis=1)
    tau = np.concatenate([game.tau, np.zeros((N + 2, 1))], axis=1)               # (N + 2, M + 1)
    own = np.where(choice >= 0, choice, M)                                        # (B, N)
    b_own = np.take_along_axis(base, own[:, None], axis=1)[:, 0]                  # (B, N)
    k = np.stack([np.sum(own == m, axis=1) for m in range(M + 1)], axis=1)       # (B, M + 1)
    options, width = np.arange(M + 1), (M + 1) * np.arange(B)[:, None]
    trace, moves, total = [phi.copy()], np.zeros(B, dtype=int), 0
    active, budget = np.arange(B), game.params.max_follower_moves
    while active.size and total < budget:
        ka, o = k[active], own[active]
        x_alt = base[active] - tau[ka + 1, options][:, :, None]                   # (A, M + 1, N)
        x_now = b_own[active] - tau[ka, options].ravel()[o + width[:active.size]]  # (A, N)
        gain = x_alt.max(axis=1) - x_now
        g, n = _random_improver(gain > game.params.tol, rng)
        if g.size == 0:
            break
        best, a = np.argmax(x_alt[g, :, n], axis=1), active[g]
        phi[a] -= gain[g, n]                     # Phi falls by exactly x_new - x_old
        k[a, o[g, n]] -= 1
        k[a, best] += 1
        own[a, n], b_own[a, n] = best, base[a, best, n]
        moves[a] += 1
        total += a.size
        active = a
        trace.append(phi.copy())
    choice = np.where(own == M, -1, own)
    converged = np.ones(B, dtype=bool)
    if total >= budget:         # ran out of moves: the games still active may not be done
        converged[active] = False
    out = Followers(choice, levels(game, P, choice), np.array(trace), moves, converged)
    return out if np.ndim(prices) == 2 else out.pick(0)


def equilibrium_path(game: Game, prices: np.ndarray, rng: np.random.Generator, start: int = 0,
                     init: Optional[np.ndarray] = None,
                     allowed: Optional[np.ndarray] = None) -> Followers:
    """Followers' equilibria along a sorted path of price vectors (G, M), as a batch of G.

    Continuation: point `start` is solved from `init`, every other point from its neighbour's
    equilibrium nearer to `start` (the two directions side by side). Neighbours differ by few
    switches, so a grid costs about one cold solve instead of G (equilibria are path-dependent:
    this picks the one reached by moving the price step by step).
    """
    G = len(prices)
    solved = [None] * G
    solved[start] = follower_equilibrium(game, prices[start], rng, init, allowed)
    for j in range(1, max(start, G - 1 - start) + 1):
        idx = [i for i in (start + j, start - j) if 0 <= i < G]
        near = np.stack([solved[i - 1 if i > start else i + 1].choice for i in idx])
        batch = follower_equilibrium(game, prices[idx], rng, near, allowed)
        for b, i in enumerate(idx):
            solved[i] = batch.pick(b)
    return Followers.stack(solved)


def _random_improver(improving: np.ndarray, rng: np.random.Generator):
    """(games, devices): one uniformly drawn improving device in every game that has one."""
    count = improving.sum(axis=1)
    games = np.flatnonzero(count)
    rank = (rng.random(games.size) * count[games]).astype(int)      # the rank-th improver moves
    return games, np.argmax(np.cumsum(improving[games], axis=1) > rank[:, None], axis=1)


@dataclass(frozen=True)
class TenantMetrics:
    rounds: np.ndarray      # (..., M) R_m(q)
    round_time: np.ndarray  # (..., M) seconds per round
    time: np.ndarray        # (..., M) time to target (s)
    payment: np.ndarray     # (..., M) expected total payment sum_n P_m q_n R_m
    enrolled: np.ndarray    # (..., M) k_m


def tenant_metrics(game: Game, prices: np.ndarray, choice: np.ndarray,
                   q: np.ndarray) -> TenantMetrics:
    """Every tenant's rounds, round time, time to target and payment (vectorised over a batch)."""
    q_nm = participation_matrix(choice, q, game.tenants.size)
    rounds = rounds_to_target(q_nm, game.devices, game.tenants)
    per_round = tm.round_time(game.busy, q_nm, game.tenants, game.params.timing)
    with np.errstate(invalid="ignore"):
        pay = np.where(np.isfinite(rounds), prices * q_nm.sum(axis=-2) * rounds, 0.0)
    return TenantMetrics(rounds, per_round, tm.time_to_target(rounds, per_round), pay,
                         counts(choice, game.tenants.size))
