"""The shared tokenizer and the shipped text: offline, deterministic, disjoint splits."""
from __future__ import annotations

import torch

from workloads.common.tokenizer import BOS_ID, EOS_ID, VOCAB_SIZE
from workloads.deepfusion import data


def test_tokenizer_loads_offline_and_round_trips_text(tokenizer):
    text = "Patient: fever of 38.5°C since Monday; Doctor: EUR 1,200 — take ibuprofen."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(tokenizer) == VOCAB_SIZE
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == \
        (BOS_ID, EOS_ID, EOS_ID)


def test_each_case_loads_records_of_its_domain():
    medical, financial = data.load_case("medical"), data.load_case("financial")
    assert {r.source for r in medical} == {"pubmedqa", "chatdoctor", "ddxplus"}
    assert len(medical) == 500 + 1500 + 100 and len(financial) == 4846
    assert {r.domain for r in medical} == {"medical"} and {r.domain for r in financial} == {"financial"}
    assert {r.label for r in financial} == {"positive", "negative", "neutral"}
    assert all(r.text.strip() for r in medical + financial)


def test_splits_are_disjoint_cover_everything_and_are_fixed_by_seed():
    records = data.load_case("financial")
    a = data.split_records(records, 0.1, 0.2, seed=3)
    b = data.split_records(records, 0.1, 0.2, seed=3)
    assert a == b
    assert len(a.test) == 485 and len(a.public) == 969
    texts = [set(map(id, part)) for part in a]
    assert sum(len(t) for t in texts) == len(records)
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert data.split_records(records, 0.1, 0.2, seed=4).test != a.test


def test_lm_blocks_pack_texts_with_eos_into_fixed_length_blocks(tokenizer):
    texts = ["one two three", "four five"]
    stream = sum((tokenizer(t, add_special_tokens=False)["input_ids"] + [EOS_ID] for t in texts), [])
    blocks = data.lm_blocks(texts, tokenizer, 3)
    assert blocks.shape == (len(stream) // 3, 3) and blocks.dtype == torch.long
    assert blocks.flatten().tolist() == stream[:blocks.numel()]


def test_every_record_ends_with_its_answer_and_financial_ones_are_instructions():
    for case in data.CASES:
        records = data.load_case(case)
        assert all(r.answer.strip() and r.text.endswith(r.answer) for r in records)
    financial = data.load_case("financial")
    assert all(r.text.startswith(f"Instruction: {data.FINANCIAL_INSTRUCTION}\nInput: ")
               and r.answer == f" {r.label}" for r in financial)


def test_answer_examples_mask_the_answer_with_its_question_in_view(tokenizer):
    records = data.load_case("financial")[:3] + data.load_pubmedqa()[:2]
    ids, mask = data.answer_examples(records, tokenizer, seq_len=64)
    assert ids.shape == mask.shape == (5, 64) and not mask[:, 0].any()
    for row, m, r in zip(ids, mask, records[:3]):  # short answers: whole, right before EOS
        assert tokenizer.decode(row[m]) == r.answer
        assert row[int(m.nonzero().max()) + 1] == tokenizer.eos_token_id
    for m in mask[3:]:  # long answers: their first half block, after half a block of question
        assert int(m.sum()) == 32 and int(m.nonzero().min()) == 31
