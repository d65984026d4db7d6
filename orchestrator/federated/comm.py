"""The communication ledger (bytes from real tensor sizes) and the simulated clock of a round.

The clock's latency model is pluggable: `slowest_device` (download + compute + upload of the
slowest participant, from its profile) by default; a workload passes its own (prince adds the edge
server's congestion) to `Session.run(latency=...)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from orchestrator.federated.population import Population


def tensor_bytes(obj: Any, _seen: set | None = None) -> int:
    """Bytes of every tensor / array inside `obj` (dicts, lists, tuples nest), each tensor once.

    A tensor that appears under two keys (tied weights: an LM head that is the embedding) crosses
    the wire once, as `torch.save` stores it once.
    """
    seen = set() if _seen is None else _seen
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):
        key = (obj.data_ptr(), obj.nelement(), obj.dtype)
        if obj.nelement() and key in seen:
            return 0
        seen.add(key)
        return int(obj.element_size() * obj.nelement())
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    return 0


@dataclass
class DeviceReport:
    """What one device did in one round (everything the ledger and the clock need)."""

    device: int
    bytes_up: int
    bytes_down: int
    flops: float
    num_samples: int
    metrics: dict = field(default_factory=dict)
    bytes_side: int = 0  # exchanged with a service mid-round (smashed data and its gradients)


def device_seconds(report: DeviceReport, population: Population) -> float:
    """Download + local compute + upload time of one device, from its profile."""
    d = report.device
    return (report.bytes_down * 8 / (population.downlink_mbps[d] * 1e6)
            + report.flops / (population.speed_gflops[d] * 1e9)
            + report.bytes_up * 8 / (population.uplink_mbps[d] * 1e6))


def slowest_device(round_idx: int, reports: list[DeviceReport], population: Population) -> float:
    """The default latency model: a synchronous round lasts as long as its slowest participant."""
    return max((device_seconds(r, population) for r in reports), default=0.0)


def round_summary(reports: list[DeviceReport], population: Population, round_idx: int = 0,
                  latency: Callable[[int, list, Population], float] = slowest_device
                  ) -> dict[str, float]:
    """The ledger's round entry: participants, bytes up/down/side, simulated seconds."""
    return {"participants": len(reports),
            "bytes_up": float(sum(r.bytes_up for r in reports)),
            "bytes_down": float(sum(r.bytes_down for r in reports)),
            "bytes_side": float(sum(r.bytes_side for r in reports)),
            "sim_seconds": float(latency(round_idx, reports, population))}
