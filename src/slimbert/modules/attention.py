"""Multi-head attention, self or cross, with masks, rotary positions and a KV cache.

The module is given its four projections (composition, as torchtune's `MultiHeadAttention`),
so a model decides their shapes (pruned heads, narrower inner width) and their names stay the
model's own. The same module serves an encoder (self-attention under a padding mask), a
decoder (causal self-attention with a cache) and cross-attention (queries from the decoder,
keys and values from the encoder's memory, computed once per source).

Masks are boolean, True where a query may attend to a key, broadcast to (B, N, Tq, Tk):
`padding_mask` gives (B, 1, 1, Tk), `causal_mask` (1, 1, Tq, Tk); `combine_masks` ANDs them.

Scaling: `scale_kind="sqrt"` is the usual 1/sqrt(D); `"log_n"` is the entropy-invariant scale
log(n)/log(512) * 1/sqrt(D) (Chiang & Cholak 2022, https://arxiv.org/abs/2202.12172; Su 2021),
n = the number of keys each query row may attend to: its real (unmasked) keys, so in a padded
batch every row uses its own sequence's length and a causal row t its t+1 keys. At n = 512 it
equals 1/sqrt(D); it keeps the attention entropy from growing with the length.

Notation: B = batch, T = query tokens, S = key tokens (cached + new), N = heads in this
layer, D = head dim, H = model width.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimbert.modules.kv_cache import KVCache
from slimbert.modules.positions import RotaryEmbedding


def padding_mask(attention_mask: torch.Tensor | None, drop_if_unpadded: bool = True) -> torch.Tensor | None:
    """(B, S) 1/0 mask -> (B, 1, 1, S) boolean mask (True = may attend).

    Returns None when nothing is padded, which lets SDPA take its fastest kernel. That check
    reads the mask on the host (a device sync); `drop_if_unpadded=False` skips it, as training
    does, where nearly every dynamically padded batch has padding anyway. Under
    torch.compile/torch.export the mask is always kept: the check would depend on the data.
    """
    if attention_mask is None:
        return None
    if drop_if_unpadded and not torch.compiler.is_compiling() and bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def causal_mask(num_queries: int, num_keys: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, 1, T, S): query t (the last T of S positions) sees keys 0..S-T+t, never later ones."""
    offset = num_keys - num_queries  # tokens already in the cache
    q = torch.arange(num_queries, device=device)[:, None] + offset
    k = torch.arange(num_keys, device=device)[None, :]
    return (k <= q)[None, None]


ScaleKind = Literal["sqrt", "log_n"]
LOG_N_REFERENCE = 512  # the length at which the log_n scale equals 1/sqrt(D)


def key_counts(mask: torch.Tensor | None, num_queries: int, num_keys: int, causal: bool = False,
               device: torch.device | None = None) -> torch.Tensor:
    """How many keys each query row may attend to: (B|1, 1, T|1, 1) float, at least 1.

    `mask` is the boolean (B|1, 1|N, 1|T, S) mask (True = may attend), or None for all S keys;
    with `causal`, query t (the last T of S) sees S - T + t + 1 keys."""
    allowed = combine_masks(mask, causal_mask(num_queries, num_keys, device) if causal else None)
    if allowed is None:
        return torch.full((1, 1, 1, 1), float(num_keys), device=device)
    return allowed.sum(dim=-1, keepdim=True).clamp(min=1).float()  # (B|1, 1|N, T|1, 1)


def log_n_factor(counts: torch.Tensor) -> torch.Tensor:
    """log(n) / log(512): the factor of the entropy-invariant scale on top of 1/sqrt(D)."""
    return counts.log() / math.log(LOG_N_REFERENCE)


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """The AND of the masks given (None = no constraint)."""
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out


class MultiHeadAttention(nn.Module):
    """softmax(q k^T * scale + mask) v over N heads, then the output projection.

    Runs through `F.scaled_dot_product_attention` (fused kernels on CPU and CUDA). SDPA does
    not return the attention map, so when it is asked for (distillation, analysis) the same
    maths runs explicitly.
    """

    def __init__(self, q_proj: nn.Linear, k_proj: nn.Linear, v_proj: nn.Linear, out_proj: nn.Linear,
                 num_heads: int, head_dim: int, dropout: float = 0.0, causal: bool = False,
                 rope: RotaryEmbedding | None = None, scale: float | None = None,
                 scale_kind: ScaleKind = "sqrt"):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = q_proj, k_proj, v_proj, out_proj
        self.num_heads = num_heads  # may be fewer than the model's heads after pruning
        self.head_dim = head_dim
        self.dropout = dropout  # on the attention probabilities, while training
        self.causal = causal  # a query never sees later keys (decoder self-attention)
        self.rope = rope  # rotary positions on q and k (self-attention only)
        self.scale = scale  # None: 1/sqrt(D)
        if scale_kind not in ("sqrt", "log_n"):
            raise ValueError(f"scale_kind must be 'sqrt' or 'log_n', got '{scale_kind}'")
        self.scale_kind = scale_kind  # "log_n": scores further times log(n)/log(512), n = keys seen

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        B, T, _ = t.shape
        return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, N, T, D)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, cache: KVCache | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, H) attends to itself, or to `kv` (B, S, H) for cross-attention.

        `mask`: boolean, broadcastable to (B, N, T, S), True = may attend; for self-attention
        with a cache it covers the cached keys too. `positions` (B|1, T): the tokens' absolute
        positions for rotary embeddings (default: after the cached ones). Returns the output
        (B, T, H) and, with `output_attentions`, the probabilities (B, N, T, S).
        """
        B, T, _ = x.shape
        q = self._split(self.q_proj(x))  # (B, N, T, D)
        past = cache.length if cache is not None and not cache.static else 0
        if cache is not None and cache.static and cache.is_set:
            k, v = cache.k, cache.v  # cross-attention: the source's K/V, computed at the first step
        else:
            source = x if kv is None else kv
            k, v = self._split(self.k_proj(source)), self._split(self.v_proj(source))  # (B, N, S_new, D)
            if self.rope is not None and kv is None:
                if positions is None:
                    positions = torch.arange(past, past + T, device=x.device)[None]  # (1, T)
                q, k = self.rope(q, positions), self.rope(k, positions)
            if cache is not None:
                k, v = cache.update(k, v)  # (B, N, S, D)
        S = k.shape[2]
        is_causal = self.causal and mask is None and past == 0 and T == S and not output_attentions
        if self.causal and not is_causal and T > 1:  # one query is the last position: it sees every key
            mask = combine_masks(mask, causal_mask(T, S, x.device))
        dropout_p = self.dropout if self.training else 0.0
        if self.scale_kind == "log_n":
            # The per-row factor goes on q, so SDPA still runs with its plain scale.
            counts = key_counts(mask, T, S, causal=self.causal, device=x.device)  # (B|1, 1|N, T|1, 1)
            q = q * log_n_factor(counts).to(q.dtype)
        if not output_attentions:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                                     is_causal=is_causal, scale=self.scale)
            probs = None
        else:
            scale = self.scale if self.scale is not None else 1 / math.sqrt(self.head_dim)
            scores = q @ k.transpose(-1, -2) * scale  # (B, N, T, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            context = F.dropout(probs, dropout_p, self.training) @ v  # (B, N, T, D)
        context = context.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)  # (B, T, N*D)
        return self.out_proj(context), probs
