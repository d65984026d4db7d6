"""Phase II losses and steps: DeepFusion's KD (Eqs. 9-11) and the logit-level baselines.

- DeepFusion: L_KD = L_CE + alpha * L_FM + beta * L_KL  (Eq. 11), with
  L_FM = sum_j MSE(F^T_j, F^S'_j) (Eq. 9) over VAA's aligned views and
  L_KL = tau^2 * KL(softmax(z_T/tau) || softmax(z_S/tau)) (Eq. 10; the tau^2 factor keeps the
  gradient scale independent of tau [LIT, Hinton et al. 2015]).
- `deepfusion_no_vaa`: the same step with a `LinearFeatureMap` instead of VAA.
- `student_ce_only`, the control: L_CE alone (alpha = beta = 0), so no teacher at all.
- OFA-KD (Hao et al. 2023; SEEDS 1.6): branches project intermediate student stages to vocab
  logits, trained with `ofa_loss`; the final logits are the last stage.
- FedMKT-style logit-only KD: lambda * CE + (1 - lambda) * KL. One shared tokenizer removes the
  need for MinED token alignment, and the selective (dual min-CE) filtering is omitted [OURS].

Teacher = the cluster's proxy m_bar_i (frozen); student = the MoE family's dense base M_i.
All losses are per-token means over the (B, T) block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from workloads.deepfusion.vaa import stage_features, view_aligned_attention


@dataclass
class KDWeights:
    """The trade-offs of Eq. 11 (the workload fills these from its config)."""

    alpha: float = 1.0        # weight of L_FM
    beta: float = 1.0         # weight of L_KL
    temperature: float = 2.0  # tau of L_KL


def next_token_ce(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """L_CE (Eq. 2): mean cross entropy of predicting ids[t+1] from logits[t]."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = 1.0) -> torch.Tensor:
    """L_KL (Eq. 10): tau^2 KL(P^T || P^S) per token, averaged over tokens."""
    t = temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=-1).flatten(0, -2)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=-1).flatten(0, -2)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * t * t


def feature_matching_loss(views: Sequence[torch.Tensor],
                          targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """L_FM = sum_j MSE(F^T_j, F^S'_j)  (Eq. 9)."""
    return sum(F.mse_loss(v, t) for v, t in zip(views, targets))


def kd_loss(student_logits, teacher_logits, ids, views, targets, w: KDWeights) -> dict:
    """L_KD = L_CE + alpha L_FM + beta L_KL (Eq. 11); returns every component."""
    ce = next_token_ce(student_logits, ids)
    fm = feature_matching_loss(views, targets)
    kl = kl_loss(student_logits, teacher_logits, w.temperature)
    return {"loss": ce + w.alpha * fm + w.beta * kl, "ce": ce, "fm": fm, "kl": kl}


def teacher_forward(teacher: nn.Module, ids: torch.Tensor):
    """The frozen teacher's logits and hidden states on one batch. Every KD method distilling
    from one teacher sees the same batches, so one forward serves them all (the `*_step`
    functions take its output, not the teacher)."""
    teacher.eval()
    with torch.no_grad():
        return teacher(input_ids=ids, output_hidden_states=True)


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, parts: dict) -> dict:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in parts.items()}


def distill_step(t_out, student: nn.Module, aligner: nn.Module, batch: torch.Tensor,
                 optimizer: torch.optim.Optimizer, cfg: KDWeights) -> dict[str, float]:
    """One DeepFusion KD step (or the no-VAA ablation, given a LinearFeatureMap) against the
    teacher's output `t_out` on `batch` (`teacher_forward`); the optimizer holds the student's
    and the aligner's parameters. Returns loss, ce, fm, kl."""
    student.train()
    s_out = student(input_ids=batch, output_hidden_states=True)
    views, targets = view_aligned_attention(aligner, s_out.hidden_states, t_out.hidden_states)
    parts = kd_loss(s_out.logits, t_out.logits, batch, views, targets, cfg)
    return _step(parts["loss"], optimizer, parts)


