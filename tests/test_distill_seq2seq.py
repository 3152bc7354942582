"""Sequence-level knowledge distillation of translation models (`slimbert distill-seq2seq`):
students that learn the teacher's translations agree with it more than students that learn
the references; the teacher's translations are cached; student specs, their initialisation from
the teacher's layers; word-level KD against a hand computation; the command end to end."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from test_robustness import one_line_error

from slimbert.checkpoint import save_checkpoint
from slimbert.cli import main
from slimbert.compress.seq2seq_students import (LSTMStudentSpec, TransformerStudentSpec, make_seq2seq_student,
                                                parse_seq2seq_student)
from slimbert.compress.students import StudentSpecError
from slimbert.config import Seq2SeqLSTMConfig, Seq2SeqTransformerConfig
from slimbert.data.batching import IGNORE_INDEX
from slimbert.data.parallel import collate_pairs, encode_parallel, read_parallel
from slimbert.generation import SearchConfig, translate
from slimbert.models import build_model
from slimbert.recipes import distill_seq2seq as recipe
from slimbert.recipes.distill_seq2seq import DistillSeq2SeqConfig, distill_seq2seq
from slimbert.recipes.train_seq2seq import TrainSeq2SeqConfig, train_seq2seq
from slimbert.recipes.translate import load_translator
from slimbert.subword import SubwordTokenizer
from slimbert.training.losses import label_smoothed_cross_entropy, word_level_kd
from slimbert.training.objectives import Seq2SeqDistillationObjective
from slimbert.training.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

# A toy translation, word for word: five source words have one translation each, five have two,
# and the references use each of the two equally often, at random. The references are noisy; a
# teacher's beam search picks one translation, the same way for similar sentences.
PLAIN = {"ka": "ax", "lo": "bo", "mi": "cu", "nu": "de", "pe": "ey"}
AMBIGUOUS = {"ri": ("fa", "go"), "su": ("hu", "ik"), "ta": ("jo", "ke"), "vo": ("lu", "ma"),
             "we": ("ni", "ox")}


def toy_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    words = list(PLAIN) + list(AMBIGUOUS)
    sentences = [[rng.choice(words) for _ in range(rng.randint(3, 6))] for _ in range(n)]
    choice = {}
    for word in AMBIGUOUS:  # exactly half of a word's occurrences one way, half the other
        where = [(i, j) for i, s in enumerate(sentences) for j, w in enumerate(s) if w == word]
        ways = [k % 2 for k in range(len(where))]
        rng.shuffle(ways)
        choice.update(zip(where, ways))
    targets = [[PLAIN[w] if w in PLAIN else AMBIGUOUS[w][choice[i, j]] for j, w in enumerate(s)]
               for i, s in enumerate(sentences)]
    return [" ".join(s) for s in sentences], [" ".join(t) for t in targets]


def write_lines(path: Path, lines: Sequence[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def toy_files(tmp_path: Path, n: int, seed: int = 0, valid: int = 8) -> dict[str, str]:
    sources, targets = toy_pairs(n, seed)
    return {"train_src": write_lines(tmp_path / "train.src", sources),
            "train_tgt": write_lines(tmp_path / "train.tgt", targets),
            "valid_src": write_lines(tmp_path / "valid.src", sources[:valid]),
            "valid_tgt": write_lines(tmp_path / "valid.tgt", targets[:valid])}


def tiny_teacher(tmp_path: Path, files: dict[str, str], seed: int = 0, **sizes) -> Path:
    """A random (untrained) Transformer with a joint vocabulary of the toy files, saved."""
    sources, targets = (Path(files[k]).read_text().split("\n") for k in ("train_src", "train_tgt"))
    tokenizer = SubwordTokenizer.train(sources + targets, vocab_size=120)
    shape = {"hidden_size": 16, "encoder_layers": 3, "decoder_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 32, "norm_style": "pre", "dropout": 0.0}
    config = Seq2SeqTransformerConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_id,
                                      bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
                                      max_source_length=24, max_target_length=12, **{**shape, **sizes})
    torch.manual_seed(seed)
    return save_checkpoint(build_model(config), tokenizer, tmp_path / "teacher")


def toy_batch(teacher_dir: Path, files: dict[str, str], n: int) -> dict[str, torch.Tensor]:
    """The first `n` training pairs, encoded with the teacher's vocabulary and padded."""
    tokenizer = SubwordTokenizer.from_dir(teacher_dir)
    pairs = encode_parallel(tokenizer, read_parallel(files["train_src"], files["train_tgt"]), 24, 12)
    return collate_pairs(pairs, list(range(n)), tokenizer.pad_id)


