"""The Transformer block and the stack of blocks.

A block is given its parts: self-attention, a feed-forward network, a norm for each and, in
a decoder, cross-attention with its norm. An encoder block and a decoder block are the same
class; the decoder's has a causal self-attention and a `cross_attn`.

    post-norm (BERT, Vaswani et al.):  x = LN(x + Drop(Sub(x)))
    pre-norm (Xiong et al. 2020):      x = x + Drop(Sub(LN(x)))

Pre-norm trains more stably without warm-up; a pre-norm stack ends with one more LayerNorm
(`final_norm`) to fix the output scale.

Notation: B = batch, T = tokens, S = source tokens, H = model width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from slimbert.modules.attention import MultiHeadAttention
from slimbert.modules.feedforward import FeedForward
from slimbert.modules.kv_cache import LayerCache, StackCache


class TransformerLayer(nn.Module):
    """attention sub-layer [-> cross-attention sub-layer] -> feed-forward sub-layer."""

    def __init__(self, attn: MultiHeadAttention, attn_norm: nn.Module, ffn: FeedForward, ffn_norm: nn.Module,
                 dropout: float = 0.0, pre_norm: bool = False, cross_attn: MultiHeadAttention | None = None,
                 cross_norm: nn.Module | None = None):
        super().__init__()
        # Registration order = creation order of HF BERT's parameters (q, k, v, out, LN, in, out, LN).
        self.attn, self.attn_norm = attn, attn_norm
        self.cross_attn, self.cross_norm = cross_attn, cross_norm
        self.ffn, self.ffn_norm = ffn, ffn_norm
        self.dropout = nn.Dropout(dropout)  # on every sub-layer's output, before the residual sum
        self.pre_norm = pre_norm

    def _sublayer(self, x: torch.Tensor, norm: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]):
        if self.pre_norm:
            return x + self.dropout(fn(norm(x)))
        return norm(x + self.dropout(fn(x)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                cache: LayerCache | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, H) -> (B, T, H), and the self-attention probabilities when asked for.
        `memory` (B, S, H) is the encoder output a decoder block attends to."""
        probs = None

        def self_attention(h):
            nonlocal probs
            out, probs = self.attn(h, mask=mask, positions=positions,
                                   cache=cache.self_attn if cache is not None else None,
                                   output_attentions=output_attentions)
            return out

        x = self._sublayer(x, self.attn_norm, self_attention)
        if self.cross_attn is not None:
            if memory is None and not (cache is not None and cache.cross_attn.is_set):
                raise ValueError("a decoder layer needs the encoder's memory (or a filled cross-attention cache)")
            x = self._sublayer(x, self.cross_norm, lambda h: self.cross_attn(
                h, kv=memory, mask=memory_mask, cache=cache.cross_attn if cache is not None else None)[0])
        x = self._sublayer(x, self.ffn_norm, self.ffn)
        return x, probs


@dataclass
class StackOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    hidden_states: tuple[torch.Tensor, ...] | None  # the input and every layer's output, L + 1
    attentions: tuple[torch.Tensor | None, ...] | None  # every layer's (B, N, T, S); None if skipped


class TransformerStack(nn.Module):
    """The layers in order, LayerDrop while training, and a final norm for pre-norm stacks.

    With LayerDrop (Fan et al. 2019, https://arxiv.org/abs/1909.11556) each layer is skipped
    with probability `layerdrop` at every training step, so that the model learns to work
    without any of them and layers can be removed for inference at a small cost in accuracy.
    """

    def __init__(self, layers: list[TransformerLayer], final_norm: nn.Module | None = None,
                 layerdrop: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm
        self.layerdrop = layerdrop

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                cache: StackCache | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> StackOutput:
        hidden_states, attentions = [x], []
        n = len(self.layers)
        p = self.layerdrop
        skip = (torch.rand(n) < p).tolist() if self.training and p > 0 else [False] * n
        for i, (layer, skipped) in enumerate(zip(self.layers, skip)):
            if skipped:  # the block is the identity this step; its outputs repeat its input
                hidden_states.append(x)
                attentions.append(None)
                continue
            x, probs = layer(x, mask=mask, positions=positions, memory=memory, memory_mask=memory_mask,
                             cache=cache.layers[i] if cache is not None else None,
                             output_attentions=output_attentions)
            hidden_states.append(x)
            attentions.append(probs)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return StackOutput(x, tuple(hidden_states) if output_hidden_states else None,
                           tuple(attentions) if output_attentions else None)
