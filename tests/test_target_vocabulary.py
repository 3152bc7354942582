"""Decoding over a target vocabulary (vocabulary selection): a restricted model gives the full
model's logits for the kept pieces and -inf for the rest, in fp32, untied and int8 alike; its
weights and checkpoint are unchanged; greedy search keeps its tokens when they are all kept;
CTranslate2's vocabulary map decodes as the restricted PyTorch model; the commands take the
pieces from a file of target-language text."""

from __future__ import annotations

import json

import pytest
import torch
from test_generation import CONFIGS, sources

from slimbert.checkpoint import save_checkpoint
from slimbert.cli import main
from slimbert.compress.quantize import quantize_int8
from slimbert.config import Seq2SeqTransformerConfig
from slimbert.generation import SearchConfig, generate, target_vocabulary, translate
from slimbert.models import build_model
from slimbert.models.seq2seq import Seq2SeqTransformer
from slimbert.subword import SubwordTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

GERMAN = ["ein Mann fährt Fahrrad .", "zwei Hunde spielen im Schnee .", "eine Frau liest ein Buch im Park ."]
ENGLISH = ["a man rides a bike .", "two dogs play in the snow .", "a woman reads a book in the park ."]


def kept_and_logits(model, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    V = model.config.vocab_size
    kept = sorted(set(torch.randperm(V, generator=g)[: V // 2].tolist()) | {model.config.eos_token_id})
    h = torch.randn(3, 5, model.embeddings.tokens.embedding_dim, generator=g)
    return kept, h


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("int8", [False, True])
def test_kept_pieces_get_the_full_logits_and_the_rest_minus_inf(name, int8):
    model = build_model(CONFIGS[name]()).eval()
    if int8:
        model = quantize_int8(model, "all")  # the vocabulary projection too: int8 rows, one scale each
    kept, h = kept_and_logits(model)
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    full = model.embeddings.logits(h)
    model.embeddings.restrict_output(kept)
    restricted = model.embeddings.logits(h)
    others = sorted(set(range(model.config.vocab_size)) - set(kept))
    torch.testing.assert_close(restricted[..., kept], full[..., kept], rtol=1e-5, atol=1e-5)
    assert torch.isneginf(restricted[..., others]).all()
    after = model.state_dict()
    assert before.keys() == {k for k, v in after.items() if isinstance(v, torch.Tensor)}
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # weights and checkpoint unchanged
    model.embeddings.restrict_output(None)
    assert torch.equal(model.embeddings.logits(h), full)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_search_keeps_its_tokens_when_they_are_all_kept(name):
    model = build_model(CONFIGS[name]()).eval()
    input_ids, mask = sources()
    search = SearchConfig(beam_size=1, max_len_a=0, max_len_b=8)
    full = [h[0].tokens for h in generate(model, input_ids, mask, search)]
    used = {t for tokens in full for t in tokens} | {model.config.eos_token_id}
    model.embeddings.restrict_output(sorted(used))
    assert [h[0].tokens for h in generate(model, input_ids, mask, search)] == full
    model.embeddings.restrict_output([model.config.eos_token_id, *sorted(used)[:2]])  # fewer pieces: only those
    for hyps in generate(model, input_ids, mask, search):
        assert set(hyps[0].tokens) <= set(sorted(used)[:2])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("tv")
    tokenizer = SubwordTokenizer.train((GERMAN + ENGLISH) * 5, vocab_size=200)
    torch.manual_seed(0)
    config = Seq2SeqTransformerConfig(vocab_size=len(tokenizer), hidden_size=16, encoder_layers=1, decoder_layers=1,
                                      num_attention_heads=2, intermediate_size=32, dropout=0.0,
                                      max_source_length=16, max_target_length=16)
    model = save_checkpoint(Seq2SeqTransformer(config).eval(), tokenizer, root / "model")
    (root / "train.en").write_text("\n".join(ENGLISH) + "\n\n")
    (root / "test.de").write_text("\n".join(GERMAN) + "\n")
    (root / "test.en").write_text("\n".join(ENGLISH) + "\n")
    return root, model, tokenizer


def test_the_target_vocabulary_is_the_pieces_of_the_text(checkpoint):
    _, _, tokenizer = checkpoint
    ids = target_vocabulary(tokenizer, ENGLISH + [""])
    assert set(ids) == {i for row in tokenizer.encode(ENGLISH) for i in row} | {tokenizer.eos_id, tokenizer.unk_id}
    assert len(ids) < len(tokenizer)
    assert not set(ids) & ({i for row in tokenizer.encode(GERMAN) for i in row} - set(ids))


def test_ctranslate2_vocabulary_map_decodes_as_the_restricted_model(checkpoint, tmp_path):
    pytest.importorskip("ctranslate2")
    from slimbert.compress.export_ctranslate2 import CTranslate2Translator, export_ctranslate2
    from slimbert.recipes.translate import load_translator

    root, model_dir, tokenizer = checkpoint
    model, _ = load_translator(model_dir, "cpu", target_vocabulary=str(root / "train.en"))
    ids = target_vocabulary(tokenizer, ENGLISH)
    export_ctranslate2(model, tokenizer, tmp_path / "ct2", target_vocabulary=ids)
    engine = CTranslate2Translator(tmp_path / "ct2", threads=1)
    assert engine.use_vmap
    search = SearchConfig(beam_size=1, max_len_a=1.0, max_len_b=3)
    ours = translate(model, tokenizer, GERMAN, search)
    theirs = engine.translate(GERMAN, search)
    assert [h[0].tokens for h in theirs.hypotheses] == [h[0].tokens for h in ours.hypotheses]
    assert all(set(h[0].tokens) <= set(ids) for h in ours.hypotheses)


def test_translate_and_bench_take_a_target_vocabulary_file(checkpoint, tmp_path, capsys, monkeypatch):
    from slimbert.recipes.translate import load_translator

    root, model_dir, tokenizer = checkpoint
    assert main(["translate", "--model", str(model_dir), str(root / "test.de"), "--beam", "1",
                 "--target-vocabulary", str(root / "train.en")]) == 0
    lines = capsys.readouterr().out.splitlines()
    restricted, _ = load_translator(model_dir, "cpu", target_vocabulary=str(root / "train.en"))
    assert restricted.embeddings.serving is not None
    expected = translate(restricted, tokenizer, GERMAN, SearchConfig(beam_size=1))
    assert lines == expected.best
    allowed = set(target_vocabulary(tokenizer, ENGLISH))
    assert all(set(h[0].tokens) <= allowed for h in expected.hypotheses)
    assert main(["bench-seq2seq", "--model", str(model_dir), "--src", str(root / "test.de"), "--ref",
                 str(root / "test.en"), "--backend", "torch", "--beam", "2", "--rounds", "1",
                 "--latency-sentences", "1", "--threads", "1", "--no-progress", "--target-vocabulary",
                 str(root / "train.en"), "--out", str(tmp_path / "b")]) == 0
    result = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert {(r["backend"], r["search"]) for r in result["rows"]} == {
        (b, s) for b in ("torch", "torch+vocab") for s in ("greedy", "beam 2")}
    assert result["meta"]["target_vocabulary"]["model"] == [len(allowed), len(tokenizer)]


@pytest.mark.parametrize("argv, message", [
    (["--backend", "ctranslate2"], "--target-vocabulary applies to --backend torch"),
    (["--empty"], "no text to take a target vocabulary from"),
])
def test_bad_target_vocabulary_is_a_one_line_error(checkpoint, tmp_path, capsys, argv, message):
    root, model_dir, _ = checkpoint
    vocabulary = root / "train.en"
    if argv == ["--empty"]:
        vocabulary, argv = tmp_path / "empty.en", []
        vocabulary.write_text("\n\n")
    code = main(["translate", "--model", str(model_dir), str(root / "test.de"), "--target-vocabulary",
                 str(vocabulary), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
