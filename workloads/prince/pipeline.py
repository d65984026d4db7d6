"""PRINCE's run as plain functions: draw the market, measure it, price it, train every tenant.

  profile   build each tenant's split model once; FLOPs per sample on each side and the smashed
            bytes at the cut (profile_split) feed the time model
  market    devices from the engine's population (compute, links), which modalities each holds,
            each tenant's training data partitioned over its owners (size + label skew), costs
  probe     G_n per (device, tenant) measured on the pool at the initial model (one batch each)
  price     the method's allocation (Stackelberg for PRINCE, baselines.allocate for the rest)
  train     per tenant, SplitFed-V1 rounds: each enrolled device joins with probability q_n, the
            device side runs on the pool, the server side in the tenant's `EdgeServer`, both
            aggregated as w + sum 1_n p_n/q_n delta_n (or plain FedAvg for biased_aggregation);
            simulated round time from the time model; stop at the target
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from workloads.prince import programs
from workloads.prince.config import PrinceConfig
from workloads.prince.market import Devices, Tenants

log = logging.getLogger(__name__)


@dataclass
class Market:
    """Everything the game and the training share."""

    names: list[str]
    tenants: Tenants
    devices: Devices                 # grad_norm filled in by `probe_grad_norms` in a run
    population: Any
    specs: dict                      # tenant -> programs.TenantSpec
    profiles: dict                   # tenant -> split.SplitProfile


# --------------------------------------------------------------------------- market
@functools.lru_cache(maxsize=16)
def profile(name: str, size: str, cut: int, pretrained: Any, seed: int, lora_rank: int = 0,
            lora_alpha: Any = None):
    from workloads.prince.split import profile_split

    return profile_split(programs.build_split(name, size, cut, pretrained, seed, lora_rank,
                                              lora_alpha))


def ownership(num_devices: int, num_tenants: int, share: float,
              rng: np.random.Generator) -> np.ndarray:
    """(N, M) bool: which modalities each device holds data of (each holds at least one)."""
    owns = rng.random((num_devices, num_tenants)) < share
    lonely = ~owns.any(axis=1)
    owns[lonely, rng.integers(num_tenants, size=int(lonely.sum()))] = True
    return owns


def build_market(c: PrinceConfig, seed: int, rng: Callable[..., np.random.Generator],
                 train_sizes: dict[str, int] | None = None,
                 labels: dict[str, np.ndarray] | None = None) -> Market:
    """The market of a run (`labels`: each tenant's training labels, partitioned over owners) or
    of a sweep trial (`train_sizes` only: no data is loaded, shards are index ranges)."""
    from orchestrator.federated.population import device_sizes, partition, sample_population

    fed, mk = c.federation, c.market
    names, cfgs = zip(*c.tenants.enabled())
    population = sample_population(fed, rng(0))
    owns = ownership(fed.num_devices, len(names), mk.modality_share, rng(1))
    data, specs, profiles = np.zeros((fed.num_devices, len(names))), {}, {}
    for m, (name, t) in enumerate(zip(names, cfgs)):
        owners = np.flatnonzero(owns[:, m])
        if labels is not None:
            parts = partition(labels[name], len(owners), fed.size_skew, fed.label_alpha, rng(2, m))
        else:
            sizes = device_sizes(train_sizes[name], len(owners), fed.size_skew, rng(2, m))
            parts = np.split(np.arange(sizes.sum()), np.cumsum(sizes)[:-1])
        shards = [np.zeros(0, dtype=int)] * fed.num_devices
        for n, part in zip(owners, parts):
            shards[n], data[n, m] = part, len(part)
        specs[name] = programs.TenantSpec(name, t.size, t.cut_layer, t.pretrained, seed,
                                          t.train_limit, tuple(shards), t.batch_size,
                                          t.local_steps, t.lr, t.optimizer, t.lora_rank,
                                          t.lora_alpha)
        profiles[name] = profile(name, t.size, t.cut_layer, t.pretrained, seed, t.lora_rank,
                                 t.lora_alpha)
    col = lambda f: np.array([f(t) for t in cfgs], dtype=float)  # noqa: E731
    alpha, beta, eps = (np.array(v, dtype=float) for v in zip(*bound_constants(c).values()))
    tenants = Tenants(
        names=tuple(names), target=eps, deadline_s=col(lambda t: t.deadline_s),
        budget=col(lambda t: t.budget), alpha=alpha, beta=beta,
        server_flops=np.array([profiles[n].server_flops for n in names]),
        device_flops=np.array([profiles[n].device_flops for n in names]),
        smashed_bytes=np.array([profiles[n].smashed_bytes for n in names], dtype=float),
        samples_per_round=col(lambda t: t.batch_size * t.local_steps),
        edge_flops=col(lambda t: t.edge_gflops * 1e9), price_min=col(lambda t: t.price_min),
        price_max=col(lambda t: t.price_max))
    r = rng(3)
    uniform = lambda lo, hi, size: r.uniform(lo, hi, size)  # noqa: E731
    devices = Devices(
        data=data, grad_norm=uniform(mk.grad_norm_low, mk.grad_norm_high, data.shape) * (data > 0),
        flops=population.speed_gflops * 1e9, uplink=population.uplink_mbps * 1e6 / 8,
        kappa=uniform(mk.kappa_low, mk.kappa_high, fed.num_devices),
        energy_cost=uniform(mk.energy_cost_low, mk.energy_cost_high, fed.num_devices))
    return Market(list(names), tenants, devices, population, specs, profiles)


def bound_constants(c: PrinceConfig) -> dict[str, tuple[float, float, float]]:
    """(alpha_m, beta_m, eps_m) per enabled tenant: fitted by a calibration run when
    `calibration.file` is set (validated to match), else the tenant's knobs, eps from its target
    unless `bound_eps` overrides it."""
    from workloads.prince import calibration

    if c.calibration.file:
        stored = calibration.load(c.calibration.file)
        return {n: calibration.constants_for(stored, n) for n, _ in c.tenants.enabled()}
    return {n: (t.alpha, t.beta, t.bound_eps or calibration.target_gap(t.target_metric, t.target))
            for n, t in c.tenants.enabled()}


def game_params(c: PrinceConfig):
    from workloads.prince.game import GameParams
    from workloads.prince.timing import TimingParams

    mk = c.market
    return GameParams(psi=mk.psi, q_min=mk.q_min, price_points=mk.price_points,
                      max_leader_iterations=mk.max_leader_iterations,
                      min_improvement=mk.min_improvement, raise_steps=mk.raise_steps,
                      timing=TimingParams(congestion=mk.congestion, edge_capacity=mk.edge_capacity,
                                          straggler=mk.straggler))


def allocations(c: PrinceConfig, market: Market, seed: int) -> dict:
    """Every method's market outcome (prices, who serves whom, q) on one game."""
    from orchestrator.workload import derive_rng
    from workloads.prince.baselines import allocate
    from workloads.prince.game import build_game

    game = build_game(market.tenants, market.devices, game_params(c))
    prince = allocate("prince", game, derive_rng(seed, 10))
    return {m: prince if m == "prince" else allocate(m, game, derive_rng(seed, 11, i), prince)
            for i, m in enumerate(c.training.methods)}, game


# --------------------------------------------------------------------------- on Ray
def initial_states(market: Market) -> dict[str, tuple[dict, dict]]:
    """Copies of each tenant's (device, server) trainable weights in the driver's cached split.
    Evaluation loads trained weights into that split, so take them before any training."""
    from workloads.prince.split import trainable_state

    return {n: (trainable_state(programs.split_of(s).device),
                trainable_state(programs.split_of(s).server)) for n, s in market.specs.items()}


def probe_grad_norms(c: PrinceConfig, market: Market, session) -> Market:
    """G_{n,m} measured: each owner's gradient norm at the initial model (one pass of the engine
    per tenant), divided by the mean over the tenant's owners. Returns the market with
    `devices.grad_norm` replaced."""
    from workloads.prince.training import Probe

    grad = np.zeros_like(market.devices.data)
    for m, (name, (dev, srv)) in enumerate(initial_states(market).items()):
        owners = np.flatnonzero(market.devices.data[:, m] > 0).tolist()
        updates, _ = session.map(owners, {"device": dev, "server": srv},
                                 Probe(name, c.training.probe_batch))
        for u in updates or []:
            grad[u.device, m] = u.metrics["grad_norm"]
        if owners:  # relative heterogeneity: alpha_m carries the scale of the tenant's gradients
            grad[owners, m] /= grad[owners, m].mean()
    return dataclasses.replace(market, devices=dataclasses.replace(market.devices, grad_norm=grad))
