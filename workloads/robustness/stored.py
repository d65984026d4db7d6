"""The stored-predictions backend's data: the authors' own ChatGPT answers, per example.

`data/robustness/chatgpt_robust/chatgpt_results/chat_*.csv` (robustlearn @ 0925ced) hold, for each
example of AdvGLUE sst2/qqp/mnli/qnli/rte and Flipkart, the input (`content`), the gold
(`true_label`), ChatGPT's answer as the authors' wrapper stored it (`pred_label`: lower-cased,
stripped) and the authors' manually cleaned answer (`label`; the README says the results "are
manually processed by humans"). Parsing either column with `parsing.parse_answer(..., style="chat")`
regenerates the paper's ChatGPT row offline:
- column "label" (default) gives SEEDS' re-computed row: ASR SST-2 39.9, QQP 17.9, MNLI 29.8,
  QNLI 34.5, RTE 25.9, Flipkart macro-F1 61.2;
- column "pred_label" (main.py's rules on the raw answers) gives SST-2 39.9, QQP 17.9, MNLI 31.4,
  QNLI 34.5, RTE 24.7 (= the README's RTE), Flipkart 61.2.
The README's 18.0 / 32.2 / 60.6 reflect further manual relabelling that no stored file records.
No stored answers exist for ANLI, DDXPlus or the translation set.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from workloads.robustness.tasks import ROBUSTNESS_DATA, Example, Task

RESULTS_DIR = ROBUSTNESS_DATA / "chatgpt_robust" / "chatgpt_results"
STORED_FILES = {
    "advglue_sst2": "chat_advglue_sst2.csv", "advglue_qqp": "chat_advglue_qqp.csv",
    "advglue_mnli": "chat_advglue_mnli.csv", "advglue_qnli": "chat_advglue_qnli.csv",
    "advglue_rte": "chat_advglue_rte.csv", "flipkart": "chat_flipkart_sst2.csv",
}
ANSWER_COLUMNS = ("label", "pred_label")


@dataclass(frozen=True)
class StoredAnswer:
    index: int           # the `idx` column: position of the example in its dataset file
    content: str         # the input ChatGPT saw after the prompt
    true_label: str      # gold as stored: an int id for AdvGLUE, the sentiment word for Flipkart
    pred_label: str      # ChatGPT's answer (lower-cased, stripped by the authors' wrapper)
    label: str           # the authors' manually cleaned answer


def has_stored(task_name: str) -> bool:
    """Whether the authors left ChatGPT answers for this task."""
    return task_name in STORED_FILES


def read_stored(task_name: str, results_dir: str | Path = RESULTS_DIR) -> list[StoredAnswer]:
    """All stored rows of one task, in file order."""
    if not has_stored(task_name):
        raise KeyError(f"no stored ChatGPT answers for task {task_name!r}; "
                       f"stored: {', '.join(STORED_FILES)}")
    path = Path(results_dir) / STORED_FILES[task_name]
    if not path.is_file():
        raise FileNotFoundError(f"stored ChatGPT answers not found: {path}")
    with path.open(encoding="utf-8", newline="") as f:
        return [StoredAnswer(index=int(row["idx"]), content=row["content"],
                             true_label=row["true_label"], pred_label=row["pred_label"],
                             label=row["label"]) for row in csv.DictReader(f)]


def stored_answers(task: Task, examples: Sequence[Example], column: str = "label",
                   results_dir: str | Path = RESULTS_DIR) -> dict[str, str]:
    """{example.id: ChatGPT's answer} for the given examples (any subset, matched by index).

    Each stored row must carry the example's own input text, so answers are never attached to a
    different dataset (a user-given file that differs from the paper's raises ValueError).
    """
    if column not in ANSWER_COLUMNS:
        raise ValueError(f"unknown answer column {column!r}; choose one of {ANSWER_COLUMNS}")
    rows = {row.index: row for row in read_stored(task.name, results_dir)}
    answers = {}
    for example in examples:
        row = rows.get(example.index)
        if row is None or row.content != example.text:
            raise ValueError(f"{task.name}: example {example.id} (index {example.index}) has no "
                             "stored ChatGPT answer for the same input text")
        answers[example.id] = getattr(row, column)
    return answers
