"""Device valuation from the SFL convergence bound under independent participation (SEEDS 2.2).

With Bernoulli(q_n) participation and the unbiased p_n/q_n aggregation, the bound (Luo et al.,
INFOCOM'22 / ICDCS'23) gives the rounds tenant m needs to reach its target gap eps_m:

    R_m(q) = (alpha_m * sum_{n in N_m} p_n^2 G_n^2 / q_n + beta_m) / eps_m        # Eq. R_m

where N_m are the devices enrolled with m and p_n = |D_n| / sum_{N_m} |D| their data share within
the tenant. R is kept continuous (no ceiling) so the price search sees smooth changes; it is inf
for a tenant nobody joined. A device is worth how much R falls with it: the slope -dR/dq_n
(`marginal_value`) and the drop when it joins at all (`participation_value`).

All functions take q_nm: (..., N, M), the participation level of device n with tenant m and 0
where it is not enrolled, so they vectorise over a leading batch (e.g. a price grid).
"""
from __future__ import annotations

import numpy as np

from workloads.prince.market import Devices, Tenants


def participation_matrix(choice: np.ndarray, q: np.ndarray, num_tenants: int) -> np.ndarray:
    """(..., N, M) q_nm from choices (..., N) in {-1 (none), 0..M-1} and levels (..., N)."""
    onehot = choice[..., None] == np.arange(num_tenants)
    return np.where(onehot, q[..., None], 0.0)


def _weighted_terms(q_nm: np.ndarray, devices: Devices) -> tuple[np.ndarray, np.ndarray]:
    """(|D_n|^2 G_n^2 / q_n per enrolled pair, total enrolled data per tenant)."""
    enrolled = q_nm > 0
    data = np.where(enrolled, devices.data, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(enrolled, data ** 2 * devices.grad_norm ** 2 / q_nm, 0.0)
    return terms, data.sum(axis=-2)


def _rounds(variance: np.ndarray, tenants: Tenants) -> np.ndarray:
    return (tenants.alpha * variance + tenants.beta) / tenants.target


def rounds_to_target(q_nm: np.ndarray, devices: Devices, tenants: Tenants) -> np.ndarray:
    """(..., M) R_m(q), Eq. R_m; inf for a tenant without enrolled data."""
    terms, total = _weighted_terms(q_nm, devices)
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = terms.sum(axis=-2) / total ** 2
    return np.where(total > 0, _rounds(variance, tenants), np.inf)


def marginal_value(q_nm: np.ndarray, devices: Devices, tenants: Tenants) -> np.ndarray:
    """(..., N, M) -dR_m/dq_n = alpha_m p_n^2 G_n^2 / (eps_m q_n^2) for enrolled pairs, else 0.

    Always >= 0: raising any participation level lowers the rounds to target, most for devices with
    much data (p_n) and heterogeneous data (G_n) that participate rarely (small q_n).
    """
    terms, total = _weighted_terms(q_nm, devices)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = terms / np.where(q_nm > 0, q_nm, 1.0) / total[..., None, :] ** 2
    return np.where(q_nm > 0, tenants.alpha * slope / tenants.target, 0.0)


def participation_value(q_nm: np.ndarray, devices: Devices, tenants: Tenants) -> np.ndarray:
    """(..., N, M) R_m without device n minus R_m with it (enrolled pairs; 0 elsewhere).

    Dropping n also renormalises everyone's p, so a rarely-participating device with little data
    and a large G_n can be worth less than nothing (its variance outweighs its data); a tenant's
    only device is worth inf (without it the tenant never reaches its target).
    """
    terms, total = _weighted_terms(q_nm, devices)
    enrolled = q_nm > 0
    rest_terms = terms.sum(axis=-2)[..., None, :] - terms
    rest_total = total[..., None, :] - np.where(enrolled, devices.data, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        without = np.where(rest_total > 0, _rounds(rest_terms / rest_total ** 2, tenants), np.inf)
    with_n = rounds_to_target(q_nm, devices, tenants)[..., None, :]
    with np.errstate(invalid="ignore"):
        return np.where(enrolled, without - with_n, 0.0)
