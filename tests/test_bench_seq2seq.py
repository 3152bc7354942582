"""`slimbert bench-seq2seq` on a tiny translation model: every row is measured, the ratios are
those of the measured speeds, the backends serve the same model (fp32 ones agree with torch),
and what a machine or model cannot serve is skipped with its reason."""

from __future__ import annotations

import json

import pytest
import torch

from slimbert.checkpoint import save_checkpoint
from slimbert.cli import main
from slimbert.config import Seq2SeqTransformerConfig
from slimbert.evaluation.bench_seq2seq import run_bench_seq2seq
from slimbert.models.seq2seq import Seq2SeqTransformer
from slimbert.recipes.bench_seq2seq import BenchSeq2SeqConfig, bench_seq2seq
from slimbert.subword import SubwordTokenizer

SOURCES = ["ein Mann fährt Fahrrad .", "zwei Hunde spielen im Schnee .", "eine Frau liest ein Buch .",
           "ein Kind spielt im Park ."]
TARGETS = ["a man rides a bike .", "two dogs play in the snow .", "a woman reads a book .",
           "a child plays in the park ."]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    tokenizer = SubwordTokenizer.train((SOURCES + TARGETS) * 5, vocab_size=300)
    models = []
    for seed, layers in ((0, 2), (1, 1)):
        torch.manual_seed(seed)
        config = Seq2SeqTransformerConfig(vocab_size=len(tokenizer), hidden_size=16, encoder_layers=2,
                                          decoder_layers=layers, num_attention_heads=2, intermediate_size=32,
                                          dropout=0.0, max_source_length=16, max_target_length=16)
        models.append(save_checkpoint(Seq2SeqTransformer(config).eval(), tokenizer, root / f"model{seed}"))
    (root / "src.txt").write_text("\n".join(SOURCES) + "\n")
    (root / "ref.txt").write_text("\n".join(TARGETS) + "\n")
    return root, models


def test_rows_ratios_and_files(files, tmp_path):
    root, models = files
    pytest.importorskip("ctranslate2")
    config = BenchSeq2SeqConfig(model=[str(m) for m in models], src=str(root / "src.txt"),
                                ref=str(root / "ref.txt"), backend=["torch", "ctranslate2", "torch-int8-all"],
                                out=str(tmp_path / "b"), beam=2, latency_sentences=2, rounds=1, threads=1,
                                max_len_b=5, progress=False)
    out = bench_seq2seq(config)
    result = json.loads((out / "bench.json").read_text())
    rows = {(r["model"], r["backend"], r["search"]): r for r in result["rows"]}
    assert len(rows) == 2 * 3 * 2  # models x backends x (greedy, beam 2)
    base = rows[("model0", "torch", "beam 2")]["tokens_per_s"]
    for (model, backend, search), r in rows.items():
        torch_row = rows[(model, "torch", search)]
        assert r["vs_torch"] == pytest.approx(r["tokens_per_s"] / torch_row["tokens_per_s"])
        assert r["vs_first_beam"] == pytest.approx(r["tokens_per_s"] / base)
        assert r["rounds"] == 1 and r["tokens_per_s"] > 0 and r["latency_ms"] > 0
    for model in ("model0", "model1"):  # CTranslate2 fp32 decodes the same greedy tokens as torch
        assert rows[(model, "ctranslate2", "greedy")]["same_as_torch"] == 1.0
        assert rows[(model, "torch-int8-all", "greedy")]["file_bytes"] < rows[(model, "torch", "greedy")]["file_bytes"]
    table = [line for line in (out / "bench.md").read_text().splitlines() if line.startswith("| model")]
    assert len(table) == 1 + len(rows) and (out / "bench.png").exists()


def test_unservable_backends_are_skipped_with_the_reason(files, tmp_path, monkeypatch):
    _, models = files
    from slimbert.evaluation import bench_seq2seq as module

    class Emulating:
        bf16_native, isa = False, "AVX2"

        def line(self):
            return "test machine"

    monkeypatch.setattr(module, "detect_machine", Emulating)
    from slimbert.recipes.translate import load_translator

    model, tokenizer = load_translator(models[0], "cpu")
    rows, meta = run_bench_seq2seq([("m", model, tokenizer, models[0])], ["torch", "torch-bf16"], SOURCES,
                                   TARGETS, tmp_path, beam=1, latency_sentences=1, rounds=1, threads=1,
                                   progress=False)
    assert [r.backend for r in rows] == ["torch"]
    assert "emulates bf16" in meta["skipped"]["m torch-bf16"]


