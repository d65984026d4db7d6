"""The four tenants' real data, shipped under `data/` (see each folder's PROVENANCE.md); no network.

- vit: CIFAR-10 JPEG subsets in `data/cifar10` (train 4,000 / test 2,000):
  pixel_values (N, 3, 32, 32) float32, normalised; labels (N,) 0..9.
- bert: SST-2 in `data/prince/sst2` (4,000 / 872): input_ids and attention_mask (N, 64) int64
  (MiniLM's uncased WordPiece, [CLS] ... [SEP] + padding); labels (N,) 0..1.
- whisper: Speech Commands in `data/prince/speech_commands` (165 / 35): input_features
  (N, 80, 100) float32, the 1-s Whisper log-mel; labels (N,) 0..9 commands, 10 "unknown".
- llama: Alpaca instructions in `data/prince/instructions` (350 / 50): input_ids (N, 128) int64
  (SmolLM2 tokenizer, ChatML turns, right-padded); labels (N, 128) = input_ids on the answer,
  IGNORE (-100) on the prompt and the padding.

Each split comes in one fixed shuffled order (seed 0), so `limit` keeps a class-mixed prefix. Every
choice of task and preprocessing is [OURS] (the paper names only the model types).
"""
from __future__ import annotations

import csv
import functools
import json
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch

from workloads.common.paths import DATA_ROOT
from workloads.prince.tenants import AUDIO_SECONDS, IGNORE, NUM_CLASSES, SEQ_LEN, TENANTS

PRINCE_DATA = DATA_ROOT / "prince"
BERT_TOKENIZER_DIR = Path(__file__).resolve().parent / "tokenizer"
SPLITS = ("train", "test")
ORDER_SEED = 0
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # per-channel CIFAR-10 statistics
CIFAR_STD = (0.2470, 0.2435, 0.2616)
UNKNOWN = NUM_CLASSES["whisper"] - 1  # every aux20 word: the keyword spotter's "unknown" class
LLAMA_TRAIN_ROWS = 350
TRAIN_ROWS = {"vit": 4000, "bert": 4000, "whisper": 165, "llama": LLAMA_TRAIN_ROWS}  # full splits


class TenantData(NamedTuple):
    inputs: dict[str, torch.Tensor]  # the keys of the tenant's `SplitModel.input_keys`
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx) -> dict[str, torch.Tensor]:
        """The rows `idx` as one batch dict (inputs + "labels"), as `split.py` consumes."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return {**{k: v[idx] for k, v in self.inputs.items()}, "labels": self.labels[idx]}


def load_tenant_data(name: str, split: str, limit: int | None = None) -> TenantData:
    """Tenant `name`'s `split` ("train" | "test"): the first `limit` rows of its fixed shuffled
    order (all rows when None)."""
    if name not in TENANTS or split not in SPLITS:
        raise ValueError(f"tenant must be one of {TENANTS} and split one of {SPLITS}")
    data = _LOADERS[name](split)
    batch = data.batch(np.random.default_rng(ORDER_SEED).permutation(len(data))[:limit])
    labels = batch.pop("labels")
    return TenantData(batch, labels)


def batches(data: TenantData, indices, batch_size: int,
            rng: np.random.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Mini-batches over `indices` (one device's shard), shuffled when `rng` is given."""
    indices = np.asarray(indices)
    if rng is not None:
        indices = rng.permutation(indices)
    for start in range(0, len(indices), batch_size):
        yield data.batch(indices[start:start + batch_size])


# --------------------------------------------------------------------------- per tenant
@functools.lru_cache(maxsize=2)
def _vit(split: str) -> TenantData:
    from workloads.common.images import load_cifar10

    images, labels = load_cifar10(split)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return TenantData({"pixel_values": x}, torch.from_numpy(labels))


@functools.lru_cache(maxsize=1)
def bert_tokenizer():
    """MiniLM's uncased WordPiece tokenizer, from the files shipped in `tokenizer/`."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(BERT_TOKENIZER_DIR), local_files_only=True)


@functools.lru_cache(maxsize=2)
def _bert(split: str) -> TenantData:
    name = "train_4000.tsv" if split == "train" else "test.tsv"
    with open(PRINCE_DATA / "sst2" / name, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    enc = bert_tokenizer()([r["sentence"].strip() for r in rows], padding="max_length",
                           truncation=True, max_length=SEQ_LEN["bert"], return_tensors="pt")
    return TenantData({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]},
                      torch.tensor([int(r["label"]) for r in rows]))


@functools.lru_cache(maxsize=1)
def feature_extractor():
    """Whisper's log-mel front end for 1-s, 16 kHz clips (80 mels, 10 ms hop), built locally."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=80, sampling_rate=16_000, hop_length=160,
                                   chunk_length=AUDIO_SECONDS, n_fft=400)


def _speech_clips(split: str) -> tuple[list[np.ndarray], np.ndarray]:
    wavs, labels = [], []
    for file in ("core10.npz", "aux20.npz"):
        d = np.load(PRINCE_DATA / "speech_commands" / file)
        keep = np.isin(d["split"], ("train", "validation") if split == "train" else ("test",))
        for i in np.flatnonzero(keep):
            wavs.append(d["audio"][i, :d["lengths"][i]].astype(np.float32) / 32768.0)
            labels.append(int(d["labels"][i]) if file == "core10.npz" else UNKNOWN)
    return wavs, np.asarray(labels, dtype=np.int64)


@functools.lru_cache(maxsize=2)
def _whisper(split: str) -> TenantData:
    wavs, labels = _speech_clips(split)
    feats = feature_extractor()(wavs, sampling_rate=16_000, return_tensors="np")["input_features"]
    return TenantData({"input_features": torch.from_numpy(feats)}, torch.from_numpy(labels))


def chatml(row: dict) -> tuple[str, str]:
    """(prompt, answer) of one Alpaca row in the SmolLM2 tokenizer's ChatML turns."""
    user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
    return (f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n",
            f"{row['output']}<|im_end|>")


def instruction_tensors(rows: list[dict], tokenizer, seq_len: int) -> tuple[torch.Tensor, ...]:
    """(input_ids, labels), both (N, seq_len): right-padded, labels IGNORE on prompt and padding.
    A prompt keeps at most seq_len // 2 tokens, so every row has answer tokens to learn."""
    ids = torch.full((len(rows), seq_len), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), seq_len), IGNORE, dtype=torch.long)
    for i, row in enumerate(rows):
        prompt, answer = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in chatml(row))
        prompt = prompt[: seq_len // 2]
        seq = (prompt + answer)[:seq_len]
        ids[i, :len(seq)] = torch.tensor(seq)
        labels[i, len(prompt):len(seq)] = torch.tensor(seq[len(prompt):])
    return ids, labels


@functools.lru_cache(maxsize=2)
def _llama(split: str) -> TenantData:
    from workloads.common.tokenizer import load_tokenizer  # the shared SmolLM2 tokenizer

    rows = json.loads((PRINCE_DATA / "instructions" / "alpaca_en_demo_400.json")
                      .read_text(encoding="utf-8"))
    rows = rows[:LLAMA_TRAIN_ROWS] if split == "train" else rows[LLAMA_TRAIN_ROWS:]
    ids, labels = instruction_tensors(rows, load_tokenizer(), SEQ_LEN["llama"])
    return TenantData({"input_ids": ids}, labels)


_LOADERS = {"vit": _vit, "bert": _bert, "whisper": _whisper, "llama": _llama}
