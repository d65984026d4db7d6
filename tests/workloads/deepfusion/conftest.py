"""Fixtures of the deepfusion unit tests: the shipped tokenizer and a tiny block of real text."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tokenizer():
    from workloads.common.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def real_blocks(tokenizer) -> torch.Tensor:
    """(n, 32) token blocks of real financial sentences."""
    from workloads.deepfusion.data import lm_blocks, load_case

    texts = [r.text for r in load_case("financial")[:200]]
    return lm_blocks(texts, tokenizer, 32)


@pytest.fixture
def batch(real_blocks) -> torch.Tensor:
    return real_blocks[:2]
