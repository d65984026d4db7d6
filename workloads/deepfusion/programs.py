"""What runs off the driver: device programs on the federated pool, Ray tasks, Ray Train loops.

* `LocalLmProgram` (Phase 0, one round, `Collect` reducer): a device builds the on-device LLM it
  picked by memory, trains it on its private shard and uploads it once with its embedding e_n.
* `FedJetsProgram` (FedJETS rounds, `Collect` reducer): a device routes its data through the
  global MoE, takes the compact MoE of its top experts, trains it and uploads it every round.
* `distill_cluster` (Phase II, a `ctx.map` task): proxy teacher -> one dense student per KD
  method (VAA, no-VAA, OFA-KD, FedMKT, CE only), one teacher forward per batch for all.
* `tune_moe_in_process` (a `ctx.map` task): Phase III without Ray Train (`run.phase3:
  ray_task`): upcycle, tune and score one method's MoE.

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
    eval_blocks: Any = None   # held-out blocks each device scores its model on (the simulation's
                              # record, beside the proxies' in Phase I; nothing trains on them)
    eval_batch_size: int = 16


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
        from workloads.deepfusion.metrics import evaluate_lm
        from workloads.common.optim import make_optimizer
        from workloads.deepfusion.models import (device_model_with, param_bytes,
                                                 train_memory_bytes)

        s, seed = self.spec, task.seed
        texts = s.texts[device]
        blocks = lm_blocks(texts, self.tokenizer, s.seq_len)
        model = device_model_with(s.models[device], s.size, s.releases[s.models[device]],
                                  vocab_size(s.vocab)).to(torch_device())
        optimizer = make_optimizer(model.parameters(), s.optimizer, s.lr)
        losses = _train_steps(model, blocks, s.steps, s.batch_size, optimizer,
                              derive_rng(seed, 101, device))
        state = cpu_state(model)
        e_n = torch.as_tensor(device_embedding(texts, self.encoder), dtype=torch.float32)
        n_params = sum(p.numel() for p in model.parameters())
        flops = 6.0 * n_params * s.steps * min(s.batch_size, len(blocks)) * s.seq_len
        model_bytes = param_bytes(model, s.dtype_bytes)
        held_out = {} if s.eval_blocks is None else {"held_out_log_ppl": evaluate_lm(
            model, s.eval_blocks.to(torch_device()), s.eval_batch_size)["log_ppl"]}
        metrics = {**held_out, "loss": losses[-1] if losses else float("nan"),
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
TEACHER_CACHE_MB = 1024  # a Phase II task keeps its teacher's outputs for every step up to this


@dataclass(frozen=True)
class DistillJob:
    """Phase II of one cluster for every KD method in `methods` (one student each)."""

    methods: tuple            # of deepfusion | deepfusion_no_vaa | ofa_kd | fedmkt | student_ce_only
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


def _kd_step_fn(job: DistillJob, method: str, teacher_width: int, student):
    """(extra trainable module or None, step(batch, teacher output, optimizer) -> loss parts)."""
    from workloads.deepfusion import distill as kd
    from workloads.deepfusion.vaa import LinearFeatureMap, ViewAlignedAttention

    d, v, b = job.distill, job.vaa, job.baselines
    hs, ht, T = student.config.hidden_size, teacher_width, job.public_blocks.shape[1]
    if method == "student_ce_only":  # the control: the student on cross-entropy alone
        return None, lambda x, t_out, opt: kd.ce_step(student, x, opt)
    if method == "fedmkt":
        return None, lambda x, t_out, opt: kd.fedmkt_step(t_out, student, x, opt,
                                                          b.fedmkt_lambda, b.fedmkt_temperature)
    if method == "ofa_kd":
        branches = kd.OfaBranches(hs, student.config.vocab_size, v.stages)
        w = kd.OfaWeights(b.ofa_eps, b.ofa_temperature, b.ofa_kd_weight, b.ofa_stage_weight)
        return branches, lambda x, t_out, opt: kd.ofa_step(t_out, student, branches, x, opt, w)
    aligner = (ViewAlignedAttention(hs, ht, T, v.stages, v.queries, v.dim, v.heads,
                                    v.position_embedding) if method == "deepfusion"
               else LinearFeatureMap(hs, ht, v.stages))
    w = kd.KDWeights(d.alpha, d.beta, d.temperature)
    return aligner, lambda x, t_out, opt: kd.distill_step(t_out, student, aligner, x, opt, w)


def _teacher_outputs(teacher, batches: list, needed: bool):
    """i -> the teacher's output on batch i (None when no method needs it): every output
    computed once and kept when they fit `TEACHER_CACHE_MB`, else recomputed on each call."""
    from workloads.deepfusion.distill import teacher_forward

    if not needed or not batches:  # distill.steps: 0 draws no batch
        return lambda i: None
    c = teacher.config
    floats = batches[0].numel() * (c.vocab_size + (c.num_hidden_layers + 1) * c.hidden_size)
    if 4 * floats * len(batches) > TEACHER_CACHE_MB * 2**20:
        return lambda i: teacher_forward(teacher, batches[i])
    return [teacher_forward(teacher, x) for x in batches].__getitem__


def distill_cluster(job: DistillJob) -> dict[str, dict]:
    """Phase II for one cluster: {method: {"state": the student's, "losses": its history}}. Every
    method draws the same batches from `batch_seed`, so the proxy teacher runs once per batch
    for all of them."""
    import torch

    from workloads.deepfusion.models import device_model_with

    torch.set_num_threads(1)
    device = torch_device()
    teacher = device_model_with(job.teacher_name, job.size, fetch(job.teacher_state),
                                job.vocab_size).to(device)
    rng, blocks = derive_rng(job.batch_seed), job.public_blocks
    batches = [blocks[torch.as_tensor(rng.choice(len(blocks), size=min(job.batch_size,
                                                                     len(blocks)),
                                                 replace=False))].to(device)
               for _ in range(job.distill.steps)]
    teacher_out = _teacher_outputs(teacher, batches,
                                   any(m != "student_ce_only" for m in job.methods))
    start = fetch(job.student_state) if job.student_state is not None else None
    return {m: _distill_student(job, m, teacher.config.hidden_size, start, batches, teacher_out)
            for m in job.methods}


def _distill_student(job: DistillJob, method: str, teacher_width: int, start: dict | None,
                     batches: list, teacher_out) -> dict:
    """One method's student, from `start` (or its seed), through every batch."""
    import torch

    from workloads.common.optim import make_optimizer
    from workloads.common.tiny_lm import causal_lm_with_state
    from workloads.deepfusion.models import build_student, student_config

    device = torch_device()
    student = (build_student(job.moe_family, job.size, seed=job.student_seed,
                             source=job.student_source, vocab_size=job.vocab_size)
               if start is None else
               causal_lm_with_state(student_config(job.moe_family, job.size, job.student_source,
                                                   job.vocab_size), start)).to(device)
    torch.manual_seed(job.batch_seed)  # the aligner's / branches' init
    extra, step = _kd_step_fn(job, method, teacher_width, student)
    if extra is not None:
        extra.to(device)  # in place: `step` holds the same module
    params = list(student.parameters()) + (list(extra.parameters()) if extra is not None else [])
    optimizer = make_optimizer(params, job.distill.optimizer, job.distill.lr)
    losses = [step(x, teacher_out(i), optimizer)["loss"] for i, x in enumerate(batches)]
    return {"state": cpu_state(student), "losses": losses}


# --------------------------------------------------------------------------- Phase III
@dataclass(frozen=True)
class Upcycling:
    """How K dense students become the MoE (Eqs. 12-13)."""

    moe_family: str
    size: str
    source: Any               # the pretrained model the students' shape comes from, or None
    vocab_size: Any
    top_k: int
    seed: int                 # the fresh gate's
    gate_std: float


def upcycle_students(states: list[dict], u: Upcycling):
    """The MoE upcycled from the students whose weights are `states`."""
    from workloads.common.tiny_lm import causal_lm_with_state
    from workloads.deepfusion.models import student_config
    from workloads.deepfusion.upcycle import upcycle

    config = student_config(u.moe_family, u.size, u.source, u.vocab_size)
    return upcycle([causal_lm_with_state(config, s) for s in states], u.moe_family, u.top_k,
                   u.seed, u.gate_std)


@dataclass(frozen=True)
class Scoring:
    """The held-out data every final model is scored on (Tables I and II)."""

    test_blocks: Any
    answers: Any              # (ids, mask) of held-out records (answer-only accuracy), or None
    round_blocks: int         # FedJETS is scored on the first this many after each round
    batch_size: int


def score(model, s: Scoring) -> dict:
    """Table I/II on the test blocks (`final`), and the log-PPL on FedJETS' round blocks, for its
    bytes "at equal quality" (the same number when those are all the test blocks)."""
    from workloads.deepfusion.metrics import evaluate_lm

    final = evaluate_lm(model, s.test_blocks, s.batch_size, s.answers)
    on_rounds = final["log_ppl"] if s.round_blocks >= len(s.test_blocks) else \
        evaluate_lm(model, s.test_blocks[:s.round_blocks], s.batch_size)["log_ppl"]
    return {"final": final, "round_blocks_log_ppl": on_rounds}


@dataclass(frozen=True)
class TuneJob:
    """Phase III without Ray Train, in one task: upcycle the K students, tune the MoE on the same
    batches with the same optimizer and clipping as the EP path, score it."""

    students: list            # the K students' weights (`runtime.share` references or dicts)
    upcycling: Upcycling
    tokens: Any               # (steps, batch, T), as in ExpertParallelJob; None: no tuning
    frozen: tuple[str, ...]
    optimizer: str
    lr: float
    scoring: Scoring
    grad_clip: float = 1.0


def tune_moe_in_process(job: TuneJob) -> dict:
    """{"losses": per step, "final": ..., "round_blocks_log_ppl": ...} (`score`)."""
    import torch

    from orchestrator.train import freeze_matching
    from workloads.common.optim import make_optimizer
    from workloads.deepfusion.models import causal_lm_loss

    torch.set_num_threads(1)
    device = torch_device()
    model = upcycle_students([fetch(s) for s in job.students], job.upcycling).to(device)
    freeze_matching(model, job.frozen)
    optimizer = make_optimizer(model.parameters(), job.optimizer, job.lr)
    model.train()
    losses = []
    for batch in job.tokens if job.tokens is not None else ():
        optimizer.zero_grad(set_to_none=True)
        loss = causal_lm_loss(model, batch.to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                       job.grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
    return {"losses": losses, **score(model.to("cpu"), job.scoring)}


def batch_plan(blocks, steps: int, batch_size: int, rng: np.random.Generator):
    """(steps, batch_size, T) blocks drawn without replacement within a step, seeded."""
    import torch

    idx = np.stack([rng.choice(len(blocks), size=batch_size, replace=len(blocks) < batch_size)
                    for _ in range(steps)])
    return blocks[torch.as_tensor(idx)]
