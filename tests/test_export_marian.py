"""A slimbert Seq2SeqTransformer exported to MarianMT computes the same logits under teacher
forcing, and HF `generate` finds the same greedy and beam tokens as slimbert's search."""

from __future__ import annotations

import pytest
import torch

from slimbert.compress.export_marian import export_marian, sinusoid_permutation, to_marian
from slimbert.config import Seq2SeqTransformerConfig
from slimbert.errors import CheckpointError
from slimbert.generation import SearchConfig, beam_search, greedy_search
from slimbert.models.seq2seq import Seq2SeqTransformer
from slimbert.modules import SinusoidalPositions

transformers = pytest.importorskip("transformers")

V, PAD, BOS, EOS = 48, 0, 2, 3
LIMIT = 10  # tokens generated at most, </s> included


def tiny(seed: int = 0, eos_push: float = 2.0, **overrides) -> Seq2SeqTransformer:
    base = {"vocab_size": V, "hidden_size": 16, "encoder_layers": 2, "decoder_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 32, "dropout": 0.0, "max_source_length": 16,
            "max_target_length": 16}
    base.update(overrides)
    torch.manual_seed(seed)
    model = Seq2SeqTransformer(Seq2SeqTransformerConfig(**base)).eval()
    with torch.no_grad():  # push the last hidden state towards </s>, so some hypotheses end early
        output = model.embeddings.output or model.embeddings.tokens
        eos = output.weight[EOS]
        model.decoder.layers[-1].ffn_norm.bias += eos_push * eos / eos.norm()
    return model


