"""Dynamic masking for masked-language-model training (Devlin et al. 2019, §3.1; RoBERTa's
dynamic variant, Liu et al. 2019): every time a batch is drawn, a fresh 15% of its real,
non-special tokens are chosen; of those, 80% become [MASK], 10% a random token, and 10% stay
as they are. The model is asked to predict the original token at every chosen position.
There is no next-sentence prediction.

Random draws use torch's global generator, which the Trainer checkpoints, so a resumed run
masks exactly as the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from slimbert.data.batching import IGNORE_INDEX


@dataclass
class MLMMasker:
    mask_id: int  # id of [MASK]
    vocab_size: int  # random replacements are drawn uniformly from the whole vocabulary
    special_ids: Sequence[int]  # [CLS], [SEP], [PAD], ...: never chosen
    probability: float = 0.15  # share of eligible tokens to predict
    mask_share: float = 0.8  # of the chosen: replaced by [MASK]
    random_share: float = 0.1  # of the chosen: replaced by a random token (the rest stay)

    def __post_init__(self) -> None:
        if not 0 < self.probability < 1:
            raise ValueError(f"masking probability must be in (0, 1), got {self.probability}")
        if self.mask_share + self.random_share > 1:
            raise ValueError("mask_share + random_share must be at most 1")

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids -> (masked ids, labels): labels hold the original id at chosen positions
        and IGNORE_INDEX elsewhere."""
        eligible = ~torch.isin(input_ids, torch.tensor(list(self.special_ids), device=input_ids.device))
        if attention_mask is not None:
            eligible &= attention_mask.bool()
        u = torch.rand(input_ids.shape, device=input_ids.device)
        chosen = eligible & (u < self.probability)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        # One more uniform draw splits the chosen positions 80 / 10 / 10.
        v = torch.rand(input_ids.shape, device=input_ids.device)
        to_mask = chosen & (v < self.mask_share)
        to_random = chosen & (v >= self.mask_share) & (v < self.mask_share + self.random_share)
        random_ids = torch.randint(self.vocab_size, input_ids.shape, device=input_ids.device)
        masked = torch.where(to_mask, torch.full_like(input_ids, self.mask_id), input_ids)
        masked = torch.where(to_random, random_ids, masked)
        return masked, labels
