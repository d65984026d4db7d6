"""View-Aligned Attention: stage picking and shapes (Eqs. 7-8, Fig. 5)."""
from __future__ import annotations

import pytest
import torch

from workloads.deepfusion.vaa import (LinearFeatureMap, ViewAlignedAttention, stage_features,
                                      stage_indices, view_aligned_attention)


def test_stages_are_equally_spaced_and_end_at_the_last_layer():
    assert stage_indices(30, 4) == [7, 14, 22, 29]
    assert stage_indices(4, 4) == [0, 1, 2, 3]
    assert stage_indices(2, 4) == [0, 0, 1, 1]
    hidden = tuple(torch.full((1, 2, 3), float(i)) for i in range(5))  # embeddings + 4 layers
    assert [int(f[0, 0, 0]) for f in stage_features(hidden, 2)] == [2, 4]


@pytest.mark.parametrize("J,P_q,d,heads,H_s,H_t,T", [
    (4, 64, 128, 4, 64, 32, 64), (2, 8, 16, 2, 48, 96, 32), (1, 4, 8, 1, 32, 32, 16),
    (3, 12, 24, 3, 40, 56, 20), (4, 16, 32, 4, 64, 48, 64)])
def test_vaa_maps_J_student_stages_to_J_views_of_teacher_width(J, P_q, d, heads, H_s, H_t, T):
    vaa = ViewAlignedAttention(H_s, H_t, T, stages=J, queries=P_q, dim=d, heads=heads)
    student = [torch.randn(2, T, H_s) for _ in range(J)]
    assert vaa.patchify_and_concat(student).shape == (2, P_q, d)  # Eq. 7
    views = vaa.align(student)
    assert [v.shape for v in views] == [torch.Size([2, P_q // J, H_t])] * J
    targets = vaa.targets([torch.randn(2, T, H_t) for _ in range(J)])
    assert [t.shape for t in targets] == [v.shape for v in views]
    assert vaa.patchify[0].kernel_size == (T // (P_q // J),) == vaa.patchify[0].stride


def test_teacher_targets_are_token_averages_over_each_patch():
    vaa = ViewAlignedAttention(4, 3, seq_len=8, stages=1, queries=2, dim=4, heads=1)
    teacher = torch.arange(8.0).view(1, 8, 1).expand(1, 8, 3)
    assert vaa.targets([teacher])[0][0, :, 0].tolist() == [1.5, 5.5]


def test_attention_mixes_stages_so_each_view_depends_on_every_stage():
    vaa = ViewAlignedAttention(8, 8, 16, stages=2, queries=4, dim=8, heads=2)
    student = [torch.randn(1, 16, 8, requires_grad=True) for _ in range(2)]
    vaa.align(student)[0].sum().backward()
    assert student[1].grad.abs().sum() > 0  # stage-1 view sees stage 2 (Eq. 8)


def test_invalid_geometry_is_rejected():
    with pytest.raises(ValueError, match="multiple of J"):
        ViewAlignedAttention(8, 8, 16, stages=3, queries=8)
    with pytest.raises(ValueError, match="seq_len"):
        ViewAlignedAttention(8, 8, 10, stages=2, queries=8)
    with pytest.raises(ValueError, match="T=16"):
        ViewAlignedAttention(8, 8, 16, stages=1, queries=4, dim=8, heads=2).align([torch.randn(1, 8, 8)])


def test_view_aligned_attention_works_on_hf_hidden_states_and_the_linear_ablation():
    student = tuple(torch.randn(2, 16, 12) for _ in range(5))
    teacher = tuple(torch.randn(2, 16, 20) for _ in range(3))
    views, targets = view_aligned_attention(
        ViewAlignedAttention(12, 20, 16, stages=2, queries=8, dim=8, heads=2), student, teacher)
    assert [v.shape for v in views] == [t.shape for t in targets] == [torch.Size([2, 4, 20])] * 2
    views, targets = view_aligned_attention(LinearFeatureMap(12, 20, stages=2), student, teacher)
    assert [v.shape for v in views] == [t.shape for t in targets] == [torch.Size([2, 16, 20])] * 2
    assert all(not t.requires_grad for t in targets)
