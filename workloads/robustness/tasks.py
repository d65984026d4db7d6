"""The task registry: one entry per (dataset, task) the paper evaluates, lm-eval-harness style.

Each `Task` knows its shipped file under `data/robustness/`, how to read the original format from a
user-given path, its labels and verbatim prompts (`prompts.py`), its metric and the paper table
and column it fills. Inputs are built exactly as the paper's `dataload.py` builds them: AdvGLUE pair
fields joined by one space, ANLI `context + ' ' + hypothesis`, Flipkart `Summary`, DDXPlus
`Information`, AdvGLUE-T `source`. The AdvGLUE mnli-mm subset is not a task: the paper does not
report it (`load_advglue(path, "mnli-mm")` still reads it).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from workloads.common.paths import DATA_ROOT
from workloads.robustness.prompts import LABEL_SET, LABEL_TO_ID, PROMPT_SET

ROBUSTNESS_DATA = DATA_ROOT / "robustness"
ADVGLUE_FIELDS = {"sst2": ("sentence",), "qqp": ("question1", "question2"),
                  "mnli": ("premise", "hypothesis"), "mnli-mm": ("premise", "hypothesis"),
                  "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}
ANLI_LABELS = {"e": 0, "n": 1, "c": 2}          # main.py: e/n/c -> entailment/neutral/contradiction
ANLI_PARTS = {"all": slice(None), "first300": slice(None, 300), "rest900": slice(300, None)}
RENDER_STYLES = ("chat", "completion", "davinci002", "generative", "pipeline")


@dataclass(frozen=True)
class Example:
    id: str              # stable key: AdvGLUE/translation `idx`, ANLI `uid`, CSV row number
    index: int           # position in the file (the `idx` column of the paper's result CSVs)
    text: str            # model input without the prompt, built as the paper's dataload.py does
    label: int | str     # class id (prompts.LABEL_TO_ID) or, for translation, the Chinese reference


@dataclass(frozen=True)
class Task:
    name: str            # registry key, e.g. "advglue_sst2"
    kind: str            # "classification" | "translation"
    metric: str          # "asr" (adversarial), "macro_f1" (OOD) or "translation" (BLEU/GLEU/METEOR)
    paper_task: str      # the paper's task key into prompts.* ("sst2", "translation_en_to_zh")
    table: str           # paper table it fills: "adversarial" | "translation" | "ood"
    column: str          # that table's column: "SST-2", "ANLI", "Flipkart", ...
    default_path: Path   # the shipped copy under data/robustness/
    expected_rows: int   # row count of the paper's split (SEEDS 4.2)
    file_format: str     # what a user-given file must be (for error messages)
    reader: Callable[[Path], list[Example]]

    @property
    def labels(self) -> tuple[str, ...]:
        """Candidate labels in the authors' order (zero-shot candidates, generative search order)."""
        return LABEL_SET.get(self.paper_task, ())

    @property
    def label_to_id(self) -> dict[str, int]:
        return LABEL_TO_ID.get(self.paper_task, {})

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def prompts(self) -> tuple[str, ...]:
        return PROMPT_SET[self.paper_task]

    @property
    def prompt(self) -> str:
        """The prompt main.py uses: the last of the list."""
        return self.prompts[-1]

    def load(self, path: str | Path | None = None) -> list[Example]:
        """The task's examples from the shipped file, or from `path` in the original format."""
        return self.reader(_existing(self.default_path if path is None else path, self.file_format))

    def render(self, text: str, style: str = "chat", prompt: str | None = None) -> str:
        """The model input as inference.py assembles it for each kind of model.

        chat: prompt + text (ChatGPT, text-davinci-003); davinci002: text + prompt; generative:
        prompt + text + ' Answer: ' (HF text generation); pipeline: the text alone (zero-shot and
        translation pipelines). For translation the GPT API ("completion", "davinci002") quotes
        the sentence.
        """
        if style not in RENDER_STYLES:
            raise ValueError(f"unknown render style {style!r}; choose one of {RENDER_STYLES}")
        prompt = self.prompt if prompt is None else prompt
        if style == "pipeline":
            return text
        if self.kind == "translation":
            return prompt + (f'"{text}"' if style in ("completion", "davinci002") else text)
        if style == "davinci002":
            return text + prompt
        return prompt + text + (" Answer: " if style == "generative" else "")


def _existing(path: str | Path, file_format: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"robustness data file not found: {path} (expected {file_format})")
    return path


def _csv_rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def _label(mapping: dict, key: str, path: Path, i: int) -> int:
    if key not in mapping:
        raise ValueError(f"{path}: row {i} has label {key!r}, not one of {sorted(mapping)}")
    return mapping[key]


