"""The shared tokenizer and tiny causal LMs: one vocabulary, one seeded way to build a model."""
from __future__ import annotations

import torch

from workloads.common.tiny_lm import TINY_LLAMA, build_tiny_llama, causal_lm_config
from workloads.common.tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, load_tokenizer


def test_the_shipped_tokenizer_has_the_shared_vocabulary_and_special_ids():
    tokenizer = load_tokenizer()
    assert len(tokenizer) == VOCAB_SIZE
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == \
        (BOS_ID, EOS_ID, PAD_ID)


def test_every_config_speaks_the_shared_vocabulary_and_gpt2_has_no_dropout():
    for family, shape in (("llama", TINY_LLAMA), ("gpt2", dict(n_embd=32, n_layer=1, n_head=2))):
        config = causal_lm_config(family, **shape)
        assert (config.vocab_size, config.bos_token_id, config.eos_token_id, config.pad_token_id) \
            == (VOCAB_SIZE, BOS_ID, EOS_ID, PAD_ID)
    assert causal_lm_config("gpt2", n_embd=32, n_layer=1, n_head=2).resid_pdrop == 0.0


def test_a_seed_alone_fixes_the_weights_and_the_global_rng_is_left_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = build_tiny_llama(seed=5), build_tiny_llama(seed=5), build_tiny_llama(seed=6)
    assert torch.equal(torch.rand(3), expected_next)
    same = [torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items()]
    differ = [not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items()]
    assert all(same) and any(differ)
    assert a.config.num_hidden_layers == TINY_LLAMA["num_hidden_layers"]
