"""Dynamic pricing: users arrive over time windows and the market clears once per window.

[OURS; the abstract says "dynamic pricing" and "on-demand" but not how time enters.] Each user of
a drawn market arrives in one window (uniformly at random) and, when served, holds its edge share
for 1..max_job_windows windows. At every window the mechanism runs on that window's arrivals
with each service's *remaining* capacity (the share not held by earlier jobs still running); a
user who is not served leaves. Jobs release their share when they finish.
"""
from __future__ import annotations

import numpy as np

from workloads.aeria.allocation import run_mechanism
from workloads.aeria.market import Market
from workloads.aeria.mechanisms import MechanismParams


def simulate_arrivals(name: str, market: Market, params: MechanismParams, seed: int,
                      windows: int, max_job_windows: int) -> list[dict]:
    """One row per window: arrivals, served, revenue and utilisation (mean share of the servers
    in use after the window's admissions). Arrival times and job lengths depend only on the
    seed, so every mechanism sees the same arrivals."""
    rng = np.random.default_rng([seed, 7])
    arrive = rng.integers(0, windows, market.num_users)
    length = rng.integers(1, max_job_windows + 1, market.num_users)
    services = len(market.services)
    end, service, size = np.zeros(0, int), np.zeros(0, int), np.zeros(0)   # running jobs
    rows = []
    for t in range(windows):
        running = end > t                                        # finished jobs release shares
        end, service, size = end[running], service[running], size[running]
        used = np.bincount(service, weights=size, minlength=services).astype(float)
        idx = np.flatnonzero(arrive == t)
        sub = market.take(idx)
        out = run_mechanism(name, sub, params, np.random.default_rng([seed, 8, t]),
                            capacity=np.maximum(1.0 - used, 0.0))
        won = out.served
        end = np.concatenate((end, t + length[idx][won]))
        service = np.concatenate((service, sub.service[won]))
        size = np.concatenate((size, out.size[won]))
        used = np.bincount(service, weights=size, minlength=services).astype(float)
        rows.append({"window": t, "arrivals": int(idx.size), "served": int(won.sum()),
                     "revenue": float((out.payments[won] - out.cost[won]).sum()),
                     "utilisation": float(used.mean())})
    return rows
