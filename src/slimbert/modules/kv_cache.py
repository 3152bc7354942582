"""Keys and values kept across decoding steps.

A decoder generating token by token would recompute the keys and values of every earlier
token at every step. A `KVCache` keeps them: self-attention appends the new token's K/V each
step (`update`); cross-attention computes the source's K/V once and reuses them (a static
cache). Beam search reorders every cache with the surviving beams (`reorder`, as fairseq's
`reorder_incremental_state`); a static cache only when sentences leave the batch, since beams
move within their own sentence, whose rows hold the same source.

Notation: B = batch (x beams), N = heads, S = cached tokens, D = head dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class KVCache:
    """K/V of one attention module. `static=False`: appended per step (self-attention);
    `static=True`: set once and reused (cross-attention over a fixed source)."""

    def __init__(self, static: bool = False):
        self.static = static
        self.k: torch.Tensor | None = None  # (B, N, S, D)
        self.v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Tokens held (the position offset of the next self-attention step)."""
        return 0 if self.k is None else self.k.shape[2]

    @property
    def is_set(self) -> bool:
        return self.k is not None

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's (B, N, T, D) keys and values; returns all of them, (B, N, S + T, D).
        A static cache keeps its first K/V and ignores later ones."""
        if self.k is None:
            self.k, self.v = k, v
        elif not self.static:
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (B',): beam search's surviving hypotheses, in their new order."""
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)

    def reset(self) -> None:
        self.k = self.v = None


@dataclass
class LayerCache:
    """The caches of one Transformer layer: its self-attention and, in a decoder, its cross-attention."""

    self_attn: KVCache = field(default_factory=KVCache)
    cross_attn: KVCache = field(default_factory=lambda: KVCache(static=True))

    def reorder(self, index: torch.Tensor, sources: torch.Tensor | None) -> None:
        """Rows `index` of the self-attention K/V; rows `sources` of the cross-attention K/V,
        which depend on the source alone (None: they stay as they are)."""
        self.self_attn.reorder(index)
        if sources is not None:
            self.cross_attn.reorder(sources)


@dataclass
class StackCache:
    """One `LayerCache` per layer of a stack."""

    layers: list[LayerCache]

    @classmethod
    def empty(cls, num_layers: int) -> StackCache:
        return cls([LayerCache() for _ in range(num_layers)])

    @property
    def length(self) -> int:
        """Tokens decoded so far (all layers hold the same number)."""
        return self.layers[0].self_attn.length if self.layers else 0

    def reorder(self, index: torch.Tensor, sources: torch.Tensor | None) -> None:
        """Every layer's caches (see `LayerCache.reorder`)."""
        for layer in self.layers:
            layer.reorder(index, sources)