def test_unknown_backend_is_a_one_line_error(files, tmp_path, capsys):
    root, models = files
    code = main(["bench-seq2seq", "--model", str(models[0]), "--src", str(root / "src.txt"), "--ref",
                 str(root / "ref.txt"), "--backend", "onnxruntime", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown backend 'onnxruntime'" in err and len(err.splitlines()) == 1


def test_seeds_of_one_recipe_are_pooled():
    from slimbert.evaluation.bench_seq2seq import Row, markdown, pooled

    def row(model, bleu, tps):
        return Row(model, "torch", "greedy", bleu, bleu + 1, tps, 10.0, 12.0, 1.0, 100, 1, vs_first_beam=tps / 100)

    rows = [row("kd-s1", 30.0, 200.0), row("kd-s2", 32.0, 220.0), row("kd-s3", 34.0, 240.0), row("teacher", 35, 100)]
    (entry,) = pooled(rows)
    assert entry["model"] == "kd" and entry["seeds"] == 3
    assert entry["bleu"] == pytest.approx(32.0) and entry["bleu_sd"] == pytest.approx(2.0)
    assert entry["tokens_per_s"] == pytest.approx(220.0) and entry["vs_first_beam"] == pytest.approx(2.2)
    text = markdown(rows, {"date": "d", "machine": "m", "torch": "t", "threads": 1, "sentences": 4,
                           "batch_size": 2, "latency_sentences": 1, "rounds": 1})
    assert "| kd | torch | greedy | 3 | 32.00 ± 2.00 | 33.00 ± 2.00 | 220 ± 20 | 2.20x |" in text


def test_report_on_translation_models_benches_the_teacher_first(files, tmp_path, capsys):
    """`slimbert report STUDENT` finds the teacher in the student's results.json and measures both
    on the teacher's validation pairs: the teacher's beam search is the baseline of every ratio."""
    root, models = files
    teacher, student = models
    (teacher / "results.json").write_text(json.dumps({"valid": [str(root / "src.txt"), str(root / "ref.txt")]}))
    (student / "results.json").write_text(json.dumps({"teacher": str(teacher)}))
    try:
        code = main(["report", str(student), "--beam", "2", "--rounds", "1", "--threads", "1", "--no-progress",
                     "--out", str(tmp_path / "r")])
    finally:
        (teacher / "results.json").unlink()
        (student / "results.json").unlink()
    assert code == 0
    result = json.loads((tmp_path / "r" / "report.json").read_text())
    rows = {(r["model"], r["search"]): r for r in result["rows"]}
    assert set(rows) == {(m, s) for m in ("model0", "model1") for s in ("greedy", "beam 2")}
    assert rows[("model0", "beam 2")]["vs_first_beam"] == pytest.approx(1.0)
    assert result["meta"]["sentences"] == len(SOURCES) and (tmp_path / "r" / "report.png").exists()
    assert "| model1 | torch | greedy |" in capsys.readouterr().out


def test_report_on_translation_models_refuses_encoder_options(files, tmp_path, capsys):
    _, models = files
    for extra, message in ((["--backend", "onnxruntime"], "backend 'onnxruntime' serves encoders"),
                           (["--task", "sst2"], "give --src and --ref for translation models"),
                           (["--src", "x.de"], "give --src and --ref together")):
        code = main(["report", str(models[1]), "--teacher", str(models[0]), *extra, "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_frontier_keeps_the_points_nothing_beats():
    from slimbert.evaluation.bench_run import frontier

    points = [(1.0, 35.0), (2.0, 34.0), (1.5, 33.0), (4.0, 30.0), (4.0, 31.0), (0.5, 36.0), (3.0, 29.0)]
    assert [points[i] for i in frontier(points)] == [(4.0, 31.0), (2.0, 34.0), (1.0, 35.0), (0.5, 36.0)]
    assert frontier([]) == [] and frontier([(1.0, 1.0)]) == [0]
