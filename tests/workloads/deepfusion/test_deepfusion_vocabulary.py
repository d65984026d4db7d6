"""`data.vocabulary: case`: the models keep only the token ids their case's text uses. The
pretrained rows of those ids are kept, so a compact model computes exactly the full model's
logits over the kept ids; only the softmax's denominator loses the never-seen tokens."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workloads.deepfusion import models as M
from workloads.deepfusion.data import (CompactTokenizer, answer_examples, case_vocabulary,
                                       lm_blocks, load_case)
from workloads.common.tokenizer import VOCAB_SIZE

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def kept() -> np.ndarray:
    return case_vocabulary("financial")


def test_the_case_vocabulary_covers_every_record_and_keeps_the_special_ids(kept, tokenizer):
    records = load_case("financial")
    compact = CompactTokenizer(tokenizer, kept)
    assert list(kept[:3]) == [0, 1, 2] and np.all(np.diff(kept) > 0)
    assert 10_000 < len(kept) < VOCAB_SIZE / 4  # measured 10,337 of 49,152
    blocks = lm_blocks([r.text for r in records], compact, 32)  # raises on any id not kept
    shared = lm_blocks([r.text for r in records], tokenizer, 32)
    assert torch.equal(torch.as_tensor(kept)[blocks], shared)  # a renumbering, nothing lost
    ids, mask = answer_examples(records[:50], compact, 32)
    assert torch.equal(torch.as_tensor(kept)[ids], answer_examples(records[:50], tokenizer, 32)[0])
    assert mask.any(dim=1).all()


def test_text_outside_the_case_vocabulary_is_refused_with_the_knob_to_change(kept, tokenizer):
    medical = load_case("medical")[0].text
    with pytest.raises(ValueError, match="data.vocabulary=full"):
        CompactTokenizer(tokenizer, kept)(medical)


def test_a_compact_pretrained_cut_computes_the_full_models_logits_over_the_kept_ids(
        kept, tokenizer):
    text = [r.text for r in load_case("financial")[:20]]
    full = M.build_device_model("smollm2-2", "tiny")
    full.load_state_dict(M.pretrained_state("smollm2-2"))
    compact = M.build_device_model("smollm2-2", "tiny", vocab_size=len(kept))
    compact.load_state_dict(M.pretrained_state("smollm2-2", vocab=kept))  # strict
    assert compact.config.vocab_size == len(kept) and compact.config.eos_token_id == 2
    with torch.no_grad():
        want = full(input_ids=lm_blocks(text, tokenizer, 32)[:4]).logits[..., kept]
        got = compact(input_ids=lm_blocks(text, CompactTokenizer(tokenizer, kept), 32)[:4]).logits
    assert torch.allclose(got, want, atol=1e-4)


def test_a_compact_vocabulary_lowers_what_the_memory_rule_asks_of_a_device(kept):
    full = M._spec_memory_mb("tiny", "smollm2-2", "adamw", 8, 32)
    compact = M._spec_memory_mb("tiny", "smollm2-2", "adamw", 8, 32, vocab_size=len(kept))
    dropped = VOCAB_SIZE - len(kept)
    # per dropped id: its row's weight, gradient and 2 Adam states; the logit and its softmax of
    # each of the 8 x 32 tokens
    saved = dropped * (576 * 4 + 2 * 8 * 32) * 4 / 2**20
    assert full - compact == pytest.approx(saved, rel=1e-3)
