"""The one way to build a causal LM over the shared tokenizer: a config, then a seeded instance.

`causal_lm_config(family, **shape)` is a `transformers` config of `family` with the shared
vocabulary and special ids (`workloads/common/tokenizer`) and, for GPT-2, dropout off;
`build_causal_lm(config, seed)` instantiates it with random weights drawn from `seed` alone (the
global torch RNG is left as it was), so the same (config, seed) is the same model in every process.
`TINY_LLAMA` is the 2-layer LLaMA that runs anywhere in milliseconds: deepfusion's `tiny/llama`
device model and robustness's `tiny` backend. The shapes of each workload's own zoo stay in it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from workloads.common.tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE

if TYPE_CHECKING:
    from torch import nn

FAMILIES = ("gpt2", "llama", "bloom", "qwen3", "qwen3_moe", "deepseek_v3")
_NO_DROPOUT = {"gpt2": dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)}
TINY_LLAMA = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)


def causal_lm_config(family: str, **shape):
    """A `transformers` config of `family` (one of FAMILIES) over the shared vocabulary (a
    `vocab_size` in `shape` narrows it: a compact vocabulary that keeps the special ids)."""
    import transformers

    cls = {"gpt2": transformers.GPT2Config, "llama": transformers.LlamaConfig,
           "bloom": transformers.BloomConfig, "qwen3": transformers.Qwen3Config,
           "qwen3_moe": transformers.Qwen3MoeConfig,
           "deepseek_v3": transformers.DeepseekV3Config}[family]
    ids = dict(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return cls(**{"vocab_size": VOCAB_SIZE, **ids, **_NO_DROPOUT.get(family, {}), **shape})


def build_causal_lm(config, seed: int = 0, device: str | None = None) -> "nn.Module":
    """A randomly initialised causal LM of `config`, its weights drawn from `seed` alone
    (`device="meta"`: shapes only, no memory, for size estimates)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if device == "meta":
            with torch.device("meta"):
                return AutoModelForCausalLM.from_config(config)
        return AutoModelForCausalLM.from_config(config)


def causal_lm_with_state(config, state: dict) -> "nn.Module":
    """A causal LM of `config` holding `state` (every weight, strictly), built without drawing
    random weights first: they would be overwritten, and drawing them cost about 12% of a
    FedJETS device round. Tied embeddings are tied again (skipping init skips the tying)."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()
    model.load_state_dict(state, strict=True)
    return model


def tiny_llama_config(**extra):
    """TINY_LLAMA's config; `extra` adds fields (e.g. `num_labels` for a classifier head)."""
    return causal_lm_config("llama", **TINY_LLAMA, **extra)


def build_tiny_llama(seed: int = 0, device: str | None = None) -> "nn.Module":
    """TINY_LLAMA as a causal LM with random weights from `seed`."""
    return build_causal_lm(tiny_llama_config(), seed, device)