def load_advglue(path: str | Path, subset: str) -> list[Example]:
    """AdvGLUE dev.json, one subset: the text fields joined by a space (dataload.DataAdvGLUE)."""
    path = _existing(path, "AdvGLUE dev.json: {task: [{idx, label, <fields>}]}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if subset not in data:
        raise ValueError(f"{path}: no AdvGLUE subset {subset!r}; it has {sorted(data)}")
    fields = ADVGLUE_FIELDS[subset]
    return [Example(id=str(row["idx"]), index=i, text=" ".join(row[f] for f in fields),
                    label=int(row["label"])) for i, row in enumerate(data[subset])]


def load_anli(path: str | Path, part: str = "all") -> list[Example]:
    """ANLI jsonl: context + ' ' + hypothesis, e/n/c -> 0/1/2 (dataload.DataANLI).

    `part` picks the authors' quota split (split_data.py): the first 300 lines or the other 900.
    """
    path = _existing(path, "ANLI jsonl: {uid, context, hypothesis, label in e/n/c} per line")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    offset = ANLI_PARTS[part].start or 0
    out = []
    for i, line in enumerate(lines[ANLI_PARTS[part]], start=offset):
        row = json.loads(line)
        out.append(Example(id=row.get("uid", str(i)), index=i,
                           text=row["context"] + " " + row["hypothesis"],
                           label=_label(ANLI_LABELS, row["label"], path, i)))
    return out


def load_flipkart(path: str | Path) -> list[Example]:
    """Flipkart reviews CSV: the `Summary` text, `Sentiment` gold (dataload.DataFlipkart)."""
    path = _existing(path, "CSV with columns Summary, Sentiment")
    return [Example(id=str(i), index=i, text=row["Summary"],
                    label=_label(LABEL_TO_ID["flipkart"], row["Sentiment"], path, i))
            for i, row in enumerate(_csv_rows(path))]


def load_ddxplus(path: str | Path) -> list[Example]:
    """DDXPlus CSV: the `Information` text, gold `Diagnosis` lower-cased as main.py does."""
    path = _existing(path, "CSV with columns Information, Diagnosis")
    return [Example(id=str(i), index=i, text=row["Information"],
                    label=_label(LABEL_TO_ID["ddxplus"], row["Diagnosis"].lower(), path, i))
            for i, row in enumerate(_csv_rows(path))]


def load_translation(path: str | Path, direction: str = "translation_en_to_zh") -> list[Example]:
    """AdvGLUE-T json: English `source` in, Chinese `target` as the reference."""
    path = _existing(path, '{"translation_en_to_zh": [{idx, source, target}]}')
    data = json.loads(path.read_text(encoding="utf-8"))
    if direction not in data:
        raise ValueError(f"{path}: no {direction!r} list; it has {sorted(data)}")
    return [Example(id=str(row["idx"]), index=i, text=row["source"], label=row["target"])
            for i, row in enumerate(data[direction])]


def _advglue_task(subset: str, column: str, rows: int) -> Task:
    return Task(name=f"advglue_{subset}", kind="classification", metric="asr", paper_task=subset,
                table="adversarial", column=column,
                default_path=ROBUSTNESS_DATA / "advglue" / "dev.json", expected_rows=rows,
                file_format="AdvGLUE dev.json",
                reader=partial(load_advglue, subset=subset))


_CHAT = ROBUSTNESS_DATA / "chatgpt_robust"
TASKS: dict[str, Task] = {t.name: t for t in (
    _advglue_task("sst2", "SST-2", 148),
    _advglue_task("qqp", "QQP", 78),
    _advglue_task("mnli", "MNLI", 121),
    _advglue_task("qnli", "QNLI", 148),
    _advglue_task("rte", "RTE", 81),
    Task(name="anli", kind="classification", metric="asr", paper_task="anli", table="adversarial",
         column="ANLI", default_path=ROBUSTNESS_DATA / "anli" / "R3_test.jsonl", expected_rows=1200,
         file_format="ANLI R3 test.jsonl", reader=load_anli),
    # The stored ChatGPT Flipkart run used task "sst2" (scripts/chat.sh): the SST-2 prompt and the
    # same label map; this task keeps the Flipkart prompt that config.py defines for it.
    Task(name="flipkart", kind="classification", metric="macro_f1", paper_task="flipkart",
         table="ood", column="Flipkart", default_path=_CHAT / "flipkart" / "flipkart_review.csv",
         expected_rows=331, file_format="flipkart_review.csv", reader=load_flipkart),
    Task(name="ddxplus", kind="classification", metric="macro_f1", paper_task="ddxplus",
         table="ood", column="DDXPlus", default_path=_CHAT / "ddxplus" / "ddxplus.csv",
         expected_rows=100, file_format="ddxplus.csv", reader=load_ddxplus),
    Task(name="advglue_t", kind="translation", metric="translation",
         paper_task="translation_en_to_zh", table="translation", column="EN->ZH",
         default_path=_CHAT / "advglue_t" / "translation.json", expected_rows=31,
         file_format="AdvGLUE-T translation.json", reader=load_translation),
)}


def get_task(name: str) -> Task:
    """The registered task called `name`; the error lists the known ones."""
    if name not in TASKS:
        raise KeyError(f"unknown robustness task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def tasks_in_table(table: str) -> list[Task]:
    """The tasks that fill one paper table, in column order."""
    return [t for t in TASKS.values() if t.table == table]
