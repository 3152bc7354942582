"""A slimbert Seq2SeqTransformer exported to CTranslate2 decodes the same greedy tokens as
slimbert's own search; the export refuses what CTranslate2 cannot express; the CLI exports and
translates with it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from slimbert.checkpoint import save_checkpoint
from slimbert.compress.export_ctranslate2 import (
    CTranslate2Translator,
    ctranslate2_spec,
    export_ctranslate2,
    is_ctranslate2_dir,
)
from slimbert.compress.quantize import quantize_int8
from slimbert.config import Seq2SeqLSTMConfig, Seq2SeqTransformerConfig
from slimbert.errors import CheckpointError
from slimbert.generation import SearchConfig, generate, translate
from slimbert.models.seq2seq import Seq2SeqLSTM, Seq2SeqTransformer
from slimbert.subword import SubwordTokenizer

pytest.importorskip("ctranslate2")

TEXTS = ["ein Mann fährt Fahrrad .", "a man rides a bike .", "zwei Hunde spielen im Schnee .",
         "two dogs play in the snow .", "eine Frau liest ein Buch im Park .", "a woman reads a book in the park ."]


@pytest.fixture(scope="module")
def tokenizer() -> SubwordTokenizer:
    return SubwordTokenizer.train(TEXTS * 5, vocab_size=320)


def tiny(tokenizer: SubwordTokenizer, seed: int = 0, **overrides) -> Seq2SeqTransformer:
    base = {"vocab_size": len(tokenizer), "hidden_size": 16, "encoder_layers": 2, "decoder_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 32, "dropout": 0.0, "max_source_length": 16,
            "max_target_length": 16}
    base.update(overrides)
    torch.manual_seed(seed)
    model = Seq2SeqTransformer(Seq2SeqTransformerConfig(**base)).eval()
    with torch.no_grad():  # push the last hidden state towards </s>, so that some sentences end early
        output = model.embeddings.output or model.embeddings.tokens
        eos = output.weight[model.config.eos_token_id]
        last = model.decoder.final_norm or model.decoder.layers[-1].ffn_norm
        last.bias += 2.0 * eos / eos.norm()
    return model


def sources(n: int, vocab: int, seed: int = 1) -> list[list[int]]:
    """n sources of 2..9 random pieces, each ending in </s> (id 3)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 10, (n,), generator=g).tolist()
    return [torch.randint(4, vocab, (k,), generator=g).tolist() + [3] for k in lengths]


