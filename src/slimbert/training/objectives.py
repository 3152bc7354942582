"""Objectives: what a training step optimises. The Trainer runs any of them.

An objective is a callable `(model, batch) -> (loss, metrics)`: `loss` is a scalar tensor to
minimise (a mean over the batch), `metrics` maps names to detached scalars for the progress bar.
Fine-tuning, MLM pretraining and every kind of distillation are objectives, never new loops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from slimbert.data.batching import IGNORE_INDEX, Batch, model_inputs
from slimbert.training.losses import (hard_cross_entropy, label_smoothed_cross_entropy, regression_mse,
                                      word_level_kd)


class Objective(Protocol):
    """(model, batch) -> (loss, metrics). An objective whose loss is a mean over the tokens of
    `batch["labels"]` that are not IGNORE_INDEX says so with `mean_over_labels = True`: the
    Trainer then weights accumulated micro-batches by those counts, not by their examples."""

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ...


@dataclass
class ClassificationObjective:
    """Fine-tuning on gold labels: cross-entropy, or MSE for regression (num_labels == 1)."""

    regression: bool = False

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(**model_inputs(batch)).logits
        labels = batch["labels"]
        if self.regression:
            loss = regression_mse(logits, labels)
            return loss, {"loss": loss.detach()}
        loss = hard_cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(-1) == labels).float().mean()
        return loss, {"loss": loss.detach(), "acc": accuracy}


@dataclass
class MaskedLMObjective:
    """Masked-LM pretraining with dynamic masking (no next-sentence prediction).

    `masker` (slimbert.data.masking.MLMMasker) draws fresh masks for every batch; the loss is
    the cross-entropy of the original tokens at the masked positions.

    Sparse prediction (as in NVIDIA's and Cramming's BERT pretraining): the vocabulary head,
    the largest matrix product of a small model, runs on the M masked positions only (about
    15% of the tokens) instead of all B x T. The model takes them as `masked_positions`, so
    this works through DDP and torch.compile too.
    """

    # None: the batches come masked, with the original ids at the masked positions in "labels"
    # (slimbert.data.packed.PackedMLMBatches masks per sample)
    masker: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def mean_over_labels(self) -> bool:
        return self.masker is None  # the masked tokens are known before the call

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = model_inputs(batch)
        if self.masker is None:
            labels = batch["labels"]  # (B, T)
        else:
            inputs["input_ids"], labels = self.masker(inputs["input_ids"], inputs.get("attention_mask"))
        masked = labels != IGNORE_INDEX  # (B, T)
        logits = model(**inputs, masked_positions=masked).logits  # (M, V)
        loss = hard_cross_entropy(logits, labels[masked])
        return loss, {"loss": loss.detach()}


class Seq2SeqObjective(nn.Module):
    """Translation: label-smoothed cross-entropy of each next target token under teacher forcing,
    over the real target tokens only (padding is labelled IGNORE_INDEX).

    `teacher_forcing` is the probability that the decoder reads the gold previous token (models
    that step through time, the LSTM; a Transformer takes 1 only). With `teacher_forcing_end`
    it moves linearly from one to the other over `total_steps` calls (scheduled sampling,
    Bengio et al. 2015). The calls made so far are part of the module's state, so a resumed run
    continues the schedule where it stopped.
    """

    mean_over_labels = True

    def __init__(self, label_smoothing: float = 0.1, teacher_forcing: float = 1.0,
                 teacher_forcing_end: float | None = None, total_steps: int = 0):
        super().__init__()
        for name, value in (("teacher_forcing", teacher_forcing),
                            ("teacher_forcing_end", teacher_forcing_end)):
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.label_smoothing = label_smoothing
        self.teacher_forcing, self.teacher_forcing_end = teacher_forcing, teacher_forcing_end
        self.total_steps = total_steps  # calls over which the ratio moves (optimizer steps x accumulation)
        self.calls = 0

    def ratio(self) -> float:
        """The teacher-forcing ratio of the next call."""
        if self.teacher_forcing_end is None or self.total_steps <= 1:
            return self.teacher_forcing
        progress = min(self.calls / (self.total_steps - 1), 1.0)
        return self.teacher_forcing + (self.teacher_forcing_end - self.teacher_forcing) * progress

    def forward(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ratio = self.ratio()
        extra = {"teacher_forcing": ratio} if ratio < 1 else {}
        inputs = (batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"])
        logits = model(*inputs, **extra).logits
        loss, nll = label_smoothed_cross_entropy(logits, batch["labels"], self.label_smoothing)
        self.calls += 1
        return loss, {"loss": loss.detach(), "nll": nll.detach()}

    def get_extra_state(self) -> dict:
        return {"calls": self.calls}

    def set_extra_state(self, state: dict) -> None:
        self.calls = int(state["calls"])


class Seq2SeqDistillationObjective:
    """Translation against a frozen teacher (Kim & Rush 2016, https://arxiv.org/abs/1606.07947):

        loss = hard + word_kd_weight * word_kd

    `hard` is the label-smoothed cross-entropy of the batch's targets (the teacher's beam
    outputs for sequence-level KD, or references); `word_kd` is `word_level_kd` against the
    teacher's token distributions, teacher-forced on the same target prefix. The teacher is run
    only when `word_kd_weight` > 0; it is neither trained nor saved.
    """

    mean_over_labels = True

    def __init__(self, teacher: nn.Module, label_smoothing: float = 0.1, word_kd_weight: float = 0.0,
                 temperature: float = 1.0):
        if word_kd_weight < 0 or temperature <= 0:
            raise ValueError(f"word_kd_weight must be >= 0 and temperature > 0, got {word_kd_weight} and "
                             f"{temperature}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.label_smoothing = label_smoothing
        self.word_kd_weight, self.temperature = word_kd_weight, temperature

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = (batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"])
        logits = model(*inputs).logits  # (B, T, V)
        hard, nll = label_smoothed_cross_entropy(logits, batch["labels"], self.label_smoothing)
        metrics = {"nll": nll.detach()}
        loss = hard
        if self.word_kd_weight:
            with torch.no_grad():
                teacher_logits = self.teacher(*inputs).logits  # (B, T, V)
            word_kd = word_level_kd(logits, teacher_logits, batch["labels"], self.temperature)
            loss = hard + self.word_kd_weight * word_kd
            metrics["word_kd"] = word_kd.detach()
        return loss, {"loss": loss.detach(), **metrics}
