"""Ray Train + DeepSpeed launch helpers: the gloo/NCCL choice, the DeepSpeed config, expert parallelism.

Driver side: `deepspeed_config` builds the DeepSpeed dict; `run_distributed` runs any per-worker loop
under a Ray Train `TorchTrainer` (the Train V2 API, the default in Ray 2.60) and restarts it from
the last reported checkpoint when a worker fails.

Worker side: `expert_parallel_train_loop` fine-tunes a Hugging Face MoE causal LM with DeepSpeed
AutoEP. The `expert_parallel` config section (`enabled`, `autoep_size`, `preset_model`) makes
`deepspeed.initialize` swap each HF MoE block for an `AutoEPMoELayer` that holds
`num_experts / autoep_size` experts per rank and exchanges tokens with all-to-all. AutoEP stores
experts in its own grouped layout (`experts.w1/w2/w3`, `router.gate`) and DeepSpeed has no export
back to HF names for ZeRO 0-2, so `consolidated_state_dict` gathers the shards and maps them back:
the result loads into a plain HF model with `load_state_dict(strict=True)`.

deepspeed and transformers are imported inside functions only (Ray + DeepSpeed import crash on
CPU workers). The core knows no workload: a workload passes an `ExpertParallelJob` (pure data).
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from orchestrator.config import BadInput

log = logging.getLogger(__name__)

DS_DIR, MODEL_FILE, STATE_FILE = "deepspeed", "model.pt", "train_state.json"
Reporter = Callable[[dict, Optional[str]], None]  # (metrics, checkpoint dir or None)


# transformers 5.23 turned `output_capturing._CAN_RECORD_REGISTRY` into a class whose get() takes
# one argument; DeepSpeed's AutoEP (0.19.8, the newest release) calls get(key, default) on it.
AUTOEP_BREAKING_TRANSFORMERS = "5.23"
NEWEST_DEEPSPEED_CHECKED = "0.19.8"


class IncompatiblePackages(BadInput):
    """Installed package versions that cannot work together: one line, exit 2 (a fix, not a bug)."""


def autoep_incompatibility(transformers_version: str, deepspeed_version: str) -> str | None:
    """Why this transformers/DeepSpeed pair cannot run AutoEP, with the fix; None if it can."""
    from packaging.version import Version

    if (Version(transformers_version) >= Version(AUTOEP_BREAKING_TRANSFORMERS)
            and Version(deepspeed_version) <= Version(NEWEST_DEEPSPEED_CHECKED)):
        return (f"DeepSpeed {deepspeed_version}'s expert parallelism (AutoEP) fails with "
                f"transformers {transformers_version} (>= {AUTOEP_BREAKING_TRANSFORMERS} changed "
                f"the registry AutoEP patches); install the verified pair with "
                f"`pip install -c requirements.lock transformers deepspeed` "
                f"(transformers 5.22.2, deepspeed 0.19.8)")
    return None


def check_autoep_compatible() -> None:
    """Stop before the first expert-parallel step, not with a traceback from inside DeepSpeed."""
    from importlib.metadata import version

    problem = autoep_incompatibility(version("transformers"), version("deepspeed"))
    if problem:
        raise IncompatiblePackages(problem)


def backend_for(use_gpu: bool) -> str:
    """NCCL between GPUs, gloo on CPU (DeepSpeed's CPU accelerator asks for oneCCL, which we lack)."""
    return "nccl" if use_gpu else "gloo"


def deepspeed_config(*, micro_batch_size: int, ep_size: int, preset: str | None,
                     zero_stage: int = 0, lr: float = 1e-3, grad_clip: float = 1.0,
                     use_gpu: bool = False) -> dict:
    """The DeepSpeed dict: AdamW, ZeRO stage, clipping, bf16 on GPU only, AutoEP with `ep_size`.

    ZeRO 1/2 with AutoEP need at least one trainable expert: DeepSpeed 0.19.8 asserts an MoE
    param group exists, so with every expert frozen (attention-only tuning) use stage 0.
    """
    check_autoep_compatible()  # the driver builds this first, before any Ray Train worker
    if zero_stage >= 3:
        raise ValueError("ZeRO-3 partitions AutoEP experts over replica groups and DeepSpeed 0.19.8 "
                         "cannot consolidate them; use zero_stage 0, 1 or 2")
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": grad_clip,
        # torch's AdamW on CPU: DeepSpeed's fused Adam would JIT-compile a C++ op on every fresh node
        "optimizer": {"type": "AdamW", "params": {"lr": lr, "weight_decay": 0.0,
                                                  "torch_adam": not use_gpu}},
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": use_gpu},
        "expert_parallel": {"enabled": True, "autoep_size": ep_size, "preset_model": preset},
        "steps_per_print": 1_000_000,
    }


