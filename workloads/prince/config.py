"""Every knob of the prince workload: the four tenants, the device market, the game, training.

Units: seconds (simulated), FLOP/s, one abstract currency for prices, costs and budgets. Every
default is [OURS] (the paper's abstract gives none); see README.md here. The device population
(speeds, links, data sizes and skew, the actor pool) is the federated engine's `federation:`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from orchestrator import checks
from orchestrator.config import ConfigError, check_ranges, knob
from orchestrator.federated.config import FederationConfig
from workloads.common.optim import OPTIMIZERS
from workloads.prince.baselines import METHODS
from workloads.prince.tenant_specs import SIZES, TENANTS
from workloads.prince.timing import CONGESTION_MODELS, STRAGGLER_MODELS



@dataclass
class TenantConfig:
    """One tenant m: its model and cut, its target, deadline and budget, and its bound constants."""

    enabled: bool = knob(True, "take part in the market")
    size: str = knob("tiny", "model size table (tiny: tests and quickstart, small: paper)",
                     choices=SIZES)
    cut_layer: int = knob(1, "transformer layers on the device side (0: embeddings only)", ge=0)
    pretrained: Optional[str] = knob(None, "real weights: a local HF folder (or a .gguf for llama),"
                                           " 'auto' for the installed MiniLM (bert); null: scratch")
    target_metric: str = knob("accuracy", "what the target is on: test accuracy (>=) or test loss "
                                          "(<=)", choices=("accuracy", "loss"))
    target: float = knob(0.5, "the performance target the tenant must reach", gt=0)
    deadline_s: float = knob(600.0, "fine-tuning deadline T_m (simulated seconds)", gt=0)
    budget: float = knob(400.0, "B_m: most the tenant pays over the run", gt=0)
    price_min: float = knob(0.0, "lowest price per round of participation", ge=0)
    price_max: float = knob(2.0, "highest price per round of participation", gt=0)
    bound_eps: Optional[float] = knob(None, "eps_m: the bound's target gap (R_m = (alpha S + "
                                            "beta)/eps); null: from the target (the loss, or "
                                            "1 - accuracy)", gt=0)
    alpha: float = knob(20.0, "alpha_m: weight of the participation variance in the bound", ge=0)
    beta: float = knob(2.0, "beta_m: the bound's full-participation part", ge=0)
    edge_gflops: float = knob(50.0, "F_m: the tenant's edge compute (GFLOP/s)", gt=0)
    lr: float = knob(3e-3, "learning rate of both sides", gt=0)
    optimizer: str = knob("adam", "optimizer of both sides (fresh every round)", choices=OPTIMIZERS)
    batch_size: int = knob(16, "samples per local step", ge=1)
    local_steps: int = knob(4, "local SFL steps per participant per round (E)", ge=1)
    train_limit: Optional[int] = knob(None, "training samples spread over the devices; null: all",
                                      ge=1)
    test_limit: int = knob(256, "held-out samples evaluated after every round", ge=1)
    lora_rank: int = knob(0, "LoRA rank on both split parts' attention/MLP linears (peft); the "
                             "base is frozen, the head stays trainable and only adapters + head "
                             "are sent and aggregated; 0: full fine-tuning", ge=0)
    lora_alpha: Optional[float] = knob(None, "LoRA scale numerator (updates scaled by "
                                             "alpha/rank); null: 2 x lora_rank", gt=0)

    def validate(self) -> None:
        if self.price_min > self.price_max:
            raise ConfigError("price_min", f"{self.price_min} exceeds price_max {self.price_max}",
                              "set price_min <= price_max")
        if self.lora_rank > 0 and self.pretrained is None:
            raise ConfigError("lora_rank", f"{self.lora_rank} adapts a randomly initialised base "
                              "(pretrained: null), which a frozen random model cannot learn from",
                              "set pretrained (e.g. auto) or lora_rank: 0 for full fine-tuning")
        if self.lora_alpha is not None and self.lora_rank == 0:
            raise ConfigError("lora_alpha", "is set but lora_rank is 0 (LoRA off)",
                              "set lora_rank > 0, or lora_alpha: null")


def _tenant(**over) -> TenantConfig:
    return TenantConfig(**over)


@dataclass
class TenantsConfig:
    """Defaults fit the tiny models on 2 CPUs: loss targets where accuracy is noise at that size
    (Whisper from scratch on 165 clips only learns the label prior in a few rounds)."""

    vit: TenantConfig = knob(factory=lambda: _tenant(target_metric="loss", target=2.15))
    bert: TenantConfig = knob(factory=lambda: _tenant(target=0.58, beta=3.0, lr=1e-3,
                                                      local_steps=8))
    whisper: TenantConfig = knob(factory=lambda: _tenant(target_metric="loss", target=2.2,
                                                         beta=3.0, lr=1e-3, deadline_s=900.0))
    llama: TenantConfig = knob(factory=lambda: _tenant(
        target_metric="loss", target=9.3, beta=5.0, batch_size=4, local_steps=2,
        deadline_s=900.0, test_limit=16))

    def enabled(self) -> list[tuple[str, TenantConfig]]:
        return [(name, getattr(self, name)) for name in TENANTS if getattr(self, name).enabled]

    def validate(self) -> None:
        if not self.enabled():
            raise ConfigError("", "no tenant is enabled", "enable at least one of " +
                              ", ".join(TENANTS))


@dataclass
class MarketConfig:
    """Devices' costs and data ownership, and the game's knobs (SEEDS 2.3 [OURS])."""

    modality_share: float = knob(0.5, "chance a device holds data of each modality (each device "
                                      "holds at least one)", gt=0, le=1)
    kappa_low: float = knob(0.5, "lowest quadratic participation cost kappa_n", gt=0)
    kappa_high: float = knob(2.0, "highest kappa_n", gt=0)
    energy_cost_low: float = knob(0.001, "lowest cost per busy device-second", ge=0)
    energy_cost_high: float = knob(0.01, "highest cost per busy device-second", ge=0)
    grad_norm_low: float = knob(0.5, "sweep trials: lowest drawn G_n relative to the tenant's "
                                     "mean (runs measure G_n)", gt=0)
    grad_norm_high: float = knob(1.5, "sweep trials: highest drawn relative G_n", gt=0)
    psi: float = knob(1.0, "currency per second of edge latency a device weighs", ge=0)
    q_min: float = knob(0.2, "lowest participation level of a device that joins", gt=0, le=1)
    price_points: int = knob(12, "grid points per tenant's price range", ge=2)
    max_leader_iterations: int = knob(20, "passes of tenants' price best responses", ge=1)
    min_improvement: float = knob(0.02, "relative time gain a tenant needs to move its price",
                                  ge=0)
    raise_steps: int = knob(24, "a tenant no grid price fills raises its price above price_max "
                                "by up to this many grid steps, within its budget (0: never)",
                            ge=0)
    congestion: str = knob("linear", "edge latency with k devices: linear, mm1 queue, none",
                           choices=CONGESTION_MODELS)
    edge_capacity: float = knob(50.0, "mm1: devices an edge serves before it saturates", gt=0)
    straggler: str = knob("expected", "round time: expected slowest participant or worst "
                                      "enrolled", choices=STRAGGLER_MODELS)

    def validate(self) -> None:
        check_ranges(self, ("kappa", "energy_cost", "grad_norm"))


@dataclass
class TrainingConfig:
    methods: list[str] = knob(list(METHODS), "PRINCE and the baselines, one child run each",
                              choices=METHODS)
    rounds: int = knob(12, "most SFL rounds per tenant (training stops at the target)", ge=1)
    stop_at_target: bool = knob(True, "stop a tenant's training once it reaches its target")
    server_workers: int = knob(1, "Ray Train ranks of each tenant's edge server (each server step"
                                  " split over them, gradients all-reduced)", ge=1)
    server_cpus: float = knob(0.25, "CPUs of each edge-server rank (a Ray Train worker)", gt=0)
    server_gpus: float = knob(0.0, "GPUs of each edge-server rank (> 0: NCCL between ranks)",
                              ge=0)
    probe_batch: int = knob(8, "samples per device for the gradient-norm estimate G_n", ge=1)

    def validate(self) -> None:
        if self.server_workers > 1 and 0 < self.server_gpus < 1:
            raise ConfigError("server_gpus", f"{self.server_gpus} lets {self.server_workers} "
                              "NCCL ranks of one edge server share a GPU, which NCCL refuses",
                              "give each rank a whole GPU (server_gpus: 1) or use "
                              "server_workers: 1")


@dataclass
class CalibrationConfig:
    """The bound's alpha, beta fitted from measured rounds to target (calibration.py)."""

    measure: bool = knob(False, "run a calibration instead of the methods: every owner of each "
                                "tenant at each level q, rounds to target measured, alpha and beta"
                                " fitted; writes calibration.json (and `save_to`)")
    levels: list[float] = knob([0.2, 0.5, 0.8, 1.0], "participation levels q a calibration "
                                                     "measures", gt=0, le=1)
    owner_fractions: list[float] = knob([], "also measure with only this share of each "
                                            "tenant's owners enrolled (most data first), all at "
                                            "q = 1: S then varies through the data shares",
                                        gt=0, le=1)
    repeats: int = knob(2, "Bernoulli-draw seeds per level and aggregation", ge=1)
    biased: bool = knob(True, "also measure plain FedAvg (biased aggregation) at each level < 1")
    save_to: Optional[str] = knob(None, "also write the calibration JSON here (e.g. "
                                        "experiments/prince/calibration/quickstart.json)")
    file: Optional[str] = knob(None, "a calibration JSON whose alpha, beta, eps the game uses "
                                     "(must match the tenants' models and targets); null: the "
                                     "tenants' own alpha, beta", kind="file", must_exist=True)

    def validate(self) -> None:
        if self.measure and self.file:
            raise ConfigError("file", "is set while measure is true",
                              "a calibration run fits its own constants: set file: null")
        if not self.levels:
            raise ConfigError("levels", "is empty", "give participation levels in (0, 1]")


