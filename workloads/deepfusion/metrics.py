"""The paper's two quality metrics on held-out causal-LM blocks (Tables I and II).

- Token perplexity "(log)": the mean next-token NLL in nats, log Gamma with
  Gamma = (prod_t 1/P(x_t | x_<t))^{1/T}  (Eq. 3). `ppl` = exp of it.
- Token accuracy: the share of positions whose argmax next-token prediction equals the reference
  token (teacher-forced; the paper's "generated tokens that exactly match the reference" [OURS:
  greedy teacher-forced decoding, so no generation length choice is needed]).
Both are token-weighted over all blocks, not averaged per block.
- Answer-only token accuracy (Table II scores the answer): the same on the answer tokens of one
  record per row (`data.answer_examples`), the prompt given.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def token_nll_sum(logits: torch.Tensor, ids: torch.Tensor) -> tuple[float, int]:
    """(sum of next-token NLL in nats, number of predicted tokens) of one (B, T) block."""
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(),
                          reduction="sum")
    return float(nll), ids[:, 1:].numel()


def token_correct(logits: torch.Tensor, ids: torch.Tensor) -> int:
    """How many next-token argmax predictions equal the reference."""
    return int((logits[:, :-1].argmax(-1) == ids[:, 1:]).sum())


def token_log_perplexity(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """log Gamma (Eq. 3) of one batch: mean NLL in nats."""
    total, n = token_nll_sum(logits, ids)
    return total / n


def token_accuracy(logits: torch.Tensor, ids: torch.Tensor) -> float:
    return token_correct(logits, ids) / ids[:, 1:].numel()


@torch.no_grad()
def answer_token_accuracy(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                          batch_size: int = 16) -> float:
    """Share of answer tokens (mask) whose argmax next-token prediction, prompt given, is right."""
    model.eval()
    correct, count = 0, 0
    for start in range(0, len(ids), batch_size):
        x, m = ids[start:start + batch_size], mask[start:start + batch_size, 1:]
        hit = model(input_ids=x).logits[:, :-1].argmax(-1) == x[:, 1:]
        correct, count = correct + int(hit[m].sum()), count + int(m.sum())
    return correct / count if count else float("nan")


@torch.no_grad()
def evaluate_lm(model: nn.Module, blocks: torch.Tensor, batch_size: int = 16,
                answers: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
    """log_ppl, ppl, token_accuracy and the token count of `model` on (n, T) held-out blocks;
    with `answers` (ids, mask), also answer_token_accuracy."""
    model.eval()
    nll, correct, count = 0.0, 0, 0
    for start in range(0, len(blocks), batch_size):
        ids = blocks[start:start + batch_size]
        logits = model(input_ids=ids).logits
        s, n = token_nll_sum(logits, ids)
        nll, correct, count = nll + s, correct + token_correct(logits, ids), count + n
    if count == 0:
        raise ValueError("no held-out tokens to evaluate")
    log_ppl = nll / count
    out = {"log_ppl": log_ppl, "ppl": math.exp(log_ppl), "token_accuracy": correct / count,
           "tokens": float(count)}
    if answers is not None:
        out["answer_token_accuracy"] = answer_token_accuracy(model, *answers, batch_size)
    return out
