"""Phase II's View-Aligned Attention (VAA, Sec. IV-C, Fig. 5) and its no-VAA ablation.

Teacher (proxy m_bar_i) and student (dense MoE base M_i) are each split into J representation
stages. VAA sits on the student side and is trained with it:
  1. patchify and project: student stage features F^S_j (T x H_s) -> C_j(F^S_j) (P_q/J x d) with a
     Conv1d over tokens, kernel = stride = T/(P_q/J) [OURS, SEEDS 1.7]; concatenate (Eq. 7);
  2. multi-head self-attention across all P_q queries of all stages (Eq. 8);
  3. split into J chunks and project each to the teacher's width H_t ("Proj" in Fig. 5).
The teacher's stage features are adaptive-average-pooled over tokens to the same P_q/J
positions, so Eq. 9's MSE compares matching shapes [OURS].

Both aligners here expose `align(student_stages)` and `targets(teacher_stages)`, so `distill`
runs DeepFusion and its no-VAA ablation through the same step.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def stage_indices(num_layers: int, J: int) -> list[int]:
    """J equally spaced layer indices (0-based) ending at the last layer; repeats when J > L."""
    return [math.ceil((j + 1) * num_layers / J) - 1 for j in range(J)]


def stage_features(hidden_states: Sequence[torch.Tensor], J: int) -> list[torch.Tensor]:
    """F_1..F_J from a HF `output_hidden_states` tuple (embedding output first, then each layer)."""
    layers = list(hidden_states[1:]) if len(hidden_states) > 1 else list(hidden_states)
    return [layers[i] for i in stage_indices(len(layers), J)]


class ViewAlignedAttention(nn.Module):
    """VAA: student stages (B, T, H_s) x J -> aligned views (B, P_q/J, H_t) x J (Eqs. 7-8)."""

    def __init__(self, student_width: int, teacher_width: int, seq_len: int, stages: int = 4,
                 queries: int = 64, dim: int = 128, heads: int = 4,
                 position_embedding: bool = True):
        super().__init__()
        if queries % stages:
            raise ValueError(f"P_q={queries} must be a multiple of J={stages}")
        self.stages, self.patches = stages, queries // stages
        if seq_len % self.patches:
            raise ValueError(f"seq_len={seq_len} must be a multiple of P_q/J={self.patches}")
        if dim % heads:
            raise ValueError(f"d={dim} must be a multiple of heads={heads}")
        self.seq_len, kernel = seq_len, seq_len // self.patches
        self.patchify = nn.ModuleList(  # C_j of Eq. 7
            nn.Conv1d(student_width, dim, kernel_size=kernel, stride=kernel) for _ in range(stages))
        # [OURS] learned query positions: Eq. 8 alone is blind to which stage/patch a query is.
        self.position = nn.Parameter(torch.zeros(1, queries, dim)) if position_embedding else None
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)  # Eq. 8
        self.project = nn.ModuleList(nn.Linear(dim, teacher_width) for _ in range(stages))

    def patchify_and_concat(self, student_stages: Sequence[torch.Tensor]) -> torch.Tensor:
        """F^S = Concat(C_1(F^S_1), ..., C_J(F^S_J)) in R^{B x P_q x d}  (Eq. 7)."""
        if len(student_stages) != self.stages:
            raise ValueError(f"expected {self.stages} stages, got {len(student_stages)}")
        if student_stages[0].shape[1] != self.seq_len:
            raise ValueError(f"VAA was built for T={self.seq_len}, got {student_stages[0].shape[1]}")
        parts = [conv(f.transpose(1, 2)).transpose(1, 2)
                 for conv, f in zip(self.patchify, student_stages)]
        return torch.cat(parts, dim=1)

    def align(self, student_stages: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """{F^S'_j}: the student's stage views in the teacher's width (Fig. 5)."""
        fs = self.patchify_and_concat(student_stages)
        if self.position is not None:
            fs = fs + self.position
        mixed, _ = self.attention(fs, fs, fs, need_weights=False)  # Eq. 8
        chunks = mixed.split(self.patches, dim=1)
        return [proj(c) for proj, c in zip(self.project, chunks)]

    def targets(self, teacher_stages: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """F^T_j pooled over tokens to the P_q/J positions of each student view."""
        return [F.adaptive_avg_pool1d(f.transpose(1, 2), self.patches).transpose(1, 2)
                for f in teacher_stages]

    forward = align


class LinearFeatureMap(nn.Module):
    """Ablation `deepfusion_no_vaa`: one Linear(H_s -> H_t) per stage, token by token, matched to
    the teacher's stage features at the same tokens (direct feature MSE, no view alignment)."""

    def __init__(self, student_width: int, teacher_width: int, stages: int = 4):
        super().__init__()
        self.stages = stages
        self.project = nn.ModuleList(nn.Linear(student_width, teacher_width) for _ in range(stages))

    def align(self, student_stages: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [proj(f) for proj, f in zip(self.project, student_stages)]

    def targets(self, teacher_stages: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return list(teacher_stages)

    forward = align


def view_aligned_attention(aligner: nn.Module, student_hidden: Sequence[torch.Tensor],
                           teacher_hidden: Sequence[torch.Tensor]
                           ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(student views {F^S'_j}, teacher targets {F^T_j}) from both models' hidden-state tuples."""
    J = aligner.stages
    views = aligner.align(stage_features(student_hidden, J))
    with torch.no_grad():
        targets = aligner.targets([f.detach() for f in stage_features(teacher_hidden, J)])
    return views, targets
