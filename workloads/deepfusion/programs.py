"""What runs off the driver: device programs on the federated pool, Ray tasks, Ray Train loops.

* `LocalLmProgram` (Phase 0, one round, `Collect` reducer): a device builds the on-device LLM it
  picked by memory, trains it on its private shard and uploads it once with its embedding e_n.
* `FedJetsProgram` (FedJETS rounds, `Collect` reducer): a device routes its data through the
  global MoE, takes the compact MoE of its top experts, trains it and uploads it every round.
* `distill_cluster` (Phase II, a `ctx.map` task): proxy teacher -> dense student, by the method's
  KD loss (VAA, no-VAA, OFA-KD, FedMKT).
* `tune_moe_in_process` (a `ctx.map` task): Phase III without Ray Train, for methods not in
  `run.phase3: ray_task`.

Phase III on Ray Train uses the core's `expert_parallel_train_loop` with
`ExpertParallelJob.init_state` = the upcycled MoE's weights.

Every function here is top-level and takes picklable data, and derives its randomness from the
seeds it is handed, so re-running any piece gives the same tensors. Each computes on
`runtime.torch_device()` (the worker's GPU share when Ray gave it one, else the CPU): models are
built from their seeds on the CPU and then moved, batches are moved as they are drawn, and every
returned state is a CPU copy, so what is aggregated and pickled does not depend on the device.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.federated.pool import DeviceTask, DeviceUpdate
from orchestrator.runtime import fetch, torch_device
from orchestrator.workload import derive_rng


def derive_seed(*keys: int) -> int:
    """An int seed for torch from (seed, *keys), via the one seeding helper."""
    return int(derive_rng(*keys).integers(2**31 - 1))


def shared_init_seed(seed: int, model_name: str) -> int:
    """The initial weights of every device running `model_name`: one per model type, as on-device
    LLMs of one type are fine-tuned from one release, so Phase I averages aligned networks (the
    average of independently initialised ones is worse than any of them)."""
    return derive_seed(seed, 100, zlib.crc32(model_name.encode()))


def vocab_size(vocab) -> int | None:
    """The models' vocabulary size for a compact vocabulary `vocab` (None: the shared one)."""
    return None if vocab is None else len(vocab)


def cpu_state(module) -> dict:
    """A detached CPU copy of `module`'s state dict (what crosses process boundaries)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _train_steps(model, blocks, steps: int, batch_size: int, optimizer, rng) -> list[float]:
    """`steps` causal-LM steps on random mini-batches of `blocks` (the batch order from `rng`),
    each batch moved to the model's device."""
    import torch

    from workloads.deepfusion.models import causal_lm_step

    device, losses = next(model.parameters()).device, []
    for _ in range(steps if len(blocks) else 0):
        idx = rng.choice(len(blocks), size=min(batch_size, len(blocks)), replace=False)
        losses.append(causal_lm_step(model, blocks[torch.as_tensor(idx)].to(device), optimizer))
    return losses


# --------------------------------------------------------------------------- Phase 0
@dataclass(frozen=True)
class LocalSpec:
    """Everything every device needs for Phase 0 (shipped once to each actor)."""

    models: list[str]         # on-device LLM name per device
    texts: list[list[str]]    # private records per device
    size: str
    seq_len: int
    batch_size: int
    optimizer: str
    lr: float
    steps: int
    embedding: str            # e_n encoder kind
    embedding_dim: int
    encoder_seed: int         # one encoder shared by every device (e_n must be comparable)
    dtype_bytes: int
    releases: dict            # model name -> the initial weights every device of it starts from
    finetune: str = "full"    # what the memory estimate assumes a device trains (full|lora|qlora)
    lora_rank: int = 8
    upload_dir: str = ""      # where a device leaves its model (a folder every node reads):
                              # the server then holds one at a time, not all N; "": in memory
    vocab: Any = None         # the compact vocabulary's shared token ids, or None: the full one