def slimbert_tokens(model, ids: list[list[int]], search: SearchConfig) -> list[list[int]]:
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([x + [0] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    return [hyps[0].tokens for hyps in generate(model, input_ids, mask, search)]


@pytest.mark.parametrize("overrides", [
    {},  # post-norm, sinusoidal, tied, relu
    {"norm_style": "pre", "position_embedding_type": "absolute", "max_position_embeddings": 32},
    {"tie_embeddings": False, "scale_embeddings": False, "hidden_act": "gelu", "layer_norm_eps": 1e-6},
    {"encoder_layers": 3, "decoder_layers": 1},
])
def test_greedy_tokens_equal_slimbert(tokenizer, tmp_path, one_thread, overrides):
    model = tiny(tokenizer, **overrides)
    export_ctranslate2(model, tokenizer, tmp_path / "ct2")
    engine = CTranslate2Translator(tmp_path / "ct2", threads=1)
    ids = sources(12, len(tokenizer))
    # per-sentence length limits that differ inside the batch: CTranslate2 decodes each group
    search = SearchConfig(beam_size=1, max_len_a=1.0, max_len_b=3)
    ours = slimbert_tokens(model, ids, search)
    theirs = [hyps[0].tokens for hyps in engine.generate(ids, search)]
    assert theirs == ours
    assert len({len(t) for t in ours}) > 1  # some stopped at </s>, some at their limit


def test_text_translation_matches_and_keeps_line_order(tokenizer, tmp_path, one_thread):
    model = tiny(tokenizer, seed=3)
    export_ctranslate2(model, tokenizer, tmp_path / "ct2")
    lines = ["zwei Hunde spielen .", "", "ein Mann liest ein Buch im Schnee .", "Fahrrad"]
    search = SearchConfig(beam_size=1, max_len_a=1.5, max_len_b=4)
    ours = translate(model, tokenizer, lines, search, batch_size=2)
    theirs = CTranslate2Translator(tmp_path / "ct2", threads=1).translate(lines, search, batch_size=2)
    assert theirs.best == ours.best
    assert theirs.best[1] == "" and theirs.hypotheses[1] == []


def test_beam_search_runs_and_returns_nbest(tokenizer, tmp_path, one_thread):
    model = tiny(tokenizer, seed=4)
    export_ctranslate2(model, tokenizer, tmp_path / "ct2")
    engine = CTranslate2Translator(tmp_path / "ct2", threads=1)
    hyps = engine.generate(sources(4, len(tokenizer)), SearchConfig(beam_size=4, nbest=3, max_len_b=8))
    assert [len(h) for h in hyps] == [3, 3, 3, 3]
    for h in hyps:
        assert [x.score for x in h] == sorted((x.score for x in h), reverse=True)
        assert all(len(x.tokens) <= 7 and 3 not in x.tokens and 0 not in x.tokens for x in h)


def test_int8_export_is_smaller_and_decodes_and_leaves_the_model_alone(tokenizer, tmp_path, one_thread):
    model = tiny(tokenizer, seed=5, hidden_size=64, intermediate_size=256, num_attention_heads=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    fp32 = export_ctranslate2(model, tokenizer, tmp_path / "fp32")
    int8 = export_ctranslate2(model, tokenizer, tmp_path / "int8", int8=True)
    # CTranslate2 quantizes the spec's arrays in place: none of them may be the model's own (the
    # tied embedding was, and came back int8-rounded)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training
    model.eval()
    assert (int8 / "model.bin").stat().st_size < 0.5 * (fp32 / "model.bin").stat().st_size
    ids = sources(8, len(tokenizer), seed=2)
    search = SearchConfig(beam_size=1, max_len_b=6)
    got = CTranslate2Translator(int8, threads=1).generate(ids, search)
    assert len(got) == 8 and all(len(h) == 1 for h in got)


def test_export_replaces_a_directory_whole(tokenizer, tmp_path):
    out = tmp_path / "ct2"
    export_ctranslate2(tiny(tokenizer, seed=1), tokenizer, out)
    (out / "stale.txt").write_text("from an older export")
    export_ctranslate2(tiny(tokenizer, seed=2), tokenizer, out)
    assert is_ctranslate2_dir(out) and not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ct2"]  # no staging directory left behind


@pytest.mark.parametrize("make, message", [
    (lambda tok: tiny(tok, position_embedding_type="rope"), "rope"),
    (lambda tok: quantize_int8(tiny(tok), scope="all"), "int8"),
    (lambda tok: Seq2SeqLSTM(Seq2SeqLSTMConfig(vocab_size=len(tok), embedding_dim=8, hidden_size=8)),
     "slimbert_seq2seq_lstm"),
])
def test_refusals_name_the_reason(tokenizer, make, message):
    with pytest.raises(CheckpointError, match=message):
        ctranslate2_spec(make(tokenizer), tokenizer)


def test_not_an_export_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a CTranslate2 model exported by slimbert"):
        CTranslate2Translator(tmp_path)


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slimbert", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, check=False)


def test_cli_export_and_translate_from_stdin(tokenizer, tmp_path):
    checkpoint = save_checkpoint(tiny(tokenizer, seed=6), tokenizer, tmp_path / "model")
    out = tmp_path / "ct2"
    done = run_cli("export", "--model", str(checkpoint), "--format", "ctranslate2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = "zwei Hunde spielen .\nein Mann liest ein Buch .\n"
    torch_out = run_cli("translate", "--model", str(checkpoint), "--beam", "1", stdin=text)
    ct2_out = run_cli("translate", "--model", str(out), "--backend", "ctranslate2", "--beam", "1", stdin=text)
    assert ct2_out.returncode == 0, ct2_out.stderr
    assert ct2_out.stdout == torch_out.stdout and len(ct2_out.stdout.splitlines()) == 2

    wrong = run_cli("translate", "--model", str(out), stdin=text)
    assert wrong.returncode == 2 and "--backend ctranslate2" in wrong.stderr
    assert "Traceback" not in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    bad = run_cli("translate", "--model", str(checkpoint), "--compute-type", "int8", stdin=text)
    assert bad.returncode == 2 and "--compute-type applies to --backend ctranslate2" in bad.stderr
