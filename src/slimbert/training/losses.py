"""Losses as small pure functions. Shapes: B = batch, C = classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hard_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against gold class indices. logits (B, C), labels (B,) long."""
    return F.cross_entropy(logits.float(), labels)


def regression_mse(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a 1-output regressor. predictions (B, 1) or (B,), targets (B,)."""
    return F.mse_loss(predictions.float().view(-1), targets.float().view(-1))
