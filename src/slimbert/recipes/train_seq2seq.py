"""`slimbert train-seq2seq`: a translation model trained on two aligned text files.

The recipe: a joint BPE vocabulary learned on the training sources and targets together (or
given), an encoder-decoder Transformer (pre-norm, sinusoidal positions, tied embeddings) or a
bidirectional LSTM with attention, label-smoothed cross-entropy (0.1) under teacher forcing,
length-bucketed batches padded per batch, and the shared Trainer. After every epoch the
validation pairs are scored: NLL of the references and BLEU of greedy (or beam) translations;
the checkpoint with the best BLEU is kept in OUT, the latest in OUT/last for --resume.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from slimbert.checkpoint import average_checkpoints, load_model, save_checkpoint
from slimbert.config import Seq2SeqConfig, Seq2SeqLSTMConfig, Seq2SeqTransformerConfig
from slimbert.data.batching import length_bucketed_batches
from slimbert.data.parallel import (
    ParallelDataset,
    ParallelText,
    collate_pairs,
    encode_parallel,
    parallel_batches,
    read_parallel,
)
from slimbert.errors import CheckpointError, ConfigError, DataError
from slimbert.evaluation.bleu import bleu_scores
from slimbert.generation import SearchConfig, translate
from slimbert.hardware import autocast
from slimbert.io import atomic_write_text
from slimbert.models import build_model, count_parameters
from slimbert.recipes.common import fraction, positive, resume_point, run_and_record, seed_everything
from slimbert.subword import SubwordTokenizer
from slimbert.training.losses import label_smoothed_cross_entropy
from slimbert.training.objectives import Seq2SeqObjective
from slimbert.training.trainer import TrainConfig, Trainer, epoch_checkpoints

log = logging.getLogger(__name__)

Arch = Literal["transformer", "lstm"]
# What each architecture trains with unless told otherwise.
TRAIN_DEFAULTS: dict[str, dict] = {
    "transformer": {"epochs": 10, "lr": 7e-4, "batch_size": 64, "warmup_ratio": 0.05, "weight_decay": 0.0001},
    "lstm": {"epochs": 10, "lr": 1e-3, "batch_size": 64, "warmup_ratio": 0.02, "weight_decay": 0.0},
}
# Model sizes where the options leave them unset: (hidden_size, layers).
ARCH_DEFAULTS = {"transformer": (256, 3), "lstm": (256, 1)}


@dataclass
class TrainSeq2SeqConfig:
    train_src: str  # training sources, one sentence per line
    train_tgt: str  # training targets, aligned with --train-src line by line
    valid_src: str  # validation sources (scored after every epoch)
    valid_tgt: str  # validation references, aligned with --valid-src
    out: str  # output directory (the best model by validation BLEU; last/ for --resume)
    arch: Arch = "transformer"  # encoder-decoder Transformer, or bidirectional LSTM with attention
    vocab_size: int = 8000  # joint BPE vocabulary, learned on the training sources and targets together
    tokenizer: str | None = None  # a tokenizer.json to use instead of learning a vocabulary
    max_length: int = 128  # tokens per source and per target, </s> included (longer ones are cut and counted)
    hidden_size: int | None = None  # Transformer width / LSTM units per direction (default: 256)
    layers: int | None = None  # Transformer: blocks in the encoder and in the decoder (3); LSTM: layers (1)
    heads: int = 4  # Transformer attention heads
    ffn_size: int = 1024  # Transformer feed-forward width
    embedding_dim: int = 256  # LSTM word-embedding width
    dropout: float = 0.1  # on embeddings and sub-layer outputs
    attention_dropout: float = 0.0  # Transformer: on attention probabilities
    # Transformer: LayerNorm before (pre) or after (post) each sub-layer
    norm_style: Literal["pre", "post"] = "pre"
    positions: Literal["sinusoidal", "absolute", "rope"] = "sinusoidal"  # Transformer positions
    # LSTM attention: Luong's general or dot, Bahdanau's additive
    attention: Literal["general", "dot", "additive"] = "general"
    input_feeding: bool = True  # LSTM (Luong): feed the last attentional vector into the next step
    tie_embeddings: bool = True  # one matrix for source, target and output embeddings
    label_smoothing: float = 0.1  # mass spread uniformly over the vocabulary in the loss
    teacher_forcing: float = 1.0  # LSTM: probability of reading the gold previous token
    teacher_forcing_end: float | None = None  # LSTM: move the ratio linearly to this by the last step
    valid_beam: int = 1  # beam size of the validation translations (1: greedy, fastest)
    max_valid_lines: int | None = None  # score only the first N validation pairs (faster epochs)
    no_empty_lines: bool = False  # an empty line is an error (default: the pair is skipped and counted)
    # also write OUT/averaged: the mean of the last N epochs' weights (checkpoint averaging), scored
    # on the validation pairs beside the best epoch
    average_last: int | None = None
    resume: bool = False  # continue from OUT/last

    def __post_init__(self) -> None:
        positive(self, "vocab_size", "hidden_size", "layers", "heads", "ffn_size", "embedding_dim",
                 "valid_beam", "max_valid_lines", "average_last")
        fraction(self, "dropout", "attention_dropout", "label_smoothing")
        if self.max_length < 2:
            raise ConfigError(f"max_length must be at least 2 (a token and </s>), got {self.max_length}")
        for name in ("teacher_forcing", "teacher_forcing_end"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.arch == "transformer" and (self.teacher_forcing < 1 or self.teacher_forcing_end is not None):
            raise ConfigError("teacher_forcing: a Transformer trains with full teacher forcing; "
                              "a ratio below 1 is for --arch lstm")
        hidden = self.hidden_size or ARCH_DEFAULTS[self.arch][0]
        if self.arch == "transformer" and hidden % self.heads:
            raise ConfigError(f"hidden_size ({hidden}) must be divisible by heads ({self.heads})")
        model_config(self, self.vocab_size)  # the model's own checks, before any work


def train_defaults(config: TrainSeq2SeqConfig) -> dict:
    return dict(TRAIN_DEFAULTS[config.arch])


def model_config(config: TrainSeq2SeqConfig, vocab_size: int, pad_id: int = 0, bos_id: int = 2,
                 eos_id: int = 3) -> Seq2SeqConfig:
    """The model the options describe, over a joint vocabulary of `vocab_size` pieces."""
    hidden, layers = ARCH_DEFAULTS[config.arch]
    hidden, layers = config.hidden_size or hidden, config.layers or layers
    shared = dict(vocab_size=vocab_size, pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id,
                  max_source_length=config.max_length,
                  max_target_length=config.max_length, tie_embeddings=config.tie_embeddings,
                  dropout=config.dropout)
    try:
        if config.arch == "lstm":
            return Seq2SeqLSTMConfig(**shared, embedding_dim=config.embedding_dim, hidden_size=hidden,
                                     num_layers=layers, attention=config.attention,
                                     input_feeding=config.input_feeding)
        return Seq2SeqTransformerConfig(**shared, hidden_size=hidden, encoder_layers=layers,
                                        decoder_layers=layers, num_attention_heads=config.heads,
                                        intermediate_size=config.ffn_size,
                                        attention_dropout=config.attention_dropout,
                                        norm_style=config.norm_style,
                                        position_embedding_type=config.positions,
                                        max_position_embeddings=max(256, config.max_length))
    except CheckpointError as e:  # the config's own check, e.g. a width the heads do not divide
        raise ConfigError(str(e).replace("config field ", "")) from None


@torch.no_grad()
def validation_nll(model: nn.Module, data: ParallelDataset, pad_id: int, batch_size: int = 64,
                   precision: str = "fp32") -> float:
    """Mean negative log-likelihood per reference token (teacher forcing, no smoothing)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for indices in length_bucketed_batches(data.lengths, batch_size, seed=0, epoch=0, shuffle=False):
        batch = {k: v.to(device) for k, v in collate_pairs(data, indices, pad_id).items()}
        with autocast(device, precision):
            logits = model(batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"]).logits
        _, nll = label_smoothed_cross_entropy(logits, batch["labels"], 0.0)
        n = sum(len(data.target_ids[i]) for i in indices)
        total, tokens = total + float(nll) * n, tokens + n
    model.train(was_training)
    return total / max(tokens, 1)


def validator(valid: ParallelText, data: ParallelDataset, tokenizer: SubwordTokenizer, beam: int,
              precision: str):
    """The Trainer's `evaluate`: validation NLL and perplexity, and BLEU of translations."""
    search = SearchConfig(beam_size=beam, max_len_a=1.5, max_len_b=10)

    def evaluate(model: nn.Module) -> dict[str, float]:
        nll = validation_nll(model, data, tokenizer.pad_id, precision=precision)
        hypotheses = translate(model, tokenizer, valid.sources, search).best
        scores = bleu_scores(hypotheses, valid.targets)
        return {"bleu": scores.sacrebleu, "legacy_bleu": scores.legacy, "nll": nll,
                "ppl": math.exp(min(nll, 50))}

    return evaluate


def read_pairs(source: str, target: str, no_empty_lines: bool = False) -> ParallelText:
    """The pairs of two aligned files; pairs with an empty side are skipped with a warning, or
    with `no_empty_lines` an error."""
    text = read_parallel(source, target, skip_empty=not no_empty_lines)
    if not len(text):
        raise DataError(f"{source} / {target}: no sentence pairs")
    if text.skipped_empty:
        log.warning("%s / %s: %s", source, target, text.summary())
    return text


def first_pairs(text: ParallelText, n: int | None) -> ParallelText:
    """The first `n` pairs of `text` (all of them for None): what --max-valid-lines scores."""
    if n is None:
        return text
    return dataclasses.replace(text, sources=text.sources[:n], targets=text.targets[:n])


def train_seq2seq(config: TrainSeq2SeqConfig, train: TrainConfig | None = None) -> dict:
    """Train a translation model; returns the results (also in OUT/results.json)."""
    train = train or TrainConfig(**train_defaults(config))
    if config.average_last:
        train = dataclasses.replace(train, keep_epochs=max(train.keep_epochs, config.average_last))
    out = Path(config.out)
    last = resume_point(out, config.resume)
    train_text = read_pairs(config.train_src, config.train_tgt, config.no_empty_lines)
    valid_text = first_pairs(read_pairs(config.valid_src, config.valid_tgt, config.no_empty_lines),
                             config.max_valid_lines)
    seed_everything(train.seed)
    if config.resume:
        tokenizer = SubwordTokenizer.from_dir(last)
        net = load_model(last)
    else:
        tokenizer = (SubwordTokenizer.from_file(config.tokenizer) if config.tokenizer else
                     SubwordTokenizer.train(train_text.sources + train_text.targets, config.vocab_size))
        net = build_model(model_config(config, len(tokenizer), tokenizer.pad_id, tokenizer.bos_id,
                                       tokenizer.eos_id))
    if not isinstance(net.config, Seq2SeqConfig):
        raise DataError(f"{last}: not a translation model")
    mc = net.config
    train_set = encode_parallel(tokenizer, train_text, mc.max_source_length, mc.max_target_length)
    valid_set = encode_parallel(tokenizer, valid_text, mc.max_source_length, mc.max_target_length)
    for name, data in (("train", train_set), ("valid", valid_set)):
        if data.truncated_sources or data.truncated_targets:
            log.warning("%s: %s to %d tokens", name, data.truncation_summary(), mc.max_source_length)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    source = parallel_batches(train_set, train.batch_size, train.grad_accum, train.seed, tokenizer.pad_id,
                              rank, world)
    calls = (train.max_steps or train.epochs * source.steps_per_epoch) * train.grad_accum
    objective = Seq2SeqObjective(config.label_smoothing, config.teacher_forcing, config.teacher_forcing_end,
                                 calls)
    out.mkdir(parents=True, exist_ok=True)
    evaluate = validator(valid_text, valid_set, tokenizer, config.valid_beam, train.precision)
    trainer = Trainer(net, objective, source, train, out, tokenizer=tokenizer, evaluate=evaluate,
                      main_metric="bleu")
    log.info("training a %s (%.2f M parameters) on %s: %d steps on %s", config.arch,
             count_parameters(net) / 1e6, train_text.summary(), trainer.total_steps(), trainer.device)
    results = {
        "job": "train-seq2seq",
        "arch": config.arch,
        "train": [config.train_src, config.train_tgt],
        "valid": [config.valid_src, config.valid_tgt],
        "parameters": count_parameters(net),
        "vocab_size": len(tokenizer),
        "train_pairs": len(train_set),
        "valid_pairs": len(valid_set),
        "skipped_empty": {"train": len(train_text.skipped_empty), "valid": len(valid_text.skipped_empty)},
        "truncated": {"train": [train_set.truncated_sources, train_set.truncated_targets],
                      "valid": [valid_set.truncated_sources, valid_set.truncated_targets]},
        "main_metric": "bleu",
        "model_config": mc.to_dict(),
    }
    return train_and_average(trainer, out, config.resume, results, config.average_last, tokenizer, evaluate)


def train_and_average(trainer: Trainer, out: Path, resume: bool, results: dict, average_last: int,
                      tokenizer: SubwordTokenizer, evaluate) -> dict:
    """Train and record `results` (`run_and_record`); with `average_last`, then average the last
    epoch models and add their scores to results.json under "averaged"."""
    results = run_and_record(trainer, out, resume, results)
    if average_last:
        results["averaged"] = average_last_epochs(out, average_last, tokenizer, evaluate)
        atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    return results


def average_last_epochs(out: Path, n: int, tokenizer: SubwordTokenizer, evaluate) -> dict:
    """Average the last `n` epoch models of the run in `out` into OUT/averaged and score it with
    `evaluate`; returns the epochs averaged and the scores."""
    kept = epoch_checkpoints(out)[-n:]
    if len(kept) < n:
        log.warning("%s: %d epoch models kept, fewer than the %d to average", out, len(kept), n)
    averaged = save_checkpoint(average_checkpoints(kept), tokenizer, out / "averaged")
    metrics = evaluate(load_model(averaged))
    tqdm.write(f"average of {len(kept)} epochs ({kept[0].name} to {kept[-1].name}): "
               + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()) + f"; saved to {averaged}")
    return {"epochs": [int(k.name.split("-")[1]) for k in kept], "path": str(averaged), **metrics}