def quick(**overrides) -> TrainConfig:
    return TrainConfig(**{"max_steps": 2, "batch_size": 8, "lr": 1e-3, "progress": False, **overrides})


# ------------------------------------------------------------------------ Seq-KD helps


def agreement(model_dir: Path, lines: list[str], reference: list[str]) -> float:
    model, tokenizer = load_translator(model_dir, "cpu")
    outputs = translate(model, tokenizer, lines, SearchConfig(beam_size=1)).best
    return sum(a == b for a, b in zip(outputs, reference)) / len(reference)


@pytest.mark.slow
def test_a_student_of_the_teachers_translations_agrees_with_it_more_than_one_of_the_references(tmp_path):
    """The same student (same init from the teacher's layers, seed and steps) trained on the
    teacher's beam outputs and on the noisy references: on unseen sentences, the first must
    reproduce the teacher's greedy translations more often (by 0.11 to 0.24 of the sentences
    over the data and teacher seeds tried). Were the teacher's outputs replaced by the
    references, the two students would be the same model and agree equally."""
    files = toy_files(tmp_path, 1000)
    teacher = tmp_path / "teacher"
    steps = TrainConfig(max_steps=300, batch_size=32, lr=3e-3, warmup_ratio=0.05, seed=0, progress=False)
    # The teacher is trained with another seed (data order) than its students, as in practice.
    train_seq2seq(TrainSeq2SeqConfig(**files, out=str(teacher), vocab_size=400, hidden_size=32, layers=2,
                                     heads=4, ffn_size=64, dropout=0.0, max_length=24),
                  dataclasses.replace(steps, seed=42))
    unseen, _ = toy_pairs(200, seed=1000)
    model, tokenizer = load_translator(teacher, "cpu")
    teacher_says = translate(model, tokenizer, unseen, SearchConfig(beam_size=1)).best

    agree = {}
    for name, references_only in (("seqkd", False), ("references", True)):
        config = DistillSeq2SeqConfig(str(teacher), "transformer:enc_layers=1,dec_layers=1", **files,
                                      out=str(tmp_path / name), references_only=references_only,
                                      label_smoothing=0.0, cache_dir=str(tmp_path / "cache"))
        results = distill_seq2seq(config, steps)
        # both start from the teacher's first encoder and decoder layers
        assert results["student_init"].startswith("teacher's encoder layers [0] and decoder layers [0]")
        agree[name] = agreement(tmp_path / name, unseen, teacher_says)
    assert agree["seqkd"] > agree["references"] + 0.05, agree


# ------------------------------------------------------------------------ the cache


def test_a_second_distillation_reuses_the_teachers_translations_and_a_new_beam_decodes_again(
        tmp_path, monkeypatch, caplog):
    files = toy_files(tmp_path, 24)
    teacher = tiny_teacher(tmp_path, files)
    cache = tmp_path / "cache"

    def run(out: str, beam: int) -> dict:
        config = DistillSeq2SeqConfig(str(teacher), "transformer:enc_layers=1,dec_layers=1", **files, out=out,
                                      beam=beam, cache_dir=str(cache))
        return distill_seq2seq(config, quick())

    first = run(str(tmp_path / "a"), beam=2)
    assert first["teacher_translations_reused"] is False
    entry = Path(first["teacher_translations_cache"])
    assert entry.parent == cache / "seqkd" and len(entry.read_text().splitlines()) == 24

    def no_decoding(*args, **kwargs):
        raise AssertionError("the teacher decoded again")

    monkeypatch.setattr(recipe, "translate", no_decoding)
    with caplog.at_level(logging.INFO, logger="slimbert.recipes.distill_seq2seq"):
        second = run(str(tmp_path / "b"), beam=2)
    assert second["teacher_translations_reused"] is True
    assert any("reusing the teacher's translations of 24 sources" in r.getMessage() for r in caplog.records)

    monkeypatch.undo()
    third = run(str(tmp_path / "c"), beam=3)
    assert third["teacher_translations_reused"] is False
    assert third["teacher_translations_cache"] != first["teacher_translations_cache"]
    assert sorted(p.name for p in (cache / "seqkd").iterdir()) == sorted(
        {entry.name, Path(third["teacher_translations_cache"]).name})  # written whole, nothing left beside


