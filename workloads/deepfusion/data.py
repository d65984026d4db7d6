"""The shipped medical and financial text (data/medical, data/financial) and its causal-LM blocks.

The paper's cases use MMedBench (medical QA) and FinGPT/fingpt-fiqa_qa (financial QA); neither is
available offline, so the stand-ins are [OURS]: PubMedQA, ChatDoctor and DDXPlus for medical, and
Financial PhraseBank for financial (see each folder's PROVENANCE.md).

Every loader returns `Record(text, domain, source, label)`. `split_records` fixes, by seed, a
held-out test split, a "public" server split (Sec. IV: the server's public data for distillation
and tuning) and the private pool the federation spreads over devices.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np

from workloads.common.paths import DATA_ROOT

if TYPE_CHECKING:  # annotations only: torch is imported where it runs
    import torch


CASES = ("medical", "financial")


class Record(NamedTuple):
    text: str
    domain: str  # "medical" | "financial"
    source: str  # corpus: pubmedqa | chatdoctor | ddxplus | phrasebank
    label: str   # the corpus' own label (yes/no/maybe, diagnosis, sentiment, "dialogue")


def load_pubmedqa(root: Path = DATA_ROOT) -> list[Record]:
    """PubMedQA PQA-L: question, abstract contexts and long answer as one text."""
    rows = json.loads((root / "medical" / "pubmedqa_500.json").read_text(encoding="utf-8"))
    return [Record(f"Question: {r['QUESTION']}\nContext: {' '.join(r['CONTEXTS'])}\n"
                   f"Answer: {r['LONG_ANSWER']}", "medical", "pubmedqa", r["final_decision"])
            for r in rows.values()]


def load_chatdoctor(root: Path = DATA_ROOT) -> list[Record]:
    """ChatDoctor dialogues rendered as 'Patient: ... Doctor: ...'."""
    rows = json.loads((root / "medical" / "chatdoctor_1500.json").read_text(encoding="utf-8"))
    return [Record(f"Patient: {r['input']}\nDoctor: {r['output']}", "medical", "chatdoctor",
                   "dialogue") for r in rows]


def load_ddxplus(root: Path = DATA_ROOT) -> list[Record]:
    """DDXPlus cases: the patient's evidence followed by the gold diagnosis."""
    with open(root / "medical" / "ddxplus.csv", encoding="utf-8", newline="") as fh:
        return [Record(f"{r['Information']}\nDiagnosis: {r['Diagnosis']}", "medical", "ddxplus",
                       r["Diagnosis"]) for r in csv.DictReader(fh)]


def load_phrasebank(root: Path = DATA_ROOT) -> list[Record]:
    """Financial PhraseBank sentences (50% agreement) with their sentiment."""
    with open(root / "financial" / "sentences_50agree.csv", encoding="utf-8", newline="") as fh:
        return [Record(r["sentence"], "financial", "phrasebank", r["label"])
                for r in csv.DictReader(fh)]


def load_case(case: str, root: Path = DATA_ROOT) -> list[Record]:
    """All records of one case study: 'medical' or 'financial'."""
    if case == "medical":
        return load_pubmedqa(root) + load_chatdoctor(root) + load_ddxplus(root)
    if case == "financial":
        return load_phrasebank(root)
    raise ValueError(f"unknown case {case!r}; choose one of {CASES}")


class Splits(NamedTuple):
    private: list[Record]  # spread over the devices
    public: list[Record]   # the server's public data (distillation, MoE tuning)
    test: list[Record]     # held out for every method's evaluation


def split_sizes(n: int, test_fraction: float, public_fraction: float) -> tuple[int, int, int]:
    """(test, public, private) record counts of `split_records` on n records."""
    n_test, n_public = int(round(test_fraction * n)), int(round(public_fraction * n))
    return n_test, n_public, n - n_test - n_public


def split_records(records: Sequence[Record], test_fraction: float, public_fraction: float,
                  seed: int) -> Splits:
    """Disjoint test / public / private splits from one seeded permutation."""
    if test_fraction + public_fraction >= 1:
        raise ValueError("test_fraction + public_fraction must be below 1")
    order = np.random.default_rng(seed).permutation(len(records))
    n_test, n_public, _ = split_sizes(len(records), test_fraction, public_fraction)
    pick = lambda idx: [records[i] for i in idx]  # noqa: E731
    return Splits(private=pick(order[n_test + n_public:]),
                  public=pick(order[n_test:n_test + n_public]), test=pick(order[:n_test]))


def lm_blocks(texts: Sequence[str], tokenizer, seq_len: int) -> torch.Tensor:
    """Token ids of all texts, each ended by EOS, concatenated and cut into (n, seq_len) blocks;
    the incomplete tail is dropped (the standard causal-LM packing)."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []:
        stream.extend(ids)
        stream.append(eos)
    n = len(stream) // seq_len
    import torch

    return torch.tensor(stream[:n * seq_len], dtype=torch.long).view(n, seq_len)


def batches(blocks: torch.Tensor, batch_size: int, rng: np.random.Generator | None = None):
    """Mini-batches of blocks, shuffled when `rng` is given."""
    import torch

    order = rng.permutation(len(blocks)) if rng is not None else np.arange(len(blocks))
    for start in range(0, len(blocks), batch_size):
        yield blocks[torch.as_tensor(order[start:start + batch_size])]
