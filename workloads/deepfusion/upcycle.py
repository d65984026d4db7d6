"""Phase III, global MoE merge (Sec. IV-D, Fig. 6): K dense students -> one upcycled MoE.

Per MoE block l:
  - expert i <- the FFN of block l of student M_i                         (Eq. 12)
  - embeddings, attention, norms, lm_head <- (1/K) sum_i of the students' (Eq. 13)
  - a fresh gate (router), N(0, gate_std^2) [OURS: the paper only says "new"].
Then the experts are frozen and the rest (embedding, attention, gate, output) is tuned.

transformers 5.17 stores each layer's experts as fused 3-D tensors:
  mlp.experts.gate_up_proj  (K, 2I, H) = concat(gate_proj.weight, up_proj.weight) per expert
  mlp.experts.down_proj     (K, H, I)  = down_proj.weight per expert
  mlp.gate.weight           (K, H)     the router
(Qwen3MoeExperts, DeepseekV3Experts and MixtralExperts: `gate, up = linear(x, gate_up_proj[e])
.chunk(2)`.)
The DeepseekV3 MoE is built with no shared expert and routed_scaling_factor 1, so each block
computes exactly Eq. 4, y = sum_{i in topk} p_i y_i(x) [OURS].
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

from workloads.deepfusion.clustering import average_weights

EXPERT_KEYS = (".mlp.experts.", ".mlp.shared_experts.")


def moe_config(student_cfg, family: str, num_experts: int, top_k: int):
    """The MoE config whose dense base is `student_cfg`: expert width = the student's MLP width."""
    from transformers import DeepseekV3Config, MixtralConfig, Qwen3MoeConfig

    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k={top_k} must be in 1..K={num_experts}")
    base = student_cfg.to_dict()
    for key in ("architectures", "model_type", "transformers_version", "dtype"):
        base.pop(key, None)
    if family == "qwen3_moe":
        return Qwen3MoeConfig(**dict(base, num_experts=num_experts, num_experts_per_tok=top_k,
                                     moe_intermediate_size=student_cfg.intermediate_size,
                                     decoder_sparse_step=1, mlp_only_layers=[],
                                     norm_topk_prob=True, output_router_logits=False))
    if family == "deepseek_v3":
        return DeepseekV3Config(**dict(base, n_routed_experts=num_experts,
                                       num_experts_per_tok=top_k,
                                       moe_intermediate_size=student_cfg.intermediate_size,
                                       first_k_dense_replace=0, n_shared_experts=0, n_group=1,
                                       topk_group=1, routed_scaling_factor=1.0,
                                       norm_topk_prob=True))
    if family == "mixtral":  # a LLaMA with MoE FFNs: the dense LLaMA student's exact upcycle
        return MixtralConfig(**dict(base, num_local_experts=num_experts,
                                    num_experts_per_tok=top_k,
                                    intermediate_size=student_cfg.intermediate_size,
                                    output_router_logits=False))
    raise ValueError(f"unknown MoE family {family!r}")


def expert_width(moe_cfg) -> int:
    """An expert's hidden MLP width (Mixtral calls it `intermediate_size`)."""
    return getattr(moe_cfg, "moe_intermediate_size", None) or moe_cfg.intermediate_size


def _moe_class(family: str):
    from transformers import DeepseekV3ForCausalLM, MixtralForCausalLM, Qwen3MoeForCausalLM

    return {"qwen3_moe": Qwen3MoeForCausalLM, "deepseek_v3": DeepseekV3ForCausalLM,
            "mixtral": MixtralForCausalLM}[family]


def upcycle(students: Sequence[nn.Module], family: str, top_k: int = 2, seed: int = 0,
            gate_std: float = 0.02) -> nn.Module:
    """The global MoE M_MoE from K = len(students) dense students of one family (Eqs. 12-13)."""
    K = len(students)
    if K < 2:
        raise ValueError("an MoE needs at least two students (experts)")
    shapes = {tuple((k, tuple(v.shape)) for k, v in s.state_dict().items()) for s in students}
    if len(shapes) != 1:
        raise ValueError("all students must share one architecture to be upcycled")
    config = moe_config(students[0].config, family, K, top_k)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        torch.manual_seed(seed)
        moe = _moe_class(family)(config)
    states = [s.state_dict() for s in students]
    shared = average_weights([{k: v for k, v in sd.items() if ".mlp." not in k}
                              for sd in states])  # Eq. 13
    missing, _ = moe.load_state_dict(shared, strict=False)
    left = [k for k in missing if not any(e in k for e in EXPERT_KEYS) and ".mlp.gate." not in k]
    if left:
        raise RuntimeError(f"upcycle left MoE weights unset: {left[:5]}")
    with torch.no_grad():
        for l, layer in enumerate(moe.model.layers):
            experts = layer.mlp.experts
            for i, sd in enumerate(states):  # Eq. 12
                p = f"model.layers.{l}.mlp."
                experts.gate_up_proj[i].copy_(torch.cat([sd[p + "gate_proj.weight"],
                                                         sd[p + "up_proj.weight"]], dim=0))
                experts.down_proj[i].copy_(sd[p + "down_proj.weight"])
            gen = torch.Generator().manual_seed(seed * 1_000 + l)
            layer.mlp.gate.weight.copy_(torch.randn(layer.mlp.gate.weight.shape,
                                                    generator=gen) * gate_std)
    return moe


def expert_ffn(moe: nn.Module, layer: int, expert: int) -> dict[str, torch.Tensor]:
    """Expert `expert` of block `layer` as dense gate/up/down weights (inverse of Eq. 12)."""
    ex = moe.model.layers[layer].mlp.experts
    gate, up = ex.gate_up_proj[expert].chunk(2, dim=0)
    return {"gate_proj.weight": gate, "up_proj.weight": up,
            "down_proj.weight": ex.down_proj[expert]}


def freeze_experts(moe: nn.Module) -> list[str]:
    """Freeze the FFN experts; return the names left trainable (embeddings, attention, norms,
    gate, output) for Phase III tuning."""
    trainable = []
    for name, p in moe.named_parameters():
        p.requires_grad_(not any(e in name for e in EXPERT_KEYS))
        if p.requires_grad:
            trainable.append(name)
    return trainable
