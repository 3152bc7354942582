"""The gated attention unit (GAU) of FLASH (Hua et al. 2022, "Transformer Quality in Linear
Time", https://arxiv.org/abs/2202.10447, §2).

One GAU replaces a Transformer block's attention *and* feed-forward sub-layers:

    U = act(X W_u)   V = act(X W_v)      (B, T, E)   E = expansion (2 H in the paper)
    Z = act(X W_z)                       (B, T, S')  S' = shared query/key width (128)
    Q = Z * gamma_q + beta_q,  K = Z * gamma_k + beta_k   (per-dim scale and offset)
    A = relu(Q K^T / sqrt(S'))^2 / n     (B, T, S)   n = the real keys of each query row
    O = (U * (A V)) W_o                  (B, T, H)

The variant implemented is the paper's squared-ReLU attention with the 1/n normalisation, with
scores divided by sqrt(S') first (as in the paper's Eq. 4 reading by Su 2022) and n counted per
query row over the keys it may attend to, so a padded sequence computes exactly what the same
sequence unpadded does. There is no softmax and one "head". Positions: the paper's relative
position bias is not used; positions come from the model's embeddings (learned/sinusoidal) or
from rotary embeddings on Q and K (`rope`), as FLASH also does. `act` is SiLU, as in the paper.

`GAULayer` wraps the unit in the residual and the norm, post- or pre-norm like
`TransformerLayer`, with the same call signature so a `TransformerStack` can hold either.

Notation: B = batch, T = query tokens, S = key tokens, H = model width, E = expansion width,
S' = query/key width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from slimbert.modules.attention import causal_mask, combine_masks, key_counts
from slimbert.modules.positions import RotaryEmbedding


class GatedAttentionUnit(nn.Module):
    """The GAU, given its four projections (u, v: H -> E; z: H -> S'; out: E -> H)."""

    def __init__(self, u_proj: nn.Linear, v_proj: nn.Linear, z_proj: nn.Linear, out_proj: nn.Linear,
                 dropout: float = 0.0, causal: bool = False, rope: RotaryEmbedding | None = None):
        super().__init__()
        self.u_proj, self.v_proj, self.z_proj, self.out_proj = u_proj, v_proj, z_proj, out_proj
        key_size = z_proj.out_features
        # Per-dim scale and offset turning the shared Z into Q (row 0) and K (row 1); the
        # paper initialises the scales N(0, 0.02) and the offsets at zero.
        self.gamma = nn.Parameter(torch.randn(2, key_size) * 0.02)
        self.beta = nn.Parameter(torch.zeros(2, key_size))
        self.dropout = dropout  # on the attention weights A, while training
        self.causal = causal  # a query never sees later keys
        self.rope = rope  # rotary positions on Q and K

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, H) -> (B, T, H), and A (B, 1, T, T) with `output_attentions`.

        `mask`: boolean, broadcastable to (B, 1, T, T), True = may attend (as for
        MultiHeadAttention). `positions` (B|1, T): absolute positions for rotary embeddings."""
        B, T, _ = x.shape
        u = F.silu(self.u_proj(x))  # (B, T, E)
        v = F.silu(self.v_proj(x))  # (B, T, E)
        z = F.silu(self.z_proj(x))  # (B, T, S')
        qk = z[:, :, None, :] * self.gamma + self.beta  # (B, T, 2, S')
        q, k = qk[:, :, 0], qk[:, :, 1]  # (B, T, S') each
        if self.rope is not None:
            if positions is None:
                positions = torch.arange(T, device=x.device)[None]  # (1, T)
            # RotaryEmbedding works on (B, N, T, D): one "head" here.
            q, k = self.rope(q[:, None], positions)[:, 0], self.rope(k[:, None], positions)[:, 0]
        mask = combine_masks(mask, causal_mask(T, T, x.device) if self.causal else None)
        n = key_counts(mask, T, T, device=x.device)[:, 0]  # (B|1, T|1, 1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, T, T)
        a = F.relu(scores).square() / n.to(scores.dtype)  # (B, T, T)
        if mask is not None:
            a = a.masked_fill(~mask[:, 0], 0.0)  # masked keys weigh nothing
        a = F.dropout(a, self.dropout, self.training)
        out = self.out_proj(u * (a @ v))  # (B, T, E) -> (B, T, H)
        return out, a[:, None] if output_attentions else None


class GAULayer(nn.Module):
    """One GAU sub-layer with its residual and norm: the whole block of a GAU model.

        post-norm: x = LN(x + Drop(GAU(x)))      pre-norm: x = x + Drop(GAU(LN(x)))
    """

    def __init__(self, gau: GatedAttentionUnit, norm: nn.Module, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.gau, self.norm = gau, norm
        self.dropout = nn.Dropout(dropout)  # on the unit's output, before the residual sum
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                cache: object | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, H) -> (B, T, H), and A with `output_attentions`. A GAU block is an encoder
        block: no cross-attention memory, no KV cache."""
        if memory is not None or cache is not None:
            raise ValueError("a GAU layer has no cross-attention and no KV cache")
        if self.pre_norm:
            out, a = self.gau(self.norm(x), mask, positions, output_attentions)
            return x + self.dropout(out), a
        out, a = self.gau(x, mask, positions, output_attentions)
        return self.norm(x + self.dropout(out)), a
