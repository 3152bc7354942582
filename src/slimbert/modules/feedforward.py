"""The position-wise feed-forward network: H -> I -> H with a non-linearity between.

Given its two projections, so a pruned layer simply holds narrower ones (I is per layer).

Notation: B = batch, T = tokens, H = model width, I = inner width.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),  # exact erf GELU, as in the original BERT
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
    "silu": lambda: nn.SiLU(),
}


def activation(name: str) -> nn.Module:
    """The activation module of a config's `hidden_act`."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class FeedForward(nn.Module):
    """fc_out(act(fc_in(x)))."""

    def __init__(self, fc_in: nn.Linear, fc_out: nn.Linear, act: nn.Module):
        super().__init__()
        self.fc_in, self.fc_out, self.act = fc_in, fc_out, act

    @property
    def width(self) -> int:
        """Inner neurons I of this layer (fewer after neuron pruning)."""
        return self.fc_in.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, T, H)
        return self.fc_out(self.act(self.fc_in(x)))  # inner: (B, T, I)