def test_the_student_trains_on_the_teachers_translations_and_a_damaged_cache_entry_is_decoded_again(tmp_path):
    files = toy_files(tmp_path, 12)
    teacher = tiny_teacher(tmp_path, files)
    model, tokenizer = load_translator(teacher, "cpu")
    sources = read_parallel(files["train_src"], files["train_tgt"]).sources
    search = SearchConfig(beam_size=2, max_len_a=1.5, max_len_b=10)

    def translations():
        return recipe.teacher_translations(model, tokenizer, teacher, sources, search, tmp_path,
                                           progress=False)

    ids, path, reused = translations()
    assert not model.embeddings.packed  # packed for the decoding only, then served plain again
    decoded = translate(model, tokenizer, sources, search).hypotheses
    assert not reused and ids == [hyps[0].tokens for hyps in decoded]
    path.write_text("[1, 2]\n")  # cut short
    again, _, reused = translations()
    assert not reused and again == ids
    assert translations()[2]

    references = encode_parallel(tokenizer, read_parallel(files["train_src"], files["train_tgt"]), 24, 12)
    pairs = recipe.with_targets(references, ids, tokenizer.eos_id)
    assert pairs.source_ids == references.source_ids and pairs.target_ids[0] == ids[0] + [tokenizer.eos_id]


# ------------------------------------------------------------------------ student specs


def test_student_specs_parse_into_dataclasses():
    assert parse_seq2seq_student("transformer:enc_layers=6,dec_layers=1") == TransformerStudentSpec(6, 1)
    assert parse_seq2seq_student("transformer:hidden=128,heads=4,ffn=512") == TransformerStudentSpec(
        hidden=128, heads=4, ffn=512)
    assert parse_seq2seq_student("lstm:hidden=256") == LSTMStudentSpec(hidden=256)
    assert parse_seq2seq_student("lstm") == LSTMStudentSpec()


@pytest.mark.parametrize("spec, fragment", [
    ("gru:hidden=3", "unknown kind 'gru'"),
    ("transformer:layers=3", "unknown field 'layers'"),
    ("transformer:enc_layers", "unknown field 'enc_layers'"),
    ("transformer:enc_layers=two", "field 'enc_layers' must be an integer, got 'two'"),
    ("transformer:dec_layers=0", "field 'dec_layers' must be at least 1, got 0"),
    ("lstm:hidden=8,hidden=16", "field 'hidden' is given twice"),
])
def test_bad_student_specs_are_errors_naming_the_field(spec, fragment):
    with pytest.raises(StudentSpecError, match=fragment):
        parse_seq2seq_student(spec)


