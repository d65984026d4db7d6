"""The shipped medical and financial text (data/medical, data/financial) and its causal-LM blocks.

The paper's cases use MMedBench (medical QA) and FinGPT/fingpt-fiqa_qa (financial QA); neither is
available offline, so the stand-ins are [OURS]: PubMedQA, ChatDoctor and DDXPlus for medical, and
Financial PhraseBank for financial (see each folder's PROVENANCE.md), put in instruction -> answer
form as FinGPT's sentiment instructions do. Every text ends with its `answer`, the part Table II's
answer-only token accuracy scores (`answer_examples`).

Every loader returns `Record(text, domain, source, label)`. `split_records` fixes, by seed, a
held-out test split, a "public" server split (Sec. IV: the server's public data for distillation
and tuning) and the private pool the federation spreads over devices.
"""
from __future__ import annotations

import csv
import functools
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
    answer: str  # the end of `text` a model is scored on: the answer to the prompt before it


def load_pubmedqa(root: Path = DATA_ROOT) -> list[Record]:
    """PubMedQA PQA-L: question, abstract contexts and long answer as one text."""
    rows = json.loads((root / "medical" / "pubmedqa_500.json").read_text(encoding="utf-8"))
    return [Record(f"Question: {r['QUESTION']}\nContext: {' '.join(r['CONTEXTS'])}\n"
                   f"Answer: {r['LONG_ANSWER']}", "medical", "pubmedqa", r["final_decision"],
                   f" {r['LONG_ANSWER']}") for r in rows.values()]


def load_chatdoctor(root: Path = DATA_ROOT) -> list[Record]:
    """ChatDoctor dialogues rendered as 'Patient: ... Doctor: ...'."""
    rows = json.loads((root / "medical" / "chatdoctor_1500.json").read_text(encoding="utf-8"))
    return [Record(f"Patient: {r['input']}\nDoctor: {r['output']}", "medical", "chatdoctor",
                   "dialogue", f" {r['output']}") for r in rows]


def load_ddxplus(root: Path = DATA_ROOT) -> list[Record]:
    """DDXPlus cases: the patient's evidence followed by the gold diagnosis."""
    with open(root / "medical" / "ddxplus.csv", encoding="utf-8", newline="") as fh:
        return [Record(f"{r['Information']}\nDiagnosis: {r['Diagnosis']}", "medical", "ddxplus",
                       r["Diagnosis"], f" {r['Diagnosis']}") for r in csv.DictReader(fh)]


FINANCIAL_INSTRUCTION = ("What is the sentiment of this news? "
                         "Please choose an answer from {negative/neutral/positive}.")


def load_phrasebank(root: Path = DATA_ROOT) -> list[Record]:
    """Financial PhraseBank sentences (50% agreement) as instruction -> answer: FinGPT's
    sentiment instruction, the sentence as input, its sentiment as the answer."""
    with open(root / "financial" / "sentences_50agree.csv", encoding="utf-8", newline="") as fh:
        return [Record(f"Instruction: {FINANCIAL_INSTRUCTION}\nInput: {r['sentence']}\n"
                       f"Answer: {r['label']}", "financial", "phrasebank", r["label"],
                       f" {r['label']}") for r in csv.DictReader(fh)]


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


@functools.lru_cache(maxsize=None)
def case_vocabulary(case: str, root: Path = DATA_ROOT) -> np.ndarray:
    """The sorted token ids a case's text uses (every record, its prompt and answer tokenized
    alone too) plus the special ids 0-2: the case's closed vocabulary (`data.vocabulary: case`).
    Models over it keep those rows of the shared embedding and output layer only [OURS: a CPU
    economy; the 49,152-row output layer is most of a small cut's compute]. Computed once per
    process (about 2 s)."""
    from workloads.common.tokenizer import EOS_ID, load_tokenizer

    records = load_case(case, root)
    tok = load_tokenizer()
    pieces = [r.text for r in records] + [r.answer for r in records] + [
        r.text[:len(r.text) - len(r.answer)] for r in records]
    ids = {i for row in tok(pieces, add_special_tokens=False)["input_ids"] for i in row}
    return np.array(sorted(ids | set(range(EOS_ID + 1))), dtype=np.int64)


class CompactTokenizer:
    """The shared tokenizer with its ids renumbered into a vocabulary `kept` (sorted shared ids;
    id kept[i] becomes i). The special ids 0-2 keep their numbers, so the models' configs hold.
    Only what `lm_blocks` and `answer_examples` call: `__call__` and `eos_token_id`."""

    def __init__(self, tokenizer, kept: np.ndarray):
        if not np.array_equal(kept[:3], np.arange(3)):
            raise ValueError("a compact vocabulary must keep the special ids 0, 1 and 2")
        self._tokenizer = tokenizer
        self._index = np.full(len(tokenizer), -1, dtype=np.int64)
        self._index[kept] = np.arange(len(kept))
        self.eos_token_id = tokenizer.eos_token_id

    def _compact(self, ids: list[int]) -> list[int]:
        out = self._index[np.asarray(ids, dtype=np.int64)]
        if (out < 0).any():
            missing = sorted({int(i) for i, o in zip(ids, out) if o < 0})[:5]
            raise ValueError(f"token ids {missing} are outside the case vocabulary: text not of "
                             "this case (set deepfusion.data.vocabulary=full)")
        return out.tolist()

    def __call__(self, texts, add_special_tokens: bool = False) -> dict:
        ids = self._tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
        if isinstance(texts, str):
            return {"input_ids": self._compact(ids)}
        return {"input_ids": [self._compact(row) for row in ids]}


def case_tokenizer(kept: np.ndarray | None):
    """The tokenizer models over `kept` read (the shared one when `kept` is None)."""
    from workloads.common.tokenizer import load_tokenizer

    return load_tokenizer() if kept is None else CompactTokenizer(load_tokenizer(), kept)


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


def answer_examples(records: Sequence[Record], tokenizer, seq_len: int):
    """(ids, mask), both (n, seq_len): one record per row, its prompt then its answer then EOS,
    EOS-padded on the right; mask[i, t] marks the answer tokens (what Table II's answer-only
    token accuracy scores). A long answer keeps its first seq_len // 2 tokens and the prompt its
    last ones, so every answer is scored with its question in view."""
    import torch

    eos = tokenizer.eos_token_id
    ids = torch.full((len(records), seq_len), eos, dtype=torch.long)
    mask = torch.zeros((len(records), seq_len), dtype=torch.bool)
    for i, r in enumerate(records):
        if not r.text.endswith(r.answer):
            raise ValueError(f"record {i} ({r.source}) does not end with its answer")
        prompt = tokenizer(r.text[:len(r.text) - len(r.answer)], add_special_tokens=False)
        answer = tokenizer(r.answer, add_special_tokens=False)["input_ids"][:seq_len // 2]
        row = (prompt["input_ids"] + answer)[-(seq_len - 1):] + [eos]
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, len(row) - 1 - len(answer):len(row) - 1] = True
    return ids, mask


def batches(blocks: torch.Tensor, batch_size: int, rng: np.random.Generator | None = None):
    """Mini-batches of blocks, shuffled when `rng` is given."""
    import torch

    order = rng.permutation(len(blocks)) if rng is not None else np.arange(len(blocks))
    for start in range(0, len(blocks), batch_size):
        yield blocks[torch.as_tensor(order[start:start + batch_size])]
