"""The simulated device population and how the data is split across it (pure numpy)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.federated.config import FederationConfig


@dataclass(frozen=True)
class Population:
    """Per-device profiles, one array entry per device."""

    speed_gflops: np.ndarray
    memory_mb: np.ndarray
    uplink_mbps: np.ndarray
    downlink_mbps: np.ndarray
    availability: np.ndarray

    @property
    def size(self) -> int:
        return len(self.speed_gflops)

    def available(self, rng: np.random.Generator) -> np.ndarray:
        """Ids of the devices that are online this round (independent Bernoulli draws)."""
        return np.flatnonzero(rng.random(self.size) < self.availability)


def sample_population(cfg: FederationConfig, rng: np.random.Generator) -> Population:
    """Draw every device's profile from the configured ranges."""
    n = cfg.num_devices
    log_uniform = lambda lo, hi: np.exp(rng.uniform(np.log(lo), np.log(hi), n))  # noqa: E731
    return Population(
        speed_gflops=log_uniform(cfg.speed_gflops_low, cfg.speed_gflops_high),
        memory_mb=log_uniform(cfg.memory_mb_low, cfg.memory_mb_high),
        uplink_mbps=log_uniform(cfg.uplink_mbps_low, cfg.uplink_mbps_high),
        downlink_mbps=log_uniform(cfg.downlink_mbps_low, cfg.downlink_mbps_high),
        availability=rng.uniform(cfg.availability_low, cfg.availability_high, n))


def device_sizes(total: int, num_devices: int, skew: float, rng: np.random.Generator) -> np.ndarray:
    """How many samples each device holds: log-normal shares (sigma = skew), at least 1 each."""
    if total < num_devices:
        raise ValueError(f"{total} samples cannot give each of {num_devices} devices one")
    weights = rng.lognormal(0.0, skew, num_devices) if skew > 0 else np.ones(num_devices)
    sizes = np.floor(weights / weights.sum() * (total - num_devices)).astype(int) + 1
    sizes[np.argsort(-weights)[: total - sizes.sum()]] += 1  # hand out the rounding remainder
    return sizes


def partition(labels: np.ndarray, num_devices: int, size_skew: float, label_alpha: float,
              rng: np.random.Generator) -> list[np.ndarray]:
    """Sample indices per device, every sample used exactly once.

    Sizes follow `device_sizes` (log-normal skew). With label/domain skew (alpha > 0) each class's
    samples are split over the devices with shares q_c ~ Dir(alpha * N * s), where s is the size
    plan's share vector (Hsu et al. 2019, with size-proportional concentration): E[q_c] = s, so
    every device's expected label mix is the global one (unbiased) and its expected size is its
    planned size, while a small alpha concentrates each device on few labels.
    """
    labels = np.asarray(labels)
    sizes = device_sizes(len(labels), num_devices, size_skew, rng)
    order = rng.permutation(len(labels))
    if label_alpha <= 0:
        return np.split(order, np.cumsum(sizes)[:-1])
    share = sizes / sizes.sum()
    buckets: list[list[int]] = [[] for _ in range(num_devices)]
    for c in np.unique(labels):
        pool = order[labels[order] == c]
        q = rng.dirichlet(np.maximum(label_alpha * num_devices * share, 1e-6))
        for n, part in enumerate(np.split(pool, np.cumsum(rng.multinomial(len(pool), q))[:-1])):
            buckets[n] += part.tolist()
    for n in range(num_devices):  # no device may end up empty
        if not buckets[n]:
            buckets[n].append(max(buckets, key=len).pop())
    return [np.asarray(b, dtype=int) for b in buckets]
