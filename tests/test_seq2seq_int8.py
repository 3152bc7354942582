"""int8 and bf16 translation models: `slimbert quantize` covers the encoder's and the decoder's
Linear layers, the checkpoint keeps the model's own module names and reloads bit for bit, and
the reloaded model decodes exactly as the one in memory."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from slimbert.checkpoint import load_model, load_tokenizer, save_checkpoint
from slimbert.compress.quantize import quantizable_linears, quantize_int8, to_bf16
from slimbert.config import Seq2SeqTransformerConfig
from slimbert.generation import SearchConfig, generate
from slimbert.models.seq2seq import Seq2SeqTransformer
from slimbert.recipes.quantize import QuantizeConfig, quantize
from slimbert.subword import SubwordTokenizer

TEXTS = ["ein Mann fährt Fahrrad .", "a man rides a bike .", "zwei Hunde spielen im Schnee .",
         "two dogs play in the snow ."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tokenizer = SubwordTokenizer.train(TEXTS * 5, vocab_size=300)
    torch.manual_seed(0)
    config = Seq2SeqTransformerConfig(vocab_size=len(tokenizer), hidden_size=32, encoder_layers=2,
                                      decoder_layers=2, num_attention_heads=2, intermediate_size=64,
                                      dropout=0.0, max_source_length=16, max_target_length=16)
    return save_checkpoint(Seq2SeqTransformer(config).eval(), tokenizer, tmp_path_factory.mktemp("fp32"))


def batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, vocab, (4, 7), generator=g)
    ids[:, -1] = 3
    mask = torch.ones_like(ids)
    ids[1, 4:], mask[1, 4:] = 0, 0
    ids[1, 3] = 3
    return ids, mask


def decoded(model, vocab: int, beam: int = 1) -> list[list[int]]:
    ids, mask = batch(vocab)
    return [h[0].tokens for h in generate(model, ids, mask, SearchConfig(beam_size=beam, max_len_b=10))]


def test_scopes_cover_both_stacks(checkpoint):
    model = load_model(checkpoint)
    every = quantizable_linears(model, "all")
    attention = quantizable_linears(model, "attention")
    # 2 encoder blocks x (q, k, v, out, fc_in, fc_out) + 2 decoder blocks x (those + 4 cross-attention)
    assert len(every) == 2 * 6 + 2 * 10
    assert len(attention) == 2 * 4 + 2 * 8
    assert all("ffn" not in name for name in attention)
    assert {n.split(".")[0] for n in every} == {"encoder", "decoder"}


@pytest.mark.parametrize("scope", ["attention", "all"])
def test_int8_checkpoint_reloads_bit_for_bit(checkpoint, tmp_path, one_thread, scope):
    model = load_model(checkpoint)
    q = quantize_int8(model, scope)
    # "all" also covers the vocabulary projection, as an int8 copy of the tied matrix
    assert ("embeddings.output" in q.config.quantization["modules"]) == (scope == "all")
    assert model.embeddings.output is None and q.embeddings.tokens.weight.dtype == torch.float32
    out = save_checkpoint(q, load_tokenizer(checkpoint), tmp_path / "int8")
    stored = load_file(str(out / "model.safetensors"))
    names = q.config.quantization["modules"]
    assert all(f"{n}.weight" in stored and stored[f"{n}.weight"].dtype == torch.int8 for n in names)
    reloaded = load_model(out)
    assert reloaded.config.quantization["modules"] == names  # the model's own names, not BERT's
    V = model.config.vocab_size
    for beam in (1, 3):
        assert decoded(reloaded, V, beam) == decoded(q, V, beam)
    ids, mask = batch(V)
    with torch.no_grad():
        dec_in = torch.full((4, 1), 2)
        a = q(ids, mask, dec_in).logits
        b = reloaded(ids, mask, dec_in).logits
        fp = model(ids, mask, dec_in).logits
    assert torch.equal(a, b)
    assert not torch.equal(a, fp) and torch.allclose(a, fp, atol=0.1 * fp.abs().max().item())


def test_quantize_command_writes_a_translation_model(checkpoint, tmp_path):
    out = quantize(QuantizeConfig(model=str(checkpoint), out=str(tmp_path / "q"), scope="all"))
    assert isinstance(load_tokenizer(out), SubwordTokenizer)
    assert (out / "tokenizer.json").exists() and not (out / "vocab.txt").exists()
    q = load_model(out)
    assert q.config.quantization["scope"] == "all"
    assert len(decoded(q, q.config.vocab_size)) == 4


def test_bf16_model_decodes(checkpoint, tmp_path, one_thread):
    bf16 = load_model(save_checkpoint(to_bf16(load_model(checkpoint)), load_tokenizer(checkpoint),
                                      tmp_path / "bf16"))
    assert next(bf16.parameters()).dtype == torch.bfloat16
    tokens = decoded(bf16, bf16.config.vocab_size)
    assert len(tokens) == 4 and all(len(t) <= 9 for t in tokens)