@dataclass(frozen=True)
class DistributedResult:
    metrics: dict            # the last metrics rank 0 reported
    checkpoint_path: str | None  # the last reported checkpoint, merged from every worker


def run_distributed(train_loop: Callable[[dict], None], loop_config: dict, num_workers: int,
                    use_gpu: bool, storage_path: str, name: str, max_failures: int = 1,
                    cpus_per_worker: float = 1, gpus_per_worker: float = 1) -> DistributedResult:
    """Run `train_loop(loop_config)` on `num_workers` Ray Train workers with a torch process group.

    A failed worker restarts the whole group (up to `max_failures` times); the loop resumes from
    `ray.train.get_checkpoint()`, the last checkpoint it reported. In Train V2 the result's metrics
    are those reported with the last checkpoint, so a loop should end with a checkpointed report.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        torch_config=TorchConfig(backend=backend_for(use_gpu)),
        run_config=RunConfig(name=name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             worker_runtime_env={"env_vars": _worker_env()}),
    )
    result = trainer.fit()
    path = result.checkpoint.path if result.checkpoint else None
    return DistributedResult(metrics=dict(result.metrics or {}), checkpoint_path=path)


def _worker_env() -> dict[str, str]:
    """Workers import this checkout's `orchestrator`, not another one installed with `pip -e`."""
    root = str(Path(__file__).resolve().parents[1])
    rest = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{root}{os.pathsep}{rest}" if rest else root}


# ---------------------------------------------------------------------------------------------
# worker side: expert-parallel fine-tuning of an HF MoE causal LM
# ---------------------------------------------------------------------------------------------

@dataclass
class ExpertParallelJob:
    """One expert-parallel fine-tuning run; pure data so it pickles to the workers."""

    model_config: Any                 # a transformers PretrainedConfig of an MoE causal LM
    tokens: Any                       # int64 [num_batches, world * micro_batch, seq], cycled per step
    eval_tokens: Any                  # int64 [batch, seq], the same batch on every rank
    ds_config: dict                   # from `deepspeed_config`
    steps: int = 4                    # optimizer steps
    frozen: tuple[str, ...] = ()      # regexes: an HF parameter name matching one is frozen
    seed: int = 0                     # model init seed, the same on every rank
    checkpoint_every: int = 0         # also checkpoint every k steps (0: only at the end)
    # Ray Train V2 takes one report per controller poll (2 s): a report sooner blocks the step
    report_interval_s: float = 2.0
    fail_once_at_step: Optional[int] = None  # fault drill: the last rank dies here on a fresh start
    init_state: Optional[dict] = None  # start from these HF weights (e.g. an upcycled MoE), not `seed`