class LocalLmProgram:
    """Phase 0 on one device: train its on-device LLM on its shard; upload model + e_n once."""

    def __init__(self, spec: LocalSpec):
        from workloads.deepfusion.clustering import make_encoder
        from workloads.deepfusion.data import case_tokenizer
        from workloads.common.tokenizer import load_tokenizer

        self.spec = spec
        self.tokenizer = case_tokenizer(spec.vocab)  # the model's ids
        # e_n counts the shared tokenizer's ids: one encoder for any vocabulary the models use
        self.encoder = make_encoder(spec.embedding, load_tokenizer(), spec.embedding_dim,
                                    spec.encoder_seed)

    def train(self, device: int, global_state: dict, task: DeviceTask) -> DeviceUpdate:
        import torch

        from workloads.deepfusion.clustering import device_embedding
        from workloads.deepfusion.data import lm_blocks
        from workloads.common.optim import make_optimizer
        from workloads.deepfusion.models import (build_device_model, param_bytes,
                                                 train_memory_bytes)

        s, seed = self.spec, task.seed
        texts = s.texts[device]
        blocks = lm_blocks(texts, self.tokenizer, s.seq_len)
        model = build_device_model(s.models[device], s.size, vocab_size=vocab_size(s.vocab))
        model.load_state_dict(s.releases[s.models[device]])
        model.to(torch_device())
        optimizer = make_optimizer(model.parameters(), s.optimizer, s.lr)
        losses = _train_steps(model, blocks, s.steps, s.batch_size, optimizer,
                              derive_rng(seed, 101, device))
        state = cpu_state(model)
        e_n = torch.as_tensor(device_embedding(texts, self.encoder), dtype=torch.float32)
        n_params = sum(p.numel() for p in model.parameters())
        flops = 6.0 * n_params * s.steps * min(s.batch_size, len(blocks)) * s.seq_len
        model_bytes = param_bytes(model, s.dtype_bytes)
        metrics = {"loss": losses[-1] if losses else float("nan"),
                   "model_bytes": float(model_bytes),
                   "memory_bytes": float(train_memory_bytes(
                       model, s.optimizer, s.batch_size, s.seq_len, s.dtype_bytes,
                       finetune=s.finetune, lora_rank=s.lora_rank)),
                   "blocks": float(len(blocks))}
        if s.upload_dir:  # the path stands for the upload; the bytes below are the model's
            state = upload(state, Path(s.upload_dir) / f"device-{device}.pt")
        # on the wire: |m_n| + |e_n| at dtype_bytes (Eq. 5), tied weights once; nothing comes down
        return DeviceUpdate({"model": state, "embedding": e_n}, float(len(texts)), len(texts),
                            flops, metrics, bytes_up=model_bytes + e_n.numel() * s.dtype_bytes,
                            bytes_down=0)


def make_local_program(spec: LocalSpec) -> LocalLmProgram:
    return LocalLmProgram(spec)


def upload(state: dict, path: Path) -> str:
    """A device's model written where the server reads it: its path."""
    from orchestrator.state import atomic_save

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(state, path)
    return str(path)


def uploaded(model: dict | str) -> dict:
    """A device's model: itself, or read from the path `upload` gave."""
    import torch

    return torch.load(model, weights_only=True) if isinstance(model, str) else model


@dataclass(frozen=True)
class ReleaseJob:
    """One on-device model type's 'release': built from its shared seed (or from `init_state`,
    real pretrained weights), trained on public data."""

    model: str
    size: str
    blocks: Any               # (n, T) public token blocks
    steps: int
    batch_size: int
    optimizer: str
    lr: float
    seed: int
    init_state: Any = None    # pretrained weights (a `runtime.share` reference), or None
    vocab_size: Any = None    # a compact vocabulary's size, or None: the shared tokenizer's


def train_release(job: ReleaseJob) -> dict:
    """The initial weights every device running `job.model` fine-tunes from (a Ray task)."""
    from workloads.common.optim import make_optimizer
    from workloads.deepfusion.models import build_device_model

    model = build_device_model(job.model, job.size, seed=shared_init_seed(job.seed, job.model),
                               vocab_size=job.vocab_size)
    if job.init_state is not None:
        model.load_state_dict(fetch(job.init_state))
    model.to(torch_device())
    _train_steps(model, job.blocks, job.steps, job.batch_size,
                 make_optimizer(model.parameters(), job.optimizer, job.lr),
                 derive_rng(job.seed, 102, zlib.crc32(job.model.encode())))
    return cpu_state(model)


