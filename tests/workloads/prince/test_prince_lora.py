"""PRINCE's optional LoRA (`lora_rank > 0`): adapters on both sides of the cut, the base frozen,
the head trainable; the split still computes the unsplit LoRA model's gradients, states and
deltas hold only adapters + head (fewer bytes than full fine-tuning), and a few steps learn."""
from __future__ import annotations

import functools

import pytest
import torch

from orchestrator.config import ConfigError
from workloads.prince.config import TenantConfig
from workloads.prince.data import load_tenant_data
from workloads.prince.split import (ServerSide, device_forward, device_local_training,
                                    trainable_state)
from workloads.prince.tenants import TENANTS, build_tenant


@functools.lru_cache(maxsize=None)
def _real(name: str, split: str = "test", n: int = 3) -> dict[str, torch.Tensor]:
    data = load_tenant_data(name, split, limit=n)
    return data.batch(range(len(data)))


def _grads(split) -> dict[str, torch.Tensor]:
    grads = {k: p.grad.clone() for k, p in split.full.named_parameters() if p.grad is not None}
    split.full.zero_grad(set_to_none=True)
    return grads


def _unsplit_grads(split, batch) -> tuple[float, dict[str, torch.Tensor]]:
    """As in test_prince_split: the HF model's own forward and loss."""
    split.full.zero_grad(set_to_none=True)
    loss = split.full(**{k: batch[k] for k in split.input_keys}, labels=batch["labels"]).loss
    loss.backward()
    return float(loss.detach()), _grads(split)


def _split_grads(split, batch) -> tuple[float, dict[str, torch.Tensor]]:
    """SplitFed: device to the cut, server on the detached smashed data, its gradient back."""
    smashed = device_forward(split, batch)
    cut = smashed.detach().requires_grad_()
    loss = split.server(cut, batch["labels"], **{k: batch[k] for k in split.server_keys})
    loss.backward()
    smashed.backward(cut.grad)
    return float(loss.detach()), _grads(split)


def _nbytes(state: dict[str, torch.Tensor]) -> int:
    return sum(v.nbytes for v in state.values())


def _lora_or_head(key: str) -> bool:
    return "lora_" in key or key.startswith("head.")


@pytest.mark.parametrize("name", TENANTS)
def test_lora_split_gives_the_unsplit_lora_models_gradients(name):
    split = build_tenant(name, "tiny", cut_layer=1, lora_rank=4)
    with torch.no_grad():  # B starts at zero; make the adapters change the output
        for k, p in split.full.named_parameters():
            if "lora_B" in k:
                p.normal_(0, 0.05)
    batch = _real(name)
    full_loss, full = _unsplit_grads(split, batch)
    split_loss, parts = _split_grads(split, batch)
    assert split_loss == pytest.approx(full_loss, rel=1e-6)
    assert full.keys() == parts.keys()
    assert any("lora_A" in k for k in full) and any("lora_B" in k for k in full)
    trainable = {k for k, p in split.full.named_parameters() if p.requires_grad}
    assert set(full) == trainable  # frozen base: no gradients
    for k in full:
        assert torch.allclose(parts[k], full[k], rtol=1e-5, atol=1e-7), k


@pytest.mark.parametrize("name", TENANTS)
def test_only_adapters_and_head_are_trained_and_sent(name):
    plain = build_tenant(name, "tiny", cut_layer=1)
    lora = build_tenant(name, "tiny", cut_layer=1, lora_rank=4)
    dev, srv = trainable_state(lora.device), trainable_state(lora.server)
    assert dev and all("lora_" in k for k in dev)  # device side: adapters only
    assert all(_lora_or_head(k) for k in srv)
    assert any(k.startswith("head.") for k in srv) and any("lora_" in k for k in srv)
    head = {k for k, p in lora.server.head.named_parameters() if p.requires_grad}
    assert {k.removeprefix("head.") for k in srv if k.startswith("head.")} == head
    # a classifier trains its new head; LLaMA keeps its (pretrained) LM head frozen
    assert (name == "llama") == (head == {"norm.weight"})
    # both sides' layers carry adapters (the cut does not drop them)
    assert any(k.startswith("stack.layers.0.") for k in srv)
    # what a device uploads and what the server aggregates: only those tensors, fewer bytes
    server = ServerSide(lora.server, lr=1e-2, optimizer="adam")
    delta, _ = device_local_training(lora, dev, [_real(name)], functools.partial(server.step, 0),
                                     steps=1, lr=1e-2, optimizer="adam")
    assert delta.keys() == dev.keys() and server.pop_delta(0).keys() == srv.keys()
    assert _nbytes(dev) < _nbytes(trainable_state(plain.device)) / 4
    assert _nbytes(srv) < _nbytes(trainable_state(plain.server))
    # every actor builds the same adapters from the seed; another seed draws others
    again = build_tenant(name, "tiny", cut_layer=1, lora_rank=4)
    for k, v in trainable_state(again.device).items():
        assert torch.equal(v, dev[k]), k
    other = build_tenant(name, "tiny", cut_layer=1, lora_rank=4, seed=1)
    a_key = next(k for k in dev if "lora_A" in k)
    assert not torch.equal(trainable_state(other.device)[a_key], dev[a_key])


def test_a_few_lora_steps_lower_the_loss():
    split = build_tenant("vit", "tiny", cut_layer=1, lora_rank=8)
    batch = _real("vit", "train", 8)
    server = ServerSide(split.server, lr=1e-2, optimizer="adam")
    _, m = device_local_training(split, trainable_state(split.device), [batch],
                                 functools.partial(server.step, 0), steps=8, lr=1e-2,
                                 optimizer="adam")
    assert m["losses"][-1] < 0.8 * m["losses"][0]


def test_lora_knobs_validate():
    assert TenantConfig().lora_rank == 0 and TenantConfig().lora_alpha is None
    TenantConfig(lora_rank=8, lora_alpha=8.0, pretrained="auto").validate()
    with pytest.raises(ConfigError):
        TenantConfig(lora_alpha=16.0).validate()
    with pytest.raises(ValueError):
        build_tenant("vit", "tiny", cut_layer=1, lora_rank=-1)


def test_lora_on_a_random_base_is_rejected_in_one_line():
    with pytest.raises(ConfigError) as err:
        TenantConfig(lora_rank=8).validate()
    assert "lora_rank" in str(err.value) and "pretrained" in str(err.value)
    assert "\n" not in str(err.value)