def build_causal_lm(model_config: Any, seed: int):
    """The plain HF model every rank (and the driver, to check) builds from the same seed."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(model_config)


def freeze_matching(model, patterns: tuple[str, ...]) -> list[str]:
    """Freeze every parameter whose name matches a pattern; returns the frozen names."""
    frozen = [n for n, p in model.named_parameters() if any(re.search(r, n) for r in patterns)]
    for name in frozen:
        model.get_parameter(name).requires_grad_(False)
    return frozen


@dataclass
class ExpertParallelModel:
    """A DeepSpeed engine with AutoEP, plus what is needed to write it back in HF names."""

    engine: Any
    specs: list                       # AutoEP's MoELayerSpec per replaced block (HF names)
    template: dict[str, tuple]        # the plain model's state_dict keys -> shapes

    @classmethod
    def wrap(cls, model, ds_config: dict) -> "ExpertParallelModel":
        import deepspeed
        from deepspeed.module_inject.auto_ep import AutoEP
        from deepspeed.module_inject.auto_ep_config import parse_autoep_config

        check_autoep_compatible()  # torchrun-launched loops (bench/moe_ep.py) never see the driver's
        template = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        specs = AutoEP(model, parse_autoep_config(ds_config["expert_parallel"])).ep_parser()
        trainable = [p for p in model.parameters() if p.requires_grad]
        engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=ds_config)
        return cls(engine, specs, template)

    def moe_layers(self) -> dict[str, Any]:
        return {s.moe_module_name: self.engine.module.get_submodule(s.moe_module_name)
                for s in self.specs}

    def train_step(self, tokens):
        """One forward/backward/step on this rank's micro-batch; this rank's loss (a tensor)."""
        tokens = tokens.to(self.engine.device)  # DeepSpeed moved the model, not the batches
        out = self.engine(input_ids=tokens, labels=tokens)
        self.engine.backward(out.loss)
        self.engine.step()
        return out.loss.detach()

    def eval_loss(self, tokens) -> float:
        """Causal-LM loss on one batch (every rank must call: experts answer via all-to-all)."""
        import torch

        self.engine.eval()
        tokens = tokens.to(self.engine.device)
        with torch.no_grad():
            loss = self.engine(input_ids=tokens, labels=tokens).loss
        self.engine.train()
        return _mean_over_ranks(loss)

    def experts_by_rank(self) -> dict[str, list[list[int]]]:
        """For each MoE block, the global expert indices each EP rank actually holds."""
        import torch.distributed as dist
        from deepspeed.checkpoint.autoep_affine import autoep_experts_for_rank

        out = {}
        for name, layer in self.moe_layers().items():
            mine = list(autoep_experts_for_rank(layer.expert_placement_descriptor, layer.ep_rank))
            assert layer.experts.w1.shape[0] == len(mine), "placement and held weights disagree"
            held: list = [None] * layer.ep_size
            dist.all_gather_object(held, mine, group=layer.ep_group)
            out[name] = held
        return out

    def consolidated_state_dict(self) -> dict:
        """The full model in HF names and shapes, on every rank (collective: all ranks call)."""
        own = self.engine.module.state_dict()
        prefixes = tuple(s.moe_module_name + "." for s in self.specs)
        out = {k: v for k, v in own.items() if not k.startswith(prefixes)}
        for spec in self.specs:
            out.update(_hf_moe_block(self.engine.module.get_submodule(spec.moe_module_name),
                                     spec, own, self.template))
        missing, extra = self.template.keys() - out.keys(), out.keys() - self.template.keys()
        if missing or extra:
            raise RuntimeError(f"AutoEP -> HF mapping incomplete: missing {sorted(missing)}, "
                               f"unexpected {sorted(extra)}")
        return {k: out[k].detach().cpu().clone() for k in self.template}


def _hf_moe_block(layer, spec, own: dict, template: dict) -> dict:
    """One AutoEPMoELayer's router, shared experts and gathered experts under the HF names."""
    p = spec.moe_module_name + "."
    renames = {"router.gate.": f"{spec.router_name}.",  # AutoEP's router wraps an nn.Linear
               "router.": f"{spec.router_name}.",
               "shared_experts.": f"{spec.shared_experts_name}.",
               "shared_experts_gate.": f"{spec.shared_experts_gate_name}."}
    out = {}
    for key, value in own.items():
        rest = key[len(p):] if key.startswith(p) else None
        src = next((s for s in renames if rest is not None and rest.startswith(s)), None)
        if src is not None:  # anything else (the router alias, experts.w*) is not an HF key
            out[p + renames[src] + rest[len(src):]] = value
    w1, w2, w3 = (_gather_experts(layer, getattr(layer.experts, w)) for w in ("w1", "w2", "w3"))
    out.update(_hf_expert_weights(spec, p + spec.experts_name, w1, w2, w3, template))
    return out


