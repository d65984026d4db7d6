"""The paper's published results, as data, for side-by-side comparison with our runs.

Numbers are the three tables of the authors' README (microsoft/robustlearn `chatgpt-robust/`, the
paper's summary; SEEDS 4.6). Row names follow the README; `MODEL_IDS` says which concrete model each
row was (SEEDS 4.4, from the repo's config.py and inference.py). `CHATGPT_RECOMPUTED` is the ChatGPT
row re-scored from the authors' stored answers by this package (see `stored.py`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperTable:
    name: str                           # "adversarial" | "translation" | "ood" (= Task.table)
    metric: str                         # what the numbers are
    columns: tuple[str, ...]            # column names (= Task.column for classification tables)
    rows: dict[str, tuple[float, ...]]  # row name -> values in column order
    lower_is_better: bool

    def value(self, row: str, column: str) -> float:
        """One published number; KeyError/ValueError name what is missing."""
        if row not in self.rows:
            raise KeyError(f"{self.name} table has no row {row!r}; rows: {', '.join(self.rows)}")
        return self.rows[row][self.columns.index(column)]

    def records(self) -> list[dict[str, float | str]]:
        """One dict per row ({"model": row, column: value, ...}), for CSV/MLflow tables."""
        return [{"model": row, **dict(zip(self.columns, values))} for row, values in self.rows.items()]


ADVERSARIAL_ASR = PaperTable(
    name="adversarial", metric="ASR %", lower_is_better=True,
    columns=("SST-2", "QQP", "MNLI", "QNLI", "RTE", "ANLI"),
    rows={
        "Random": (50.0, 50.0, 66.7, 50.0, 50.0, 66.7),
        "DeBERTa-L (435M)": (66.9, 39.7, 64.5, 46.6, 60.5, 69.3),
        "BART-L (407M)": (56.1, 62.8, 58.7, 52.0, 56.8, 57.7),
        "GPT-J (6B)": (48.7, 59.0, 73.6, 50.0, 56.8, 66.5),
        "T5 (11B)": (40.5, 59.0, 48.8, 49.7, 56.8, 68.6),
        "T0 (11B)": (36.5, 60.3, 72.7, 49.7, 56.8, 77.2),
        "NeoX-20B": (52.7, 56.4, 59.5, 54.0, 48.1, 70.0),
        "OPT (66B)": (47.6, 53.9, 60.3, 52.7, 58.0, 58.3),
        "BLOOM (176B)": (48.7, 59.0, 73.6, 49.7, 56.8, 66.5),
        "text-davinci-002": (46.0, 28.2, 54.6, 45.3, 35.8, 68.8),
        "text-davinci-003": (44.6, 55.1, 44.6, 38.5, 34.6, 62.9),
        "ChatGPT": (39.9, 18.0, 32.2, 34.5, 24.7, 55.3),
    })

TRANSLATION = PaperTable(
    name="translation", metric="BLEU / GLEU / METEOR (x100), AdvGLUE-T EN->ZH",
    lower_is_better=False, columns=("BLEU", "GLEU", "METEOR"),
    rows={
        "Helsinki-NLP/opus-mt-en-zh": (18.11, 26.78, 46.38),
        "liam168/trans-opus-mt-en-zh": (15.23, 24.89, 45.02),
        "text-davinci-002": (24.97, 36.30, 59.28),
        "text-davinci-003": (30.60, 40.01, 61.88),
        "ChatGPT": (26.27, 37.29, 58.95),
    })

OOD_F1 = PaperTable(
    name="ood", metric="F1 % (macro)", lower_is_better=False, columns=("Flipkart", "DDXPlus"),
    rows={
        "Random": (20.0, 4.0),
        "DeBERTa-L (435M)": (60.6, 4.5),
        "BART-L (407M)": (57.8, 5.3),
        "GPT-J (6B)": (28.0, 2.4),
        "T5 (11B)": (58.8, 6.3),
        "T0 (11B)": (58.3, 8.4),
        "NeoX-20B": (39.4, 12.3),
        "OPT (66B)": (44.5, 0.3),
        "BLOOM (176B)": (28.0, 0.1),
        "text-davinci-002": (57.5, 18.9),
        "text-davinci-003": (57.3, 19.6),
        "ChatGPT": (60.6, 20.2),
    })

PAPER_TABLES: dict[str, PaperTable] = {t.name: t for t in (ADVERSARIAL_ASR, TRANSLATION, OOD_F1)}

# Row name -> the model the authors ran (the "T5 (11B)" row ran google/flan-t5-large in code).
MODEL_IDS: dict[str, str] = {
    "DeBERTa-L (435M)": "cross-encoder/nli-deberta-v3-large",
    "BART-L (407M)": "facebook/bart-large-mnli",
    "GPT-J (6B)": "EleutherAI/gpt-j-6B",
    "T5 (11B)": "google/flan-t5-large",
    "T0 (11B)": "bigscience/T0pp",
    "NeoX-20B": "EleutherAI/gpt-neox-20b",
    "OPT (66B)": "facebook/opt-66b",
    "BLOOM (176B)": "bigscience/bloom",
    "text-davinci-002": "text-davinci-002",
    "text-davinci-003": "text-davinci-003",
    "ChatGPT": "ChatGPT web UI, early 2023 (answers stored in data/robustness)",
    "Helsinki-NLP/opus-mt-en-zh": "Helsinki-NLP/opus-mt-en-zh",
    "liam168/trans-opus-mt-en-zh": "liam168/trans-opus-mt-en-zh",
}

# The ChatGPT row re-scored from the stored answers (column "label", parsing.parse_answer "chat",
# metrics as in metrics.py); tests/workloads/robustness checks these figures.
CHATGPT_RECOMPUTED: dict[str, float] = {
    "SST-2": 39.9, "QQP": 17.9, "MNLI": 29.8, "QNLI": 34.5, "RTE": 25.9, "Flipkart": 61.2,
}