@dataclass
class PrinceConfig:
    tenants: TenantsConfig = knob(factory=TenantsConfig)
    market: MarketConfig = knob(factory=MarketConfig)
    training: TrainingConfig = knob(factory=TrainingConfig)
    federation: FederationConfig = knob(factory=FederationConfig)
    calibration: CalibrationConfig = knob(factory=CalibrationConfig)

    def validate(self) -> None:
        if not self.training.methods:
            raise ConfigError("training.methods", "is empty", ", ".join(METHODS))
        if "prince" not in self.training.methods:
            raise ConfigError("training.methods", "must include prince (the baselines are "
                                                  "compared against it)")
        for name, t in self.tenants.enabled():
            depth = depth_of(name, t.size)
            if t.pretrained is None and t.cut_layer > depth:
                raise ConfigError(f"tenants.{name}.cut_layer", f"{t.cut_layer} exceeds the "
                                  f"{depth} layers of the {t.size} {name}",
                                  f"pick 0..{depth}")
        for name, t in self.tenants.enabled():
            check_pretrained(name, t.size, t.pretrained)
        if self.calibration.file:
            check_calibration(self.calibration.file, self.tenants.enabled())
        if self.tenants.llama.enabled and self.tenants.llama.target_metric != "loss":
            raise ConfigError("tenants.llama.target_metric", "llama is a causal LM",
                              "its target is a test loss: set target_metric: loss")


