"""`slimbert bench` measures quickly: machine probes cached, one load and one ONNX export per
checkpoint; and the scoring commands take the same data options and name what they measure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from slimbert import build_model, save_checkpoint
from slimbert.cli import main
from slimbert.data.readers import ReadStats, Table
from slimbert.data.sources import TaskData
from slimbert.evaluation import bench_run, probe_cache


def test_the_matmul_peak_is_measured_once_per_machine_and_thread_count(monkeypatch):
    calls = []

    def measure(dtype):
        calls.append((dtype, torch.get_num_threads()))
        return 100.0 + len(calls)

    monkeypatch.setattr(bench_run, "matmul_peak_gflops", measure)
    first = bench_run.machine_peak_gflops(torch.float32)
    assert bench_run.machine_peak_gflops(torch.float32) == first and len(calls) == 1
    assert json.loads(probe_cache.cache_path().read_text())  # kept on disk for the next run
    threads = torch.get_num_threads()
    try:  # another thread count is another peak
        torch.set_num_threads(threads + 1)
        assert bench_run.machine_peak_gflops(torch.float32) != first and len(calls) == 2
    finally:
        torch.set_num_threads(threads)
    assert bench_run.machine_peak_gflops(torch.float32) == first and len(calls) == 2


def test_a_probe_is_measured_again_when_the_model_files_change(tmp_path):
    from slimbert.evaluation.probe_cache import cached, file_stamp

    (tmp_path / "model.safetensors").write_bytes(b"x")
    calls = []

    def probe():
        calls.append(1)
        return 7.0 * len(calls)

    assert cached("peak_memory_mb", probe, files=file_stamp(tmp_path)) == 7.0
    assert cached("peak_memory_mb", probe, files=file_stamp(tmp_path)) == 7.0 and len(calls) == 1
    (tmp_path / "model.safetensors").write_bytes(b"xy")
    assert cached("peak_memory_mb", probe, files=file_stamp(tmp_path)) == 14.0 and len(calls) == 2
    # a failed probe (None) is not kept
    assert cached("other", lambda: None) is None
    assert cached("other", lambda: 3.0) == 3.0


@pytest.mark.slow
def test_bench_loads_each_model_once_and_exports_onnx_once(tmp_path, tiny_tokenizer, csv_task, monkeypatch,
                                                           one_thread):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from slimbert.evaluation import backends, bench

    loads, exports, probes = [], [], []
    real_load, real_export = bench_run.load_model, backends.export_onnx
    monkeypatch.setattr(bench_run, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(backends, "export_onnx", lambda *a, **k: exports.append(a) or real_export(*a, **k))
    # the probe itself (a fresh process per row) is tested in test_serving; here, how often it runs
    monkeypatch.setattr(bench_run, "peak_memory_mb", lambda *a, **k: probes.append(a) or 100.0 + len(probes))
    monkeypatch.setattr(bench_run, "matmul_peak_gflops", lambda dtype: bench.matmul_peak_gflops(dtype, n=64))
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model(tiny_config(head="classification", id2label={0: "neg", 1: "pos"})),
                           tiny_tokenizer, tmp_path / "tiny")
    data = ["--no-references", "--dev-file", str(csv_task[1]), "--text-col", "review", "--label-col", "sentiment",
            "--seq-lens", "8", "--rounds", "1", "--no-progress"]
    assert main(["bench", "--model", str(ckpt), "--backend", "torch", "torch-int8-all", "onnxruntime",
                 "onnxruntime-int8", *data, "--out", str(tmp_path / "b1")]) == 0
    assert len(loads) == 1 and len(exports) == 1 and len(probes) == 4
    rows = {r["backend"]: r for r in json.loads((tmp_path / "b1" / "bench.json").read_text())["rows"]}
    assert len(rows) == 4 and rows["torch"]["score"] == rows["onnxruntime"]["score"]
    assert rows["onnxruntime"]["file_bytes"] > rows["onnxruntime-int8"]["file_bytes"]  # two graphs, not one
    # a second run of the same model on the same machine probes its memory no more; timing
    # throughput on half the dev sentences still scores the whole split
    assert main(["bench", "--model", str(ckpt), *data, "--throughput-examples", "4",
                 "--out", str(tmp_path / "b2")]) == 0
    second = json.loads((tmp_path / "b2" / "bench.json").read_text())
    (again,) = second["rows"]
    assert len(probes) == 4 and again["peak_memory_mb"] == rows["torch"]["peak_memory_mb"]
    assert again["score"] == rows["torch"]["score"]
    assert second["meta"]["throughput_examples"] == 4 and second["meta"]["dev_examples"] == 8


def test_quick_bench_times_fewer_lengths_and_sentences_spread_over_the_lengths():
    from slimbert.data.batching import EncodedDataset
    from slimbert.recipes.bench import BenchConfig

    quick = BenchConfig(model=["m"], quick=True)
    assert quick.throughput_examples == 256
    assert BenchConfig(model=["m"], quick=True, seq_lens=(8, 64), throughput_examples=100).seq_lens == (8, 64)
    assert BenchConfig(model=["m"]).throughput_examples is None  # by default every dev sentence is timed
    dev = EncodedDataset([[1] * n for n in range(1, 101)], [[0] * n for n in range(1, 101)], None)
    lengths = sorted(bench_run.length_sample(dev, 10).lengths)
    assert len(lengths) == 10 and lengths[0] == 1 and lengths[-1] >= 90 and len(set(lengths)) == 10


def test_report_and_evaluate_take_the_training_commands_data_options(tmp_path, tiny_tokenizer, csv_task, capsys,
                                                                     caplog, one_thread):
    torch.manual_seed(0)
    model = build_model(tiny_config(head="classification", id2label={0: "neg", 1: "pos"}))
    teacher = save_checkpoint(model, tiny_tokenizer, tmp_path / "teacher")
    run = save_checkpoint(model, tiny_tokenizer, tmp_path / "run")
    train, dev = csv_task
    data = ["--train-file", str(train), "--dev-file", str(dev), "--text-col", "review", "--label-col", "sentiment",
            "--max-train-examples", "4"]
    assert main(["report", str(run), "--teacher", str(teacher), *data, "--rounds", "1", "--no-progress",
                 "--out", str(tmp_path / "report")]) == 0
    assert "--train-file and --max-train-examples not read" in caplog.text
    header = (tmp_path / "report" / "report.md").read_text().splitlines()[0]
    assert "accuracy on dev.csv (dev split)" in header and "dev.csv dev" not in header
    assert main(["evaluate", "--model", str(run), *data]) == 0
    assert "(8 examples)" in capsys.readouterr().out  # the dev file, not the train file
    # a train file alone gives these commands nothing to score
    assert main(["evaluate", "--model", str(run), "--train-file", str(train), "--text-col", "review",
                 "--label-col", "sentiment"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--dev-file" in err and "Traceback" not in err


def test_every_data_command_offers_the_same_data_options():
    from slimbert.cli import build_parser, command_parser

    def data_options(command):
        sub = command_parser(build_parser(command), command)
        return {a.dest for group in sub._action_groups if group.title and group.title.startswith("data")
                for a in group._group_actions}

    finetune = data_options("finetune")
    assert {"train_file", "dev_file", "max_train_examples"} <= finetune
    for command in ("distill", "prune", "quantize", "bench", "report", "evaluate"):
        assert data_options(command) == finetune, command


def test_score_columns_name_the_dev_data_they_were_measured_on():
    from slimbert.evaluation.bench_run import BenchRow, markdown, scored_on
    from slimbert.evaluation.report import markdown as report_markdown

    def task(name, dev_path):
        table = Table([], ("a", "b"), ReadStats(), Path(dev_path))
        return TaskData(name, ("accuracy",), False, {0: "a", 1: "b"}, None, table)

    assert scored_on(task("sst2", "glue/sst2/dev.tsv")) == "sst2 dev"
    mine = scored_on(task("test", "data/test.tsv"))
    assert mine == "test.tsv (dev split)"
    meta = {"metric": "accuracy", "task": "test", "scored_on": mine, "seq_lens": [16], "batch_size": 32,
            "dev_examples": 8, "threads": 1, "rounds": 1, "matmul_peak_gflops": {"float32": 10.0}, "skipped": []}
    row = BenchRow("m", "torch", "float32", 10, 10, 0.5, {16: {"p50": 1.0, "p90": 2.0}}, 5.0)
    head = markdown([row], meta).splitlines()[0]
    assert "accuracy on test.tsv (dev split)" in head and "test dev" not in head
    assert "latency p50/p90 ms, 16 tokens" in head and "seq/s, batch 32" in head
    summary = [{"name": "teacher", "runs": 1, "score_mean": 0.5, "score_std": 0.0, "of_teacher": 1.0,
                "parameters": 10, "params_ratio": 1.0, "file_mb": 1.0, "latency_ms": 1.0, "latency_speedup": 1.0,
                "throughput": 5.0, "throughput_ratio": 1.0}]
    head = report_markdown(summary, "accuracy", "test", {**meta, "torch": "x"}).splitlines()[0]
    assert "accuracy on test.tsv (dev split) (mean ± std)" in head and "test dev" not in head


def classifier(tmp_path, name, tokenizer, **overrides):
    torch.manual_seed(0)
    net = build_model(tiny_config(head="classification", id2label={0: "neg", 1: "pos"}, **overrides))
    return save_checkpoint(net, tokenizer, tmp_path / name)


def load_csv(csv_task) -> TaskData:
    from slimbert.recipes.common import DataConfig, load_data

    return load_data(DataConfig(dev_file=str(csv_task[1]), text_col="review", label_col="sentiment"), ("dev",))


def bench_args(csv_task, *models, extra=()):
    return ["bench", "--model", *map(str, models), "--no-references", "--no-memory", "--dev-file",
            str(csv_task[1]), "--text-col", "review", "--label-col", "sentiment", "--rounds", "1",
            "--no-progress", *extra]


def test_bench_refuses_models_it_cannot_serve_the_same_inputs_before_any_work(tmp_path, tiny_tokenizer, csv_task,
                                                                              capsys, monkeypatch):
    from conftest import tiny_vocab

    from slimbert.tokenizer import Tokenizer

    monkeypatch.setattr(bench_run, "_measure", lambda *a, **k: pytest.fail("measured"))
    first = classifier(tmp_path, "a", tiny_tokenizer)
    shuffled = dict(zip(tiny_vocab(), reversed(range(len(tiny_vocab())))))  # same tokens, other ids
    other = classifier(tmp_path, "b", Tokenizer(shuffled, lowercase=True, max_length=64))
    # the first model's tokenizer encodes every model's inputs: another vocabulary would read other ids
    assert main(bench_args(csv_task, first, other, extra=["--seq-lens", "8"])) == 2
    err = capsys.readouterr().err.strip()
    assert str(other) in err and "vocabulary" in err and len(err.splitlines()) == 1
    # a length past the learned positions is refused, naming the model and the field
    assert main(bench_args(csv_task, first, extra=["--seq-lens", "128"])) == 2
    err = capsys.readouterr().err.strip()
    assert str(first) in err and "max_position_embeddings" in err and len(err.splitlines()) == 1
    # while a --max-length past it only cuts the dev sentences at the model's limit
    monkeypatch.setattr(bench_run, "_measure", lambda *a, **k: ([], {}))
    assert bench_run.measure_pairs([(first, "torch")], load_csv(csv_task), seq_lens=(8,), max_length=512,
                                   memory=False, progress=False) == ([], {})


def test_bench_times_only_the_default_lengths_every_model_takes(tmp_path, tiny_tokenizer, csv_task, monkeypatch,
                                                                capsys):
    from slimbert.recipes import bench as recipe

    seen = []
    monkeypatch.setattr(recipe, "run_bench", lambda models, backends, data, seq_lens, *a, **k:
                        seen.append(list(seq_lens)) or ([], {}))
    def write(rows, meta, out):
        (Path(out) / "bench.md").parent.mkdir(parents=True, exist_ok=True)
        (Path(out) / "bench.md").write_text("")
        return Path(out)

    monkeypatch.setattr(recipe, "write_bench", write)
    short = classifier(tmp_path, "short", tiny_tokenizer)  # 64 learned positions
    long = classifier(tmp_path, "long", tiny_tokenizer, max_position_embeddings=512)
    out = ["--out", str(tmp_path / "bench")]
    assert main(bench_args(csv_task, long, extra=out)) == 0 and main(bench_args(csv_task, long, short, extra=out)) == 0
    assert main(bench_args(csv_task, long, short, extra=out + ["--quick"])) == 0
    assert seen == [list(bench_run.SEQ_LENS), [n for n in bench_run.SEQ_LENS if n <= 64], list(recipe.QUICK_SEQ_LENS)]
    # the same lengths asked for are not cut: the short model cannot take 128 tokens, and says so
    monkeypatch.undo()
    monkeypatch.setattr(bench_run, "_measure", lambda *a, **k: pytest.fail("measured"))
    asked = ",".join(map(str, bench_run.SEQ_LENS))
    assert main(bench_args(csv_task, long, short, extra=out + ["--seq-lens", asked])) == 2
    err = capsys.readouterr().err.strip()
    assert str(short) in err and "max_position_embeddings" in err and len(err.splitlines()) == 1


def test_bench_encodes_the_dev_split_at_max_length_and_latency_inputs_at_each_length(tmp_path, tiny_tokenizer,
                                                                                    csv_task, monkeypatch):
    seen = {}

    def record(pairs, work, data, batches, labels, latency_inputs, *rest):
        seen["widest"] = max(b["input_ids"].shape[1] for b in batches)
        seen["latency"] = {n: {b["input_ids"].shape[1] for b in inputs} for n, inputs in latency_inputs.items()}
        return [], {}

    monkeypatch.setattr(bench_run, "_measure", record)
    ckpt = classifier(tmp_path, "a", tiny_tokenizer)
    bench_run.measure_pairs([(ckpt, "torch")], load_csv(csv_task), seq_lens=(4, 48), max_length=6, memory=False, progress=False)
    assert seen["widest"] == 6  # as in training: --max-length, not the longest latency length
    assert seen["latency"] == {4: {4}, 48: {48}}
