"""Free-text model answers -> class ids, by the paper's own rules; anything unmapped is UNPARSED.

Two rule sets, both from microsoft/robustlearn `chatgpt-robust/` @ 0925ced:
- `stat_label`: main.py `stat()`, used for ChatGPT and the GPT API (services "chat", "gpt"). An
  ordered chain of substring tests rewrites a sentence-like answer into a label word; then
  "x_y" -> "y" (unless "x_y" is itself a label) and dots are stripped; the word is looked up in
  LABEL_TO_ID, and a miss is -1, which counts as wrong. Its quirks stay, on purpose: "neutral"
  on SST-2 is class 2 (wrong, but parsed); "not entailment." (a space) hits the "entailment."
  rule first and becomes entailment; an MNLI answer "not_entailment" ends as "entailment";
  "the answer is positive" (no rule, no label word alone) is unparsed. For completions, whose
  spaces became "_", the last word wins: "The two questions are not equivalent." -> equivalent.
- `first_label`: inference.py `process_label`, used for Hugging Face generative models: the first
  candidate of LABEL_SET (in the authors' order) found as a case-insensitive substring. Because
  "entailment" precedes "not_entailment" (and "equivalent" precedes "not_equivalent") an answer
  "not_entailment" parses as entailment; consistent with the many generative rows of the paper's
  table that sit at the always-"entailment"/"equivalent" rate (RTE 56.8 = 46/81, QQP 59.0 = 46/78).
Before `stat_label` the answer is normalised as inference.py `res_to_label` did per service:
ChatGPT `lower().strip()`; GPT completions also replace spaces and newlines by "_".
"""
from __future__ import annotations

from typing import Mapping, Sequence

from workloads.robustness.tasks import Task

UNPARSED = -1
PARSE_STYLES = ("chat", "completion", "generative")

# main.py stat(): (label word, phrases), tested in this order; the first phrase found wins.
_STAT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("not_entailment", ("not_entail", "not_ent")),
    ("entailment", ("entails", "is_entailment", "two sentences are entailment", "entailment.",
                    "entailment relation holds", '"entailment"')),
    ("neutral", ("the two sentences are neutral", "neutral.",
                 "these two sentences are neutral to each other")),
    ("contradiction", ("the two sentences are a contradiction", "contradiction.",
                       "the first two sentences are a contradiction",
                       "the two sentences are contradictory")),
    ("equivalent", ("two questions are equivalent", "therefore equivalent")),
    ("not_equivalent", ("two questions are not equivalent", "not equivalent.",
                        "they are not exactly equivalent")),
    ("negative", ("the sentence is negative", "the sentence as negative",
                  'the answer is "negative"')),
    ("not_entailment", ("the second sentence is not entailment", "do not entail each other",
                        "the question and the sentence are not entailed",
                        "the given question and sentence are not related")),
    ("positive", ('the classification would be "positive".', 'the answer would be "positive".')),
)


def chat_answer(raw: str) -> str:
    """ChatGPT's answer as the authors stored it (res_to_label, service "chat")."""
    return raw.lower().strip()


def completion_answer(raw: str) -> str:
    """A GPT completion as the authors stored it (res_to_label, service "gpt")."""
    return raw.lower().strip().replace(" ", "_").replace("\n", "_")


def stat_label(answer: str, label_to_id: Mapping[str, int]) -> int:
    """main.py stat(): substring rules, then the '_' and '.' clean-up, then the label lookup."""
    label = answer.strip()
    for word, phrases in _STAT_RULES:
        if any(phrase in label for phrase in phrases):
            label = word
            break
    if "_" in label and label not in label_to_id:
        label = label.split("_")[-1]
    if "." in label:
        label = label.strip(".")
    return label_to_id.get(label, UNPARSED)


def first_label(output: str, labels: Sequence[str], label_to_id: Mapping[str, int]) -> int:
    """inference.py process_label(): the first candidate label contained in the output."""
    lowered = output.lower()
    for label in labels:
        if label.lower() in lowered:
            return label_to_id[label]
    return UNPARSED


def parse_answer(raw: str, task: Task, style: str = "chat") -> int:
    """A classification answer -> class id (or UNPARSED) by the rules the paper used for `style`.

    chat: ChatGPT and chat-completion endpoints; completion: GPT completion endpoints
    (text-davinci-00x, gpt-3.5-turbo-instruct); generative: local or HF generative models.
    """
    if task.kind != "classification":
        raise ValueError(f"task {task.name!r} is {task.kind}, it has no labels to parse")
    if style == "chat":
        return stat_label(chat_answer(raw), task.label_to_id)
    if style == "completion":
        return stat_label(completion_answer(raw), task.label_to_id)
    if style == "generative":
        return first_label(raw, task.labels, task.label_to_id)
    raise ValueError(f"unknown parse style {style!r}; choose one of {PARSE_STYLES}")


def clean_translation(raw: str, style: str = "chat") -> str:
    """A translation output as inference.py kept it: GPT/ChatGPT lower().strip(), pipelines as is."""
    if style in ("chat", "completion"):
        return raw.lower().strip()
    if style == "generative":
        return raw
    raise ValueError(f"unknown parse style {style!r}; choose one of {PARSE_STYLES}")
