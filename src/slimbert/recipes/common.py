"""What every recipe shares: where the examples come from, the output directory and --resume,
the seed, encoding and scoring, and OUT/results.json."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimbert.checkpoint import load_config
from slimbert.data.batching import EncodedDataset, encode_examples
from slimbert.data.readers import Table
from slimbert.data.sources import FileColumns, TaskData, load_task_data
from slimbert.errors import ConfigError, DataError
from slimbert.evaluation.metrics import compute_metrics
from slimbert.hardware import detect_machine
from slimbert.inference import predict_logits
from slimbert.io import atomic_write_text, existing_dir
from slimbert.tokenizer import Tokenizer
from slimbert.training.trainer import Trainer

log = logging.getLogger(__name__)

DEFAULT_MODEL = "bundled:minilm-l6"


@dataclass
class DataConfig:
    """Where a job's examples come from: a GLUE task, or your own TSV/CSV/JSONL files."""

    task: str | None = None  # GLUE task: sst2, mrpc, rte, cola, stsb, qnli, qqp, mnli, wnli
    # folder with GLUE task folders (e.g. ../shared/data/glue); without it GLUE is downloaded
    # with the `datasets` library
    data_dir: str | None = None
    train_file: str | None = None  # your own training file (.tsv, .csv or .jsonl)
    dev_file: str | None = None  # your own evaluation file
    text_col: str = "text"  # column of the text
    text_pair_col: str | None = None  # column of the second text, for sentence-pair tasks
    label_col: str = "label"  # column of the label
    header: bool = True  # files start with a header row (without one, columns are 0-based numbers)
    regression: bool = False  # labels are numbers to regress (like STS-B)
    skip_bad_rows: bool = False  # skip and count malformed rows instead of stopping at the first
    max_train_examples: int | None = None  # use only the first N training rows

    def __post_init__(self) -> None:
        if self.task and (self.train_file or self.dev_file):
            raise ConfigError("give either --task or --train-file/--dev-file, not both")
        positive(self, "max_train_examples")

    def columns(self) -> FileColumns:
        return FileColumns(self.text_col, self.text_pair_col, self.label_col, self.header)


def positive(config, *names: str) -> None:
    """Raise ConfigError naming the first of `names` whose value is set and not > 0 (and finite)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not 0 < value < math.inf:
            finite = " and finite" if value == math.inf else ""
            raise ConfigError(f"{name} must be positive{finite}, got {value}")


def fraction(config, *names: str, high: float = 1.0) -> None:
    """Raise ConfigError naming the first of `names` whose value is set and not in [0, high)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not 0 <= value < high:
            raise ConfigError(f"{name} must be in [0, {high:g}), got {value}")


def load_data(source: DataConfig, splits: tuple[str, ...], label_values: tuple[str, ...] | None = None,
              regression: bool | None = None) -> TaskData:
    """The `splits` of `source`; rows skipped with `skip_bad_rows` are counted in a warning."""
    data = load_task_data(source.task, source.data_dir, source.train_file, source.dev_file, source.columns(),
                          source.regression if regression is None else regression, label_values, splits,
                          source.skip_bad_rows, source.max_train_examples)
    for split in splits:
        table = getattr(data, split)
        if table is not None and table.stats.skipped:
            log.warning("%s: %s", table.path, table.stats.summary())
    return data


def dev_data_for(source: DataConfig, model: str | Path) -> TaskData:
    """The dev split to score `model` on: the task its config.json names unless `source` names
    a task or a dev file; your own files are read with the model's label names. The options
    that pick training rows (--train-file, --max-train-examples) are accepted, as every command
    takes the same data options, and set aside with a note."""
    if source.train_file and not (source.task or source.dev_file):
        raise DataError(f"--train-file {source.train_file}: this command scores a dev split and does not "
                        "read the training file; give --dev-file (or --task)")
    unused = [f"--{name.replace('_', '-')}" for name in ("train_file", "max_train_examples")
              if getattr(source, name) is not None]
    if unused:
        log.warning("%s not read: this command scores the dev split only", " and ".join(unused))
        source = dataclasses.replace(source, train_file=None, max_train_examples=None)
    return model_data(source, model, ("dev",))


