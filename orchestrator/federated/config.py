"""The federated engine's knobs, in three parts a workload embeds as it needs them.

* `PopulationConfig`: the simulated devices (profiles) and how the data is split over them;
* `PoolConfig`: the long-lived Ray actors that run the devices;
* `RoundsConfig`: how many rounds and which share of the online devices joins each.

`FederationConfig` is population + pool (prince plans its own rounds from its market; deepfusion
runs one-shot phases and FedJETS with its own round count), `FederatedTrainingConfig` adds the
rounds (the template workload). A workload embeds only what it reads, so no knob is accepted that
nothing reads (tests/workloads/test_knobs_are_read.py). Fields stay flat under `federation:`.
"""
from __future__ import annotations

from dataclasses import dataclass

from orchestrator.config import check_ranges, knob

RANGES = ("speed_gflops", "memory_mb", "uplink_mbps", "downlink_mbps", "availability")


@dataclass
class PopulationConfig:
    num_devices: int = knob(8, "simulated devices N", ge=1)
    # device profiles: each drawn log-uniformly (availability uniformly) from [low, high]
    speed_gflops_low: float = knob(5.0, "slowest device compute (GFLOP/s)", gt=0)
    speed_gflops_high: float = knob(50.0, "fastest device compute (GFLOP/s)", gt=0)
    memory_mb_low: float = knob(2048.0, "smallest device memory (MB)", gt=0)
    memory_mb_high: float = knob(8192.0, "largest device memory (MB)", gt=0)
    uplink_mbps_low: float = knob(5.0, "slowest uplink (Mbit/s)", gt=0)
    uplink_mbps_high: float = knob(50.0, "fastest uplink (Mbit/s)", gt=0)
    downlink_mbps_low: float = knob(20.0, "slowest downlink (Mbit/s)", gt=0)
    downlink_mbps_high: float = knob(200.0, "fastest downlink (Mbit/s)", gt=0)
    availability_low: float = knob(1.0, "lowest per-round availability probability", ge=0, le=1)
    availability_high: float = knob(1.0, "highest per-round availability probability", ge=0, le=1)
    # data partition
    size_skew: float = knob(0.5, "sigma of the log-normal device data sizes (0: equal sizes)", ge=0)
    label_alpha: float = knob(0.0, "Dirichlet alpha of label/domain skew (0: iid)", ge=0)

    def validate(self) -> None:
        check_ranges(self, RANGES)


@dataclass
class PoolConfig:
    num_actors: int = knob(0, "long-lived device actors; 0: one per CPU the actor needs", ge=0)
    cpus_per_actor: float = knob(1.0, "CPUs reserved per device actor", gt=0)
    gpus_per_actor: float = knob(0.0, "GPUs per device actor (fractions share a GPU)", ge=0)


@dataclass
class RoundsConfig:
    rounds: int = knob(3, "federated rounds", ge=1)
    participation: float = knob(1.0, "share of available devices sampled each round", gt=0, le=1)


@dataclass
class FederationConfig(PopulationConfig, PoolConfig):
    """Devices and the pool that runs them."""


@dataclass
class FederatedTrainingConfig(FederationConfig, RoundsConfig):
    """Devices, the pool, and the rounds the engine runs over them."""
