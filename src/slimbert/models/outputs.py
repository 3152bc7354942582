"""The one output type every slimbert model returns, so losses can match any pair of models."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelOutput:
    """What a forward pass returns. Fields a model does not produce stay None.

    logits:            (B, C) for classification/regression heads, (B, T, V) for MLM heads
    last_hidden_state: (B, T, H) the encoder's final token representations
    pooler_output:     (B, H) the pooled [CLS] representation (or a student's sentence vector)
    hidden_states:     L+1 tensors (B, T, H): embeddings, then every layer (on request)
    attentions:        L tensors (B, heads, T, T): attention probabilities (on request)
    attention_mask:    (B, T) the padding mask the model used (1 = real token)
    """

    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    attention_mask: torch.Tensor | None = None