def check_calibration(path: str, tenants: list) -> None:
    """A stored calibration applies only to the tenants it was measured on."""
    from workloads.prince import calibration

    try:
        stored = calibration.load(path)
    except (OSError, ValueError) as err:
        raise ConfigError("calibration.file", f"{path} is not a calibration JSON ({err})",
                          "give a file a calibration run wrote") from None
    for name, t in tenants:
        why = calibration.check_matches(stored, name, t)
        if why:
            raise ConfigError("calibration.file", f"{path} does not fit: {why}",
                              "measure one for this config (prince.calibration.measure=true) "
                              "or set calibration.file: null")


def check_pretrained(name: str, size: str, pretrained: Optional[str]) -> None:
    """Real weights must be on disk before Ray starts (`tenant_specs.auto_weights` for 'auto')."""
    from workloads.prince.tenant_specs import AUTO_SOURCE, auto_weights

    key = f"tenants.{name}.pretrained"
    if pretrained is None:
        return
    if pretrained == "auto":
        if auto_weights(name, size) is None:
            raise ConfigError(key, f"'auto' found no offline weights for the {size} {name}",
                              f"it needs {AUTO_SOURCE[name]}; or set it to null")
    elif not Path(pretrained).exists():
        raise ConfigError(key, f"{pretrained} does not exist", "give an existing local path")
    else:
        check_weights(name, key, Path(pretrained))


def check_weights(name: str, key: str, path: Path) -> None:
    """What `tenants.build_full_model` can load: a .gguf file (LLaMA), a CTranslate2 Whisper
    `model.bin` or folder holding one, else a Hugging Face folder with its config.json."""
    if path.is_file():
        if path.suffix == ".gguf":
            checks.gguf_file(key, path)
        elif not (name == "whisper" and path.name == "model.bin"):
            raise ConfigError(key, f"{path} is a file, not model weights",
                              "give a Hugging Face model folder (config.json inside)"
                              + (", or a .gguf file" if name == "llama" else "")
                              + (", or a CTranslate2 model.bin" if name == "whisper" else ""))
    elif not (name == "whisper" and (path / "model.bin").is_file()):
        checks.hf_model_folder(key, path)


def depth_of(name: str, size: str) -> int:
    """Transformer layers of a from-scratch tenant model."""
    from workloads.prince.tenant_specs import ZOO

    shape = ZOO[size][name]
    return shape.get("num_hidden_layers", shape.get("encoder_layers"))
