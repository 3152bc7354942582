"""`slimbert finetune`: a BERT checkpoint fine-tuned on a classification or regression task."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from slimbert.checkpoint import load_model, load_tokenizer
from slimbert.data.sources import TaskData
from slimbert.errors import DataError
from slimbert.recipes.common import (DEFAULT_MODEL, encode, fraction, positive, resume_point, run_and_record,
                                     scorer, seed_everything, set_layerdrop)
from slimbert.training.objectives import ClassificationObjective
from slimbert.training.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)

# What fine-tuning trains for unless told otherwise (BERT's recipe: a few epochs at 5e-5).
TRAIN_DEFAULTS = {"epochs": 3, "lr": 5e-5}


@dataclass
class FinetuneConfig:
    out: str  # output directory (best model; last/ for --resume)
    model: str = DEFAULT_MODEL  # checkpoint dir, Hugging Face BERT dir, or bundled:NAME
    max_length: int = 128  # tokens per example
    # LayerDrop: skip each layer with this probability while training, so that layers can be
    # dropped later (slimbert prune --layers keep=...); None: as the checkpoint says
    layerdrop: float | None = None
    resume: bool = False  # continue from OUT/last

    def __post_init__(self) -> None:
        positive(self, "max_length")
        fraction(self, "layerdrop")


def train_defaults(config: FinetuneConfig) -> dict:
    """TrainConfig values this recipe uses where the caller gives none."""
    return dict(TRAIN_DEFAULTS)


def finetune(config: FinetuneConfig, data: TaskData, train: TrainConfig | None = None) -> dict:
    """Fine-tune `config.model` on the task of `data`; returns the results (also in OUT/results.json)."""
    train = train or TrainConfig(**train_defaults(config))
    out = Path(config.out)
    if data.train is None:
        raise DataError("fine-tuning needs a train split")
    last = resume_point(out, config.resume)
    seed_everything(train.seed)
    tokenizer = load_tokenizer(config.model)
    if config.resume:
        net = load_model(last)
    else:
        net = load_model(config.model, head="classification", num_labels=data.num_labels,
                         id2label=data.id2label, task=data.name)
        if config.layerdrop is not None:
            set_layerdrop(net, config.layerdrop)
    train_set = encode(data.train, tokenizer, config.max_length, data.regression)
    dev = encode(data.dev, tokenizer, config.max_length, data.regression)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(net, ClassificationObjective(data.regression), train_set, train, out,
                      tokenizer=tokenizer, evaluate=scorer(dev, data, tokenizer.pad_id, train.precision),
                      main_metric=data.main_metric)
    log.info("fine-tuning %s on %s: %d train examples (%s), %d dev, %d steps on %s",
             config.model, data.name, len(train_set), data.train.stats.summary(), len(dev) if dev else 0,
             trainer.total_steps(), trainer.device)
    results = {
        "job": "finetune",
        "task": data.name,
        "model": str(config.model),
        "train_examples": len(train_set),
        "dev_examples": len(dev) if dev else 0,
        "main_metric": data.main_metric,
        "labels": data.label_mapping(),  # what each output of the model means
        "max_length": config.max_length,
        "layerdrop": getattr(net.config, "layerdrop", 0.0),
    }
    return run_and_record(trainer, out, config.resume, results)