def ce_step(student: nn.Module, batch: torch.Tensor,
            optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The control's step: L_CE alone (Eq. 11 with alpha = beta = 0), no teacher."""
    student.train()
    ce = next_token_ce(student(input_ids=batch).logits, batch)
    return _step(ce, optimizer, {"loss": ce, "ce": ce})


# --------------------------------------------------------------------------- OFA-KD
def ofa_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
             eps: float = 1.0, temperature: float = 1.0) -> torch.Tensor:
    """OFA-KD: mean over tokens of sum_c -((p_T + y)^eps - y) log p_S, p = softmax(z / T), with
    y the one-hot target (SEEDS 1.6; `distillers/ofa.py` of Hao840/OFAKD)."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1).flatten(0, -2)
    p_t = F.softmax(teacher_logits.float() / temperature, dim=-1).flatten(0, -2)
    y = F.one_hot(target.flatten(), p_t.shape[-1]).to(p_t.dtype)
    return (-((p_t + y) ** eps - y) * log_s).sum(-1).mean()


class OfaBranches(nn.Module):
    """One branch per intermediate stage (the J-th stage is the student's own head):
    LayerNorm -> Linear(H_s -> vocab) [OURS: the simplest "projector + classifier" of OFA-KD]."""

    def __init__(self, student_width: int, vocab_size: int, stages: int = 4):
        super().__init__()
        self.stages = stages
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(student_width), nn.Linear(student_width, vocab_size))
            for _ in range(stages - 1))

    def forward(self, student_hidden: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        stages = stage_features(student_hidden, self.stages)[:-1]
        return [head(f) for head, f in zip(self.heads, stages)]


@dataclass
class OfaWeights:
    eps: float = 1.0          # gamma >= 1, the target-enhancement exponent
    temperature: float = 1.0
    kd_weight: float = 1.0    # weight of ofa_loss on the final logits
    stage_weight: float = 1.0  # weight of the sum of the branches' ofa_loss


def ofa_step(t_out, student: nn.Module, branches: OfaBranches, batch: torch.Tensor,
             optimizer: torch.optim.Optimizer, cfg: OfaWeights) -> dict[str, float]:
    """CE + kd_weight * ofa(final) + stage_weight * sum_j ofa(branch_j)  (OFA-KD's total)."""
    t_logits = t_out.logits[:, :-1]
    student.train()
    s_out = student(input_ids=batch, output_hidden_states=True)
    target = batch[:, 1:]
    ce = next_token_ce(s_out.logits, batch)
    final = ofa_loss(s_out.logits[:, :-1], t_logits, target, cfg.eps, cfg.temperature)
    stage = sum((ofa_loss(z[:, :-1], t_logits, target, cfg.eps, cfg.temperature)
                 for z in branches(s_out.hidden_states)), torch.zeros(()))
    loss = ce + cfg.kd_weight * final + cfg.stage_weight * stage
    return _step(loss, optimizer, {"loss": loss, "ce": ce, "ofa": final, "ofa_stages": stage})


# --------------------------------------------------------------------------- FedMKT
def fedmkt_loss(student_logits, teacher_logits, ids, lam: float = 0.5,
                temperature: float = 1.0) -> dict:
    """lambda * L_CE + (1 - lambda) * L_KL (logits only, no features)."""
    ce = next_token_ce(student_logits, ids)
    kl = kl_loss(student_logits, teacher_logits, temperature)
    return {"loss": lam * ce + (1 - lam) * kl, "ce": ce, "kl": kl}


def fedmkt_step(t_out, student: nn.Module, batch: torch.Tensor,
                optimizer: torch.optim.Optimizer, lam: float = 0.5,
                temperature: float = 1.0) -> dict[str, float]:
    """One FedMKT-style logit KD step from a proxy teacher's output `t_out` into a student."""
    student.train()
    s_logits = student(input_ids=batch).logits
    parts = fedmkt_loss(s_logits, t_out.logits, batch, lam, temperature)
    return _step(parts["loss"], optimizer, parts)
