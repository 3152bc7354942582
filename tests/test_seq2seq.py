"""Translation models, their data, loss, training and commands: tiny models, invariances
(teacher-forced = step by step, padded = alone, resumed = uninterrupted), the loss against
PyTorch's, and a few lines of Multi30k through train-seq2seq, translate and evaluate-seq2seq."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import DATA_DIR
from test_generation import CONFIGS, EOS, PAD, V, sources, tiny_lstm, tiny_model, tiny_transformer

from slimbert import CheckpointError, DataError, load_model, save_checkpoint
from slimbert.cli import main
from slimbert.config import Seq2SeqTransformerConfig
from slimbert.data.batching import IGNORE_INDEX
from slimbert.data.parallel import (ParallelDataset, ParallelText, collate_pairs, encode_parallel, parallel_batches,
                                    read_parallel)
from slimbert.evaluation.bleu import bleu_scores
from slimbert.generation import SearchConfig, beam_search
from slimbert.models import build_model, count_parameters
from slimbert.modules import TransformerLayer
from slimbert.subword import SubwordTokenizer
from slimbert.training.losses import label_smoothed_cross_entropy
from slimbert.training.objectives import Seq2SeqObjective
from slimbert.training.trainer import TrainConfig, Trainer

MULTI30K = DATA_DIR / "multi30k"


# Tiny models: many small ops that a second thread does not speed up (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    """Multi30k beside the repo (../shared/data/multi30k, or $SLIMBERT_DATA/multi30k)."""
    if not (MULTI30K / "train.de").exists():
        if os.environ.get("SLIMBERT_REQUIRE_DATA") == "1":
            pytest.fail(f"{MULTI30K} is missing but SLIMBERT_REQUIRE_DATA=1")
        pytest.skip(f"Multi30k not found at {MULTI30K} (set SLIMBERT_DATA)")
    return MULTI30K


def head(path: Path, n: int, out: Path) -> Path:
    with path.open(encoding="utf-8") as f:
        out.write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    return out


def targets(seed: int, lengths=(4, 6, 2, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder inputs <s> y1 .. yn (right-padded) and labels y1 .. yn </s> (IGNORE_INDEX at padding)."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(4, V, (n,), generator=g).tolist() for n in lengths]
    T = max(lengths) + 1
    inputs = torch.tensor([[2] + r + [PAD] * (T - 1 - len(r)) for r in rows])
    labels = torch.tensor([r + [EOS] + [IGNORE_INDEX] * (T - 1 - len(r)) for r in rows])
    return inputs, labels


# ------------------------------------------------------------------------------ models


def test_a_decoder_block_is_the_encoder_block_with_causal_self_attention_and_cross_attention():
    model = build_model(tiny_transformer())
    enc, dec = model.encoder.layers[0], model.decoder.layers[0]
    assert type(enc) is type(dec) is TransformerLayer
    assert not enc.attn.causal and enc.cross_attn is None
    assert dec.attn.causal and dec.cross_attn is not None and not dec.cross_attn.causal


@pytest.mark.parametrize("name", CONFIGS)
def test_teacher_forced_logits_equal_the_step_by_step_decoder(name):
    """Training (all positions at once, or the LSTM's loop) computes what generation computes
    one token at a time with the cache."""
    model = tiny_model(name)
    ids, mask = sources()
    tgt_in, _ = targets(seed=7)
    full = model(ids, mask, tgt_in).logits  # (B, T, V)
    state = model.start_decoding(ids, mask)
    steps = [model.next_logits(tgt_in[:, :t + 1], state) for t in range(tgt_in.shape[1])]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["transformer-pre-rope-untied", "lstm-luong-dot-no-feeding", "lstm-bahdanau"])
def test_later_target_tokens_do_not_change_earlier_logits(name):
    model = tiny_model(name)
    ids, mask = sources()
    tgt_in, _ = targets(seed=7)
    changed = tgt_in.clone()
    changed[:, 3:] = torch.randint(4, V, changed[:, 3:].shape)
    a, b = model(ids, mask, tgt_in).logits, model(ids, mask, changed).logits
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


@pytest.mark.parametrize("name", CONFIGS)
def test_a_padded_source_is_read_as_if_alone(name):
    model = tiny_model(name)
    ids, mask = sources()
    tgt_in, _ = targets(seed=7)
    batched = model(ids, mask, tgt_in).logits
    for i in range(len(ids)):
        n = int(mask[i].sum())
        alone = model(ids[i:i + 1, :n], None, tgt_in[i:i + 1]).logits
        torch.testing.assert_close(batched[i:i + 1], alone, atol=1e-5, rtol=1e-4)


def test_lstm_teacher_forcing_ratio_zero_reads_its_own_predictions():
    model = tiny_model("lstm-luong-general")
    ids, mask = sources()
    tgt_in, _ = targets(seed=7)
    other = tgt_in.clone()
    other[:, 1:] = torch.randint(4, V, other[:, 1:].shape)
    free_a = model(ids, mask, tgt_in, teacher_forcing=0.0).logits
    free_b = model(ids, mask, other, teacher_forcing=0.0).logits
    torch.testing.assert_close(free_a, free_b)  # only <s> is read from the target
    assert not torch.allclose(free_a, model(ids, mask, tgt_in).logits)
    with pytest.raises(ValueError, match="full teacher forcing"):
        tiny_model("transformer-pre-learned")(ids, mask, tgt_in, teacher_forcing=0.5)


@pytest.mark.parametrize("name", CONFIGS)
def test_models_save_and_load_with_their_tokenizer(tmp_path, name):
    tokenizer = SubwordTokenizer.train(["ein kleiner Test", "a small test"] * 3, vocab_size=30)
    model = build_model(CONFIGS[name]().replace(vocab_size=len(tokenizer))).eval()
    save_checkpoint(model, tokenizer, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    ids, mask = sources()
    tgt_in, _ = targets(seed=7)
    ids, tgt_in = ids % len(tokenizer), tgt_in % len(tokenizer)
    torch.testing.assert_close(loaded(ids, mask, tgt_in).logits, model(ids, mask, tgt_in).logits)
    assert SubwordTokenizer.from_dir(tmp_path / "m").vocab == tokenizer.vocab
    with pytest.raises(CheckpointError, match="tokens but the model's vocab_size"):
        save_checkpoint(build_model(CONFIGS[name]().replace(vocab_size=len(tokenizer) + 1)), tokenizer, tmp_path / "x")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["model_type"] in ("slimbert_seq2seq", "slimbert_seq2seq_lstm")


def test_tied_embeddings_are_one_matrix_saved_once(tmp_path):
    tied, untied = build_model(tiny_transformer()), build_model(tiny_transformer(tie_embeddings=False))
    assert count_parameters(untied) - count_parameters(tied) == 2 * V * 32
    from safetensors.torch import load_file

    save_checkpoint(tied, None, tmp_path / "t")
    names = set(load_file(tmp_path / "t" / "model.safetensors"))
    assert [n for n in names if n.startswith("embeddings.")] == ["embeddings.tokens.weight"]
    assert "encoder.layers.0.attn.q_proj.weight" in names  # the modules' own names, not BERT's


@pytest.mark.parametrize("field, value, message", [
    ("num_attention_heads", 5, "hidden_size"),
    ("norm_style", "middle", "norm_style"),
    ("position_embedding_type", "relative", "position_embedding_type"),
    ("eos_token_id", 99, "eos_token_id"),
    ("decoder_layers", 0, "decoder_layers"),
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(CheckpointError, match=message):
        tiny_transformer(**{field: value})


def test_lstm_config_rejects_an_unknown_attention():
    with pytest.raises(CheckpointError, match="attention"):
        tiny_lstm(attention="multiplicative")


# -------------------------------------------------------------------------------- loss


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothed_loss_is_torch_cross_entropy_with_label_smoothing(smoothing):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    labels = torch.randint(0, 11, (3, 5))
    labels[0, 3:] = IGNORE_INDEX
    labels[2, 1:] = IGNORE_INDEX
    loss, nll = label_smoothed_cross_entropy(logits, labels, smoothing)
    flat_logits, flat_labels = logits.view(-1, 11), labels.view(-1)
    expected = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, label_smoothing=smoothing)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(nll, F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX))
    loss.backward()
    assert logits.grad[0, 3:].abs().max() == 0 and logits.grad[2, 1:].abs().max() == 0  # padding: no gradient


# ------------------------------------------------------------------------ tokenization


def test_joint_bpe_detokenizes_to_the_original_text(tmp_path):
    de = ["Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.", "Zwei Hunde spielen im Schnee."]
    en = ["A man in an orange hat starring at something.", "Two dogs play in the snow."]
    tok = SubwordTokenizer.train((de + en) * 5, vocab_size=120)
    assert [tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id] == [0, 1, 2, 3]
    for text in de + en + ["Ein Hund, der  läuft!"]:
        assert tok.decode(tok.encode([text])[0]) == text
    ids = tok.encode(en[:1])[0]
    assert tok.decode([tok.bos_id] + ids + [tok.eos_id, tok.pad_id]) == en[0]  # special tokens dropped
    tok.save(tmp_path)
    again = SubwordTokenizer.from_dir(tmp_path)
    assert again.encode(de) == tok.encode(de) and len(again) == len(tok)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        SubwordTokenizer.from_dir(tmp_path / "bad")


# -------------------------------------------------------------------------------- data


def test_misaligned_files_are_an_error_naming_both_files_and_counts(tmp_path):
    (tmp_path / "a.de").write_text("eins\nzwei\ndrei\n")
    (tmp_path / "a.en").write_text("one\ntwo\n")
    with pytest.raises(DataError, match=r"a\.de has 3 lines but .*a\.en has 2"):
        read_parallel(tmp_path / "a.de", tmp_path / "a.en")


def test_empty_lines_are_skipped_and_counted_or_an_error(tmp_path):
    (tmp_path / "a.de").write_text("eins\n\ndrei\nvier\n")
    (tmp_path / "a.en").write_text("one\ntwo\n  \nfour\n")
    text = read_parallel(tmp_path / "a.de", tmp_path / "a.en")
    assert text.sources == ["eins", "vier"] and text.targets == ["one", "four"]
    assert text.skipped_empty == [2, 3] and "2 of 4 pairs kept" in text.summary()
    with pytest.raises(DataError, match=r"a\.de:2: empty line"):
        read_parallel(tmp_path / "a.de", tmp_path / "a.en", skip_empty=False)


def test_long_sequences_are_truncated_and_counted_and_batches_are_shifted_and_padded():
    tok = SubwordTokenizer.train(["a b c d e f g h", "x y z"] * 5, vocab_size=300)
    text = ParallelText(["a b c d e f g h", "x y"], ["x y z", "a b c d e f g h"], Path("s"), Path("t"), 2)
    data = encode_parallel(tok, text, max_source_length=5, max_target_length=4)
    assert data.truncated_sources == 1 and data.truncated_targets == 1
    assert all(len(s) <= 5 and s[-1] == tok.eos_id for s in data.source_ids)
    batch = collate_pairs(data, [0, 1], tok.pad_id)
    assert batch["input_ids"].shape == (2, 5) and batch["attention_mask"].tolist() == [[1] * 5, [1] * 3 + [0] * 2]
    labels, inputs = batch["labels"], batch["decoder_input_ids"]
    assert inputs[:, 0].tolist() == [tok.bos_id] * 2
    real = labels != IGNORE_INDEX
    assert torch.equal(inputs[:, 1:][real[:, :-1]], labels[:, :-1][real[:, :-1]])  # shifted right by one
    assert labels[0].tolist()[-1] == tok.eos_id and inputs[real].ne(tok.pad_id).all()


# ---------------------------------------------------------------------------- training


def copy_task(n: int = 48, seed: int = 0) -> ParallelDataset:
    """Targets are the sources reversed: learnable, with sentences of different lengths."""
    g = torch.Generator().manual_seed(seed)
    src, tgt = [], []
    for _ in range(n):
        body = torch.randint(4, V, (int(torch.randint(2, 8, (1,), generator=g)),), generator=g).tolist()
        src.append(body + [EOS])
        tgt.append(body[::-1] + [EOS])
    return ParallelDataset(src, tgt, bos_id=2)


@pytest.mark.slow
@pytest.mark.parametrize("name, lr", [("transformer-post-sinusoidal", 3e-3), ("lstm-luong-general", 1e-2)])
def test_a_tiny_model_learns_to_reverse_and_beam_search_reproduces_it(name, lr):
    """Trained in parallel under teacher forcing, decoded token by token with the cache: if the
    decoder could see later tokens while training (a causal-mask bug), or generation fed it
    something else than training did, the two would disagree and this fails."""
    torch.manual_seed(0)
    model = build_model(CONFIGS[name]().replace(dropout=0.0))
    data = copy_task(n=32)
    batch = collate_pairs(data, list(range(len(data))), PAD)
    optimizer = torch.optim.Adam(model.parameters(), lr)
    objective = Seq2SeqObjective(label_smoothing=0.0)
    for _ in range(150):
        loss, _ = objective(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    out = beam_search(model, batch["input_ids"], batch["attention_mask"], SearchConfig(beam_size=3))
    correct = sum(hyps[0].tokens == target[:-1] for hyps, target in zip(out, data.target_ids))
    assert correct >= 0.9 * len(data)


def test_teacher_forcing_schedule_moves_linearly_and_is_saved():
    objective = Seq2SeqObjective(teacher_forcing=1.0, teacher_forcing_end=0.5, total_steps=11)
    ratios = []
    for _ in range(12):
        ratios.append(objective.ratio())
        objective.calls += 1
    assert ratios[0] == 1.0 and ratios[5] == pytest.approx(0.75) and ratios[10] == ratios[11] == 0.5
    again = Seq2SeqObjective(teacher_forcing=1.0, teacher_forcing_end=0.5, total_steps=11)
    again.load_state_dict(objective.state_dict())
    assert again.calls == 12


class Crash(Exception):
    pass


def seq2seq_run(out: Path, crash_at: int | None = None, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(tiny_lstm(dropout=0.1))
    if crash_at is not None:
        calls = []

        def stop(module, args):
            calls.append(1)
            if len(calls) == crash_at:
                raise Crash

        model.register_forward_pre_hook(stop)
    data = copy_task()
    config = TrainConfig(epochs=2, batch_size=8, lr=3e-3, warmup_ratio=0.1, save_every_steps=4, progress=False)
    source = parallel_batches(data, config.batch_size, seed=config.seed, pad_id=PAD)
    objective = Seq2SeqObjective(0.1, teacher_forcing=1.0, teacher_forcing_end=0.5,
                                 total_steps=2 * source.steps_per_epoch)
    return Trainer(model, objective, source, config, out), model, objective


def test_a_resumed_seq2seq_run_equals_the_uninterrupted_one(tmp_path):
    """LSTM, dropout, a teacher-forcing schedule (random coins each step): killed in epoch 2
    after its checkpoint at step 8, resumed, and equal bit for bit."""
    trainer, full, full_objective = seq2seq_run(tmp_path / "full")
    history = trainer.fit().history
    trainer, _, _ = seq2seq_run(tmp_path / "crash", crash_at=10)
    with pytest.raises(Crash):
        trainer.fit()
    trainer, resumed, objective = seq2seq_run(tmp_path / "crash", seed=123)
    state = trainer.fit(resume=True)
    assert state.global_step == 12 and objective.calls == full_objective.calls == 12
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [h["train_loss"] for h in state.history] == [h["train_loss"] for h in history]
    assert history[-1]["train_loss"] < history[0]["train_loss"]


# ---------------------------------------------------------------------------- BLEU


def test_bleu_scores_are_sacrebleu_cased_and_lowercased():
    import sacrebleu

    hyps = ["A man in an orange hat.", "two dogs play in the snow ."]
    refs = ["A man in an orange hat starring at something.", "Two dogs play in the snow."]
    scores = bleu_scores(hyps, refs)
    assert scores.sacrebleu == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert scores.legacy == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score)
    assert scores.legacy > scores.sacrebleu  # "two" / "Two" match only when lowercased
    assert "case:mixed" in scores.signature and "tok:13a" in scores.signature
    assert "case:lc" in scores.legacy_signature
    assert bleu_scores(refs, refs).sacrebleu == pytest.approx(100)


# ---------------------------------------------------------------------------- commands


@pytest.fixture
def multi30k_sample(multi30k_dir, tmp_path) -> dict[str, Path]:
    return {"train_src": head(multi30k_dir / "train.de", 300, tmp_path / "train.de"),
            "train_tgt": head(multi30k_dir / "train.en", 300, tmp_path / "train.en"),
            "valid_src": head(multi30k_dir / "val.de", 12, tmp_path / "val.de"),
            "valid_tgt": head(multi30k_dir / "val.en", 12, tmp_path / "val.en")}


def train_args(files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["train-seq2seq", "--train-src", str(files["train_src"]), "--train-tgt", str(files["train_tgt"]),
            "--valid-src", str(files["valid_src"]), "--valid-tgt", str(files["valid_tgt"]), "--out", str(out),
            "--vocab-size", "400", "--hidden-size", "32", "--layers", "1", "--heads", "2", "--ffn-size", "64",
            "--embedding-dim", "32", "--epochs", "2", "--batch-size", "32", "--lr", "3e-3", "--no-progress", *extra]


@pytest.mark.slow
def test_train_translate_and_evaluate_on_multi30k(tmp_path, multi30k_sample, capsys, monkeypatch):
    out = tmp_path / "model"
    assert main(train_args(multi30k_sample, out)) == 0
    printed = capsys.readouterr().out
    assert "best validation BLEU" in printed and "joint vocabulary" in printed
    results = json.loads((out / "results.json").read_text())
    assert len(results["history"]) == 2 and {"eval_bleu", "eval_legacy_bleu", "eval_nll"} <= set(results["history"][0])
    assert results["history"][1]["eval_nll"] < results["history"][0]["eval_nll"]
    assert (out / "tokenizer.json").exists() and (out / "last" / "training_state.pt").exists()

    monkeypatch.setattr(sys, "stdin", io.StringIO("Ein Mann mit einem Hut.\n\nZwei Hunde spielen.\n"))
    assert main(["translate", "--model", str(out), "--beam", "3"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # one output line per input line, empty kept
    assert lines[0].strip() and "▁" not in lines[0] and "</s>" not in lines[0]  # detokenized text

    monkeypatch.setattr(sys, "stdin", io.StringIO("Ein Mann mit einem Hut.\n"))
    assert main(["translate", "--model", str(out), "--beam", "3", "--nbest", "2"]) == 0
    nbest = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [row[0] for row in nbest] == ["1", "1"] and float(nbest[0][1]) >= float(nbest[1][1])

    hyps = tmp_path / "hyps.en"
    assert main(["evaluate-seq2seq", "--model", str(out), "--src", str(multi30k_sample["valid_src"]), "--ref",
                 str(multi30k_sample["valid_tgt"]), "--beam", "2", "--output", str(hyps), "--no-progress"]) == 0
    report = capsys.readouterr().out.splitlines()
    assert report[0].startswith("sacreBLEU = ") and "case:mixed" in report[0]
    assert report[1].startswith("legacy BLEU = ") and "lowercased" in report[1] and "case:lc" in report[1]
    assert len(hyps.read_text().splitlines()) == 12

    assert main(["evaluate-seq2seq", "--model", str(out), "--src", str(multi30k_sample["valid_src"]), "--ref",
                 str(multi30k_sample["valid_tgt"]), "--beam", "1", "--json", "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["pairs"] == 12 and 0 <= scores["sacrebleu"] <= scores["legacy"] + 1e-9

    assert main(train_args(multi30k_sample, out, "--resume")) == 0  # a finished run resumes to nothing more
    assert json.loads((out / "results.json").read_text())["history"] == results["history"]


@pytest.mark.slow
def test_train_an_lstm_with_bahdanau_attention_on_multi30k(tmp_path, multi30k_sample, capsys):
    out = tmp_path / "lstm"
    assert main(train_args(multi30k_sample, out, "--arch", "lstm", "--attention", "additive",
                           "--teacher-forcing-end", "0.8", "--epochs", "1")) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "slimbert_seq2seq_lstm"
    assert main(["evaluate-seq2seq", "--model", str(out), "--src", str(multi30k_sample["valid_src"]), "--ref",
                 str(multi30k_sample["valid_tgt"]), "--beam", "2", "--no-progress"]) == 0
    assert capsys.readouterr().out.count("BLEU = ") == 2


def test_misaligned_files_are_a_one_line_error(tmp_path, capsys):
    (tmp_path / "a.de").write_text("eins\nzwei\n")
    (tmp_path / "a.en").write_text("one\n")
    code = main(["train-seq2seq", "--train-src", str(tmp_path / "a.de"), "--train-tgt", str(tmp_path / "a.en"),
                 "--valid-src", str(tmp_path / "a.de"), "--valid-tgt", str(tmp_path / "a.de"), "--out",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "a.de has 2 lines but" in err and "a.en has 1" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--arch", "transformer", "--teacher-forcing", "0.5"], "teacher_forcing"),
    (["--hidden-size", "30", "--heads", "4"], "hidden_size"),
    (["--label-smoothing", "1.5"], "label_smoothing"),
    (["--max-length", "1"], "max_length"),
])
def test_bad_train_seq2seq_options_are_one_line_errors(tmp_path, capsys, argv, message):
    (tmp_path / "a.de").write_text("eins\n")
    (tmp_path / "a.en").write_text("one\n")
    files = {"train_src": tmp_path / "a.de", "train_tgt": tmp_path / "a.en", "valid_src": tmp_path / "a.de",
             "valid_tgt": tmp_path / "a.en"}
    code = main(train_args(files, tmp_path / "o", *argv))
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_translate_refuses_a_model_that_does_not_translate(tmp_path, tiny_checkpoint, capsys):
    assert main(["translate", "--model", str(tiny_checkpoint), str(tmp_path / "none.txt")]) == 2
    assert "does not translate" in capsys.readouterr().err


def test_a_transformer_config_round_trips_through_json():
    config = tiny_transformer(norm_style="pre", position_embedding_type="rope")
    assert Seq2SeqTransformerConfig.from_dict(config.to_dict()) == config
