"""The paper's metrics: ASR on adversarial sets, macro-F1 on OOD sets, BLEU/GLEU/METEOR for EN->ZH.

Classification (main.py `compute_metric`): accuracy in %, ASR = 100 - accuracy. Predictions equal
to `UNPARSED` (-1) never match a gold id, so they count as wrong. The paper reports "F1" for the
OOD sets; re-scoring its stored ChatGPT Flipkart answers shows it is macro-F1 (SEEDS 4.5).

Translation (main.py, nltk.translate): sentence BLEU (4-gram, uniform weights, no smoothing),
sentence GLEU (1..4-grams, Wu et al. 2016) and METEOR, each per sentence, averaged, x100. The code
here re-implements nltk 3.10's functions so no nltk data download is needed: BLEU and GLEU
are exact. METEOR uses nltk's alignment, fragmentation penalty and parameters with the exact-match
stage only; nltk's Porter-stem and WordNet-synonym stages are English-only and can add matches only
between Latin-script tokens, so on Chinese text the scores agree. The authors segmented both sides
with jieba (`cut_all=False`); `tokenize_zh` uses jieba when it is installed and otherwise one token
per CJK character (Latin words and numbers kept whole), and reports which it used.
"""
from __future__ import annotations

import math
import re
import sys
from collections import Counter
from typing import Sequence

import numpy as np

from workloads.robustness.parsing import UNPARSED


def accuracy(pred: Sequence[int], gold: Sequence[int]) -> float:
    """Percent of predictions equal to the gold id (UNPARSED never is)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    if pred.shape != gold.shape or pred.size == 0:
        raise ValueError(f"need equal, non-empty pred/gold; got {pred.shape} and {gold.shape}")
    return float(np.mean(pred == gold) * 100.0)


def attack_success_rate(pred: Sequence[int], gold: Sequence[int]) -> float:
    """ASR on an adversarial set: 100 - accuracy (main.py compute_metric)."""
    return 100.0 - accuracy(pred, gold)


def macro_f1(pred: Sequence[int], gold: Sequence[int]) -> float:
    """Macro-F1 in %, over the classes present in gold or in the parsed predictions.

    An UNPARSED prediction is not a class: it is a miss of its gold class (lowers that recall).
    Matches sklearn's `f1_score(gold, pred, labels=classes, average="macro")`.
    """
    pred, gold = np.asarray(pred), np.asarray(gold)
    accuracy(pred, gold)  # same shape checks
    classes = sorted((set(gold.tolist()) | set(pred.tolist())) - {UNPARSED})
    scores = []
    for c in classes:
        tp = np.sum((pred == c) & (gold == c))
        denom = np.sum(pred == c) + np.sum(gold == c)
        scores.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(scores) * 100.0)


def classification_scores(pred: Sequence[int], gold: Sequence[int], metric: str) -> dict[str, float]:
    """The row entry for one task: n, accuracy, unparsed count and the task's metric."""
    scores = {"n": float(len(gold)), "accuracy": accuracy(pred, gold),
              "unparsed": float(np.sum(np.asarray(pred) == UNPARSED))}
    if metric == "asr":
        scores["asr"] = 100.0 - scores["accuracy"]
    elif metric == "macro_f1":
        scores["macro_f1"] = macro_f1(pred, gold)
    else:
        raise ValueError(f"metric {metric!r} is not a classification metric (asr, macro_f1)")
    return scores


_CJK_OR_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[A-Za-z0-9]+|\S")


def _jieba():
    try:
        import jieba  # optional: the authors' segmenter
    except ImportError:
        return None
    return jieba