# --------------------------------------------------------------------------- FedJETS
@dataclass(frozen=True)
class FedJetsSpec:
    moe_config: Any           # the global MoE's transformers config
    blocks: list              # (n_d, T) token blocks per device
    experts: int              # experts in each device's compact MoE
    local_steps: int
    batch_size: int
    optimizer: str
    lr: float
    dtype_bytes: int


class FedJetsProgram:
    """One FedJETS device round: route -> compact MoE of its top experts -> train -> upload."""

    def __init__(self, spec: FedJetsSpec):
        from transformers import AutoModelForCausalLM

        self.spec = spec
        self.device = torch_device()
        self.global_moe = AutoModelForCausalLM.from_config(spec.moe_config).to(self.device)

    def train(self, device: int, global_state: dict, task: DeviceTask) -> DeviceUpdate:
        import torch

        from workloads.deepfusion.baselines import compact_moe, route_device_to_experts
        from workloads.common.optim import make_optimizer
        from workloads.deepfusion.models import param_bytes

        s, seed, round_idx = self.spec, task.seed, task.round
        blocks = s.blocks[device]
        if not len(blocks):  # too little text for one block: it sits the round out, no traffic
            return DeviceUpdate({}, 0.0, 0, 0.0, {}, bytes_up=0, bytes_down=0)
        self.global_moe.load_state_dict(global_state)
        ids = route_device_to_experts(self.global_moe, blocks[:s.batch_size].to(self.device),
                                      s.experts)
        local = compact_moe(self.global_moe, ids).to(self.device)
        torch.manual_seed(derive_seed(seed, 200, round_idx, device))
        optimizer = make_optimizer(local.parameters(), s.optimizer, s.lr)
        losses = _train_steps(local, blocks, s.local_steps, s.batch_size, optimizer,
                              derive_rng(seed, 201, round_idx, device))
        state = cpu_state(local)
        flops = 6.0 * sum(p.numel() for p in local.parameters()) * s.local_steps * \
            min(s.batch_size, len(blocks)) * blocks.shape[1]
        compact = param_bytes(local, s.dtype_bytes)
        metrics = {"loss": losses[-1] if losses else float("nan"), "compact_bytes": float(compact)}
        # the device downloads its compact MoE and uploads it trained, not the global MoE
        return DeviceUpdate({"state": state, "experts": torch.tensor(ids)}, float(len(blocks)),
                            len(blocks), flops, metrics, bytes_up=compact, bytes_down=compact)


def make_fedjets_program(spec: FedJetsSpec) -> FedJetsProgram:
    return FedJetsProgram(spec)


# --------------------------------------------------------------------------- Phase II
@dataclass(frozen=True)
class DistillJob:
    method: str               # deepfusion | deepfusion_no_vaa | ofa_kd | fedmkt
    cluster: int
    teacher_name: str
    teacher_state: Any        # the proxy's weights (a `runtime.share` reference or a dict)
    public_blocks: Any        # (n, T) server public data
    size: str
    moe_family: str
    student_seed: int
    student_source: Any       # pretrained model name the student starts from, or None
    student_state: Any        # its weights (a `runtime.share` reference), or None: from the seed
    batch_seed: int
    distill: Any              # DistillConfig
    vaa: Any                  # VaaConfig
    baselines: Any            # BaselineConfig
    batch_size: int
    vocab_size: Any = None    # a compact vocabulary's size, or None: the shared tokenizer's