def _gather_experts(layer, local):
    """[num_local, ...] on each EP rank -> [num_experts, ...] in global expert order."""
    import torch
    import torch.distributed as dist
    from deepspeed.checkpoint.autoep_affine import autoep_experts_for_rank

    parts = [torch.empty_like(local) for _ in range(layer.ep_size)]
    dist.all_gather(parts, local.detach().contiguous(), group=layer.ep_group)
    full = local.new_empty((layer.num_experts, *local.shape[1:]))
    for ep_rank, part in enumerate(parts):
        full[list(autoep_experts_for_rank(layer.expert_placement_descriptor, ep_rank))] = part
    return full


def _hf_expert_weights(spec, prefix: str, w1, w2, w3, template: dict) -> dict:
    """Undo AutoEP's repack (deepspeed/moe/ep_repack.py): w1=gate, w3=up, w2=down."""
    import torch
    from deepspeed.moe.fused_expert_layout import classify_fused_gate_up_layout

    names = (spec.expert_w1_name, spec.expert_w2_name, spec.expert_w3_name)
    if spec.expert_storage == "module_list":
        out = {}
        for i in range(w1.shape[0]):
            for name, w in zip(names, (w1, w2, w3)):
                key = f"{prefix}.{i}.{name}"
                if name is not None:
                    out[key + ".weight" if key + ".weight" in template else key] = w[i]
        return out
    if spec.expert_w3_name is not None:
        return {f"{prefix}.{n}": w for n, w in zip(names, (w1, w2, w3))}
    gate_up_key, down_key = f"{prefix}.{names[0]}", f"{prefix}.{names[1]}"
    layout = classify_fused_gate_up_layout(template[gate_up_key], template[down_key])
    gate_up = torch.cat([w1, w3], dim=1)
    if layout.needs_transpose:
        return {gate_up_key: gate_up.transpose(1, 2), down_key: w2.transpose(1, 2)}
    return {gate_up_key: gate_up, down_key: w2}


def _mean_over_ranks(*values) -> float | list[float]:
    """Averages over ranks in one all-reduce (a flag rides along with the loss for free)."""
    import torch
    import torch.distributed as dist

    # on the losses' device: NCCL reduces only CUDA tensors, and stack refuses to mix devices
    device = next((v.device for v in values if isinstance(v, torch.Tensor)), torch.device("cpu"))
    packed = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device).detach()
                          for v in values])
    dist.all_reduce(packed)
    means = (packed / dist.get_world_size()).tolist()
    return means[0] if len(means) == 1 else means