def tokenize_zh(text: str, method: str = "auto") -> list[str]:
    """Segment Chinese: "jieba" (the paper's), "char" (per CJK character) or "auto" (jieba if present)."""
    if method == "auto":
        method = "jieba" if _jieba() is not None else "char"
    if method == "jieba":
        jieba = _jieba()
        if jieba is None:
            raise ImportError("tokenizer 'jieba' requested but the jieba package is not installed")
        return list(jieba.cut(text.strip(), cut_all=False))
    if method == "char":
        return _CJK_OR_WORD.findall(text.strip())
    raise ValueError(f"unknown tokenizer {method!r}; choose auto, jieba or char")


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu(references: Sequence[Sequence[str]], hypothesis: Sequence[str]) -> float:
    """nltk sentence_bleu with default weights (0.25 x 4) and no smoothing, in [0, 1]."""
    numerators, denominators = [], []
    for n in range(1, 5):
        counts = _ngrams(hypothesis, n)
        max_ref = Counter()
        for ref in references:
            max_ref |= _ngrams(ref, n)
        numerators.append(sum(min(c, max_ref[g]) for g, c in counts.items()))
        denominators.append(max(1, sum(counts.values())))
    if numerators[0] == 0:
        return 0.0
    hyp_len = len(hypothesis)
    ref_len = min((len(r) for r in references), key=lambda r: (abs(r - hyp_len), r))
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    # nltk's method0: a zero n-gram precision becomes the smallest float, so the score is ~0.
    logs = [math.log(num / den) if num else math.log(sys.float_info.min)
            for num, den in zip(numerators, denominators)]
    return bp * math.exp(math.fsum(0.25 * x for x in logs))


def _everygrams(tokens: Sequence[str], max_len: int = 4) -> Counter:
    grams = Counter()
    for n in range(1, max_len + 1):
        grams.update(_ngrams(tokens, n))
    return grams


def sentence_gleu(references: Sequence[Sequence[str]], hypothesis: Sequence[str]) -> float:
    """nltk sentence_gleu (1..4-grams): min(precision, recall) = matches / max(|hyp|, |ref|)."""
    hyp = _everygrams(hypothesis)
    candidates = []
    for ref in references:
        ref_grams = _everygrams(ref)
        n_all = max(sum(hyp.values()), sum(ref_grams.values()))
        if n_all:
            candidates.append((sum((ref_grams & hyp).values()), n_all))
    if not candidates:
        return 0.0
    match, total = max(candidates, key=lambda c: c[0] / c[1])
    return match / total


def _exact_alignment(hyp: list[str], ref: list[str]) -> list[tuple[int, int]]:
    """nltk _match_enums: hypothesis words right to left, each to the rightmost free equal ref word."""
    positions: dict[str, list[int]] = {}
    for j, word in enumerate(ref):
        positions.setdefault(word, []).append(j)
    matches = [(i, positions[w].pop()) for i, w in reversed(list(enumerate(hyp))) if positions.get(w)]
    return sorted(matches)


def _chunks(matches: list[tuple[int, int]]) -> int:
    return 1 + sum(1 for (i0, j0), (i1, j1) in zip(matches, matches[1:])
                   if not (i1 == i0 + 1 and j1 == j0 + 1))


def meteor(references: Sequence[Sequence[str]], hypothesis: Sequence[str],
           alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5) -> float:
    """nltk meteor_score (exact-match stage; lower-cased tokens): best over references, in [0, 1]."""
    hyp = [w.lower() for w in hypothesis]
    best = 0.0
    for reference in references:
        ref = [w.lower() for w in reference]
        matches = _exact_alignment(hyp, ref)
        if not matches:
            continue
        precision, recall = len(matches) / len(hyp), len(matches) / len(ref)
        fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
        penalty = gamma * (_chunks(matches) / len(matches)) ** beta
        best = max(best, (1 - penalty) * fmean)
    return best


def translation_scores(hypotheses: Sequence[str], references: Sequence[str],
                       tokenizer: str = "auto") -> dict[str, float | str]:
    """Mean sentence BLEU, GLEU and METEOR x100 over the pairs, as main.py computes them."""
    if len(hypotheses) != len(references) or not references:
        raise ValueError(f"need equal, non-empty lists; got {len(hypotheses)} and {len(references)}")
    used = ("jieba" if _jieba() is not None else "char") if tokenizer == "auto" else tokenizer
    hyps = [tokenize_zh(h, used) for h in hypotheses]
    refs = [[tokenize_zh(r, used)] for r in references]
    mean = lambda f: float(np.mean([f(r, h) for r, h in zip(refs, hyps)]) * 100.0)  # noqa: E731
    return {"bleu": mean(sentence_bleu), "gleu": mean(sentence_gleu), "meteor": mean(meteor),
            "n": float(len(references)), "tokenizer": used}
