"""`slimbert prune`: remove attention heads, feed-forward neurons and/or whole layers, then
optionally recover the accuracy by fine-tuning or distillation.

Heads and neurons are ranked by importance (Michel et al. 2019) on a sample of the training
set and the least important removed; the model becomes physically smaller and config.json
records it. Recovery trains at 5e-5 for `recover_epochs` unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from slimbert.checkpoint import load_model, load_tokenizer, save_checkpoint
from slimbert.compress.prune import drop_layers, importance, lowest, prune_ffn, prune_heads
from slimbert.data.batching import throughput_batches
from slimbert.data.sources import TaskData
from slimbert.errors import ConfigError, DataError
from slimbert.io import atomic_write_text
from slimbert.models import count_parameters
from slimbert.recipes.common import check_head, encode, positive, score, train_sample
from slimbert.recipes.distill import DistillConfig, distill
from slimbert.recipes.finetune import FinetuneConfig, finetune
from slimbert.training.objectives import ClassificationObjective
from slimbert.training.trainer import TrainConfig

RECOVERY_LR = 5e-5


def parse_keep(text: str) -> tuple[int, ...]:
    """`keep=0,2,4` -> (0, 2, 4)."""
    if not text.startswith("keep="):
        raise ConfigError(f"'{text}': expected keep=0,2,4")
    try:
        return tuple(int(x) for x in text[len("keep="):].split(","))
    except ValueError:
        raise ConfigError(f"'{text}': layer numbers must be integers, e.g. keep=0,2,4") from None


@dataclass
class PruneConfig:
    model: str  # fine-tuned checkpoint directory
    # output directory: the pruned model; with recovery, the better of recovered and unrecovered
    # on dev, and the unrecovered one in OUT/pruned
    out: str
    heads: float = 0.0  # fraction of all attention heads to remove
    ffn: float = 0.0  # fraction of all feed-forward neurons to remove
    # each layer keeps a multiple of this many neurons, which matmul kernels run fastest (1 keeps
    # the exact fraction)
    ffn_multiple: int = 64
    # layers to keep, e.g. keep=0,2,4 (best after --layerdrop training)
    layers: tuple[int, ...] | None = field(default=None, metadata={"parse": parse_keep})
    importance_examples: int = 2048  # training examples to score importance on
    recover_epochs: int = 0  # fine-tune (or, with --teacher, distil) this many epochs after pruning
    teacher: str | None = None  # recover by distilling from this model (usually the unpruned --model)
    max_length: int = 128  # tokens per example

    def __post_init__(self) -> None:
        for name in ("heads", "ffn"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name}: the fraction to remove must be in [0, 1), "
                                  f"got {getattr(self, name)}")
        if self.recover_epochs < 0:
            raise ConfigError(f"recover_epochs must be >= 0, got {self.recover_epochs}")
        positive(self, "ffn_multiple", "importance_examples", "max_length")
        if not (self.heads or self.ffn or self.layers):
            raise ConfigError("nothing to prune: give --heads, --ffn and/or --layers keep=...")
        if self.teacher and not self.recover_epochs:
            raise ConfigError("--teacher is the model recovery distils from: give --recover-epochs too")

    def splits(self) -> tuple[str, ...]:
        """The data pruning reads: dev to report the cost; train to score importance and recover."""
        return ("train", "dev") if (self.heads or self.ffn or self.recover_epochs) else ("dev",)


def train_defaults(config: PruneConfig) -> dict:
    # without recovery nothing trains, but the TrainConfig must still be a valid one
    return {"epochs": max(config.recover_epochs, 1), "lr": RECOVERY_LR}


def prune(config: PruneConfig, data: TaskData, train: TrainConfig | None = None) -> dict:
    """Drop layers (`config.layers`), then remove the `heads` and `ffn` fractions of least
    important heads and feed-forward neurons, scored on a sample of the training set; each layer
    keeps a multiple of `ffn_multiple` neurons (see `lowest`). With `recover_epochs`, fine-tune
    the pruned model on the task (or distil it from `teacher`) into OUT with `train`; the pruned,
    unrecovered model is kept in OUT/pruned, and also becomes OUT's model when recovery did not
    improve its dev score (`kept` says which; the recovery run's results.json is then renamed
    recovery.json). Returns the results (also in OUT/prune.json)."""
    train = train or TrainConfig(**train_defaults(config))
    recover = dataclasses.replace(train, epochs=config.recover_epochs) if config.recover_epochs else None
    heads, ffn, keep = config.heads, config.ffn, list(config.layers) if config.layers else None
    out = Path(config.out)
    if data.dev is None:
        raise DataError("pruning needs a dev split to report what it cost")
    net = load_model(config.model)
    check_head(net, config.model, data.num_labels, data.name)
    tokenizer = load_tokenizer(config.model)
    dev = encode(data.dev, tokenizer, config.max_length, data.regression)
    before = score(net, dev, data.metrics, tokenizer.pad_id)
    params_before = count_parameters(net)
    t0 = time.perf_counter()
    if keep is not None:
        net = drop_layers(net, keep)
    removed_heads, removed_neurons = {}, {}
    if heads or ffn:
        encoded = train_sample(data, tokenizer, config.importance_examples, config.max_length, train.seed,
                               purpose="head and neuron importance")
        batches = throughput_batches(encoded, 32, tokenizer.pad_id)  # length-sorted, padded per batch
        scores = importance(net, batches, ClassificationObjective(data.regression), progress=train.progress)
        if heads:
            removed_heads = lowest(scores.heads, heads)
            net = prune_heads(net, removed_heads)
        if ffn:
            removed_neurons = lowest(scores.ffn, ffn, multiple_of=config.ffn_multiple)
            net = prune_ffn(net, removed_neurons)
    net.set_layerdrop(0.0)  # recovery and later training run without LayerDrop
    prune_seconds = time.perf_counter() - t0
    after = score(net, dev, data.metrics, tokenizer.pad_id)
    pruned_dir = out / "pruned" if recover else out
    save_checkpoint(net, tokenizer, pruned_dir)
    results = {
        "job": "prune", "task": data.name, "model": str(config.model),
        "heads_fraction": heads, "ffn_fraction": ffn, "ffn_multiple": config.ffn_multiple,
        "keep_layers": keep,
        "removed_heads": {str(k): v for k, v in removed_heads.items()},
        "removed_neurons_per_layer": {str(k): len(v) for k, v in removed_neurons.items()},
        "parameters_before": params_before, "parameters_after": count_parameters(net),
        "dev_before": before, "dev_after_pruning": after, "main_metric": data.main_metric,
        "importance_examples": (min(config.importance_examples, len(data.train.examples))
                                if (heads or ffn) else 0),
        "prune_seconds": prune_seconds,
    }
    if recover:
        if config.teacher:
            distill(DistillConfig(teacher=config.teacher, student=str(pruned_dir), out=str(out),
                                  max_length=config.max_length), data, recover)
        else:
            finetune(FinetuneConfig(out=str(out), model=str(pruned_dir), max_length=config.max_length),
                     data, recover)
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
        results.update(recovery="distill" if config.teacher else "finetune", recovery_epochs=recover.epochs,
                       dev_after_recovery=recovered_dev[metric], dev_after_recovery_all=recovered_dev,
                       recovery_teacher=config.teacher, kept=kept)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "prune.json", json.dumps(results, indent=2) + "\n")
    return results
