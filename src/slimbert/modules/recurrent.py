"""Recurrent encoders for padded batches: the BiLSTM student's encoder, and a seq2seq LSTM's.

Notation: B = batch, T = tokens, E = input width, H = units per direction, L = layers,
K = directions (2 when bidirectional).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (L * K, B, H)


class PackedLSTM(nn.LSTM):
    """An `nn.LSTM` (batch first) that reads right-padded batches.

    With a mask the batch is packed, so padding never enters the recurrence: the backward
    direction starts at each sentence's last real token, not at the last pad, and the final
    state is each sentence's own. Its parameters keep `nn.LSTM`'s names. A decoder passes the
    returned state back in to continue token by token (the recurrent counterpart of a KV cache).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0):
        super().__init__(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                         bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                state: State | None = None) -> tuple[torch.Tensor, State]:
        """x (B, T, E), mask (B, T) 1 = real -> outputs (B, T, K*H) (zeros at padding), final state."""
        if mask is None:
            return super().forward(x, state)
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = super().forward(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, T, K*H)
        return out, state

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One time step of a unidirectional LSTM: x (B, 1, E), state (L, B, H) each -> output
        (B, 1, H) and the next state; the same function as `forward` on a one-token sequence.

        It runs one LSTM cell per layer. A decoder steps once per token, and `nn.LSTM`'s fused
        kernel (oneDNN's on CPU) costs far more per call than one step's arithmetic."""
        if self.bidirectional:
            raise ValueError("a bidirectional LSTM reads whole sequences; step() is for decoders")
        h, c = state
        out, hs, cs = x[:, 0], [], []
        for layer in range(self.num_layers):
            if layer and self.training and self.dropout:  # nn.LSTM's dropout between layers
                out = nn.functional.dropout(out, self.dropout, training=True)
            weights = [getattr(self, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h_l, c_l = torch.lstm_cell(out, (h[layer], c[layer]), *weights)
            hs.append(h_l)
            cs.append(c_l)
            out = h_l
        return out[:, None], (torch.stack(hs), torch.stack(cs))


def merge_directions(state: State, num_layers: int) -> State:
    """A bidirectional encoder's final (h, c), (L*2, B, H), as (L, B, 2H): forward and backward
    side by side, the usual start state for a decoder twice as wide."""
    h, c = state
    return tuple(s.view(num_layers, 2, *s.shape[1:]).transpose(1, 2).flatten(2).contiguous() for s in (h, c))
