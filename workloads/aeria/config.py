"""Every knob of the aeria workload: the user market, the edge, the mechanisms, the checks.

Units: values, costs and prices in one abstract currency per inference request; FLOP rates in
GFLOP/s; bandwidth in Mbit/s; deadlines in ms. Defaults are [OURS] (workloads/aeria/README.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator import checks
from orchestrator.config import ConfigError, check_ranges, knob
from workloads.aeria.mechanisms import MECHANISMS
from workloads.aeria.profiles import DEFAULT_PATH, load_profiles

VALUE_DISTRIBUTIONS = ("uniform", "lognormal", "exponential")
SPREADS = ("loguniform", "uniform")


@dataclass
class ValueConfig:
    """The distribution of users' private values v_u (what one inference is worth to them)."""

    distribution: str = knob("lognormal", "value distribution", choices=VALUE_DISTRIBUTIONS)
    low: float = knob(0.0, "uniform: lowest value", ge=0)
    high: float = knob(2.0, "uniform: highest value", ge=0)
    mu: float = knob(0.0, "lognormal: mean of log v (the median value is e^mu)")
    sigma: float = knob(0.8, "lognormal: standard deviation of log v", ge=0)
    scale: float = knob(1.0, "exponential: mean value", gt=0)

    def validate(self) -> None:
        if self.distribution == "uniform" and self.low >= self.high:
            raise ConfigError("low", f"low {self.low} must be below high {self.high}",
                              "set values.low < values.high")


@dataclass
class UserConfig:
    """Ranges users' requirements and resources are drawn from (one independent draw each)."""

    accuracy_floor_low: float = knob(0.3, "lowest accuracy floor A_u", ge=0, le=1)
    accuracy_floor_high: float = knob(0.75, "highest accuracy floor A_u", ge=0, le=1)
    deadline_ms_low: float = knob(5.0, "shortest deadline L_u (ms)", gt=0)
    deadline_ms_high: float = knob(100.0, "longest deadline L_u (ms)", gt=0)
    device_gflops_low: float = knob(0.1, "slowest device f_u (GFLOP/s)", gt=0)
    device_gflops_high: float = knob(2.0, "fastest device f_u (GFLOP/s)", gt=0)
    bandwidth_mbps_low: float = knob(2.0, "slowest uplink B_u (Mbit/s)", gt=0)
    bandwidth_mbps_high: float = knob(100.0, "fastest uplink B_u (Mbit/s)", gt=0)
    spread: str = knob("loguniform", "how deadline, device speed and bandwidth fill their ranges "
                                     "(the accuracy floor is always uniform)", choices=SPREADS)

    def validate(self) -> None:
        check_ranges(self, ("accuracy_floor", "deadline_ms", "device_gflops", "bandwidth_mbps"))


@dataclass
class EdgeConfig:
    """The edge infrastructure provider (EIP): its server and its tariff to the ASP."""

    speed_gflops: float = knob(1000.0, "edge server speed F_edge (GFLOP/s), one per service "
                                       "provider", gt=0)
    link_mbps: float = knob(1000.0, "the edge server's uplink capacity (Mbit/s)", gt=0)
    phi_max: float = knob(0.02, "largest share of the edge server or link one user may get",
                          gt=0, le=1)
    eip_base_cost: float = knob(0.1, "EIP charge per served request", ge=0)
    eip_price_per_gflop: float = knob(25.0, "EIP charge per GFLOP run on the edge", ge=0)


