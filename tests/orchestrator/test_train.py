"""Expert-parallel MoE tuning on the real Ray Train + DeepSpeed AutoEP + gloo, 2 CPU workers.

Each test trains a tiny HF MoE with its experts frozen, then checks what a user relies on: the
experts were split between the workers, only the non-expert weights moved, and the saved
checkpoint is a plain HF state dict that reproduces the distributed model's loss.
"""
from __future__ import annotations

import math

import pytest
import torch

from orchestrator.train import (ExpertParallelJob, backend_for, build_causal_lm, deepspeed_config,
                                expert_parallel_train_loop, load_consolidated, run_distributed)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]
WORKERS, MICRO_BATCH, SEQ, VOCAB = 2, 2, 16, 256
FROZEN = (r"\.experts\.",)


def tiny_qwen3_moe():
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                          moe_intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
                          max_position_embeddings=SEQ)


def tiny_deepseek_v3():
    from transformers import DeepseekV3Config

    return DeepseekV3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                            moe_intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=4, n_routed_experts=4, n_shared_experts=1,
                            num_experts_per_tok=2, n_group=1, topk_group=1,
                            first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=16,
                            qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
                            max_position_embeddings=SEQ)


def train(model_config, preset: str, tmp_path, **job_fields):
    """Two batches cycled, so steps 1 and 3 see the same batch and the loss must have dropped."""
    tokens = torch.randint(0, VOCAB, (2, WORKERS * MICRO_BATCH, SEQ),
                           generator=torch.Generator().manual_seed(0))
    ds = deepspeed_config(micro_batch_size=MICRO_BATCH, ep_size=WORKERS, preset=preset, lr=1e-2)
    job = ExpertParallelJob(model_config=model_config, tokens=tokens, eval_tokens=tokens[0],
                            ds_config=ds, frozen=FROZEN, **job_fields)
    result = run_distributed(expert_parallel_train_loop, {"job": job}, WORKERS, False,
                             str(tmp_path / "ray"), f"ep-{preset}")
    return job, result


def assert_experts_split_between_workers(experts_by_rank: dict, num_experts: int) -> None:
    assert experts_by_rank, "no MoE block was replaced by AutoEP"
    for held in experts_by_rank.values():
        assert len(held) == WORKERS and all(len(h) == num_experts // WORKERS for h in held)
        assert set(held[0]).isdisjoint(held[1])
        assert sorted(held[0] + held[1]) == list(range(num_experts))


def assert_checkpoint_is_a_plain_hf_model(job, result) -> None:
    """Loads strictly into a fresh model; experts unchanged, attention changed, same eval loss."""
    trained = load_consolidated(result.checkpoint_path)
    initial = build_causal_lm(job.model_config, job.seed)
    before = {k: v.clone() for k, v in initial.state_dict().items()}
    initial.load_state_dict(trained, strict=True)
    experts = [k for k in before if ".experts." in k]
    assert experts and all(torch.equal(before[k], trained[k]) for k in experts)
    attention = [k for k in before if "self_attn" in k and k.endswith("weight")]
    assert any(not torch.equal(before[k], trained[k]) for k in attention)
    initial.eval()
    with torch.no_grad():
        loss = initial(input_ids=job.eval_tokens, labels=job.eval_tokens).loss.item()
    assert loss == pytest.approx(result.metrics["eval_loss"], abs=1e-4)


def test_backend_is_gloo_on_cpu_and_nccl_on_gpu():
    assert (backend_for(False), backend_for(True)) == ("gloo", "nccl")


def test_qwen3_moe_experts_split_frozen_survive_a_worker_failure_and_load_into_plain_hf(tmp_path):
    job, result = train(tiny_qwen3_moe(), "qwen3_moe", tmp_path, steps=4, checkpoint_every=2,
                        fail_once_at_step=3)
    metrics = result.metrics
    assert metrics["resumed_from_step"] == 2, "the failed worker group restarts from step 2"
    assert_experts_split_between_workers(metrics["experts_by_rank"], num_experts=4)
    losses = metrics["losses"]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert losses[2] < losses[0], "same batch two steps later: the loss went down"
    assert_checkpoint_is_a_plain_hf_model(job, result)


def test_deepseek_v3_preset_splits_routed_experts_and_loads_into_plain_hf(tmp_path):
    job, result = train(tiny_deepseek_v3(), "deepseek_v3", tmp_path, steps=3)
    metrics = result.metrics
    assert list(metrics["experts_by_rank"]) == ["model.layers.1.mlp"], "layer 0 is dense"
    assert_experts_split_between_workers(metrics["experts_by_rank"], num_experts=4)
    assert metrics["losses"][2] < metrics["losses"][0]
    assert_checkpoint_is_a_plain_hf_model(job, result)
