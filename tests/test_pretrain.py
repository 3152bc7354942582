"""Pretraining: corpus -> token shards -> packed sequences, per-sample masking, the elastic batch
source, exact resume, and `slimbert pretrain` end to end (parity of its output with transformers)."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, WORDS, tiny_vocab

from slimbert import BertConfig, Tokenizer, build_model, load_model
from slimbert.cli import main
from slimbert.data import corpus as corpus_module
from slimbert.data.batching import IGNORE_INDEX
from slimbert.data.corpus import TokenCorpus, corpus_shards, read_documents, token_dtype
from slimbert.data.masking import SampleMasker
from slimbert.data.packed import PackedMLMBatches
from slimbert.errors import CheckpointError, ConfigError, DataError
from slimbert.evaluation.perplexity import mlm_perplexity
from slimbert.hardware import detect_machine
from slimbert.recipes import pretrain as recipe
from slimbert.recipes.pretrain import PretrainConfig, parse_duration, pretrain
from slimbert.training.objectives import MaskedLMObjective
from slimbert.training.trainer import TrainConfig, Trainer

STEMS = ("movie film plot story love hate fun").split()
TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
              "max_position_embeddings": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def sentence(rng: random.Random, n: int) -> str:
    """Words of the tiny vocabulary, some of them split into pieces (film + ##s, ##ed, ##ing)."""
    words = [rng.choice(STEMS) + rng.choice(["s", "ed", "ing"]) if rng.random() < 0.3 else rng.choice(WORDS)
             for _ in range(n)]
    return " ".join(words)


def write_corpus(directory: Path, articles: int = 30, seed: int = 0) -> list[Path]:
    """A Wikipedia-like file (one paragraph per line, a blank line between articles) and a
    book-like one (hard-wrapped lines, blank lines between paragraphs)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    wiki = "\n\n".join("\n".join(sentence(rng, rng.randint(8, 30)) for _ in range(rng.randint(1, 3)))
                       for _ in range(articles)) + "\n"
    paragraphs = []
    for _ in range(articles):
        words = sentence(rng, rng.randint(10, 40)).split()
        paragraphs.append("\n".join(" ".join(words[i:i + 7]) for i in range(0, len(words), 7)))
    book = "\n\n\n".join(paragraphs[:2]) + "\n\n" + "\n\n".join(paragraphs[2:]) + "\n"
    (directory / "wiki.txt").write_text(wiki, encoding="utf-8")
    (directory / "book.txt").write_text(book, encoding="utf-8")
    return [directory / "wiki.txt", directory / "book.txt"]


@pytest.fixture
def tokenizer() -> Tokenizer:
    return Tokenizer(tiny_vocab(), lowercase=True, max_length=64)


@pytest.fixture
def files(tmp_path) -> list[Path]:
    return write_corpus(tmp_path / "corpus")


def documents_of(path: Path) -> list[str]:
    """What a reader of the file sees as documents: blocks between blank lines, lines joined."""
    blocks = [b for b in path.read_text().split("\n\n") if b.strip()]
    return [" ".join(line.strip() for line in b.strip().splitlines()) for b in blocks]


# ---------------------------------------------------------------------------------- corpus


def test_documents_are_blocks_of_lines_with_wrapped_lines_joined(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"\xef\xbb\xbfFirst paragraph of article one.\nSecond paragraph.\n\n\n"
                     b"A book line wrapped\nat seventy characters\nends here.\r\n\r\nLast.")
    docs = list(read_documents(path))
    assert [(text, ends) for text, ends, _ in docs] == [
        ("First paragraph of article one. Second paragraph.", True),
        ("A book line wrapped at seventy characters ends here.", True),
        ("Last.", True)]
    assert docs[-1][2] == path.stat().st_size  # the bytes read, for the progress bar


def test_a_long_document_comes_in_pieces_cut_at_line_ends(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("aaaa bbbb\ncccc\ndddd eeee\n\nnext\n")
    docs = [(t, e) for t, e, _ in read_documents(path, piece_chars=10)]
    assert docs == [("aaaa bbbb cccc", False), ("dddd eeee", True), ("next", True)]


def test_bytes_that_are_not_utf8_are_an_error_naming_the_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("good line\n\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt:3: not UTF-8 .*0xE9"):
        list(read_documents(path))


def test_shards_hold_each_document_then_sep_and_are_made_once(files, tokenizer, tmp_path, monkeypatch):
    shards = corpus_shards(files, tokenizer, tmp_path / "cache", progress=False)
    for shard, path in zip(shards, files):
        want = []
        for doc in documents_of(path):
            want += tokenizer.encode_ids([doc])[0] + [tokenizer.sep_id]
        stream = np.fromfile(shard.path, dtype="<u2")
        assert stream.tolist() == want
        assert shard.tokens == len(want) and shard.documents == len(documents_of(path))
    # Made once: the same files and vocabulary are read back from the cache...
    monkeypatch.setattr(corpus_module, "tokenize_file", lambda *a, **k: pytest.fail("tokenized again"))
    assert corpus_shards(files, tokenizer, tmp_path / "cache", progress=False) == shards
    monkeypatch.undo()
    # ...a changed file or another vocabulary is tokenized again, the rest reused.
    with open(files[1], "a") as f:
        f.write("\nthe end\n")
    made = []
    real = corpus_module.tokenize_file
    monkeypatch.setattr(corpus_module, "tokenize_file", lambda src, *a, **k: made.append(src) or real(src, *a, **k))
    again = corpus_shards(files, tokenizer, tmp_path / "cache", progress=False)
    assert made == [files[1]] and again[0] == shards[0] and again[1].tokens == shards[1].tokens + 3
    cased = Tokenizer(tiny_vocab(), lowercase=False)
    corpus_shards(files, cased, tmp_path / "cache", progress=False)
    assert made[1:] == files


def test_ids_beyond_uint16_are_stored_as_uint32(tmp_path):
    vocab = {**tiny_vocab(), **{f"w{i}": len(tiny_vocab()) + i for i in range(70_000)}}
    tok = Tokenizer(vocab)
    assert token_dtype(len(tok)) == np.dtype("<u4") and token_dtype(65_536) == np.dtype("<u2")
    path = tmp_path / "big.txt"
    path.write_text("w69999 the w3\n")
    corpus = TokenCorpus.build([path], tok, tmp_path / "cache", progress=False)
    assert corpus.samples([0], 5)[0].tolist() == [tok.cls_id, vocab["w69999"], vocab["the"], vocab["w3"], tok.sep_id]


def test_packing_fills_every_sequence_with_sep_between_documents(files, tokenizer, tmp_path):
    corpus = TokenCorpus.build(files, tokenizer, tmp_path / "cache", progress=False)
    L = 16
    n = corpus.num_samples(L)
    assert n == corpus.num_tokens // (L - 2) > 20
    samples = corpus.samples(list(range(n)), L)
    assert samples.shape == (n, L)
    assert (samples[:, 0] == tokenizer.cls_id).all() and (samples[:, -1] == tokenizer.sep_id).all()
    assert not (samples == tokenizer.pad_id).any()  # no padding
    stream = np.concatenate([np.fromfile(s.path, dtype="<u2") for s in corpus.shards])
    assert samples[:, 1:-1].reshape(-1).tolist() == stream[:n * (L - 2)].tolist()  # nothing lost or repeated
    documents = sum(len(documents_of(f)) for f in files)
    assert int((stream == tokenizer.sep_id).sum()) == documents  # one [SEP] after each document
    inner_seps = int((samples[:, 1:-1] == tokenizer.sep_id).sum())  # the partial last sequence is dropped
    assert documents - 2 <= inner_seps < documents
    # any sample, in any order, reads the same
    assert corpus.samples([7, 3], L).tolist() == samples[[7, 3]].tolist()
    with pytest.raises(IndexError):
        corpus.samples([n], L)


# --------------------------------------------------------------------------------- masking


def random_ids(B=400, T=128, V=1000, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    ids[:, 60] = 3  # a [SEP] between documents
    return ids


def test_mask_rates_are_15_percent_and_80_10_10():
    ids = random_ids()
    masker = SampleMasker(mask_id=4, vocab_size=1000, special_ids=[0, 1, 2, 3, 4], seed=1)
    masked, labels = masker(ids, epoch=0, indices=range(len(ids)))
    chosen = labels != IGNORE_INDEX
    eligible = int((ids > 4).sum())
    rate = chosen.sum().item() / eligible
    sd = math.sqrt(0.15 * 0.85 / eligible)
    assert abs(rate - 0.15) < 4 * sd
    assert torch.equal(labels[chosen], ids[chosen])
    n = int(chosen.sum())
    as_mask = (masked[chosen] == 4).sum().item() / n
    kept = (masked[chosen] == ids[chosen]).sum().item() / n  # includes random draws of the same id (1/1000)
    assert abs(as_mask - 0.8) < 4 * math.sqrt(0.16 / n)
    assert abs(kept - 0.1) < 4 * math.sqrt(0.09 / n) + 0.001
    assert torch.equal(masked[~chosen], ids[~chosen])  # only chosen tokens change
    assert not chosen[ids <= 4].any()  # special tokens are never chosen
    assert (masked[:, [0, 60, -1]] == ids[:, [0, 60, -1]]).all()
    masked30, labels30 = SampleMasker(4, 1000, [0, 1, 2, 3, 4], probability=0.3)(ids, 0, range(len(ids)))
    assert abs((labels30 != IGNORE_INDEX).sum().item() / eligible - 0.3) < 4 * math.sqrt(0.21 / eligible)


def test_a_sample_is_masked_by_seed_epoch_and_index_only():
    ids = random_ids(B=8)
    masker = SampleMasker(mask_id=4, vocab_size=1000, special_ids=[0, 1, 2, 3, 4], seed=5)
    whole, labels = masker(ids, epoch=2, indices=range(100, 108))
    # the same samples in another batch, order and split: the same masks
    part, part_labels = masker(ids[[6, 2]], epoch=2, indices=[106, 102])
    assert torch.equal(part, whole[[6, 2]]) and torch.equal(part_labels, labels[[6, 2]])
    # another epoch, index or seed: other masks
    assert not torch.equal(masker(ids, epoch=3, indices=range(100, 108))[1], labels)
    assert not torch.equal(masker(ids, epoch=2, indices=range(101, 109))[1], labels)
    other = SampleMasker(mask_id=4, vocab_size=1000, special_ids=[0, 1, 2, 3, 4], seed=6)
    assert not torch.equal(other(ids, epoch=2, indices=range(100, 108))[1], labels)


def test_whole_word_masking_chooses_all_pieces_of_a_word(tokenizer):
    rng = random.Random(0)
    rows = [tokenizer.encode([sentence(rng, 40)], max_length=64).input_ids[0][:48] for _ in range(300)]
    ids = torch.tensor([r + [tokenizer.sep_id] * (48 - len(r)) for r in rows])
    ids[:, 1] = tokenizer.vocab["##s"]  # a sequence that starts mid-word: its piece is a word of its own
    masker = SampleMasker.for_tokenizer(tokenizer, probability=0.2, whole_word=True, seed=3)
    masked, labels = masker(ids, epoch=0, indices=range(len(ids)))
    chosen = labels != IGNORE_INDEX
    continuation = masker.continuation[ids]
    special = set(tokenizer.special_ids)
    words = chosen_words = 0
    for row, cont, picked in zip(ids.tolist(), continuation.tolist(), chosen.tolist()):
        t = 0
        while t < len(row):
            if row[t] in special:
                assert not picked[t]
                t += 1
                continue
            end = t + 1
            while end < len(row) and cont[end] and row[end] not in special:
                end += 1
            assert len(set(picked[t:end])) == 1, "a word was split"
            words += 1
            chosen_words += picked[t]
            t = end
    assert int(continuation[chosen].sum()) > 50  # pieces were chosen with their words
    assert abs(chosen_words / words - 0.2) < 4 * math.sqrt(0.16 / words)


# --------------------------------------------------------------------------- batch source


def packed(corpus, tokenizer, batch_size, grad_accum, rank=0, world=1, seed=0, seq_length=16):
    masker = SampleMasker.for_tokenizer(tokenizer, seed=seed)
    return PackedMLMBatches(corpus, seq_length, batch_size, grad_accum, masker, seed, rank, world)


def test_ranks_split_every_global_step_and_take_the_same_number_of_steps(files, tokenizer, tmp_path):
    corpus = TokenCorpus.build(files, tokenizer, tmp_path / "cache", progress=False)
    one = packed(corpus, tokenizer, batch_size=3, grad_accum=4)  # global batch 12
    ranks = [packed(corpus, tokenizer, batch_size=3, grad_accum=2, rank=r, world=2) for r in range(2)]
    assert one.steps_per_epoch == ranks[0].steps_per_epoch == ranks[1].steps_per_epoch == one.num_samples // 12
    for epoch in (0, 1):
        single = list(one.epoch_batches(epoch))
        split = [list(r.epoch_batches(epoch)) for r in ranks]
        assert len(single) == len(split[0]) == len(split[1]) == one.steps_per_epoch
        for step, micro in enumerate(single):
            joined = [b for rank in split for b in rank[step]]
            for key in ("input_ids", "labels"):
                assert torch.equal(torch.cat([b[key] for b in micro]), torch.cat([b[key] for b in joined]))
    orders = one.order(0), one.order(1)
    assert sorted(orders[0].tolist()) == list(range(one.num_samples)) and not torch.equal(*orders)


def test_the_fingerprint_follows_the_tokens_not_the_files(files, tokenizer, tmp_path):
    corpus = TokenCorpus.build(files, tokenizer, tmp_path / "cache", progress=False)
    # the same text elsewhere: the same fingerprint
    moved = [tmp_path / "moved" / f.name for f in files]
    moved[0].parent.mkdir()
    for f, m in zip(files, moved):
        m.write_text(f.read_text())
    elsewhere = TokenCorpus.build(moved, tokenizer, tmp_path / "cache", progress=False)
    assert packed(elsewhere, tokenizer, 4, 1).fingerprint() == packed(corpus, tokenizer, 4, 1).fingerprint()
    # two words swapped in every line: the same counts of tokens and documents, other data
    swapped = [tmp_path / "swapped" / f.name for f in files]
    swapped[0].parent.mkdir()
    for f, w in zip(files, swapped):
        w.write_text("\n".join(" ".join(line.split()[1::-1] + line.split()[2:]) for line in f.read_text().split("\n")))
    other = TokenCorpus.build(swapped, tokenizer, tmp_path / "cache", progress=False)
    assert [(s.tokens, s.documents) for s in other.shards] == [(s.tokens, s.documents) for s in corpus.shards]
    assert packed(other, tokenizer, 4, 1).fingerprint() != packed(corpus, tokenizer, 4, 1).fingerprint()


def test_a_source_resumes_at_its_global_sample_on_any_number_of_processes(files, tokenizer, tmp_path):
    corpus = TokenCorpus.build(files, tokenizer, tmp_path / "cache", progress=False)
    one = packed(corpus, tokenizer, batch_size=4, grad_accum=1)
    steps = one.epoch_batches(0)
    for _ in range(3):
        next(steps)
    state = one.state_dict()
    assert state["sample"] == 12
    rest = list(steps)
    reads = corpus.samples_read
    two = packed(corpus, tokenizer, batch_size=2, grad_accum=1, rank=1, world=2)
    two.load_state_dict(state)
    resumed = list(two.epoch_batches(0))
    assert corpus.samples_read - reads == 2 * len(rest)  # only its share of the steps after the position
    assert len(resumed) == len(rest)
    for mine, full in zip(resumed, rest):
        assert torch.equal(mine[0]["input_ids"], full[0]["input_ids"][2:])
    with pytest.raises(CheckpointError, match="global_batch=4, this one has 6"):
        packed(corpus, tokenizer, batch_size=3, grad_accum=1, rank=0, world=2).load_state_dict(state)


# ------------------------------------------------------------------------ runs and resume


def model_file(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "model.json"
    path.write_text(json.dumps({**TINY_MODEL, **overrides}))
    return path


def pretrain_args(files, tmp_path, out, *extra) -> list[str]:
    return ["pretrain", "--corpus", *map(str, files), "--out", str(out), "--model-config",
            str(model_file(tmp_path)), "--vocab-size", "120", "--seq-length", "16", "--cache-dir",
            str(tmp_path / "cache"), "--no-progress", *extra]


class Killed(Exception):
    pass


def test_slimbert_pretrain_end_to_end_learns_and_writes_a_checkpoint(files, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(pretrain_args(files, tmp_path, out, "--max-steps", "40", "--batch-size", "8", "--lr", "3e-3",
                              "--warmup-ratio", "0.1", "--eval-every-steps", "10"))
    assert code == 0, capsys.readouterr().err
    assert "pretrained 2 x 32" in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "vocab.txt", "train_log.jsonl", "results.json", "last"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    vocab_size = len((out / "vocab.txt").read_text().splitlines())
    assert config["architectures"] == ["BertForMaskedLM"] and config["vocab_size"] == vocab_size <= 120
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records][:2] == [10, 20] and records[-1]["step"] == 40
    losses = [r["train_loss"] for r in records]
    assert losses[-1] < losses[0] - 0.5 and losses[0] < math.log(vocab_size) + 0.5
    results = json.loads((out / "results.json").read_text())
    assert results["total_steps"] == 40 and results["tokens_per_step"] == 8 * 16
    assert results["history"][-1]["train_tokens_per_s"] > 0
    assert results["machine"] == detect_machine().line()  # what a figure from this run was measured on
    assert load_model(out).config.head == "mlm"


def test_heldout_text_is_scored_at_every_evaluation_and_the_lowest_loss_model_is_kept(files, tmp_path, capsys):
    heldout = tmp_path / "heldout.txt"
    rng = random.Random(7)
    heldout.write_text("\n".join(sentence(rng, 12) for _ in range(40)) + "\n")
    out = tmp_path / "run"
    code = main(pretrain_args(files, tmp_path, out, "--max-steps", "30", "--batch-size", "8", "--lr", "3e-3",
                              "--warmup-ratio", "0.1", "--eval-every-steps", "10", "--heldout", str(heldout)))
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert {10, 20, 30} <= {r["step"] for r in records}  # and the epoch's end
    for r in records:
        assert r["eval_heldout_ppl"] == pytest.approx(math.exp(r["eval_heldout_mlm_loss"]))
    assert records[-1]["eval_heldout_mlm_loss"] < records[0]["eval_heldout_mlm_loss"] - 0.2
    # OUT holds the model of the lowest held-out loss, and scoring it again gives that loss
    best = min(records, key=lambda r: r["eval_heldout_mlm_loss"])
    again = mlm_perplexity(load_model(out), Tokenizer.from_dir(out), heldout, seq_length=16)
    assert again.loss == pytest.approx(best["eval_heldout_mlm_loss"], rel=1e-5)
    assert json.loads((out / "results.json").read_text())["best"] == pytest.approx(best["eval_heldout_mlm_loss"])
    assert (out / "pretrain_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_dropout_sets_the_new_models_dropout(files, tmp_path):
    out = tmp_path / "run"
    assert main(pretrain_args(files, tmp_path, out, "--max-steps", "2", "--batch-size", "4", "--dropout", "0.2")) == 0
    config = load_model(out).config  # the model config file of these tests has no dropout
    assert config.hidden_dropout_prob == config.attention_probs_dropout_prob == 0.2


def assert_same_mlm_logits(ours, theirs) -> None:
    """slimbert's MLM model and a `transformers` one give the same logits at every real token."""
    ids = torch.randint(5, ours.config.vocab_size, (3, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    with torch.no_grad():
        want = theirs.eval()(input_ids=ids, attention_mask=mask).logits
        got = ours.eval()(ids, mask).logits
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=1e-4)


def test_the_output_is_a_bert_for_masked_lm_with_equal_logits_in_transformers(files, tmp_path, csv_task):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "run"
    assert main(pretrain_args(files, tmp_path, out, "--max-steps", "3", "--batch-size", "4")) == 0
    ours = load_model(out)
    assert_same_mlm_logits(ours, transformers.BertForMaskedLM.from_pretrained(out))
    # and `slimbert finetune --model DIR` takes it as it is: a classifier over the pretrained encoder
    classifier = load_model(out, head="classification", num_labels=2)
    torch.testing.assert_close(classifier.bert.embeddings.word_embeddings.weight,
                               ours.bert.embeddings.word_embeddings.weight)
    train, dev = csv_task
    assert main(["finetune", "--model", str(out), "--train-file", str(train), "--dev-file", str(dev),
                 "--text-col", "review", "--label-col", "sentiment", "--out", str(tmp_path / "ft"),
                 "--max-steps", "2", "--batch-size", "8", "--no-progress"]) == 0
    assert load_model(tmp_path / "ft").config.head == "classification"


def test_presets_have_rotary_positions_that_export_to_transformers_roformer_with_equal_logits(files, tmp_path):
    transformers = pytest.importorskip("transformers")
    args = ["pretrain", "--corpus", *map(str, files), "--model-config", "tiny", "--vocab-size", "120",
            "--seq-length", "16", "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--max-steps", "2",
            "--batch-size", "4"]
    assert main([*args, "--out", str(tmp_path / "rope")]) == 0
    ours = load_model(tmp_path / "rope")
    assert ours.config.position_embedding_type == "rope" and ours.config.num_hidden_layers == 2
    assert main(["export", "--model", str(tmp_path / "rope"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf")
    assert type(theirs).__name__ == "RoFormerForMaskedLM"
    assert_same_mlm_logits(ours, theirs)
    # --positions absolute: BERT's learned positions, a checkpoint BertForMaskedLM loads as it is
    assert main([*args, "--out", str(tmp_path / "bert"), "--positions", "absolute"]) == 0
    bert = load_model(tmp_path / "bert").config
    assert bert.position_embedding_type == "absolute" and bert.is_hf_compatible
    # a config file keeps its own positions unless --positions is given
    assert main(pretrain_args(files, tmp_path, tmp_path / "file", "--max-steps", "1", "--batch-size", "4",
                              "--positions", "rope")) == 0
    assert load_model(tmp_path / "file").config.position_embedding_type == "rope"


def test_a_resumed_run_equals_the_uninterrupted_one_bit_for_bit_and_reads_no_skipped_data(
        files, tmp_path, monkeypatch):
    """Dropout on, 2 micro-batches a step, a checkpoint every 2 steps; killed during step 5."""
    args = ["--max-steps", "6", "--batch-size", "4", "--grad-accum", "2", "--save-every-steps", "2",
            "--eval-every-steps", "1", "--seed", "3"]
    model = str(model_file(tmp_path, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))

    def run(out, *extra):
        argv = pretrain_args(files, tmp_path, out, *args, *extra)
        argv[argv.index("--model-config") + 1] = model
        return main(argv)

    assert run(tmp_path / "full") == 0

    calls = []

    class Crashing(MaskedLMObjective):
        def __call__(self, model, batch):
            calls.append(1)
            if len(calls) == 9:
                raise Killed
            return super().__call__(model, batch)

    monkeypatch.setattr(recipe, "MaskedLMObjective", Crashing)
    with pytest.raises(Killed):
        run(tmp_path / "crash")
    monkeypatch.undo()

    read = []
    real = TokenCorpus.samples
    monkeypatch.setattr(TokenCorpus, "samples", lambda self, idx, L: read.append(len(idx)) or real(self, idx, L))
    assert run(tmp_path / "crash", "--resume") == 0
    assert sum(read) == 2 * 8  # steps 5 and 6 only: nothing before the checkpoint is read again

    def log(out):
        return [{k: v for k, v in json.loads(line).items() if k in ("step", "train_loss")}
                for line in (out / "train_log.jsonl").read_text().splitlines()]

    assert log(tmp_path / "crash") == log(tmp_path / "full") and len(log(tmp_path / "full")) == 6
    a, b = load_model(tmp_path / "full").state_dict(), load_model(tmp_path / "crash").state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def run_worker(seen: Path, argv: list[str], processes: int = 2, port=29541, crash_after: int = -1):
    """`slimbert pretrain` under torchrun on CPU processes (gloo); each rank's micro-batches are
    written to SEEN.rank<R>.pt (tests/pretrain_worker.py); `crash_after` K kills it at the K+1-th."""
    script = Path(__file__).with_name("pretrain_worker.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "CRASH_AFTER": str(crash_after)}
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                f"--master_port={port}"]
    return subprocess.run([*launcher, str(script), str(seen), *argv], capture_output=True, text=True,
                          env=env, timeout=300)


def train_losses(out: Path) -> list[float]:
    """The training loss of every step a run logged (each step is evaluated in these tests)."""
    return [json.loads(line)["train_loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def run_here(argv: list[str], monkeypatch, crash_after: int | None = None) -> list[dict[str, torch.Tensor]]:
    """`slimbert pretrain` in this process; returns the micro-batches it trained on. With
    `crash_after`, the next micro-batch raises Killed, as a killed job stops."""
    seen = []

    class Recording(MaskedLMObjective):
        def __call__(self, model, batch):
            if crash_after is not None and len(seen) == crash_after:
                raise Killed
            seen.append({k: v.clone() for k, v in batch.items()})
            return super().__call__(model, batch)

    with monkeypatch.context() as m:
        m.setattr(recipe, "MaskedLMObjective", Recording)
        assert main(argv) == 0
    return seen


@pytest.mark.slow
def test_accumulated_micro_batches_equal_one_full_batch_though_their_masked_counts_differ(files, tmp_path,
                                                                                          monkeypatch):
    """The MLM loss is a mean over masked tokens, and two micro-batches of a step hold different
    numbers of them: accumulation must weight each by its masked tokens, not by its sequences,
    to give the full batch's gradient."""
    args = ["--max-steps", "3", "--global-batch", "8", "--eval-every-steps", "1", "--lr", "1e-2"]
    whole = run_here(pretrain_args(files, tmp_path, tmp_path / "whole", *args, "--batch-size", "8"), monkeypatch)
    halves = run_here(pretrain_args(files, tmp_path, tmp_path / "halves", *args, "--batch-size", "4"), monkeypatch)
    masked = [int((b["labels"] != IGNORE_INDEX).sum()) for b in halves]
    assert len(whole) == 3 and len(halves) == 6 and any(a != b for a, b in zip(masked[::2], masked[1::2]))
    for step, batch in enumerate(whole):
        assert torch.equal(batch["labels"], torch.cat([halves[2 * step]["labels"], halves[2 * step + 1]["labels"]]))

    np.testing.assert_allclose(train_losses(tmp_path / "halves"), train_losses(tmp_path / "whole"), rtol=1e-5)
    a, b = load_model(tmp_path / "whole").state_dict(), load_model(tmp_path / "halves").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


def test_a_run_resumed_on_two_processes_continues_the_same_global_order(files, tmp_path, monkeypatch):
    """1 process, killed during step 4 (checkpoint at step 2), resumed by torchrun on 2 CPU
    processes (gloo) with the same global batch: every step trains on the same sequences with the
    same masks as the uninterrupted run, and the losses agree."""
    # --global-batch 8 with batch 4: 2 micro-batches on 1 process, 1 on each of 2 processes
    args = ["--max-steps", "6", "--batch-size", "4", "--global-batch", "8", "--save-every-steps", "2",
            "--eval-every-steps", "1", "--vocab-size", "120"]
    seen_full = run_here(pretrain_args(files, tmp_path, tmp_path / "full", *args), monkeypatch)
    with pytest.raises(Killed):
        run_here(pretrain_args(files, tmp_path, tmp_path / "crash", *args), monkeypatch, crash_after=6)
    resumed = run_worker(tmp_path / "resumed", pretrain_args(files, tmp_path, tmp_path / "crash", *args, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    ranks = [torch.load(f"{tmp_path / 'resumed'}.rank{r}.pt") for r in range(2)]
    assert len(seen_full) == 12 and len(ranks[0]) == len(ranks[1]) == 4  # steps 3-6 after the resume
    for step in range(4):
        for r in range(2):  # rank r's micro-batch is the r-th of the single process's step
            for key in ("input_ids", "labels"):
                assert torch.equal(ranks[r][step][key], seen_full[4 + 2 * step + r][key]), (step, r, key)

    assert len(train_losses(tmp_path / "crash")) == 6
    np.testing.assert_allclose(train_losses(tmp_path / "crash"), train_losses(tmp_path / "full"), rtol=1e-5)
    a, b = load_model(tmp_path / "full").state_dict(), load_model(tmp_path / "crash").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


# ------------------------------------------------------------------------- options, budgets


def test_max_tokens_sets_the_steps_and_a_time_budget_is_planned_once(files, tmp_path, monkeypatch):
    out = tmp_path / "tokens"
    results = pretrain(PretrainConfig(corpus=[str(f) for f in files], out=str(out), model_config=str(
        model_file(tmp_path)), vocab_size=120, seq_length=16, max_tokens=1000, cache_dir=str(tmp_path / "cache")),
        TrainConfig(batch_size=4, progress=False))
    assert results["total_steps"] == math.ceil(1000 / (4 * 16)) == results["history"][-1]["step"]

    measured = []
    monkeypatch.setattr(recipe, "measure_step_seconds", lambda *a, **k: measured.append(1) or 0.25)
    config = PretrainConfig(corpus=[str(f) for f in files], out=str(tmp_path / "timed"), model_config=str(
        model_file(tmp_path)), vocab_size=120, seq_length=16, time_budget=parse_duration("1.5s"),
        cache_dir=str(tmp_path / "cache"))
    results = pretrain(config, TrainConfig(batch_size=4, progress=False, save_every_steps=2))
    plan = json.loads((tmp_path / "timed" / "pretrain_plan.json").read_text())
    assert plan["max_steps"] == 6 == results["total_steps"] and measured == [1]
    config.resume = True
    assert pretrain(config, TrainConfig(batch_size=4, progress=False, save_every_steps=2))["total_steps"] == 6
    assert measured == [1]  # the resumed run keeps the planned steps, it does not measure again


def test_the_step_time_probe_runs_on_a_corpus_of_one_step(files, tokenizer, tmp_path):
    corpus = TokenCorpus.build(files, tokenizer, tmp_path / "cache", progress=False)
    sequences = packed(corpus, tokenizer, batch_size=1, grad_accum=1).steps_per_epoch
    # a global batch of all but one of the sequences: one step per epoch, while the probe takes four
    source = packed(corpus, tokenizer, batch_size=sequences - 1, grad_accum=1)
    assert source.steps_per_epoch == 1
    net = build_model(BertConfig(**TINY_MODEL, vocab_size=len(tokenizer), head="mlm"))
    seconds = recipe.measure_step_seconds(net, source, TrainConfig(), torch.device("cpu"))
    assert 0 < seconds < math.inf


def test_one_step_slowed_by_another_job_does_not_move_the_time_plan(files, tokenizer, tmp_path, monkeypatch):
    import time

    corpus = TokenCorpus.build(files, tokenizer, tmp_path / "cache", progress=False)
    source = packed(corpus, tokenizer, batch_size=2, grad_accum=1)
    net = build_model(BertConfig(**TINY_MODEL, vocab_size=len(tokenizer), head="mlm"))
    calls = []

    class OneSlowStep(MaskedLMObjective):
        def __call__(self, model, batch):
            calls.append(1)
            if len(calls) == 3:  # the second timed step
                time.sleep(1.5)
            return super().__call__(model, batch)

    monkeypatch.setattr(recipe, "MaskedLMObjective", OneSlowStep)
    seconds = recipe.measure_step_seconds(net, source, TrainConfig(), torch.device("cpu"))
    assert len(calls) == 6 and seconds < 0.3  # a tiny step takes milliseconds; the mean would be over 0.3


def test_the_step_time_probe_takes_the_runs_step_on_a_sharded_or_ddp_copy(files, tokenizer, tmp_path, monkeypatch):
    from contextlib import contextmanager, nullcontext

    corpus = TokenCorpus.build(files, tokenizer, tmp_path / "cache", progress=False)
    source = packed(corpus, tokenizer, batch_size=2, grad_accum=2)
    net = build_model(BertConfig(**TINY_MODEL, vocab_size=len(tokenizer), head="mlm"))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    calls = []

    class Recorded:  # FSDP or tensor parallelism, as the probe asks for them
        def apply(self, model, device):
            calls.append(("apply", model is net))

        def sync(self, model, last):
            calls.append(("sync", last))
            return nullcontext()

    recipe.measure_step_seconds(net, source, TrainConfig(), torch.device("cpu"), steps=2, sharding=Recorded())
    # a copy is sharded, not the run's model; gradients are reduced on a step's last micro-batch
    assert calls == [("apply", False)] + [("sync", False), ("sync", True)] * 3

    calls.clear()

    class RecordedDDP(torch.nn.Module):
        def __init__(self, module, **kwargs):
            super().__init__()
            self.module = module
            calls.append(("ddp", module is net))

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

        @contextmanager
        def no_sync(self):
            calls.append("no_sync")
            yield

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", RecordedDDP)
    recipe.measure_step_seconds(net, source, TrainConfig(), torch.device("cpu"), steps=2, ddp=True)
    assert calls == [("ddp", False)] + ["no_sync"] * 3
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # the run's model is untouched


def test_parse_duration():
    assert [parse_duration(t) for t in ("2h", "90m", "1h30m", "45s", "3600", "0.5h")] == [
        7200, 5400, 5400, 45, 3600, 1800]
    for bad in ("", "2 hours", "-1h", "0s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_from_a_bare_encoder_adds_a_fresh_mlm_head_and_keeps_its_vocabulary(files, tmp_path, tiny_checkpoint):
    out = tmp_path / "adapted"
    code = main(["pretrain", "--corpus", *map(str, files), "--out", str(out), "--from", str(tiny_checkpoint),
                 "--seq-length", "16", "--max-steps", "3", "--batch-size", "4", "--cache-dir",
                 str(tmp_path / "cache"), "--no-progress"])
    assert code == 0
    before, after = load_model(tiny_checkpoint), load_model(out)
    assert after.config.head == "mlm" and (out / "vocab.txt").read_text() == (tiny_checkpoint / "vocab.txt").read_text()
    assert after.config.hidden_size == before.config.hidden_size
    moved = after.bert.encoder.layers[0].attn.q_proj.weight - before.encoder.layers[0].attn.q_proj.weight
    assert 0 < moved.abs().max() < 0.1  # continued from the checkpoint, not from scratch


@pytest.mark.parametrize("argv,message", [
    (["--corpus", "missing.txt"], "missing.txt: file not found"),
    (["--model-config", "huge"], "model_config must be one of tiny, mini"),
    (["--seq-length", "128"], "seq_length 128 is longer than the model's max_position_embeddings=64"),
    (["--max-tokens", "100", "--max-steps", "5"], "give one budget"),
    (["--time-budget", "soon"], "expected a duration"),
    (["--global-batch", "6", "--batch-size", "4"], "global_batch 6 is not a multiple"),
    (["--heldout", "nothere.txt"], "nothere.txt: heldout file not found"),
    (["--heldout-lines", "5"], "heldout_lines needs --heldout FILE"),
    (["--dropout", "1.5"], "dropout must be in [0, 1), got 1.5"),
    (["--positions", "learned"], "invalid choice: 'learned'"),
    (["--from", "bundled:minilm-l6"], "--model-config, --dropout and --positions"),
])
def test_bad_options_are_one_line_errors(files, tmp_path, capsys, argv, message):
    assert main(pretrain_args(files, tmp_path, tmp_path / "out", *argv)) == 2  # the later option wins
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_to_tensorboard_writes_event_files(tmp_path, monkeypatch):
    from conftest import synthetic_data, tiny_config

    from slimbert.training.objectives import ClassificationObjective

    pytest.importorskip("tensorboard")
    torch.manual_seed(0)
    model = build_model(tiny_config(head="classification"))
    config = TrainConfig(epochs=1, batch_size=8, log_every_steps=2, progress=False, report_to="tensorboard")
    Trainer(model, ClassificationObjective(), synthetic_data(n=32), config, tmp_path).fit()
    assert list((tmp_path / "runs").glob("events.out.tfevents.*"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        Trainer(model, ClassificationObjective(), synthetic_data(n=32), config, tmp_path / "b").fit()


# ------------------------------------------------------------------------------ scale-out


@pytest.mark.slow
@pytest.mark.parametrize("sharding", [["--fsdp"], ["--tensor-parallel", "2"]], ids=["fsdp", "tensor-parallel"])
def test_two_sharded_processes_train_as_one_process(files, tmp_path, monkeypatch, sharding):
    """FSDP2 (parameters sharded, data split) and Megatron-style tensor parallelism (layers split,
    data shared) on 2 CPU processes (gloo) against one process on the same global batch: the
    same losses step by step and the same weights, saved as an ordinary checkpoint. The FSDP
    run is killed after step 2 and resumed from its gathered checkpoint (optimizer state too)."""
    args = ["--max-steps", "4", "--batch-size", "4", "--global-batch", "8", "--eval-every-steps", "1",
            "--save-every-steps", "2", "--optimizer", "lamb", "--lr", "1e-2"]
    seen = run_here(pretrain_args(files, tmp_path, tmp_path / "one", *args), monkeypatch)
    fsdp = sharding == ["--fsdp"]
    argv = pretrain_args(files, tmp_path, tmp_path / "two", *args, *sharding)
    if fsdp:
        killed = run_worker(tmp_path / "killed", argv, port=29543, crash_after=2)
        assert killed.returncode != 0 and "Killed" in killed.stderr, killed.stderr[-3000:]
        assert (tmp_path / "two" / "last" / "training_state.pt").exists()
        argv = [*argv, "--resume"]
    two = run_worker(tmp_path / "two", argv, port=29544 if fsdp else 29545)
    if two.returncode != 0:
        missing = [line for line in two.stderr.splitlines() if "not supported" in line or "does not support" in line]
        if missing:
            pytest.skip(f"the gloo backend lacks an operation this needs: {missing[-1].strip()}")
    assert two.returncode == 0, two.stderr[-3000:]
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["sharding"] == {"kind": "fsdp" if fsdp else "tensor", "processes": 2}
    ranks = [torch.load(f"{tmp_path / 'two'}.rank{r}.pt") for r in range(2)]
    # FSDP: each process reads its half of every step (of steps 3-4, after the resume); tensor
    # parallel: both read all of it
    want = [seen[4 + r::2] for r in range(2)] if fsdp else [seen, seen]
    for got, expected in zip(ranks, want):
        assert len(got) == len(expected) == (2 if fsdp else 8)
        assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(got, expected))

    np.testing.assert_allclose(train_losses(tmp_path / "two"), train_losses(tmp_path / "one"), rtol=1e-5)
    a, b = load_model(tmp_path / "one").state_dict(), load_model(tmp_path / "two").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


def test_a_vocabulary_cut_off_while_saved_is_trained_again(tmp_path, monkeypatch):
    files = list(map(str, write_corpus(tmp_path / "corpus", articles=5)))
    real_save = Tokenizer.save

    def cut_off(self, directory):  # vocab.txt is written, not yet tokenizer_config.json
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "vocab.txt").write_text("".join(t + "\n" for t in sorted(self.vocab, key=self.vocab.get)))
        raise KeyboardInterrupt

    monkeypatch.setattr(Tokenizer, "save", cut_off)
    with pytest.raises(KeyboardInterrupt):
        recipe.corpus_vocabulary(files, 120, False, tmp_path / "cache", progress=False)
    monkeypatch.setattr(Tokenizer, "save", real_save)
    cased = recipe.corpus_vocabulary(files, 120, False, tmp_path / "cache", progress=False)
    # trained again and whole: a cased vocabulary, not the cut-off copy read with the default casing
    assert not cased.lowercase
    assert [p.name for p in (tmp_path / "cache" / "vocab").iterdir()] == [p.name for p in (
        tmp_path / "cache" / "vocab").iterdir() if (p / "tokenizer_config.json").exists()]
