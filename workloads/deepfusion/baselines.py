"""Pure pieces of the baselines: FedJETS' compact MoE and the communication accounting.

FedJETS (Dun et al. 2023; SEEDS 1.6) [LIT + OURS]: every round, each device downloads a compact
MoE pruned from the global one (the shared non-expert weights plus `n` experts, 2 in FedJETS),
trains it locally and uploads it; the server averages each expert over the devices that trained
it and FedAvgs the shared weights and the gate rows. FedJETS routes a client with a pretrained
common expert; here the global gate's mean routing probability on the device's data picks the
experts [OURS].

Communication: DeepFusion uploads each on-device model once plus e_n (Eq. 5); FedJETS moves a
compact MoE down and up per device per round.
"""
from __future__ import annotations

import copy
import warnings
from typing import Sequence

import torch
from torch import nn

from workloads.deepfusion.clustering import average_weights

_EXPERT_TENSORS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj", "mlp.gate.weight")


def _num_experts_key(config) -> str:
    return {"deepseek_v3": "n_routed_experts", "mixtral": "num_local_experts"}.get(
        config.model_type, "num_experts")


def _is_expert_row(key: str) -> bool:
    return any(key.endswith(t) for t in _EXPERT_TENSORS)


@torch.no_grad()
def route_device_to_experts(moe: nn.Module, blocks: torch.Tensor, n: int = 2) -> list[int]:
    """The `n` experts with the highest mean routing probability (softmax of the router logits,
    averaged over tokens and layers) on a device's blocks."""
    probs = []
    hooks = [layer.mlp.gate.register_forward_hook(
        lambda _m, _i, out: probs.append(torch.softmax(out[0].float(), dim=-1).mean(0)))
        for layer in moe.model.layers]
    try:
        moe.eval()
        moe(input_ids=blocks)
    finally:
        for h in hooks:
            h.remove()
    return sorted(torch.stack(probs).mean(0).topk(n).indices.tolist())


def compact_moe(global_moe: nn.Module, expert_ids: Sequence[int]) -> nn.Module:
    """A compact MoE: the global shared weights plus the experts `expert_ids` and their gate rows."""
    config = copy.deepcopy(global_moe.config)
    setattr(config, _num_experts_key(config), len(expert_ids))
    config.num_experts_per_tok = min(config.num_experts_per_tok, len(expert_ids))
    with warnings.catch_warnings():  # DeepseekV3's empty shared expert
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        local = type(global_moe)(config)
    ids = torch.as_tensor(list(expert_ids))
    state = {k: (v[ids] if _is_expert_row(k) else v) for k, v in global_moe.state_dict().items()
             if not k.endswith("e_score_correction_bias")}
    local.load_state_dict(state, strict=False)
    return local


@torch.no_grad()
def merge_compact_moes(global_moe: nn.Module, compacts: Sequence[nn.Module],
                       expert_ids: Sequence[Sequence[int]],
                       weights: Sequence[float] | None = None) -> nn.Module:
    """FedJETS' server merge, in place: FedAvg of the shared weights over all devices; each
    global expert (and its gate row) averaged over the devices that trained it, else unchanged."""
    w = list(weights) if weights is not None else [1.0] * len(compacts)
    states = [c.state_dict() for c in compacts]
    shared = average_weights([{k: v for k, v in sd.items() if not _is_expert_row(k)
                               and not k.endswith("e_score_correction_bias")}
                              for sd in states], w)
    merged = dict(global_moe.state_dict())
    merged.update(shared)
    num = _num_experts_key(global_moe.config)
    for e in range(getattr(global_moe.config, num)):
        holders = [(i, list(ids).index(e)) for i, ids in enumerate(expert_ids) if e in ids]
        if not holders:
            continue
        for key in (k for k in merged if _is_expert_row(k)):
            rows = [states[i][key][slot] for i, slot in holders]
            ws = torch.tensor([w[i] for i, _ in holders], dtype=torch.float64)
            avg = sum(wi * r.double() for wi, r in zip(ws / ws.sum(), rows))
            merged[key] = merged[key].clone()
            merged[key][e] = avg.to(merged[key].dtype)
    global_moe.load_state_dict(merged)
    return global_moe


# --------------------------------------------------------------------------- communication
def fedjets_round_bytes(compact_bytes: int, num_devices: int, rounds: int = 1) -> int:
    """FedJETS traffic: every device downloads and uploads its compact MoE every round
    (2 * R * N * |local MoE|, SEEDS 5.1)."""
    return 2 * rounds * num_devices * compact_bytes


def deepfusion_upload_bytes(model_bytes: Sequence[int], embedding_dim: int,
                            dtype_bytes: int = 4) -> int:
    """DeepFusion's one-shot traffic: F_net = sum_n |m_n| (Eq. 5) plus each device's e_n."""
    return int(sum(model_bytes)) + len(model_bytes) * embedding_dim * dtype_bytes
