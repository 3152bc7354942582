"""`slimbert distill` / `distill-general` end to end on tiny models, caching, and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import synthetic_data, tiny_config

from slimbert import build_model, load_model, save_checkpoint
from slimbert.cli import main
from slimbert.compress.students import BertStudentSpec, make_student
from slimbert.training.distillation import DistillationObjective, LossWeights, uniform_layer_map
from slimbert.training.trainer import TrainConfig, Trainer

COLS = ["--text-col", "review", "--label-col", "sentiment"]


@pytest.fixture
def tiny_teacher(tmp_path, tiny_tokenizer):
    """A tiny 'fine-tuned' sentiment classifier (random weights, labels neg/pos)."""
    torch.manual_seed(0)
    model = build_model(tiny_config(head="classification", num_hidden_layers=4, id2label={0: "neg", 1: "pos"}))
    return save_checkpoint(model, tiny_tokenizer, tmp_path / "teacher")


def distill_args(teacher, csv_task, out, cache, *extra):
    train, dev = csv_task
    return ["distill", "--teacher", str(teacher), "--train-file", str(train), "--dev-file", str(dev), *COLS,
            "--out", str(out), "--epochs", "1", "--batch-size", "8", "--no-progress", "--cache-dir", str(cache),
            *extra]


@pytest.mark.slow
def test_distill_students_then_evaluate_and_predict_them(tmp_path, tiny_teacher, csv_task, capsys):
    cache = tmp_path / "cache"
    for student, extra in [("bilstm:hidden=8,mlp=8", ["--augment", "2", "--p-pos", "0"]),
                           ("cnn:filters=4,widths=2-3", ["--augment", "2", "--p-pos", "0"]),
                           ("bert:layers=2", ["--hidden-weight", "1", "--soft-weight", "1"])]:
        out = tmp_path / student.split(":")[0]
        assert main(distill_args(tiny_teacher, csv_task, out, cache, "--student", student, *extra)) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["student"] == student and results["best"] is not None
        assert (out / "config.json").exists() and (out / "vocab.txt").exists()
        assert main(["evaluate", "--model", str(out), "--dev-file", str(csv_task[1]), *COLS, "--json"]) == 0
        capsys.readouterr()
        (tmp_path / "in.txt").write_text("a great film\nthe worst plot\n")
        assert main(["predict", "--model", str(out), str(tmp_path / "in.txt")]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 2
    bilstm = json.loads((tmp_path / "bilstm" / "results.json").read_text())
    cnn = json.loads((tmp_path / "cnn" / "results.json").read_text())
    assert bilstm["augmented_examples"] > 0 and bilstm["loss_weights"] == {"logit_mse": 1.0}
    # the second student reuses the augmented set and the teacher logits computed for the first
    assert bilstm["teacher_logits_cached"] is False and cnn["teacher_logits_cached"] is True
    assert cnn["augmented_examples"] == bilstm["augmented_examples"]
    assert json.loads((tmp_path / "bert" / "results.json").read_text())["layer_map"] == [[0, 1], [1, 3]]
    assert load_model(tmp_path / "cnn").config.MODEL_TYPE == "slimbert_cnn"


def test_distill_errors_are_clear(tmp_path, tiny_teacher, csv_task, capsys):
    cache = tmp_path / "cache"
    cases = [
        (["--student", "bilstm", "--labels-only", "--augment", "2"], "have no gold labels"),
        (["--student", "bert:layers=9"], "cannot be initialised from a teacher of 4"),
        (["--student", "bert:layers=2", "--hidden-weight", "1", "--layer-map", "0:4"], "teacher has layers 0..3"),
        (["--student", "bilstm", "--hidden-weight", "1"], "need a BERT student"),
        (["--student", "gru"], "unknown kind 'gru'"),
    ]
    for extra, message in cases:
        assert main(distill_args(tiny_teacher, csv_task, tmp_path / "o", cache, *extra)) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_damaged_logit_cache_is_recomputed(tmp_path, tiny_teacher, csv_task):
    cache = tmp_path / "cache"
    args = distill_args(tiny_teacher, csv_task, tmp_path / "a", cache, "--student", "bert:layers=1")
    assert main(args) == 0
    (entry,) = (cache / "teacher_logits").iterdir()
    entry.write_bytes(entry.read_bytes()[:50])
    assert main(args) == 0
    assert json.loads((tmp_path / "a" / "results.json").read_text())["teacher_logits_cached"] is False


class Interrupt(Exception):
    pass


class CrashingObjective(DistillationObjective):
    crash_at = None

    def forward(self, model, batch):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.crash_at:
            raise Interrupt
        return super().forward(model, batch)


@pytest.mark.slow
def test_resumed_distillation_equals_uninterrupted(tmp_path):
    """Student, learned projections, optimizer, schedule and data order all resume exactly."""
    torch.manual_seed(0)
    teacher = build_model(tiny_config(head="classification", num_hidden_layers=4)).eval()
    data = synthetic_data(n=48)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, save_every_steps=4, progress=False)

    def setup(out, crash_at=None, seed=0):
        torch.manual_seed(seed)
        student = make_student(BertStudentSpec(2, hidden=16, heads=2), teacher,
                               {"head": "classification", "num_labels": 2})
        objective = CrashingObjective(teacher, LossWeights(soft=1.0, hidden=1.0), 2.0, uniform_layer_map(2, 4),
                                      student_hidden=16, teacher_hidden=32, hidden_loss="mse")
        objective.crash_at = crash_at
        return Trainer(student, objective, data, cfg, out), student, objective

    t, student_a, objective_a = setup(tmp_path / "full")
    t.fit()
    t, _, _ = setup(tmp_path / "crash", crash_at=9)
    with pytest.raises(Interrupt):
        t.fit()
    t, student_b, objective_b = setup(tmp_path / "crash", seed=123)
    assert t.fit(resume=True).global_step == 12
    for a, b in [(student_a, student_b), (objective_a, objective_b)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and sa
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{k} differs after resume"


def test_general_distillation_of_a_bare_encoder(tmp_path, tiny_checkpoint, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["the movie was good and the plot was fun",
                                 "a boring film , but the actors were great", "=", ""] * 8))
    out = tmp_path / "general"
    assert main(["distill-general", "--teacher", str(tiny_checkpoint), "--student", "bert:layers=1",
                 "--corpus", str(corpus), "--out", str(out), "--batch-size", "4", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["train_examples"] == 16  # short lines are left out
    assert results["loss_weights"] == {"hidden": 1.0, "attention": 1.0}
    assert load_model(out).config.head == "none"
    # the general-distilled encoder is a student spec for task distillation
    assert "general distillation" in capsys.readouterr().out


def test_general_distillation_with_an_mlm_teacher_uses_the_triple_loss(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    teacher = save_checkpoint(build_model(tiny_config(head="mlm", num_hidden_layers=2)), tiny_tokenizer,
                              tmp_path / "mlm")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the movie was good and the plot was fun\n" * 8)
    out = tmp_path / "general"
    assert main(["distill-general", "--teacher", str(teacher), "--student", "bert:layers=1", "--corpus",
                 str(corpus), "--out", str(out), "--batch-size", "4", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["loss_weights"] == {"soft": 5.0, "mlm": 2.0, "hidden": 1.0}
    assert results["layer_map"] == [[0, 1]]
    assert load_model(out).config.head == "mlm"


def test_general_distilled_student_is_then_task_distilled(tmp_path, tiny_checkpoint, tiny_teacher, csv_task):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the movie was good and the plot was fun\n" * 8)
    general = tmp_path / "general"
    assert main(["distill-general", "--teacher", str(tiny_checkpoint), "--student", "bert:layers=1",
                 "--corpus", str(corpus), "--out", str(general), "--batch-size", "4", "--no-progress"]) == 0
    out = tmp_path / "task"
    assert main(distill_args(tiny_teacher, csv_task, out, tmp_path / "cache", "--student", str(general))) == 0
    student = load_model(out)
    assert student.config.head == "classification" and student.config.num_hidden_layers == 1
    encoder = load_model(general)
    # the task student started from the general-distilled encoder (its word embeddings moved only a little)
    moved = (student.bert.embeddings.word_embeddings.weight - encoder.embeddings.word_embeddings.weight).abs().max()
    assert moved < 0.05


@pytest.mark.slow
def test_report_groups_seeds_and_writes_table_json_and_plot(tmp_path, tiny_teacher, csv_task, capsys):
    cache = tmp_path / "cache"
    for name, seed, student in [("bilstm-s1", "1", "bilstm:hidden=8,mlp=8"), ("bilstm-s2", "2", "bilstm:hidden=8,mlp=8"),
                                ("bert1", "1", "bert:layers=1")]:
        assert main(distill_args(tiny_teacher, csv_task, tmp_path / name, cache, "--student", student,
                                 "--seed", seed)) == 0
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "bilstm-s1"), str(tmp_path / "bilstm-s2"), str(tmp_path / "bert1"),
                 "--dev-file", str(csv_task[1]), *COLS, "--out", str(out), "--rounds", "1", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    names = [s["name"] for s in report["summary"]]
    assert names == ["teacher", "bilstm", "bert1"]
    bilstm = report["summary"][1]
    assert bilstm["runs"] == 2 and len(bilstm["scores"]) == 2
    assert report["summary"][0]["throughput_ratio"] == 1.0
    assert bilstm["params_ratio"] == pytest.approx(report["runs"][0]["parameters"] / report["runs"][1]["parameters"])
    table = (out / "report.md").read_text()
    assert table.count("\n| ") == 3 and "| bilstm | 2 |" in table
    assert "1 timing round (medians)" in table
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"

    # Serving choices as rows of their own, the teacher's too; ONNX cannot serve a BiLSTM.
    assert main(["report", str(tmp_path / "bilstm-s1"), str(tmp_path / "bert1"), "--backend", "torch",
                 "torch-int8-all", "onnxruntime", "--dev-file", str(csv_task[1]), *COLS, "--out", str(out),
                 "--rounds", "1", "--no-progress"]) == 0
    summary = {s["name"]: s for s in json.loads((out / "report.json").read_text())["summary"]}
    assert list(summary) == ["teacher", "teacher (torch-int8-all)", "teacher (onnxruntime)", "bilstm",
                             "bilstm (torch-int8-all)", "bert1", "bert1 (torch-int8-all)", "bert1 (onnxruntime)"]
    # ONNX Runtime serves the same weights: the same predictions
    assert summary["bert1 (onnxruntime)"]["score_mean"] == summary["bert1"]["score_mean"]
    assert summary["teacher (onnxruntime)"]["score_mean"] == summary["teacher"]["score_mean"]


def test_report_names_runs_by_group_and_seed():
    from slimbert.evaluation.report import group_of

    assert group_of(Path("runs/bert3-distilled-s2")) == ("bert3-distilled", 2)
    assert group_of(Path("runs/cnn_seed10")) == ("cnn", 10)
    assert group_of(Path("runs/bert3")) == ("bert3", None)
    # a model kept inside a run directory is named with its run, not just "pruned"
    assert group_of(Path("runs/bert3-heads50/pruned")) == ("bert3-heads50/pruned", None)


def test_student_checkpoint_with_another_vocabulary_is_refused(tmp_path, tiny_teacher, csv_task, capsys):
    from conftest import tiny_vocab

    from slimbert import Tokenizer

    vocab = {**tiny_vocab(), "extra": len(tiny_vocab())}
    other = save_checkpoint(build_model(tiny_config(vocab_size=len(vocab))), Tokenizer(vocab), tmp_path / "other")
    assert main(distill_args(tiny_teacher, csv_task, tmp_path / "o", tmp_path / "cache", "--student", str(other))) == 2
    err = capsys.readouterr().err
    assert "vocabulary differs from the teacher's" in err and "Traceback" not in err
