"""Masked-LM perplexity on held-out text (slimbert.evaluation.perplexity) on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import WORDS, tiny_config

from slimbert import build_model
from slimbert.evaluation.perplexity import heldout_lines, mlm_perplexity, packed_sequences


@pytest.fixture
def heldout(tmp_path):
    g = torch.Generator().manual_seed(0)
    lines = [" = Title = ", ""]
    for _ in range(40):
        lines.append(" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (12,), generator=g)))
    lines[5] = "a well @-@ made film , 1 @,@ 000 times"
    path = tmp_path / "wiki.valid.tokens"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_heldout_text_is_read_and_packed_like_pretraining(heldout, tiny_tokenizer):
    lines = list(heldout_lines(heldout))
    assert "a well-made film , 1,000 times" in lines and "" not in lines
    ids = packed_sequences(lines, tiny_tokenizer, 16)
    assert ids.shape[1] == 16
    assert (ids[:, 0] == tiny_tokenizer.cls_id).all() and (ids[:, -1] == tiny_tokenizer.sep_id).all()
    stream = [i for x in tiny_tokenizer.encode_ids(lines) for i in x]
    assert ids[:, 1:-1].reshape(-1).tolist() == stream[:ids.shape[0] * 14]


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size_and_batching_changes_nothing(heldout,
                                                                                           tiny_tokenizer):
    torch.manual_seed(0)
    model = build_model(tiny_config(head="mlm"))
    a = mlm_perplexity(model, tiny_tokenizer, heldout, seq_length=16, batch_size=3)
    b = mlm_perplexity(model, tiny_tokenizer, heldout, seq_length=16, batch_size=64)
    assert a.masked_tokens == b.masked_tokens > 0
    assert a.loss == pytest.approx(b.loss, rel=1e-5)
    assert a.perplexity == pytest.approx(math.exp(a.loss))
    other_seed = mlm_perplexity(model, tiny_tokenizer, heldout, seq_length=16, seed=1)
    assert other_seed.loss != pytest.approx(a.loss, rel=1e-6)
    # Every logit equal (the head's transform outputs zeros, the bias is zero): perplexity = V.
    with torch.no_grad():
        model.cls.predictions.transform.LayerNorm.weight.zero_()
        model.cls.predictions.transform.LayerNorm.bias.zero_()
    uniform = mlm_perplexity(model, tiny_tokenizer, heldout, seq_length=16)
    assert uniform.perplexity == pytest.approx(model.config.vocab_size, rel=1e-5)
    assert a.perplexity != pytest.approx(model.config.vocab_size, rel=1e-3)