def run_expert_parallel(job: ExpertParallelJob, rank: int, world: int, report: Reporter,
                        resume_dir: str | None = None) -> dict:
    """The training loop, free of Ray; returns the last metrics.

    Every step's loss lands in `metrics["losses"]`; `report(metrics, ckpt_dir)` is called at
    checkpoints, at the end, and once `report_interval_s` has passed on rank 0 (decided in the
    loss all-reduce, so every rank calls `report` equally often). Checkpoints hold DeepSpeed's
    sharded state (to resume) and, from rank 0, the consolidated HF `model.pt` (to deploy).
    """
    model = build_causal_lm(job.model_config, job.seed)
    if job.init_state is not None:
        model.load_state_dict(job.init_state, strict=True)
    frozen = freeze_matching(model, job.frozen)
    ep = ExpertParallelModel.wrap(model, job.ds_config)
    start, losses = _resume(ep.engine, resume_dir)
    micro = job.ds_config["train_micro_batch_size_per_gpu"]
    metrics: dict = {"resumed_from_step": start, "frozen_params": len(frozen), "losses": losses,
                     "step_seconds": []}
    reported = time.perf_counter()
    for step in range(start, job.steps):
        if job.fail_once_at_step == step and resume_dir is None and rank == world - 1:
            raise RuntimeError(f"fault drill: rank {rank} dies at step {step}")
        began = time.perf_counter()
        batch = job.tokens[step % len(job.tokens)][rank * micro:(rank + 1) * micro]
        due = rank == 0 and began - reported >= job.report_interval_s
        loss, due = _mean_over_ranks(ep.train_step(batch), float(due))
        metrics.update(step=step + 1, loss=loss, losses=[*metrics["losses"], loss])
        last = step + 1 == job.steps
        if last:
            metrics.update(eval_loss=ep.eval_loss(job.eval_tokens),
                           experts_by_rank=ep.experts_by_rank())
        if last or (job.checkpoint_every and (step + 1) % job.checkpoint_every == 0):
            with tempfile.TemporaryDirectory() as tmp:
                _save(ep, tmp, metrics, rank)
                report(dict(metrics), tmp)
            reported = time.perf_counter()
            continue
        if due:
            report(dict(metrics), None)  # a barrier under Ray Train: part of this step's time
            reported = time.perf_counter()
        metrics["step_seconds"] = [*metrics["step_seconds"], time.perf_counter() - began]
    return metrics


def _save(ep: ExpertParallelModel, directory: str, metrics: dict, rank: int) -> None:
    """Every rank writes its DeepSpeed shards; rank 0 adds the HF model and the loss history."""
    import torch

    ep.engine.save_checkpoint(os.path.join(directory, DS_DIR), tag="last")
    weights = ep.consolidated_state_dict()
    if rank == 0:
        torch.save(weights, os.path.join(directory, MODEL_FILE))
        history = {"step": metrics["step"], "losses": metrics["losses"]}
        Path(directory, STATE_FILE).write_text(json.dumps(history))


def _resume(engine, directory: str | None) -> tuple[int, list[float]]:
    """Load DeepSpeed's state (weights, optimizer, expert shards); the step and loss history."""
    if directory is None:
        return 0, []
    engine.load_checkpoint(os.path.join(directory, DS_DIR), tag="last")
    state = json.loads(Path(directory, STATE_FILE).read_text())
    log.info("resumed expert-parallel training at step %d", state["step"])
    return state["step"], state["losses"]


def expert_parallel_train_loop(config: dict) -> None:
    """`run_distributed`'s loop for `config={"job": ExpertParallelJob}` under Ray Train."""
    import deepspeed
    import ray.train
    import torch.distributed as dist

    from orchestrator.runtime import own_scheduling_group

    own_scheduling_group()  # ranks wait on each other: schedule each as torchrun would
    deepspeed.init_distributed(dist_backend=dist.get_backend())  # wraps Ray Train's group
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    checkpoint = ray.train.get_checkpoint()

    def report(metrics: dict, directory: str | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(directory) if directory else None
        ray.train.report(metrics, checkpoint=ckpt)

    if checkpoint is None:
        run_expert_parallel(config["job"], rank, world, report)
        return
    with checkpoint.as_directory() as directory:
        resume_dir = tempfile.mkdtemp(prefix="ep-resume-")
        _copy_tree(directory, resume_dir)  # the view may vanish once we report a new checkpoint
    run_expert_parallel(config["job"], rank, world, report, resume_dir)


def _copy_tree(src: str, dst: str) -> None:
    import shutil

    shutil.copytree(src, dst, dirs_exist_ok=True)


def load_consolidated(checkpoint_path: str) -> dict:
    """The HF state dict a run saved, for `model.load_state_dict(..., strict=True)`."""
    import torch

    return torch.load(os.path.join(checkpoint_path, MODEL_FILE), map_location="cpu",
                      weights_only=True)
