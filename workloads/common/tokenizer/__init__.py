"""The shared tokenizer: SmolLM2-135M-Instruct's 49,152-token byte-level BPE, shipped here.

Every causal LM that more than one workload builds (deepfusion's on-device models and students,
prince's LLaMA tenant data, robustness's `tiny` backend) speaks this one vocabulary, so teacher and
student logits compare token for token and real SmolLM2 weights drop in. `extract.py` documents how
the files were made. Loaded from the repo only, never from the hub.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

TOKENIZER_DIR = Path(__file__).resolve().parent
VOCAB_SIZE = 49_152
BOS_ID, EOS_ID, PAD_ID = 1, 2, 2  # <|im_start|>, <|im_end|>, <|im_end|> (the GGUF's metadata)


@functools.lru_cache(maxsize=1)
def load_tokenizer(path: str | Path = TOKENIZER_DIR):
    """The shared tokenizer, from files in the repo (no hub access)."""
    from transformers import PreTrainedTokenizerFast

    meta = json.loads((Path(path) / "tokenizer_config.json").read_text())
    return PreTrainedTokenizerFast(
        tokenizer_file=str(Path(path) / "tokenizer.json"), clean_up_tokenization_spaces=False,
        **{k: meta[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")})