def test_a_bad_student_spec_is_one_line_on_the_command_line(tmp_path, capsys):
    argv = ["distill-seq2seq", "--teacher", "t", "--student", "transformer:enc_layers=x", "--train-src", "s",
            "--train-tgt", "t", "--valid-src", "s", "--valid-tgt", "t", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    one_line_error(capsys, "--student 'transformer:enc_layers=x'", "field 'enc_layers'")


def test_a_student_of_fewer_layers_copies_evenly_spaced_teacher_layers(tmp_path):
    files = toy_files(tmp_path, 8)
    teacher, _ = load_translator(tiny_teacher(tmp_path, files, encoder_layers=6, decoder_layers=3), "cpu")
    spec = parse_seq2seq_student("transformer:enc_layers=3,dec_layers=1")
    student, how = make_seq2seq_student(spec, teacher)
    assert "encoder layers [0, 2, 4]" in how and "decoder layers [0]" in how
    assert (student.config.encoder_layers, student.config.decoder_layers) == (3, 1)
    t, s = teacher.state_dict(), student.state_dict()
    for i, j in enumerate([0, 2, 4]):
        for name, value in student.encoder.layers[i].state_dict().items():
            assert torch.equal(value, teacher.encoder.layers[j].state_dict()[name]), (i, name)
    assert not torch.equal(s["encoder.layers.1.attn.q_proj.weight"], t["encoder.layers.1.attn.q_proj.weight"])
    for name in s:
        if not name.startswith(("encoder.layers.", "decoder.layers.")):
            assert torch.equal(s[name], t[name]), name  # embeddings, final norms
    for name, value in student.decoder.layers[0].state_dict().items():
        assert torch.equal(value, teacher.decoder.layers[0].state_dict()[name])

    same, _ = make_seq2seq_student(parse_seq2seq_student("transformer"), teacher)  # all layers: the teacher
    batch = toy_batch(tmp_path / "teacher", files, 3)
    inputs = (batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"])
    torch.testing.assert_close(same.eval()(*inputs).logits, teacher(*inputs).logits, rtol=0, atol=0)


def test_other_widths_and_kinds_start_fresh_with_the_teachers_vocabulary(tmp_path):
    files = toy_files(tmp_path, 8)
    teacher, _ = load_translator(tiny_teacher(tmp_path, files), "cpu")
    narrow, how = make_seq2seq_student(parse_seq2seq_student("transformer:hidden=8,heads=2,ffn=16"), teacher)
    assert how == "fresh" and narrow.config.hidden_size == 8 and narrow.config.encoder_layers == 3
    lstm, how = make_seq2seq_student(parse_seq2seq_student("lstm:hidden=8,embedding=16"), teacher)
    assert isinstance(lstm.config, Seq2SeqLSTMConfig) and how == "fresh, the teacher's embeddings copied"
    assert torch.equal(lstm.embeddings.tokens.weight, teacher.embeddings.tokens.weight)
    for student in (narrow, lstm):
        assert (student.config.vocab_size, student.config.eos_token_id, student.config.max_target_length) == (
            teacher.config.vocab_size, teacher.config.eos_token_id, teacher.config.max_target_length)
    with pytest.raises(StudentSpecError, match="field 'enc_layers' is 4, more than the teacher's 3"):
        make_seq2seq_student(parse_seq2seq_student("transformer:enc_layers=4"), teacher)
    with pytest.raises(StudentSpecError, match="'transformer:hidden=10,heads=4': field 'hidden_size'"):
        make_seq2seq_student(parse_seq2seq_student("transformer:hidden=10,heads=4"), teacher)


# ------------------------------------------------------------------------ word-level KD


@pytest.mark.parametrize("T", [1.0, 2.5])
def test_word_level_kd_is_t_squared_kl_plus_teacher_entropy_over_real_tokens(T):
    torch.manual_seed(0)
    student = torch.randn(2, 4, 7, requires_grad=True)
    teacher = torch.randn(2, 4, 7)
    labels = torch.tensor([[5, 1, 3, IGNORE_INDEX], [2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    loss = word_level_kd(student, teacher, labels, T)
    terms = []
    for b, t in [(0, 0), (0, 1), (0, 2), (1, 0)]:  # the real tokens, by hand
        q = torch.softmax(teacher[b, t].double() / T, -1)
        p = torch.softmax(student[b, t].detach().double() / T, -1)
        kl = (q * (q / p).log()).sum()
        entropy = -(q * q.log()).sum()
        terms.append(T * T * (kl + entropy))
    assert loss.item() == pytest.approx(float(sum(terms) / 4), rel=1e-5)

    loss.backward()
    assert student.grad[labels == IGNORE_INDEX].abs().max() == 0  # padding has no say
    moved = student.detach().clone()
    moved[labels == IGNORE_INDEX] += 50.0
    assert word_level_kd(moved, teacher, labels, T).item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_word_level_kd_has_no_gradient_where_the_student_is_the_teacher(T):
    torch.manual_seed(1)
    teacher = torch.randn(3, 5, 11)
    labels = torch.zeros(3, 5, dtype=torch.long)
    student = teacher.clone().requires_grad_(True)
    word_level_kd(student, teacher, labels, T).backward()
    assert student.grad.abs().max() < 1e-7
    other = (teacher + torch.randn_like(teacher)).requires_grad_(True)
    word_level_kd(other, teacher, labels, T).backward()
    assert other.grad.abs().max() > 1e-3


def test_the_distillation_objective_adds_word_kd_to_the_hard_loss(tmp_path):
    files = toy_files(tmp_path, 8)
    teacher, _ = load_translator(tiny_teacher(tmp_path, files), "cpu")
    student, _ = make_seq2seq_student(parse_seq2seq_student("transformer:hidden=8,heads=2,ffn=16"), teacher)
    batch = toy_batch(tmp_path / "teacher", files, 4)
    inputs = (batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"])
    objective = Seq2SeqDistillationObjective(teacher, 0.1, word_kd_weight=0.5, temperature=2.0)
    loss, metrics = objective(student, batch)
    logits = student(*inputs).logits
    hard, _ = label_smoothed_cross_entropy(logits, batch["labels"], 0.1)
    kd = word_level_kd(logits, teacher(*inputs).logits, batch["labels"], 2.0)
    torch.testing.assert_close(loss, hard + 0.5 * kd)
    assert set(metrics) == {"loss", "nll", "word_kd"}
    plain, metrics = Seq2SeqDistillationObjective(teacher, 0.1)(student, batch)
    torch.testing.assert_close(plain, hard)
    assert set(metrics) == {"loss", "nll"}


# ------------------------------------------------------------------------ the command


def test_distill_seq2seq_runs_end_to_end_and_the_student_translates(tmp_path, capsys):
    files = toy_files(tmp_path, 24)
    teacher = tiny_teacher(tmp_path, files)
    out = tmp_path / "student"
    data = ["--train-src", files["train_src"], "--train-tgt", files["train_tgt"], "--valid-src",
            files["valid_src"], "--valid-tgt", files["valid_tgt"]]
    argv = ["distill-seq2seq", "--teacher", str(teacher), "--student", "transformer:enc_layers=2,dec_layers=1",
            *data, "--out", str(out), "--beam", "2", "--mix-references", "--word-kd-weight", "0.5",
            "--temperature", "2", "--epochs", "1", "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"),
            "--average-last", "1", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "best validation BLEU" in printed and "48 pairs of teacher+references" in printed
    written = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "results.json"} <= written
    results = json.loads((out / "results.json").read_text())
    assert results["job"] == "distill-seq2seq" and results["model_config"]["decoder_layers"] == 1
    assert results["word_kd_weight"] == 0.5 and results["targets"] == "teacher+references"
    # the average of the one epoch kept is that epoch's model: the best, scored alike
    assert results["averaged"]["epochs"] == [1] and results["averaged"]["bleu"] == pytest.approx(results["best"])

    assert main(["translate", "--model", str(out), "--beam", "2", files["valid_src"]]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 8
    assert main(["evaluate-seq2seq", "--model", str(out), "--src", files["valid_src"], "--ref",
                 files["valid_tgt"], "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] == 8

    assert main(argv) == 0  # again: the teacher's translations come from the cache
    assert "(reused from the cache)" in capsys.readouterr().out


def test_references_only_with_mix_references_is_a_one_line_error(tmp_path, capsys):
    argv = ["distill-seq2seq", "--teacher", "t", "--student", "lstm", "--train-src", "s", "--train-tgt", "t",
            "--valid-src", "s", "--valid-tgt", "t", "--out", str(tmp_path / "o"), "--references-only",
            "--mix-references"]
    assert main(argv) == 2
    one_line_error(capsys, "references_only", "--mix-references")
