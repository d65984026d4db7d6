"""From raw answers to the paper's numbers: per-example rows, bad cases, and the three tables.

`score_job` parses each answer by the rules the paper used for that kind of model (`parsing.py`;
an exact label lookup for classifiers, whose answers are label words) and computes the task's
metric (`metrics.py`): ASR on adversarial sets, macro-F1 on OOD sets, BLEU/GLEU/METEOR on the
translation set. Bad cases are the authors' `*_badcase.csv` idea: every misclassified example
(unparsed answers included); for translation, the sentences whose METEOR is below 0.3.
`comparison_table` puts our rows under the paper's published rows (`paper_tables.py`).
"""
from __future__ import annotations

from typing import Any, Sequence

from workloads.robustness.metrics import (classification_scores, meteor, sentence_bleu,
                                          tokenize_zh, translation_scores)
from workloads.robustness.paper_tables import PAPER_TABLES, PaperTable
from workloads.robustness.parsing import UNPARSED, clean_translation, parse_answer
from workloads.robustness.tasks import Example, Task

BAD_TRANSLATION_METEOR = 0.3
TABLE_METRIC = {"adversarial": "asr", "ood": "macro_f1"}
TRANSLATION_COLUMNS = {"BLEU": "bleu", "GLEU": "gleu", "METEOR": "meteor"}


def parse(raw: str, task: Task, style: str) -> int:
    """A class id from a raw answer; 'label' answers are label words looked up exactly."""
    if style == "label":
        return task.label_to_id.get(raw.strip().lower(), UNPARSED)
    return parse_answer(raw, task, style)


def _word(task: Task, label: int) -> str:
    names = {i: w for w, i in task.label_to_id.items()}   # every LABEL_TO_ID map is one-to-one
    return names.get(label, "UNPARSED" if label == UNPARSED else str(label))


def score_job(task: Task, examples: Sequence[Example], answers: dict[str, str], style: str,
              zh_tokenizer: str = "auto") -> tuple[dict[str, Any], list[dict]]:
    """(metrics, one row per example) for one (model, task)."""
    raws = [answers[e.id] for e in examples]
    if task.kind == "translation":
        return _score_translation(examples, raws, style, zh_tokenizer)
    preds = [parse(r, task, style) for r in raws]
    gold = [int(e.label) for e in examples]
    metrics = classification_scores(preds, gold, task.metric)
    rows = [{"id": e.id, "index": e.index, "input": e.text, "gold": _word(task, g), "raw": r,
             "pred": _word(task, p), "correct": p == g}
            for e, r, p, g in zip(examples, raws, preds, gold)]
    return metrics, rows


def _score_translation(examples, raws, style, zh_tokenizer):
    style = "chat" if style == "label" else style
    hyps = [clean_translation(r, style) for r in raws]
    refs = [str(e.label) for e in examples]
    scores = translation_scores(hyps, refs, zh_tokenizer)   # "tokenizer": the segmenter used
    used = scores["tokenizer"]
    rows = []
    for e, raw, hyp, ref in zip(examples, raws, hyps, refs):
        h, r = tokenize_zh(hyp, used), [tokenize_zh(ref, used)]
        rows.append({"id": e.id, "index": e.index, "input": e.text, "gold": ref, "raw": raw,
                     "pred": hyp, "bleu": 100 * sentence_bleu(r, h) if h else 0.0,
                     "meteor": 100 * meteor(r, h) if h else 0.0})
    return scores, rows


def bad_cases(task: Task, rows: Sequence[dict]) -> list[dict]:
    if task.kind == "translation":
        return [r for r in rows if r["meteor"] < 100 * BAD_TRANSLATION_METEOR]
    return [r for r in rows if not r["correct"]]


def headline(task: Task, metrics: dict) -> float:
    """The number the paper's table shows for this task."""
    return metrics["bleu"] if task.kind == "translation" else metrics[task.metric]


# --------------------------------------------------------------------------- the paper's tables
def comparison_table(table: PaperTable, results: Sequence[dict]) -> list[dict]:
    """The paper's rows (source 'paper') and then ours (source 'ours'), one row per model.

    `results` holds one dict per (model, task) with keys model, column, table, metrics, n, of.
    A cell evaluated on a subset says so in the `examples` column ("SST-2 20/148").
    """
    rows = [{"model": r["model"], "source": "paper", **{c: r[c] for c in table.columns}}
            for r in table.records()]
    ours: dict[str, dict] = {}
    for res in results:
        if res["table"] != table.name:
            continue
        row = ours.setdefault(res["model"], {"model": res["model"], "source": "ours",
                                             "examples": []})
        if table.name == "translation":
            row.update({c: round(res["metrics"][k], 2) for c, k in TRANSLATION_COLUMNS.items()})
        else:
            row[res["column"]] = round(res["metrics"][TABLE_METRIC[table.name]], 1)
        if res["n"] < res["of"]:
            row["examples"].append(f"{res['column']} {res['n']}/{res['of']}")
    for row in ours.values():
        row["examples"] = "; ".join(row["examples"]) or "all"
    return rows + list(ours.values())


def table_figure(table: PaperTable, rows: Sequence[dict]):
    """An annotated heatmap of the table: published rows, then ours in bold below a line."""
    import numpy as np
    from matplotlib.figure import Figure

    cols = list(table.columns)
    values = np.array([[np.nan if r.get(c) is None else float(r[c]) for c in cols]
                       for r in rows])
    fig = Figure(figsize=(1.3 * len(cols) + 3.5, 0.38 * len(rows) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    cmap = "RdYlGn_r" if table.lower_is_better else "RdYlGn"
    ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", vmin=0, vmax=100)
    for i, r in enumerate(rows):
        for j, v in enumerate(values[i]):
            text = "–" if np.isnan(v) else f"{v:.1f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    fontweight="bold" if r["source"] == "ours" else "normal")
    labels = [f"{r['model']} ({r['source']}{'' if r.get('examples', 'all') == 'all' else ', subset'})"
              for r in rows]
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    first_ours = next((i for i, r in enumerate(rows) if r["source"] == "ours"), None)
    if first_ours is not None:
        ax.axhline(first_ours - 0.5, color="black", linewidth=1.5)
    arrow = "lower is better" if table.lower_is_better else "higher is better"
    ax.set_title(f"{table.name}: {table.metric} ({arrow}); paper rows above, ours below",
                 fontsize=9)
    return fig


def tables(results: Sequence[dict]) -> dict[str, list[dict]]:
    """Every paper table that has at least one of our results: name -> rows."""
    names = {r["table"] for r in results}
    return {name: comparison_table(t, results) for name, t in PAPER_TABLES.items() if name in names}