def model_data(source: DataConfig, model: str | Path, splits: tuple[str, ...]) -> TaskData:
    """The `splits` of `source` for `model`: the task its config.json names unless `source` names
    a task or gives files; your own files are read with the model's label names."""
    cfg = load_config(model)
    if not (source.task or source.train_file or source.dev_file):
        source = dataclasses.replace(source, task=cfg.task)
    values = tuple(cfg.label_names()) if cfg.num_labels > 1 and not source.task else None
    return load_data(source, splits, label_values=values, regression=cfg.num_labels == 1)


def resume_point(out: Path, resume: bool) -> Path | None:
    """OUT/last when it exists; with `resume`, its absence is an error."""
    last = existing_dir(out / "last")
    if resume and last is None:
        raise DataError(f"--resume: {out / 'last'} does not exist; nothing to resume")
    return last


def seed_everything(seed: int) -> None:
    """Seed every generator a recipe draws from (weights of fresh heads and students, samples)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def encode(table: Table | None, tokenizer: Tokenizer, max_length: int, regression: bool = False
           ) -> EncodedDataset | None:
    return None if table is None else encode_examples(table.examples, tokenizer, max_length, regression)


def score(model: nn.Module, data: EncodedDataset, metrics: Sequence[str], pad_id: int,
          batch_size: int = 64, precision: str = "fp32") -> dict[str, float]:
    """Task metrics of `model` on an encoded, labelled dataset."""
    logits = predict_logits(model, data, pad_id, batch_size, precision)
    return compute_metrics(tuple(metrics), logits.numpy(), data.labels.numpy())


def scorer(dev: EncodedDataset | None, data: TaskData, pad_id: int, precision: str
           ) -> Callable[[nn.Module], dict[str, float]] | None:
    """The Trainer's `evaluate` callback: the task metrics on `dev` (None without a dev split)."""
    if dev is None:
        return None
    return lambda model: score(model, dev, data.metrics, pad_id, precision=precision)


def check_head(net: nn.Module, source: str | Path, num_labels: int | None = None,
               task: str | None = None) -> None:
    """The model must be a classifier (of `num_labels` outputs, when given)."""
    cfg = net.config
    if cfg.head != "classification":
        raise DataError(f"{source}: the model has no classification head (head='{cfg.head}'); "
                        "fine-tune it first")
    if num_labels is not None and cfg.num_labels != num_labels:
        raise DataError(f"{source}: the model predicts {cfg.num_labels} labels but task {task} has "
                        f"{num_labels}")


def set_layerdrop(net: nn.Module, p: float) -> None:
    """Train `net` with LayerDrop probability `p` (a BERT's own `set_layerdrop`)."""
    if not hasattr(net, "set_layerdrop"):
        raise ConfigError(f"layerdrop: a {net.config.MODEL_TYPE} model has no Transformer layers to drop")
    net.set_layerdrop(p)


def train_sample(data: TaskData, tokenizer: Tokenizer, n: int, max_length: int = 128, seed: int = 0,
                 purpose: str = "int8 calibration") -> EncodedDataset:
    """`n` training examples drawn with `seed`, encoded: what importance is scored and int8 is
    calibrated on (`purpose` names which, in the error when there is no train split)."""
    if data.train is None or not len(data.train.examples):
        raise DataError(f"{purpose} reads the train split; give one with examples")
    examples = list(data.train.examples)
    random.Random(seed).shuffle(examples)
    return encode_examples(examples[:n], tokenizer, max_length, data.regression)


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
        "config": dataclasses.asdict(trainer.cfg),
        "threads": torch.get_num_threads(),
        "device": str(trainer.device),
        "machine": detect_machine().line(),  # where the run (its last part, when resumed) ran
    })
    if trainer.rank == 0:
        atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    return results
