"""The paper's claims that `orchestrator reproduce robustness` checks (experiments/robustness/
reproduce.yaml), read from the result rows by model name.

The rows name the models as reproduce.yaml does: `ChatGPT` (the authors' stored answers, every
example), `ChatGPT-subset` (the same answers on each seed's random subset) and `SmolLM2-135M-
Instruct` (an open model prompted as the paper prompts Hugging Face models, on that subset). A
claim whose models a run left out is left out of its table.

The stored answers do not change between seeds, so the ChatGPT-only claims have an interval of no
width: they check that this package's parsing and metrics regenerate the published row. The open-
model claim is paired per seed on the same examples; the paper compares with 0.4-176B models we
cannot run offline, SmolLM2-135M is the open model we have.
"""
from __future__ import annotations

import numpy as np

from orchestrator.claims import Claim
from workloads.robustness.paper_tables import ADVERSARIAL_ASR, OOD_F1
from workloads.robustness.tasks import TASKS

CHATGPT, CHATGPT_SUBSET, OPEN_MODEL = "ChatGPT", "ChatGPT-subset", "SmolLM2-135M-Instruct"
ADVGLUE = ("advglue_sst2", "advglue_qqp", "advglue_mnli", "advglue_qnli", "advglue_rte")
# the open models of the paper's adversarial table (not OpenAI's), for the paper's figure
OPEN_ROWS = ("DeBERTa-L (435M)", "BART-L (407M)", "GPT-J (6B)", "T5 (11B)", "T0 (11B)",
             "NeoX-20B", "OPT (66B)", "BLOOM (176B)")


def _paper_mean(row: str) -> float:
    """A row's mean published ASR over the five AdvGLUE tasks."""
    return float(np.mean([ADVERSARIAL_ASR.value(row, TASKS[t].column) for t in ADVGLUE]))


def _by_seed(rows, model: str, metric: str) -> dict[int, dict[str, float]]:
    """{seed: {task: metric}} of one model (seed 0 when the run had one seed)."""
    out: dict[int, dict[str, float]] = {}
    for r in rows:
        if r.get("model") == model and metric in r:
            out.setdefault(int(r.get("seed", 0)), {})[r["task"]] = float(r[metric])
    return out


def asr_below_chance(rows) -> list[float]:
    """Per seed: ChatGPT's mean AdvGLUE ASR minus chance's (50 binary, 66.7 MNLI), in points."""
    chance = {t: ADVERSARIAL_ASR.value("Random", TASKS[t].column) for t in ADVGLUE}
    return [float(np.mean([asr[t] - chance[t] for t in ADVGLUE]))
            for asr in _by_seed(rows, CHATGPT, "asr").values() if set(ADVGLUE) <= set(asr)]


def asr_below_open_model(rows) -> list[float]:
    """Per seed: ChatGPT's mean AdvGLUE ASR minus the open model's, on the same examples."""
    chat, open_ = _by_seed(rows, CHATGPT_SUBSET, "asr"), _by_seed(rows, OPEN_MODEL, "asr")
    return [float(np.mean([chat[s][t] - open_[s][t] for t in ADVGLUE]))
            for s in sorted(set(chat) & set(open_))
            if set(ADVGLUE) <= set(chat[s]) and set(ADVGLUE) <= set(open_[s])]


def flipkart_above_chance(rows) -> list[float]:
    """Per seed: ChatGPT's Flipkart macro-F1 minus chance's (20: five classes), in points."""
    chance = OOD_F1.value("Random", "Flipkart")
    return [f1["flipkart"] - chance for f1 in _by_seed(rows, CHATGPT, "macro_f1").values()
            if "flipkart" in f1]


_BEST_OPEN = min(OPEN_ROWS, key=_paper_mean)
CLAIMS = (
    Claim(what="ChatGPT's adversarial attack success rate is below chance (AdvGLUE SST-2, QQP, "
               "MNLI, QNLI, RTE, mean; its stored answers, every example)",
          paper=f"{_paper_mean('ChatGPT') - _paper_mean('Random'):+.1f} points (Table 1: "
                f"{_paper_mean('ChatGPT'):.1f} vs {_paper_mean('Random'):.1f})",
          paper_value=_paper_mean("ChatGPT") - _paper_mean("Random"),
          per_seed=asr_below_chance, higher=False, unit=" points"),
    Claim(what="ChatGPT is more adversarially robust than open models (AdvGLUE mean ASR; ours: "
               f"vs {OPEN_MODEL} on the same seeded examples)",
          paper=f"{_paper_mean('ChatGPT') - _paper_mean(_BEST_OPEN):+.1f} points vs the most "
                f"robust open model, {_BEST_OPEN} (Table 1)",
          paper_value=_paper_mean("ChatGPT") - _paper_mean(_BEST_OPEN),
          per_seed=asr_below_open_model, higher=False, unit=" points"),
    Claim(what="ChatGPT's out-of-distribution macro-F1 on Flipkart reviews is above chance (its "
               "stored answers, every example)",
          paper=f"{OOD_F1.value('ChatGPT', 'Flipkart') - OOD_F1.value('Random', 'Flipkart'):+.1f}"
                f" points (Table 3: {OOD_F1.value('ChatGPT', 'Flipkart'):.1f} vs "
                f"{OOD_F1.value('Random', 'Flipkart'):.0f})",
          paper_value=OOD_F1.value("ChatGPT", "Flipkart") - OOD_F1.value("Random", "Flipkart"),
          per_seed=flipkart_above_chance, unit=" points"),
)
