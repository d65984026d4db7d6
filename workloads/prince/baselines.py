"""Pricing and assignment of PRINCE and its baselines (SEEDS 2.3 [OURS]; the paper's are unknown).

Each policy returns an `Equilibrium` over the same market, so the workload can compare time to
target, deadlines and budgets across methods:

  prince               the Stackelberg equilibrium on the price grid (stackelberg.py)
  uniform_price        one price for every tenant: the grid price with the smallest total time to
                       target whose total payment fits the total budget
  independent_pricing  each tenant prices as if it were alone (Luo et al. ICDCS'23 style: its own
                       devices, no competitor), then devices respond to all those prices together
  random_assignment    each device is bound to one random eligible tenant; under PRINCE's prices
                       it still chooses its level q* (or stays out)
  full_participation   no incentives: prices 0, q = 1, each device serves a random eligible tenant
                       ("random") or the one it holds most data for ("modality")
  biased_aggregation   PRINCE's allocation; the bias is a training-side switch (plain FedAvg)
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from workloads.prince.game import (Followers, Game, equilibrium_path, follower_equilibrium,
                                   tenant_metrics)
from workloads.prince.stackelberg import Equilibrium, best_price, outcome, stackelberg_prices

METHODS = ("prince", "uniform_price", "independent_pricing", "random_assignment",
           "full_participation", "biased_aggregation")


def uniform_price(game: Game, rng: np.random.Generator) -> Equilibrium:
    """The best single price for all tenants, searched over the intersection of their bounds."""
    low, high = game.tenants.price_min.max(), game.tenants.price_max.min()
    if low > high:
        raise ValueError("tenants' price bounds do not overlap: no uniform price exists")
    grid = np.linspace(low, high, game.params.price_points)
    prices = np.repeat(grid[:, None], game.tenants.size, axis=1)
    fol = equilibrium_path(game, prices, rng)
    met = tenant_metrics(game, prices, fol.choice, fol.q)
    total = np.minimum(met.time, 1e7).sum(axis=1)  # capped: one empty tenant must not tie all
    g = best_price(grid, total, met.payment.sum(axis=1),
                   float(game.tenants.budget.sum()))
    return outcome(game, "uniform_price", prices[g], fol.pick(g))


def independent_pricing(game: Game, rng: np.random.Generator) -> Equilibrium:
    """Each tenant best-responds on its grid facing only its own eligible devices, then all the
    devices respond to the posted prices together (competition the tenants did not plan for)."""
    M = game.tenants.size
    grid = game.tenants.price_grid(game.params.price_points)
    prices = np.empty(M)
    for m in range(M):
        alone = np.zeros((game.devices.size, M), dtype=bool)
        alone[:, m] = True
        batch = np.zeros_like(grid)
        batch[:, m] = grid[:, m]
        fol = equilibrium_path(game, batch, rng, allowed=alone)
        met = tenant_metrics(game, batch, fol.choice, fol.q)
        prices[m] = grid[best_price(grid[:, m], met.time[:, m], met.payment[:, m],
                                    game.tenants.budget[m], game.tenants.deadline_s[m]), m]
    return outcome(game, "independent_pricing", prices,
                   follower_equilibrium(game, prices, rng))


def random_assignment(game: Game, rng: np.random.Generator,
                      prices: Optional[np.ndarray] = None) -> Equilibrium:
    """Devices bound to a uniformly drawn eligible tenant; at PRINCE's prices (solved here when not
    passed) each still picks q* or stays out: an equilibrium of that restricted game."""
    if prices is None:
        prices = stackelberg_prices(game, rng).prices
    assigned = _random_eligible(game, rng)
    allowed = assigned[:, None] == np.arange(game.tenants.size)
    return outcome(game, "random_assignment", prices,
                   follower_equilibrium(game, prices, rng, allowed=allowed))


def full_participation(game: Game, rng: np.random.Generator, pick: str = "random") -> Equilibrium:
    """Every device with data serves one tenant with q = 1 and is paid nothing (a reference point
    with no incentive compatibility: device utilities come out negative)."""
    if pick == "random":
        choice = _random_eligible(game, rng)
    elif pick == "modality":
        choice = np.where(game.devices.eligible.any(axis=1), game.devices.data.argmax(axis=1), -1)
    else:
        raise ValueError(f"unknown pick {pick!r}: 'random' or 'modality'")
    q = (choice >= 0).astype(float)
    followers = Followers(choice, q, np.empty(0), np.int64(0), np.bool_(True))
    return outcome(game, "full_participation", np.zeros(game.tenants.size), followers)


def allocate(method: str, game: Game, rng: np.random.Generator,
             prince: Optional[Equilibrium] = None, pick: str = "random") -> Equilibrium:
    """The allocation of `method`; `prince` (PRINCE's equilibrium) is reused where it is needed,
    `pick` is full_participation's tenant choice."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    if method in ("prince", "biased_aggregation", "random_assignment") and prince is None:
        prince = stackelberg_prices(game, rng)
    if method == "prince":
        return prince
    if method == "biased_aggregation":
        return dataclasses.replace(prince, method="biased_aggregation")
    if method == "random_assignment":
        return random_assignment(game, rng, prince.prices)
    if method == "full_participation":
        return full_participation(game, rng, pick)
    return {"uniform_price": uniform_price, "independent_pricing": independent_pricing}[method](
        game, rng)


def _random_eligible(game: Game, rng: np.random.Generator) -> np.ndarray:
    """(N,) one uniformly drawn eligible tenant per device (-1 for a device with no data)."""
    eligible = game.devices.eligible
    keys = np.where(eligible, rng.random(eligible.shape), -1.0)
    return np.where(eligible.any(axis=1), keys.argmax(axis=1), -1)
