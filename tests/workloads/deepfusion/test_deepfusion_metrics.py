"""Token log-perplexity (Eq. 3) and token accuracy on known tiny cases."""
from __future__ import annotations

import math

import pytest
import torch

from workloads.deepfusion.metrics import evaluate_lm, token_accuracy, token_log_perplexity


def test_uniform_predictions_have_log_perplexity_log_vocab():
    ids = torch.tensor([[0, 1, 2, 3]])
    assert token_log_perplexity(torch.zeros(1, 4, 10), ids) == pytest.approx(math.log(10))


def test_log_perplexity_is_the_mean_nll_of_the_next_token():
    ids = torch.tensor([[0, 1, 0]])
    logits = torch.tensor([[[0.0, 2.0], [1.0, 0.0], [5.0, 5.0]]])  # last position is unused
    nll = [-torch.log_softmax(logits[0, 0], -1)[1], -torch.log_softmax(logits[0, 1], -1)[0]]
    assert token_log_perplexity(logits, ids) == pytest.approx(float(sum(nll) / 2))


def test_token_accuracy_counts_argmax_matches_of_the_next_token():
    ids = torch.tensor([[0, 1, 1, 0]])
    logits = torch.tensor([[[0, 1.0], [0, 1.0], [0, 1.0], [1.0, 0]]])  # predicts 1, 1, 1
    assert token_accuracy(logits, ids) == pytest.approx(2 / 3)


class _Lookup(torch.nn.Module):
    """A 'model' that always predicts token (x + 1) mod V with certainty."""

    def forward(self, input_ids):
        logits = torch.nn.functional.one_hot((input_ids + 1) % 5, 5).float() * 100
        return type("Out", (), {"logits": logits})()


def test_evaluate_lm_is_token_weighted_over_all_blocks():
    blocks = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])  # 5 of 6 next tokens follow x+1
    out = evaluate_lm(_Lookup(), blocks, batch_size=1)
    assert out["tokens"] == 6 and out["token_accuracy"] == pytest.approx(5 / 6)
    assert out["log_ppl"] == pytest.approx(100 / 6, rel=1e-3)
    assert out["ppl"] == pytest.approx(math.exp(out["log_ppl"]))


def test_answer_accuracy_scores_only_the_answer_tokens():
    ids = torch.tensor([[0, 1, 2, 0, 4], [2, 3, 3, 4, 0]])  # x+1 is right at t = 1,2 | 1,3,4
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    out = evaluate_lm(_Lookup(), ids, batch_size=1, answers=(ids, mask))
    assert out["answer_token_accuracy"] == pytest.approx(3 / 5)  # t = 2,3 | 2,3,4
    assert out["token_accuracy"] == pytest.approx(5 / 8)
