"""The compression jobs behind `slimbert prune`, `slimbert quantize` and `slimbert export`."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

from slimbert.checkpoint import export_hf, load_model, load_tokenizer, save_checkpoint
from slimbert.compress.export import ONNX_NAME, export_onnx
from slimbert.compress.prune import drop_layers, importance, lowest, prune_ffn, prune_heads, set_layerdrop
from slimbert.compress.quantize import quantize_int8, to_bf16
from slimbert.compress.students import CheckpointStudentSpec
from slimbert.data.batching import EncodedDataset, encode_examples
from slimbert.data.sources import TaskData
from slimbert.errors import DataError
from slimbert.evaluation.bench import throughput_batches
from slimbert.io import atomic_write_text
from slimbert.jobs import _check_head, encode_table, finetune, score
from slimbert.training.objectives import ClassificationObjective
from slimbert.training.trainer import TrainConfig


def train_sample(data: TaskData, tokenizer, n: int, max_length: int = 128, seed: int = 0,
                 purpose: str = "int8 calibration") -> EncodedDataset:
    """`n` training examples drawn with `seed`, encoded: what importance is scored and int8 is
    calibrated on (`purpose` names which, in the error when there is no train split)."""
    if data.train is None or not len(data.train.examples):
        raise DataError(f"{purpose} reads the train split; give one with examples")
    examples = list(data.train.examples)
    random.Random(seed).shuffle(examples)
    return encode_examples(examples[:n], tokenizer, max_length, data.regression)


def prune(model: str | Path, data: TaskData, out: str | Path, heads: float = 0.0, ffn: float = 0.0,
          keep: list[int] | None = None, importance_examples: int = 2048, batch_size: int = 32,
          max_length: int = 128, recover: TrainConfig | None = None, teacher: str | None = None,
          seed: int = 0, progress: bool = True, ffn_multiple: int = 64) -> dict:
    """Drop layers (`keep`), then remove the `heads` and `ffn` fractions of least important
    heads and feed-forward neurons, scored on a sample of the training set; each layer keeps a
    multiple of `ffn_multiple` neurons (see `lowest`). With `recover`,
    fine-tune the pruned model on the task (or distil it from `teacher`) into OUT; the pruned,
    unrecovered model is kept in OUT/pruned, and also becomes OUT's model when recovery did not
    improve its dev score (`kept` says which; the recovery run's results.json is then renamed
    recovery.json). Returns the results (also in OUT/prune.json)."""
    out = Path(out)
    if data.dev is None:
        raise DataError("pruning needs a dev split to report what it cost")
    net = load_model(model)
    _check_head(net, model, data.num_labels, data.name)
    tokenizer = load_tokenizer(model)
    dev = encode_table(data.dev, tokenizer, max_length, data.regression)
    before = score(net, dev, data.metrics, tokenizer.pad_id)
    params_before = sum(p.numel() for p in net.parameters())
    t0 = time.perf_counter()
    if keep is not None:
        net = drop_layers(net, keep)
    removed_heads, removed_neurons = {}, {}
    if heads or ffn:
        encoded = train_sample(data, tokenizer, importance_examples, max_length, seed,
                               purpose="head and neuron importance")
        batches = throughput_batches(encoded, batch_size, tokenizer.pad_id)  # length-sorted, padded per batch
        scores = importance(net, batches, ClassificationObjective(data.regression), progress=progress)
        if heads:
            removed_heads = lowest(scores.heads, heads)
            net = prune_heads(net, removed_heads)
        if ffn:
            removed_neurons = lowest(scores.ffn, ffn, multiple_of=ffn_multiple)
            net = prune_ffn(net, removed_neurons)
    set_layerdrop(net, 0.0)  # recovery and later training run without LayerDrop
    prune_seconds = time.perf_counter() - t0
    after = score(net, dev, data.metrics, tokenizer.pad_id)
    pruned_dir = out / "pruned" if recover else out
    save_checkpoint(net, tokenizer, pruned_dir)
    results = {
        "job": "prune", "task": data.name, "model": str(model),
        "heads_fraction": heads, "ffn_fraction": ffn, "ffn_multiple": ffn_multiple, "keep_layers": keep,
        "removed_heads": {str(k): v for k, v in removed_heads.items()},
        "removed_neurons_per_layer": {str(k): len(v) for k, v in removed_neurons.items()},
        "parameters_before": params_before, "parameters_after": sum(p.numel() for p in net.parameters()),
        "dev_before": before, "dev_after_pruning": after, "main_metric": data.main_metric,
        "importance_examples": min(importance_examples, len(data.train.examples)) if (heads or ffn) else 0,
        "prune_seconds": prune_seconds,
    }
    if recover:
        if teacher:
            from slimbert.distill import DistillOptions, distill
            distill(teacher, CheckpointStudentSpec(str(pruned_dir)), data, out, recover,
                    DistillOptions(), max_length, student_name=f"pruned {model}")
        else:
            finetune(str(pruned_dir), data, out, recover, max_length)
        # The pruned model is recovery's "epoch 0": like the trainer's best epoch, OUT keeps
        # whichever of the two scores higher on dev, both scored the same way (fp32).
        recovered_dev = score(load_model(out), dev, data.metrics, tokenizer.pad_id)
        metric = data.main_metric
        kept = "recovered" if recovered_dev[metric] >= after[metric] else "pruned"
        if kept == "pruned":
            save_checkpoint(net, tokenizer, out)
            # OUT's results.json describes the model OUT holds; the recovery run's is kept aside.
            if (out / "results.json").exists():
                os.replace(out / "results.json", out / "recovery.json")
        results.update(recovery="distill" if teacher else "finetune", recovery_epochs=recover.epochs,
                       dev_after_recovery=recovered_dev[metric], dev_after_recovery_all=recovered_dev,
                       recovery_teacher=teacher, kept=kept)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "prune.json", json.dumps(results, indent=2) + "\n")
    return results


def quantize(model: str | Path, out: str | Path, dtype: str = "int8", scope: str | None = None,
             calibration: TaskData | None = None, calibration_examples: int = 512, alpha: float = 0.9,
             max_length: int = 128) -> Path:
    """Write an int8 (dynamic, Linear layers of `scope`) or bf16 copy of a checkpoint to `out`.
    int8 with `calibration` data (its train split) is SmoothQuant-calibrated on a seeded sample
    of `calibration_examples` and defaults to every Linear; without, to the attention scope."""
    net = load_model(model)
    tokenizer = load_tokenizer(model)
    if dtype != "int8":
        return save_checkpoint(to_bf16(net), tokenizer, out)
    sample = None if calibration is None else train_sample(calibration, tokenizer, calibration_examples, max_length)
    scope = scope or ("all" if sample is not None else "attention")
    return save_checkpoint(quantize_int8(net, scope, sample, tokenizer.pad_id, alpha), tokenizer, out)


def export(model: str | Path, fmt: str, out: str | Path, int8: bool = False) -> list[Path]:
    """`onnx`: OUT/model.onnx (+ model_int8.onnx) with config.json and vocab.txt beside it;
    `hf`: a checkpoint directory stock `transformers` loads."""
    net = load_model(model)
    tokenizer = load_tokenizer(model)
    out = Path(out)
    if fmt == "hf":
        if int8:
            raise DataError("--int8 applies to --format onnx")
        return [export_hf(net.float(), tokenizer, out)]
    files = export_onnx(net, out / ONNX_NAME, int8=int8)
    net.config.save(out / "config.json")
    tokenizer.save(out)
    return files