@dataclass
class AeriaConfig:
    """The aeria workload: a multi-service edge-inference market and the auctions that price it."""

    num_users: int = knob(1000, "users in the market of one sweep trial and of the arrivals "
                                "simulation", ge=2)
    user_counts: list[int] = knob([200, 1000, 5000], "market sizes `run` compares (x axis)", ge=2)
    num_seeds: int = knob(3, "markets drawn per user count (error bars)", ge=1)
    services: list[str] = knob([], "DNN services offered; empty: every DNN in the profiles")
    service_weights: list[float] = knob([], "relative demand per service; empty: equal", ge=0)
    profiles: str = knob("", "profiles JSON; empty: the shipped workloads/aeria/profiles.json",
                         must_exist=True, kind="file")
    mechanisms: list[str] = knob(list(MECHANISMS), "mechanisms to compare", choices=MECHANISMS)
    values: ValueConfig = knob(factory=ValueConfig)
    users: UserConfig = knob(factory=UserConfig)
    edge: EdgeConfig = knob(factory=EdgeConfig)
    consensus_base: float = knob(2.0, "base c of the consensus grid r_c (aeria, core)", gt=1)
    capacity_grid_base: float = knob(1.25, "base of AERIA's capacity-price grid", gt=1)
    reserve_price: float = knob(0.0, "minimum markup over cost (every auction)", ge=0)
    cost_share_target: float = knob(0.25, "cost_share extracts R = target x median value x "
                                          "bidders of the service", ge=0)
    posted_price: float = knob(2.0, "price of posted_price (uninformed: tune it like any knob)",
                               gt=0)
    cost_plus_margin: float = knob(0.2, "markup fraction of cost_plus over Edgent's cost", ge=0)
    tune_samples: int = knob(0, "`run` first tunes every mechanism's knobs: a Ray Tune search "
                                "of this many trials each (the same budget for all; the given "
                                "setting first), scored by revenue on markets of their own "
                                "seeds; 0: use the knobs as given", ge=0)
    tune_seeds: int = knob(3, "markets per user count the tuning scores each setting on", ge=1)
    arrival_windows: int = knob(0, "simulate users arriving over this many time windows "
                                   "(num_users in all; 0: no simulation)", ge=0)
    max_job_windows: int = knob(3, "a served job holds its edge share for 1..this many "
                                   "windows", ge=1)
    check_properties: bool = knob(True, "run the truthfulness / envy-freeness checks in `run` "
                                        "(on the first market of each user count)")
    property_users: int = knob(400, "users of a random sub-market the checks run on", ge=2)
    property_probes: int = knob(6, "users per service whose misreports are tried", ge=1)

    def profiles_path(self) -> Path:
        return Path(self.profiles).expanduser() if self.profiles else DEFAULT_PATH

    def service_names(self) -> list[str]:
        """The services offered, in profile order unless `services` lists them."""
        return list(self.services) or list(load_profiles(self.profiles_path()))

    def validate(self) -> None:
        for key in ("user_counts", "mechanisms"):
            if not getattr(self, key):
                raise ConfigError(key, "is empty", "list at least one entry")
        for key in ("user_counts", "mechanisms", "services"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ConfigError(key, f"has duplicates: {values}", "list each entry once")
        self._validate_services()

    def _validate_services(self) -> None:
        path = self.profiles_path()
        if not path.exists():
            raise ConfigError("profiles", f"no profile table at {path}",
                              "run `python -m workloads.aeria.profiling` or set aeria.profiles")
        known = checked_profiles(path)
        for i, name in enumerate(self.services):
            if name not in known:
                raise ConfigError(f"services[{i}]", f"'{name}' is not in {path.name}",
                                  f"choose from: {', '.join(known)}")
        count = len(self.services) or len(known)
        if self.service_weights and len(self.service_weights) != count:
            raise ConfigError("service_weights", f"has {len(self.service_weights)} entries for "
                              f"{count} services", "give one weight per service, or none")
        if self.service_weights and sum(self.service_weights) <= 0:
            raise ConfigError("service_weights", "all weights are 0", "give a positive weight")


PROFILE_SHAPE = ("a profiles JSON as `python -m workloads.aeria.profiling` writes it: {\"dnns\": "
                 "{name: {dataset, input_bytes, layers: [{name, flops, out_bytes, cpu_ms}], "
                 "exits: [{after_layer, head_flops, accuracy}]}}}")


def checked_profiles(path: Path) -> list[str]:
    """The DNN names of a profile table that parses in full, so a folder, a non-JSON file or a
    JSON of another shape fails here (key 'profiles') rather than as a KeyError in a trial."""
    raw = checks.read_json("profiles", path, PROFILE_SHAPE)
    if not isinstance(raw.get("dnns"), dict) or not raw["dnns"]:
        raise ConfigError("profiles", f"{path} has no DNN profiles under 'dnns'",
                          f"give {PROFILE_SHAPE}")
    try:
        profiles = load_profiles(path)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        what = f"no field {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise ConfigError("profiles", f"{path} is not a profile table: {what}",
                          f"give {PROFILE_SHAPE}") from None
    for name, p in profiles.items():
        if not (p.num_layers and p.num_exits):
            raise ConfigError("profiles", f"{path}: DNN '{name}' has no layers or no exits",
                              f"give {PROFILE_SHAPE}")
    return list(profiles)
