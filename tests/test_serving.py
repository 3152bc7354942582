"""int8 and bf16 serving, ONNX export, and `slimbert bench`."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config

from slimbert import build_model, load_model, save_checkpoint
from slimbert.checkpoint import load_tokenizer
from slimbert.cli import main
from slimbert.compress.export import OnnxModel, export_onnx
from slimbert.compress.quantize import quantize_int8, to_bf16
from slimbert.data.batching import encode_examples, throughput_batches
from slimbert.data.sources import load_task_data
from slimbert.evaluation.bench import timed_pass
from slimbert.inference import predict_logits
from slimbert.models.int8 import is_int8


@pytest.fixture(scope="session")
def sst2_probe(tmp_path_factory, minilm_dir, glue_dir):
    """The bundled MiniLM fine-tuned for one epoch on 2,000 SST-2 train sentences: a real
    sentiment classifier (about 85% on dev) with real margins, in about a minute.

    fp32, not bf16: without AVX-512 (AVX2-only x86 CPUs), bf16 matmuls run tens of times slower
    than fp32, and the fine-tune would never finish there."""
    from slimbert.recipes.finetune import FinetuneConfig, finetune
    from slimbert.training.trainer import TrainConfig

    out = tmp_path_factory.mktemp("probe") / "sst2-probe"
    data = load_task_data("sst2", glue_dir, splits=("train",), max_train_examples=2000)
    finetune(FinetuneConfig(out=str(out), model=str(minilm_dir), max_length=64), data,
             TrainConfig(epochs=1, batch_size=32, lr=1e-4, warmup_ratio=0.1, precision="fp32", progress=False, seed=0))
    return out


@pytest.fixture(scope="session")
def sst2_dev(sst2_probe, glue_dir):
    examples = load_task_data("sst2", glue_dir, splits=("dev",)).dev.examples
    return encode_examples(examples, load_tokenizer(sst2_probe), 128)


@pytest.fixture(scope="session")
def sst2_calibration(sst2_probe, glue_dir):
    """512 SST-2 training sentences (not the first 2,000 the probe was trained on)."""
    examples = load_task_data("sst2", glue_dir, splits=("train",)).train.examples[-512:]
    return encode_examples(examples, load_tokenizer(sst2_probe), 128)


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_sst2_dev_and_reloads_bit_for_bit(sst2_probe, sst2_dev, sst2_calibration,
                                                                    tmp_path):
    fp32 = load_model(sst2_probe)
    reference = predict_logits(fp32, sst2_dev, 0)
    accuracy = (reference.argmax(-1) == sst2_dev.labels).float().mean()
    assert accuracy > 0.75  # a real sentiment classifier (the majority class is 51%)
    agreement = {}
    for name, calibration in (("plain", None), ("smoothquant", sst2_calibration)):
        quantized = quantize_int8(fp32, "all", calibration)
        logits = predict_logits(quantized, sst2_dev, 0)
        agreement[name] = float((logits.argmax(-1) == reference.argmax(-1)).float().mean())
    int8 = quantized  # every Linear int8, SmoothQuant-calibrated: what `slimbert quantize --task` writes
    # On the real teacher (90% accurate) calibrated int8 agrees on 99.3% (benchmarks/int8_agreement.py).
    # This 80%-accurate probe has more near-ties: across CPUs (AVX-512 VNNI, AVX2) and probe
    # seeds it agreed on 98.5-99.2%, uncalibrated int8 on 96.2-97.6%.
    assert agreement["smoothquant"] >= 0.98, f"int8 agrees with fp32 on {agreement} of SST-2 dev"
    # Calibration is what gets it there: one activation scale per tensor alone falls short.
    assert agreement["smoothquant"] >= agreement["plain"] + 0.005, agreement
    assert not torch.equal(logits, reference)  # it did change the arithmetic
    assert int8.config.quantization["smoothquant"] == {"alpha": 0.9, "calibration_examples": 512}

    save_checkpoint(int8, load_tokenizer(sst2_probe), tmp_path / "int8")
    reloaded = load_model(tmp_path / "int8")
    assert is_int8(reloaded)
    torch.testing.assert_close(predict_logits(reloaded, sst2_dev, 0), logits, rtol=0, atol=0)
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    # Each quantized weight takes 1 byte instead of 4 (plus 16 bytes of scale and zero point per row).
    modules = dict(fp32.named_modules())
    quantized = sum(modules[n].weight.numel() for n in int8.config.quantization["modules"])
    assert size(tmp_path / "int8") < size(sst2_probe) - 2.9 * quantized
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert config["quantization"]["method"] == "dynamic_int8" and config["model_type"] == "slimbert_bert"


@pytest.mark.slow
def test_bf16_serves_and_reloads(sst2_probe, glue_dir, tmp_path):
    # 64 dev sentences, not all 872: bf16 matmuls are slow on CPUs without AVX-512.
    examples = load_task_data("sst2", glue_dir, splits=("dev",)).dev.examples[:64]
    dev = encode_examples(examples, load_tokenizer(sst2_probe), 128)
    fp32 = load_model(sst2_probe)
    save_checkpoint(to_bf16(fp32), load_tokenizer(sst2_probe), tmp_path / "bf16")
    bf16 = load_model(tmp_path / "bf16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    reference = predict_logits(fp32, dev, 0).argmax(-1)
    agreement = (predict_logits(bf16, dev, 0).argmax(-1) == reference).float().mean()
    assert agreement >= 63 / 64  # at most one of 64 sentences changes its label
    assert (tmp_path / "bf16" / "model.safetensors").stat().st_size < 0.55 * (
        sst2_probe / "model.safetensors").stat().st_size


@pytest.mark.slow
def test_onnx_runtime_matches_pytorch(sst2_probe, sst2_dev, tmp_path):
    model = load_model(sst2_probe)
    files = export_onnx(model, tmp_path / "model.onnx", int8=True)
    batches = throughput_batches(sst2_dev, 32, 0)  # shapes other than the traced (2, 8), with padding
    fp32 = {"ort": OnnxModel(files[0]), "int8": OnnxModel(files[1])}
    # on the cores torch has, unless told otherwise
    assert fp32["ort"].session.get_session_options().intra_op_num_threads == torch.get_num_threads()
    assert OnnxModel(files[0], threads=1).session.get_session_options().intra_op_num_threads == 1
    with torch.inference_mode():
        _, ours = timed_pass(lambda **kw: model(**kw).logits, batches, warmup=0)
    _, ort = timed_pass(fp32["ort"], batches, warmup=0)
    assert (ort - ours).abs().max() < 1e-4
    _, ort8 = timed_pass(fp32["int8"], batches, warmup=0)
    assert (ort8.argmax(-1) == ours.argmax(-1)).float().mean() >= 0.98


@pytest.mark.slow
def test_quantize_export_and_bench_from_the_cli(tmp_path, tiny_tokenizer, csv_task, capsys, monkeypatch):
    from slimbert.evaluation import bench, bench_run

    transformers = pytest.importorskip("transformers")
    # The bf16 matmul peak on 128^3, not 2048^3: without AVX-512, one 2048^3 bf16 product takes a minute.
    monkeypatch.setattr(bench_run, "matmul_peak_gflops", lambda dtype: bench.matmul_peak_gflops(dtype, n=128))
    torch.manual_seed(0)
    model = build_model(tiny_config(head="classification", id2label={0: "neg", 1: "pos"}))
    ckpt = save_checkpoint(model, tiny_tokenizer, tmp_path / "tiny")
    train, dev = csv_task
    assert main(["quantize", "--model", str(ckpt), "--out", str(tmp_path / "int8")]) == 0
    assert load_model(tmp_path / "int8").config.quantization["scope"] == "attention"  # uncalibrated default
    cols = ["--text-col", "review", "--label-col", "sentiment"]
    assert main(["quantize", "--model", str(ckpt), "--out", str(tmp_path / "int8-smooth"),
                 "--train-file", str(train), *cols, "--calibration-examples", "8"]) == 0
    smooth = load_model(tmp_path / "int8-smooth")
    assert smooth.config.quantization["scope"] == "all"
    assert smooth.config.quantization["smoothquant"] == {"alpha": 0.9, "calibration_examples": 8}
    assert "all scope, SmoothQuant-calibrated" in capsys.readouterr().out
    assert main(["quantize", "--model", str(ckpt), "--out", str(tmp_path / "x"), "--dtype", "bf16", "--force",
                 "--train-file", str(train), *cols]) == 2  # --force: any CPU, bf16 native or not
    assert "applies to int8 only" in capsys.readouterr().err
    assert main(["export", "--model", str(ckpt), "--format", "onnx", "--int8", "--out", str(tmp_path / "onnx")]) == 0
    assert (tmp_path / "onnx" / "model_int8.onnx").exists() and (tmp_path / "onnx" / "vocab.txt").exists()
    assert main(["export", "--model", str(tmp_path / "int8"), "--format", "hf", "--out", str(tmp_path / "x")]) == 2
    assert "no Hugging Face BERT form" in capsys.readouterr().err

    # A checkpoint written by transformers itself is benched like any other.
    hf = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64))
    hf.save_pretrained(tmp_path / "hf-written")
    tiny_tokenizer.save(tmp_path / "hf-written")
    out = tmp_path / "bench"
    assert main(["bench", "--model", str(ckpt), str(tmp_path / "int8"), str(tmp_path / "hf-written"),
                 "--backend", "torch", "torch-bf16", "--dev-file", str(dev),
                 "--text-col", "review", "--label-col", "sentiment", "--seq-lens", "8,16", "--rounds", "2",
                 "--threads", "1", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "bench.json").read_text())
    rows = {(r["model"].split("/")[-1], r["backend"]): r for r in report["rows"]}
    # torch, bf16 + the hf and onnxruntime references, for the 2 fp32 checkpoints; the int8
    # checkpoint serves with torch only (the others are listed as skipped).
    assert len(rows) == 4 + 4 + 1 and len(report["meta"]["skipped"]) == 3
    for row in rows.values():
        assert row["throughput"] > 0 and row["latency_ms"]["16"]["p90"] >= row["latency_ms"]["16"]["p50"] > 0
        assert row["parameters"] > 0 and row["file_bytes"] > 0 and row["peak_memory_mb"] > 0
        assert row["score"] is not None
    # The same weights score the same in slimbert, transformers and ONNX Runtime.
    assert rows[("tiny", "torch")]["score"] == rows[("tiny", "hf")]["score"] == rows[("tiny", "onnxruntime")]["score"]
    assert rows[("tiny", "torch")]["gflops"] > 0
    # int8 changes how weights are stored, not how many there are
    assert rows[("int8", "torch")]["parameters"] == rows[("tiny", "torch")]["parameters"]
    assert (out / "bench.md").exists() and (out / "bench.png").stat().st_size > 0


def test_count_parameters_counts_int8_weights_and_tied_weights_once():
    from slimbert.models import count_parameters

    model = build_model(tiny_config(head="mlm"))  # the decoder is the word-embedding matrix
    vocab_by_hidden = model.config.vocab_size * model.config.hidden_size
    every_use = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert count_parameters(model) == every_use - vocab_by_hidden
    classifier = build_model(tiny_config(head="classification"))
    # int8 weights are packed outside `parameters()`, yet they are the same weights
    assert count_parameters(quantize_int8(classifier, "all")) == count_parameters(classifier)


def test_bench_checks_its_inputs_before_any_work(tmp_path, tiny_tokenizer, csv_task, capsys, monkeypatch):
    from slimbert.evaluation import backends, bench_run

    monkeypatch.setattr(bench_run, "encode_examples", lambda *a, **k: pytest.fail("worked before checking"))
    monkeypatch.setattr(bench_run, "matmul_peak_gflops", lambda *a, **k: pytest.fail("measured a matmul peak"))
    monkeypatch.setitem(backends.LIBRARIES, "onnxruntime", ("slimbert_not_installed",))
    ckpt = save_checkpoint(build_model(tiny_config(head="classification", id2label={0: "neg", 1: "pos"})),
                           tiny_tokenizer, tmp_path / "tiny")
    data = ["--dev-file", str(csv_task[1]), "--text-col", "review", "--label-col", "sentiment", "--no-progress"]
    assert main(["bench", "--model", str(ckpt), "--backend", "onnxruntime", *data]) == 2
    assert "needs `pip install slimbert_not_installed`" in capsys.readouterr().err
    assert main(["bench", "--model", str(ckpt), str(tmp_path / "missing"), *data]) == 2
    assert "missing" in capsys.readouterr().err


def test_bench_names_a_nested_run_directory_by_its_parent_too():
    from slimbert.evaluation.bench_run import model_name

    assert model_name("runs/frontier/bert3-aug-heads50/pruned") == "bert3-aug-heads50/pruned"
    assert model_name("runs/frontier/bert3-aug") == "bert3-aug"
