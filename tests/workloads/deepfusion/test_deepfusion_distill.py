"""Phase II losses: L_KD = L_CE + alpha L_FM + beta L_KL (Eqs. 9-11) and the baselines' losses."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from workloads.deepfusion import distill as D
from workloads.common.optim import make_optimizer
from workloads.deepfusion.models import build_device_model, build_student
from workloads.deepfusion.vaa import LinearFeatureMap, ViewAlignedAttention


def _random_case(seed=0, V=11):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(2, 6, V, generator=g), torch.randn(2, 6, V, generator=g)
    ids = torch.randint(0, V, (2, 6), generator=g)
    views = [torch.randn(2, 3, 5, generator=g) for _ in range(2)]
    targets = [torch.randn(2, 3, 5, generator=g) for _ in range(2)]
    return s, t, ids, views, targets


def test_kd_loss_is_ce_plus_alpha_fm_plus_beta_kl():
    s, t, ids, views, targets = _random_case()
    w = D.KDWeights(alpha=0.3, beta=2.5, temperature=1.7)
    parts = D.kd_loss(s, t, ids, views, targets, w)
    ce = F.cross_entropy(s[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1))
    fm = sum(((v - u) ** 2).mean() for v, u in zip(views, targets))
    p_t, log_s = F.softmax(t / 1.7, -1), F.log_softmax(s / 1.7, -1)
    kl = (p_t * (p_t.log() - log_s)).sum(-1).mean() * 1.7 ** 2
    assert parts["ce"] == pytest.approx(float(ce), rel=1e-5)
    assert parts["fm"] == pytest.approx(float(fm), rel=1e-5)
    assert parts["kl"] == pytest.approx(float(kl), rel=1e-5)
    assert parts["loss"] == pytest.approx(float(ce + 0.3 * fm + 2.5 * kl), rel=1e-5)


def test_kl_vanishes_when_student_matches_teacher():
    s, *_ = _random_case()
    assert D.kl_loss(s, s.clone(), 2.0) == pytest.approx(0.0, abs=1e-6)


def test_ofa_loss_with_eps_one_is_soft_cross_entropy():
    s, t, ids, *_ = _random_case()
    soft_ce = -(F.softmax(t, -1) * F.log_softmax(s, -1)).sum(-1).mean()
    assert D.ofa_loss(s, t, ids, eps=1.0) == pytest.approx(float(soft_ce), rel=1e-5)
    assert D.ofa_loss(s, t, ids, eps=1.5) != pytest.approx(float(soft_ce), rel=1e-3)


def test_fedmkt_loss_interpolates_ce_and_kl():
    s, t, ids, *_ = _random_case()
    ce = D.next_token_ce(s, ids)
    assert D.fedmkt_loss(s, t, ids, lam=1.0)["loss"] == pytest.approx(float(ce))
    mid = D.fedmkt_loss(s, t, ids, lam=0.25, temperature=2.0)
    assert mid["loss"] == pytest.approx(float(0.25 * ce + 0.75 * D.kl_loss(s, t, 2.0)), rel=1e-6)


@pytest.fixture(scope="module")
def pair():
    """A tiny GPT-2 teacher (width 32) and a tiny Qwen3 student (width 64)."""
    return build_device_model("gpt2", "tiny", seed=0), build_student("qwen3_moe", "tiny", seed=0)


@pytest.mark.parametrize("aligner", ["vaa", "linear"])
def test_distill_step_trains_student_and_aligner_but_not_teacher(pair, batch, aligner):
    teacher, student = pair
    T = batch.shape[1]
    module = (ViewAlignedAttention(64, 32, T, stages=2, queries=8, dim=16, heads=2)
              if aligner == "vaa" else LinearFeatureMap(64, 32, stages=2))
    opt = make_optimizer(list(student.parameters()) + list(module.parameters()), "adamw", 1e-3)
    t_before = [p.clone() for p in teacher.parameters()]
    a_before = [p.clone() for p in module.parameters()]
    out = D.distill_step(D.teacher_forward(teacher, batch), student, module, batch, opt,
                         D.KDWeights(1.0, 1.0, 2.0))
    assert set(out) == {"loss", "ce", "fm", "kl"} and all(v >= 0 for v in out.values())
    assert out["loss"] == pytest.approx(out["ce"] + out["fm"] + out["kl"], rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(t_before, teacher.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(a_before, module.parameters()))


def test_ofa_and_fedmkt_steps_train_the_student(pair, batch):
    teacher, student = pair
    branches = D.OfaBranches(64, student.config.vocab_size, stages=2)
    opt = make_optimizer(list(student.parameters()) + list(branches.parameters()), "adamw", 1e-3)
    t_out = D.teacher_forward(teacher, batch)
    out = D.ofa_step(t_out, student, branches, batch, opt, D.OfaWeights())
    assert out["ofa_stages"] > 0 and out["loss"] == pytest.approx(
        out["ce"] + out["ofa"] + out["ofa_stages"], rel=1e-5)
    out = D.fedmkt_step(t_out, student, batch, make_optimizer(student.parameters(), "adamw", 1e-3))
    assert out["loss"] == pytest.approx(0.5 * out["ce"] + 0.5 * out["kl"], rel=1e-5)


def _cluster_job(methods):
    from workloads.deepfusion.config import BaselineConfig, DistillConfig, VaaConfig
    from workloads.deepfusion.programs import DistillJob

    teacher = build_device_model("gpt2", "tiny", seed=3).state_dict()
    blocks = torch.randint(0, 500, (12, 16), generator=torch.Generator().manual_seed(0))
    return DistillJob(tuple(methods), 0, "gpt2", teacher, blocks, "tiny", "qwen3_moe", 1, None,
                      None, 2, DistillConfig(steps=3), VaaConfig(stages=2, queries=8, dim=16,
                                                                  heads=2), BaselineConfig(), 4)


def test_one_teacher_forward_per_batch_gives_each_method_the_student_it_gets_alone(monkeypatch):
    """Phase II runs every method of a cluster in one task on the same batches: keeping the
    teacher's outputs (or recomputing them past TEACHER_CACHE_MB) changes no student."""
    from dataclasses import replace

    from workloads.deepfusion import programs

    job = _cluster_job(["deepfusion", "ofa_kd", "fedmkt", "student_ce_only"])
    together = programs.distill_cluster(job)
    monkeypatch.setattr(programs, "TEACHER_CACHE_MB", 0)
    recomputed = programs.distill_cluster(job)
    for m in job.methods:
        alone = programs.distill_cluster(replace(job, methods=(m,)))[m]
        for result in (together[m], recomputed[m]):
            assert result["losses"] == alone["losses"] and len(alone["losses"]) == 3
            assert all(torch.equal(result["state"][k], v) for k, v in alone["state"].items())
    assert together["deepfusion"]["losses"] != together["student_ce_only"]["losses"]
