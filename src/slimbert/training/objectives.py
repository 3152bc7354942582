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
from slimbert.training.losses import hard_cross_entropy, regression_mse


class Objective(Protocol):
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

    masker: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = model_inputs(batch)
        inputs["input_ids"], labels = self.masker(inputs["input_ids"], inputs.get("attention_mask"))
        masked = labels != IGNORE_INDEX  # (B, T)
        logits = model(**inputs, masked_positions=masked).logits  # (M, V)
        loss = hard_cross_entropy(logits, labels[masked])
        return loss, {"loss": loss.detach()}
