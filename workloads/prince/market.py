"""The multi-tenant SFL market: tenants (leaders, one foundation model each) and devices.

Both are frozen dataclasses of numpy arrays, one entry per tenant (M,) or per device (N,), or
(N, M) for what depends on the pair. The per-sample FLOPs and smashed bytes of each tenant come from
the profiled split models; everything else is drawn by the workload. Units: seconds, FLOP/s,
bytes/s and one abstract currency (prices, costs, budgets) [OURS, SEEDS 2.3].
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class Tenants:
    """M tenants m: targets, deadlines, budgets, bound constants and the split model's costs."""

    names: tuple[str, ...]      # tenant index -> name (vit, bert, whisper, llama)
    target: np.ndarray          # (M,) eps_m: target optimality gap of the convergence bound
    deadline_s: np.ndarray      # (M,) T_m: fine-tuning deadline (s)
    budget: np.ndarray          # (M,) B_m: total expected payment allowed over the run
    alpha: np.ndarray           # (M,) alpha_m: weight of the participation variance (Eq. R_m)
    beta: np.ndarray            # (M,) beta_m: the rest of the bound (full-participation part)
    server_flops: np.ndarray    # (M,) s_m: edge-side FLOPs per sample (forward + backward)
    device_flops: np.ndarray    # (M,) device-side FLOPs per sample (forward + backward)
    smashed_bytes: np.ndarray   # (M,) activation bytes per sample at the cut layer
    samples_per_round: np.ndarray  # (M,) samples a participant processes per round (steps x batch)
    edge_flops: np.ndarray      # (M,) F_m: the tenant's edge compute (FLOP/s)
    price_min: np.ndarray       # (M,) lowest price the tenant may post (per round of participation)
    price_max: np.ndarray       # (M,) highest price

    @property
    def size(self) -> int:
        return len(self.names)

    def price_grid(self, points: int) -> np.ndarray:
        """(points, M): each tenant's candidate prices, evenly spaced over its bounds."""
        return np.linspace(self.price_min, self.price_max, points)

    def validate(self) -> None:
        _check_shapes(self, (self.size,), skip=("names",))
        if np.any(self.price_min > self.price_max):
            raise ValueError("price_min must not exceed price_max")
        for name in ("target", "edge_flops", "samples_per_round"):
            if np.any(getattr(self, name) <= 0):
                raise ValueError(f"tenants.{name} must be positive")


@dataclass(frozen=True)
class Devices:
    """N devices n: data per modality, gradient norms, compute, uplink and participation costs.

    A device with data[n, m] == 0 holds no data of tenant m's modality and can never join it.
    """

    data: np.ndarray         # (N, M) |D_{n,m}|: samples of tenant m's modality (0 = cannot join)
    grad_norm: np.ndarray    # (N, M) G_{n,m}: bound on the local gradient norm (heterogeneity)
    flops: np.ndarray        # (N,) f_n: device compute (FLOP/s)
    uplink: np.ndarray       # (N,) b_n: link rate (bytes/s), used for both directions
    kappa: np.ndarray        # (N,) kappa_n: quadratic participation cost 1/2 kappa q^2
    energy_cost: np.ndarray  # (N,) cost per second the device is busy in a round (c_{n,m} below)

    @property
    def size(self) -> int:
        return int(self.data.shape[0])

    @property
    def eligible(self) -> np.ndarray:
        """(N, M) bool: which tenants each device can join."""
        return self.data > 0

    def validate(self, num_tenants: int) -> None:
        n = self.size
        _check_shapes(self, (n, num_tenants), only=("data", "grad_norm"))
        _check_shapes(self, (n,), skip=("data", "grad_norm"))
        if np.any(self.data < 0) or np.any(self.kappa <= 0):
            raise ValueError("devices.data must be >= 0 and devices.kappa > 0")
        if np.any(self.flops <= 0) or np.any(self.uplink <= 0):
            raise ValueError("devices.flops and devices.uplink must be positive")


def _check_shapes(obj, shape: tuple[int, ...], skip: tuple[str, ...] = (),
                  only: tuple[str, ...] = ()) -> None:
    for f in fields(obj):
        if f.name in skip or (only and f.name not in only):
            continue
        got = np.shape(getattr(obj, f.name))
        if got != shape:
            raise ValueError(f"{type(obj).__name__}.{f.name} has shape {got}, expected {shape}")