def _kd_step_fn(job: DistillJob, teacher, student):
    """(extra trainable module or None, step(batch, optimizer) -> loss parts) for the method."""
    from workloads.deepfusion import distill as kd
    from workloads.deepfusion.vaa import LinearFeatureMap, ViewAlignedAttention

    d, v, b = job.distill, job.vaa, job.baselines
    hs, ht, T = student.config.hidden_size, teacher.config.hidden_size, job.public_blocks.shape[1]
    if job.method == "fedmkt":
        return None, lambda x, opt: kd.fedmkt_step(teacher, student, x, opt, b.fedmkt_lambda,
                                                   b.fedmkt_temperature)
    if job.method == "ofa_kd":
        branches = kd.OfaBranches(hs, student.config.vocab_size, v.stages)
        w = kd.OfaWeights(b.ofa_eps, b.ofa_temperature, b.ofa_kd_weight, b.ofa_stage_weight)
        return branches, lambda x, opt: kd.ofa_step(teacher, student, branches, x, opt, w)
    aligner = (ViewAlignedAttention(hs, ht, T, v.stages, v.queries, v.dim, v.heads,
                                    v.position_embedding) if job.method == "deepfusion"
               else LinearFeatureMap(hs, ht, v.stages))
    # the control: the same step with alpha = beta = 0, i.e. the student on cross-entropy alone
    alpha, beta = (0.0, 0.0) if job.method == "student_ce_only" else (d.alpha, d.beta)
    w = kd.KDWeights(alpha, beta, d.temperature)
    return aligner, lambda x, opt: kd.distill_step(teacher, student, aligner, x, opt, w)


def distill_cluster(job: DistillJob) -> dict:
    """Phase II for one cluster: the student's state dict and the loss history."""
    import torch

    from workloads.common.optim import make_optimizer
    from workloads.deepfusion.models import build_device_model, build_student

    torch.set_num_threads(1)
    device = torch_device()
    teacher = build_device_model(job.teacher_name, job.size, vocab_size=job.vocab_size)
    teacher.load_state_dict(fetch(job.teacher_state))
    teacher = teacher.to(device)
    student = build_student(job.moe_family, job.size, seed=job.student_seed,
                            source=job.student_source, vocab_size=job.vocab_size)
    if job.student_state is not None:
        student.load_state_dict(fetch(job.student_state))
    student = student.to(device)
    torch.manual_seed(job.batch_seed)  # the aligner's / branches' init
    extra, step = _kd_step_fn(job, teacher, student)
    if extra is not None:
        extra.to(device)  # in place: `step` holds the same module
    params = list(student.parameters()) + (list(extra.parameters()) if extra is not None else [])
    optimizer = make_optimizer(params, job.distill.optimizer, job.distill.lr)
    rng, blocks, history = derive_rng(job.batch_seed), job.public_blocks, []
    for _ in range(job.distill.steps):
        idx = rng.choice(len(blocks), size=min(job.batch_size, len(blocks)), replace=False)
        history.append(step(blocks[torch.as_tensor(idx)].to(device), optimizer))
    return {"state": cpu_state(student), "losses": [h["loss"] for h in history]}


# --------------------------------------------------------------------------- Phase III
@dataclass(frozen=True)
class TuneJob:
    """Phase III without Ray Train: the same batches, optimizer and clipping as the EP path."""

    moe_config: Any
    init_state: dict
    tokens: Any               # (steps, batch, T), as in ExpertParallelJob
    frozen: tuple[str, ...]
    optimizer: str
    lr: float
    grad_clip: float = 1.0


def tune_moe_in_process(job: TuneJob) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from orchestrator.train import freeze_matching
    from workloads.common.optim import make_optimizer
    from workloads.deepfusion.models import causal_lm_loss

    torch.set_num_threads(1)
    device = torch_device()
    model = AutoModelForCausalLM.from_config(job.moe_config)
    model.load_state_dict(job.init_state, strict=True)
    model = model.to(device)
    freeze_matching(model, job.frozen)
    optimizer = make_optimizer(model.parameters(), job.optimizer, job.lr)
    model.train()
    losses = []
    for batch in job.tokens:
        optimizer.zero_grad(set_to_none=True)
        loss = causal_lm_loss(model, batch.to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                       job.grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
    return {"state": cpu_state(model), "losses": losses}


def batch_plan(blocks, steps: int, batch_size: int, rng: np.random.Generator):
    """(steps, batch_size, T) blocks drawn without replacement within a step, seeded."""
    import torch

    idx = np.stack([rng.choice(len(blocks), size=batch_size, replace=len(blocks) < batch_size)
                    for _ in range(steps)])
    return blocks[torch.as_tensor(idx)]
