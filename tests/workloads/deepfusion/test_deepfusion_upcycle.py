"""Phase III: experts are the students' FFNs (Eq. 12), the rest their average (Eq. 13)."""
from __future__ import annotations

import pytest
import torch

from workloads.deepfusion.models import MOE_FAMILIES, build_student
from workloads.deepfusion.upcycle import expert_ffn, freeze_experts, upcycle

K = 3


@pytest.fixture(scope="module", params=MOE_FAMILIES)
def upcycled(request):
    students = [build_student(request.param, "tiny", seed=i) for i in range(K)]
    return request.param, students, upcycle(students, request.param, top_k=2, seed=0)


def test_expert_i_of_layer_l_is_student_i_ffn_exactly(upcycled):
    _, students, moe = upcycled
    for l in range(len(moe.model.layers)):
        for i, student in enumerate(students):
            mlp = student.model.layers[l].mlp
            got = expert_ffn(moe, l, i)
            for name in ("gate_proj", "up_proj", "down_proj"):
                assert torch.equal(got[f"{name}.weight"], getattr(mlp, name).weight)


def test_every_non_expert_weight_is_the_students_average(upcycled):
    _, students, moe = upcycled
    sds = [s.state_dict() for s in students]
    checked = 0
    for key, value in moe.state_dict().items():
        if ".mlp." in key or "e_score_correction_bias" in key:
            continue
        assert torch.allclose(value, sum(sd[key] for sd in sds) / K, atol=1e-7), key
        checked += 1
    assert checked > 10 and moe.lm_head.weight is moe.model.embed_tokens.weight


def test_the_gate_is_fresh_and_seeded(upcycled):
    family, students, moe = upcycled
    gate = moe.model.layers[0].mlp.gate.weight
    assert gate.shape == (K, moe.config.hidden_size) and gate.abs().sum() > 0
    again = upcycle(students, family, top_k=2, seed=0)
    assert torch.equal(again.model.layers[0].mlp.gate.weight, gate)


def test_the_upcycled_moe_runs_forward_and_backward(upcycled, batch):
    _, _, moe = upcycled
    out = moe(input_ids=batch, labels=batch)
    assert out.logits.shape == (*batch.shape, moe.config.vocab_size) and torch.isfinite(out.loss)
    out.loss.backward()
    moe.zero_grad(set_to_none=True)


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_upcycling_identical_students_reproduces_the_dense_student(family, batch):
    """With equal experts and top-k weights summing to 1, the MoE is the dense model (Eq. 4)."""
    student = build_student(family, "tiny", seed=7)
    moe = upcycle([student, student, student], family, top_k=2, seed=1)
    with torch.no_grad():
        assert torch.allclose(moe(input_ids=batch).logits, student(input_ids=batch).logits,
                              atol=1e-4)


def test_freeze_experts_leaves_embeddings_attention_gate_and_output_trainable(upcycled):
    _, _, moe = upcycled
    trainable = freeze_experts(moe)
    assert not any(".experts." in n for n in trainable)
    assert any("embed_tokens" in n for n in trainable) and any(".mlp.gate." in n for n in trainable)
    assert any("self_attn" in n for n in trainable)
    frozen = [n for n, p in moe.named_parameters() if not p.requires_grad]
    assert frozen and all("experts." in n for n in frozen)  # routed (and DeepSeek shared) experts
    for p in moe.parameters():
        p.requires_grad_(True)


def test_students_of_different_shapes_cannot_be_upcycled():
    a, b = build_student("qwen3_moe", "tiny"), build_student("qwen3_moe", "small", device="meta")
    with pytest.raises(ValueError, match="one architecture"):
        upcycle([a, b], "qwen3_moe")