def sources(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Three right-padded sources ending in </s>, of lengths 7, 4 and 6."""
    g = torch.Generator().manual_seed(seed)
    lengths = [7, 4, 6]
    ids = torch.full((3, 7), PAD)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n - 1] = torch.randint(4, V, (n - 1,), generator=g)
        ids[i, n - 1] = EOS
        mask[i, :n] = 1
    return ids, mask


class SlimbertLimit(transformers.LogitsProcessor):
    """slimbert's rule at the length limit: only </s>, keeping its own log-probability (HF's
    `forced_eos_token_id` gives it 0 instead, which could reorder the beams cut there)."""

    def __init__(self, limit: int):
        self.limit = limit

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == self.limit:  # <s> and limit - 1 tokens so far: the last step
            eos = scores[:, EOS].clone()
            scores = torch.full_like(scores, -float("inf"))
            scores[:, EOS] = eos
        return scores


def hf_generate(hf, ids, mask, beams: int, nbest: int = 1, alpha: float = 1.0) -> list[list[list[int]]]:
    # early_stopping=True: a sentence is done with K finished hypotheses, slimbert's (and fairseq's) rule
    beam_options = {"early_stopping": True, "length_penalty": alpha} if beams > 1 else {}
    out = hf.generate(input_ids=ids, attention_mask=mask, num_beams=beams, num_return_sequences=nbest,
                      max_new_tokens=LIMIT, min_new_tokens=1, forced_eos_token_id=None, do_sample=False,
                      logits_processor=transformers.LogitsProcessorList([SlimbertLimit(LIMIT)]), **beam_options)
    result = []
    for row in out.tolist():
        tokens = row[1:]  # after <s>
        result.append(tokens[:tokens.index(EOS)])  # up to </s>, which every hypothesis has
    return [result[i:i + nbest] for i in range(0, len(result), nbest)]


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False, "scale_embeddings": False},
                                       {"hidden_act": "gelu"}])
def test_teacher_forced_logits_match(one_thread, overrides):
    model = tiny(**overrides)
    hf = to_marian(model)
    ids, mask = sources()
    tgt = torch.randint(4, V, (3, 9), generator=torch.Generator().manual_seed(2))
    tgt[:, 0] = BOS
    with torch.no_grad():
        ours = model(ids, mask, tgt).logits
        theirs = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=tgt).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)


def test_position_table_is_the_permuted_sinusoid():
    H = 16
    hf = to_marian(tiny(hidden_size=H))
    table = hf.model.decoder.embed_positions.weight  # (P, H)
    ours = SinusoidalPositions(H)(torch.arange(len(table))[None])[0]  # (P, H)
    torch.testing.assert_close(table, ours[:, sinusoid_permutation(H)], atol=1e-5, rtol=0)


def test_greedy_tokens_match(one_thread):
    model = tiny(eos_push=4.0)
    hf = to_marian(model)
    ids, mask = sources()
    ours = greedy_search(model, ids, mask, SearchConfig(beam_size=1, max_length=LIMIT, max_len_b=LIMIT))
    theirs = hf_generate(hf, ids, mask, beams=1)
    assert [h[0].tokens for h in ours] == [t[0] for t in theirs]
    assert len({len(h[0].tokens) for h in ours}) > 1  # not all cut at the limit: </s> was chosen too


@pytest.mark.parametrize("alpha", [1.0, 0.0])
def test_beam_tokens_match(one_thread, alpha):
    model = tiny(seed=3, eos_push=2.0)
    hf = to_marian(model)
    ids, mask = sources(seed=4)
    K = 3
    ours = beam_search(model, ids, mask, SearchConfig(beam_size=K, nbest=K, max_length=LIMIT, max_len_b=LIMIT,
                                                      length_penalty=alpha))
    theirs = hf_generate(hf, ids, mask, beams=K, nbest=K, alpha=alpha)
    assert [[h.tokens for h in hyps] for hyps in ours] == theirs
    assert len({len(h.tokens) for hyps in ours for h in hyps}) > 1  # some ended before the limit


def test_saved_directory_reloads_with_the_same_logits(tmp_path, one_thread):
    model = tiny()
    out = export_marian(model, tmp_path / "marian")
    hf = transformers.MarianMTModel.from_pretrained(out).eval()
    ids, mask = sources()
    tgt = torch.tensor([[BOS, 5, 6, 7]] * 3)
    with torch.no_grad():
        ours = model(ids, mask, tgt).logits
        theirs = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=tgt).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    assert hf.generation_config.decoder_start_token_id == BOS


@pytest.mark.parametrize("overrides, field", [({"norm_style": "pre"}, "norm_style"),
                                              ({"position_embedding_type": "rope"}, "position_embedding_type"),
                                              ({"position_embedding_type": "absolute"}, "position_embedding_type"),
                                              ({"layer_norm_eps": 1e-6}, "layer_norm_eps")])
def test_models_marian_cannot_express_are_refused(overrides, field):
    with pytest.raises(CheckpointError, match=field):
        to_marian(tiny(**overrides))


def test_exported_tokenizer_reads_and_writes_text_as_slimbert(tmp_path):
    from slimbert.data.parallel import encode_sources
    from slimbert.subword import SubwordTokenizer

    lines = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "A man rides a bike."] * 4
    tokenizer = SubwordTokenizer.train(lines, vocab_size=300, min_frequency=1)
    tokenizer.save(tmp_path)
    model = tiny(vocab_size=len(tokenizer))
    out = export_marian(model, tmp_path / "marian", tokenizer_dir=tmp_path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    ours, _ = encode_sources(tokenizer, ["Ein Hund fährt im Schnee, Ärger!"], 64)
    assert hf_tok(["Ein Hund fährt im Schnee, Ärger!"]).input_ids == ours
    assert hf_tok.batch_decode(ours, skip_special_tokens=True) == tokenizer.decode_batch(ours)
    assert hf_tok.pad_token_id == model.config.pad_token_id


def test_export_command_writes_a_marian_directory(tmp_path, capsys, one_thread):
    from slimbert.checkpoint import save_checkpoint
    from slimbert.cli import main
    from slimbert.subword import SubwordTokenizer

    tokenizer = SubwordTokenizer.train(["Ein Mann fährt Fahrrad.", "A man rides a bike."] * 4, vocab_size=300,
                                       min_frequency=1)
    model = tiny(vocab_size=len(tokenizer))
    checkpoint = save_checkpoint(model, tokenizer, tmp_path / "model")
    assert main(["export", "--model", str(checkpoint), "--format", "marian", "--out", str(tmp_path / "m")]) == 0
    hf = transformers.MarianMTModel.from_pretrained(tmp_path / "m").eval()
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "m").eos_token_id == EOS
    ids, mask = sources()
    tgt = torch.tensor([[BOS, 5, 6, 7]] * 3)
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids, attention_mask=mask, decoder_input_ids=tgt).logits,
                                   model(ids, mask, tgt).logits, atol=1e-4, rtol=1e-4)
    capsys.readouterr()
    assert main(["export", "--model", str(checkpoint), "--format", "marian", "--int8", "--out",
                 str(tmp_path / "m8")]) == 2
    assert "--int8 applies to --format onnx and ctranslate2" in capsys.readouterr().err
