"""What a federated method decides each round, and what a device receives: the strategy protocol.

As in Flower's `Strategy`, the strategy owns the round's decisions and the engine
(`engine.Session.run`) owns the loop: the clock, the communication ledger, checkpoints and resume,
progress, services. A method is a `Strategy` subclass that overrides what differs from FedAvg:

    configure(round, state, online, rng, services) -> RoundPlan   who trains, with which instructions
    aggregate(round, state, aggregate, reports, services) -> state    fold the round into the state
    evaluate(round, state) -> metrics                                after each round (optional)
    finished(round, history) -> bool                                 stop early (optional)

FedProx is FedAvg plus one instruction (`proximal_mu`), see `workloads/fedprox/`. Instructions are
typed objects that travel beside the weights (`DeviceTask.instructions`); they are never packed
into the broadcast state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from orchestrator.federated.pool import DeviceTask, WeightedSum

__all__ = ["DeviceTask", "RoundPlan", "Strategy", "sample_share"]


@dataclass
class RoundPlan:
    """One round's decisions: the participants, their instructions, how their updates fold.

    `instructions` is one object for every participant or a `{device: object}` mapping;
    `payload` is what the participants download (None: the state itself).
    """

    devices: Sequence[int]
    instructions: Any = None
    reducer: Any = field(default_factory=WeightedSum)
    payload: Optional[dict] = None


def sample_share(online: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """A `share` of the online devices, drawn without replacement, in id order."""
    k = math.ceil(share * len(online))
    return np.sort(rng.choice(online, size=k, replace=False)) if k else online


class Strategy:
    """FedAvg: a `participation` share of the online devices trains from the state; the state
    becomes the weighted mean of their models. Subclasses override what their method changes."""

    def __init__(self, participation: float = 1.0):
        self.participation = participation

    def configure(self, round_idx: int, state: dict, online: np.ndarray,
                  rng: np.random.Generator, services: Mapping[str, Any]) -> RoundPlan:
        return RoundPlan(sample_share(online, self.participation, rng).tolist(),
                         self.instructions(round_idx, state))

    def instructions(self, round_idx: int, state: dict) -> Any:
        """What every participant is told this round (FedAvg: nothing beyond the weights)."""
        return None

    def aggregate(self, round_idx: int, state: dict, aggregate: Any, reports: list,
                  services: Mapping[str, Any]) -> dict:
        """The next state; `aggregate` is the reducer's output, None when nobody took part."""
        return state if aggregate is None else aggregate

    def evaluate(self, round_idx: int, state: dict) -> dict[str, float]:
        return {}

    def finished(self, round_idx: int, history: list[dict]) -> bool:
        return False
