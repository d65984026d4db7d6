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

_EXPERT_TENSORS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj", "mlp.gate.weight")


def _num_experts_key(config) -> str:
    return {"deepseek_v3": "n_routed_experts", "mixtral": "num_local_experts"}.get(
        config.model_type, "num_experts")


def num_experts(config) -> int:
    """The MoE's routed experts, whatever its family calls them."""
    return getattr(config, _num_experts_key(config))


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
    from transformers.initialization import no_init_weights

    config = copy.deepcopy(global_moe.config)
    setattr(config, _num_experts_key(config), len(expert_ids))
    config.num_experts_per_tok = min(config.num_experts_per_tok, len(expert_ids))
    with warnings.catch_warnings(), no_init_weights():  # every weight is copied in below
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        local = type(global_moe)(config)  # DeepseekV3's empty shared expert warns
    local.tie_weights()
    ids = torch.as_tensor(list(expert_ids))
    state = {k: (v[ids] if _is_expert_row(k) else v) for k, v in global_moe.state_dict().items()
             if not k.endswith("e_score_correction_bias")}
    missing, _ = local.load_state_dict(state, strict=False)
    if [k for k in missing if not k.endswith("e_score_correction_bias")]:
        raise RuntimeError(f"compact MoE weights left unset: {missing[:5]}")
    return local


class ExpertMergeSums:
    """FedJETS' server merge as running sums, so each Ray actor folds its devices' compact MoEs
    one at a time and hands the driver one global-sized sum (a round's 16 compact MoEs never sit
    in memory together). The engine's reducer protocol: `partial` per actor, `combine` across.

    A sum is {"shared": {key: sum_n w_n x_n}, "shared_w": sum_n w_n, "experts": {key: [E, ...]
    sum of w_n times the device's row for expert e}, "expert_w": [E] weights}; `merged_state`
    divides it out (float64 throughout, like `average_weights`)."""

    def __init__(self, num_experts: int):
        self.num_experts = num_experts

    def fold(self, acc: dict | None, state: dict, expert_ids: Sequence[int],
             weight: float) -> dict:
        if acc is None:
            acc = {"shared": {}, "shared_w": 0.0, "experts": {},
                   "expert_w": torch.zeros(self.num_experts, dtype=torch.float64)}
        ids = torch.as_tensor(list(expert_ids))
        for k, v in state.items():
            if k.endswith("e_score_correction_bias") or not v.is_floating_point():
                continue
            if _is_expert_row(k):
                if k not in acc["experts"]:
                    acc["experts"][k] = torch.zeros((self.num_experts, *v.shape[1:]),
                                                    dtype=torch.float64)
                acc["experts"][k][ids] += weight * v.double()
            else:
                acc["shared"][k] = acc["shared"].get(k, 0) + weight * v.double()
        acc["shared_w"] += weight
        acc["expert_w"][ids] += weight
        return acc

    def partial(self, updates) -> dict | None:
        acc = None
        for u in updates:
            if u.weight > 0:  # devices without a block sat out
                acc = self.fold(acc, u.update["state"], u.update["experts"].tolist(), u.weight)
        return acc

    def combine(self, partials: Sequence[dict | None]) -> dict | None:
        """None when no device took part (the round loop then keeps the state)."""
        parts = [p for p in partials if p is not None]
        if not parts:
            return None
        out = parts[0]
        for p in parts[1:]:
            for group in ("shared", "experts"):
                for k, v in p[group].items():
                    out[group][k] = out[group][k] + v
            out["shared_w"] += p["shared_w"]
            out["expert_w"] += p["expert_w"]
        return out

    @staticmethod
    def merged_state(global_state: dict, sums: dict) -> dict:
        """FedAvg of the shared weights over all devices; each global expert (and its gate row)
        averaged over the devices that trained it, else unchanged."""
        merged = dict(global_state)
        for k, v in sums["shared"].items():
            merged[k] = (v / sums["shared_w"]).to(global_state[k].dtype)
        trained = sums["expert_w"] > 0
        for k, v in sums["experts"].items():
            row = merged[k].clone()
            w = sums["expert_w"][trained].view(-1, *[1] * (v.dim() - 1))
            row[trained] = (v[trained] / w).to(row.dtype)
            merged[k] = row
        return merged


@torch.no_grad()
def merge_compact_moes(global_moe: nn.Module, compacts: Sequence[nn.Module],
                       expert_ids: Sequence[Sequence[int]],
                       weights: Sequence[float] | None = None) -> nn.Module:
    """FedJETS' server merge of whole compact MoEs, in place (`ExpertMergeSums` in one go)."""
    w = list(weights) if weights is not None else [1.0] * len(compacts)
    sums = ExpertMergeSums(num_experts(global_moe.config))
    acc = None
    for c, ids, wi in zip(compacts, expert_ids, w):
        acc = sums.fold(acc, c.state_dict(), ids, wi)
    global_moe.load_state_dict(ExpertMergeSums.merged_state(global_moe.state_dict(), acc))
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
