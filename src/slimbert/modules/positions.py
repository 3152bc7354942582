"""Where a token is: learned, sinusoidal and rotary positions.

Absolute positions (learned, as in BERT; sinusoidal, as in Vaswani et al. 2017) are vectors
added to the token embeddings once, at the bottom of the stack. Rotary positions (RoPE, Su et
al. 2021, https://arxiv.org/abs/2104.09864) act inside every attention layer instead: q and k
are rotated by an angle proportional to their position, so the score q_p . k_q depends only on
p - q. Cached decoding passes the absolute positions of the new tokens (offset by the cache
length), so a token gets the same rotation whether it is computed alone or in a full sequence.

Notation: B = batch, T = tokens, N = heads, D = head dim, H = hidden size.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedPositions(nn.Embedding):
    """One trained vector per position (BERT). An `nn.Embedding`, so its weight keeps the
    Hugging Face name `position_embeddings.weight`."""

    def forward(self, positions: torch.Tensor) -> torch.Tensor:  # (B|1, T) -> (B|1, T, H)
        return super().forward(positions)  # a position past the table is an IndexError, as for any id

    def span(self, offset: int, length: int) -> torch.Tensor:
        """The vectors of positions offset .. offset+length-1 -> (1, T, H), a slice of the table."""
        if offset + length > self.num_embeddings:
            raise IndexError(f"position {offset + length - 1} is past the {self.num_embeddings} learned positions")
        return self.weight[offset:offset + length][None]


class SinusoidalPositions(nn.Module):
    """Fixed sines and cosines of geometrically spaced frequencies (Vaswani et al. 2017):
    PE[p, 2i] = sin(p / 10000^(2i/H)), PE[p, 2i+1] = cos(p / 10000^(2i/H)). No parameters; any
    length works."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.dim = dim
        inv_freq = torch.exp(-math.log(base) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (H/2,)

        self._table: torch.Tensor | None = None  # (P, H) PE of positions 0..P-1, made by span()

    def forward(self, positions: torch.Tensor) -> torch.Tensor:  # (B|1, T) -> (B|1, T, H)
        angles = positions.float()[..., None] * self.inv_freq  # (B|1, T, H/2)
        pe = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # interleaved sin, cos
        return pe[..., :self.dim]

    def span(self, offset: int, length: int) -> torch.Tensor:
        """PE of positions offset .. offset+length-1 -> (1, T, H), sliced from a table that is
        computed once and doubled when a longer span is asked for. A decoder taking one token
        per step then pays for an indexing, not for sines and cosines, and every position gets
        the same vector whichever span it is read in."""
        end = offset + length
        table = self._table
        if table is None or table.shape[0] < end or table.device != self.inv_freq.device:
            size = max(end, 2 * table.shape[0] if table is not None else 0, 128)
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor, even when made while decoding
                table = self._table = self(torch.arange(size, device=self.inv_freq.device)[None])[0]
        return table[offset:end][None]


class RotaryEmbedding(nn.Module):
    """Rotates pairs of q/k features (i, i + D/2) by angle p * theta_i, theta_i = base^(-2i/D)
    (the "rotate half" layout of GPT-NeoX and Llama). No parameters."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head dim, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (D/2,)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (B, N, T, D) at `positions` (B|1, T) -> x rotated, same shape and dtype."""
        angles = positions.float()[:, None, :, None] * self.inv_freq  # (B|1, 1, T, D/2)
        cos, sin = angles.cos(), angles.sin()
        x1, x2 = x.float().chunk(2, dim=-1)  # (B, N, T, D/2) each
        rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
        return rotated.to(x.dtype)
