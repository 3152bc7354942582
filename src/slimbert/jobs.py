"""The jobs behind the CLI, as plain functions: finetune, evaluate, predict, train a vocabulary."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimbert.checkpoint import load_model, load_tokenizer
from slimbert.data.batching import EncodedDataset, encode_examples
from slimbert.data.readers import Example, Table
from slimbert.data.sources import TaskData
from slimbert.errors import DataError
from slimbert.evaluation.metrics import compute_metrics
from slimbert.inference import predict_logits, resolve_device
from slimbert.io import atomic_write_text, existing_dir
from slimbert.tokenizer import Tokenizer
from slimbert.training.objectives import ClassificationObjective
from slimbert.training.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)


def encode_table(table: Table, tokenizer: Tokenizer, max_length: int, regression: bool) -> EncodedDataset:
    return encode_examples(table.examples, tokenizer, max_length, regression)


def score(model: nn.Module, data: EncodedDataset, metrics: Sequence[str], pad_id: int,
          batch_size: int = 64, precision: str = "fp32") -> dict[str, float]:
    """Task metrics of `model` on an encoded, labelled dataset."""
    logits = predict_logits(model, data, pad_id, batch_size, precision)
    return compute_metrics(tuple(metrics), logits.numpy(), data.labels.numpy())


def resume_point(out: Path, resume: bool) -> Path | None:
    """OUT/last when it exists; with `resume`, its absence is an error."""
    last = existing_dir(out / "last")
    if resume and last is None:
        raise DataError(f"--resume: {out / 'last'} does not exist; nothing to resume")
    return last


def run_and_record(trainer: Trainer, out: Path, resume: bool, results: dict) -> dict:
    """Run `trainer`, add what the run measured to `results`, and write OUT/results.json."""
    t0 = time.perf_counter()
    state = trainer.fit(resume=resume)
    history = state.history
    results.update({
        "best": state.best_metric,
        "best_epoch": state.best_epoch,
        "skipped_steps": state.skipped_steps,
        "wall_seconds_this_run": time.perf_counter() - t0,
        "train_seq_per_s": float(np.mean([h["train_seq_per_s"] for h in history])) if history else None,
        "history": history,
        "config": asdict(trainer.cfg),
        "threads": torch.get_num_threads(),
        "device": str(trainer.device),
    })
    if trainer.rank == 0:
        atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    return results


def finetune(model: str, data: TaskData, out: str | Path, config: TrainConfig, max_length: int = 128,
             resume: bool = False, layerdrop: float | None = None) -> dict:
    """Fine-tune a BERT checkpoint on a classification/regression task; returns the results.

    `layerdrop`: train with LayerDrop at this probability (None: as the checkpoint says)."""
    out = Path(out)
    if data.train is None:
        raise DataError("fine-tuning needs a train split")
    last = resume_point(out, resume)
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(model)
    net = (load_model(last) if resume else
           load_model(model, head="classification", num_labels=data.num_labels,
                      id2label=data.id2label, task=data.name))
    if layerdrop is not None and not resume:
        from slimbert.compress.prune import set_layerdrop

        set_layerdrop(net, layerdrop)
    train = encode_table(data.train, tokenizer, max_length, data.regression)
    dev = encode_table(data.dev, tokenizer, max_length, data.regression) if data.dev else None
    evaluate = (lambda m: score(m, dev, data.metrics, tokenizer.pad_id, precision=config.precision)
                ) if dev is not None else None
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(net, ClassificationObjective(data.regression), train, config, out,
                      tokenizer=tokenizer, evaluate=evaluate, main_metric=data.main_metric)
    log.info("fine-tuning %s on %s: %d train examples (%s), %d dev, %d steps on %s",
             model, data.name, len(train), data.train.stats.summary(), len(dev) if dev else 0,
             trainer.total_steps(), trainer.device)
    results = {
        "job": "finetune",
        "task": data.name,
        "model": str(model),
        "train_examples": len(train),
        "dev_examples": len(dev) if dev else 0,
        "main_metric": data.main_metric,
        "max_length": max_length,
        "layerdrop": getattr(net.config, "layerdrop", 0.0),
    }
    return run_and_record(trainer, out, resume, results)


def evaluate(model: str | Path, data: TaskData, batch_size: int = 64, max_length: int = 128,
             precision: str = "fp32", device: str = "auto") -> dict[str, float]:
    """The task metrics of a fine-tuned checkpoint on the dev split of `data`."""
    if data.dev is None:
        raise DataError("evaluation needs a dev split")
    net = load_model(model).to(resolve_device(device))
    _check_head(net, model, data.num_labels, data.name)
    tokenizer = load_tokenizer(model)
    dev = encode_table(data.dev, tokenizer, max_length, data.regression)
    return score(net, dev, data.metrics, tokenizer.pad_id, batch_size, precision)


def _check_head(net: nn.Module, source: str | Path, num_labels: int | None = None,
                task: str | None = None) -> None:
    """The model must be a classifier (of `num_labels` outputs, when given)."""
    cfg = net.config
    if cfg.head != "classification":
        raise DataError(f"{source}: the model has no classification head (head='{cfg.head}'); "
                        "fine-tune it first")
    if num_labels is not None and cfg.num_labels != num_labels:
        raise DataError(f"{source}: the model predicts {cfg.num_labels} labels but task {task} has "
                        f"{num_labels}")


def predict(model: str | Path, lines: Iterable[str], batch_size: int = 64, max_length: int = 128,
            device: str = "auto") -> tuple[list[str], list[dict]]:
    """Label and probabilities for each line; a tab in a line separates a sentence pair.

    Returns the column names and one record per line: {"label", "probs"} or {"score"}.
    """
    net = load_model(model).to(resolve_device(device))
    _check_head(net, model)
    cfg = net.config
    tokenizer = load_tokenizer(model)
    examples = []
    for i, line in enumerate(lines, start=1):
        parts = line.rstrip("\n").split("\t")
        if len(parts) > 2:
            raise DataError(f"input line {i}: {len(parts)} tab-separated fields; expected a text "
                            "or a text pair")
        if not parts[0].strip():
            raise DataError(f"input line {i}: empty text")
        examples.append(Example(parts[0], parts[1] if len(parts) == 2 else None))
    if not examples:
        return [], []
    if len({e.text_pair is None for e in examples}) > 1:
        raise DataError("mixed input: some lines are sentence pairs (with a tab) and some are not")
    data = encode_examples(examples, tokenizer, max_length)
    logits = predict_logits(net, data, tokenizer.pad_id, batch_size)
    if cfg.num_labels == 1:
        return ["score"], [{"score": float(x)} for x in logits.view(-1)]
    names = cfg.label_names()
    probs = logits.softmax(-1)
    return names, [{"label": names[int(p.argmax())], "probs": {n: float(v) for n, v in zip(names, p)}}
                   for p in probs]


def train_vocab(texts: Iterable[str], size: int, out: str | Path, lowercase: bool = True,
                min_frequency: int = 2) -> tuple[Tokenizer, float]:
    """Train a WordPiece vocabulary and write it to `out/vocab.txt`; returns it and the seconds taken."""
    t0 = time.perf_counter()
    tok = Tokenizer.train(texts, size, lowercase=lowercase, min_frequency=min_frequency)
    seconds = time.perf_counter() - t0
    tok.save(out)
    return tok, seconds

