"""Dynamic masking for masked-language-model training (Devlin et al. 2019, §3.1; RoBERTa's
dynamic variant, Liu et al. 2019): every time a batch is drawn, a fresh 15% of its real,
non-special tokens are chosen; of those, 80% become [MASK], 10% a random token, and 10% stay
as they are. The model is asked to predict the original token at every chosen position.
There is no next-sentence prediction.

`MLMMasker` draws from torch's global generator, which the Trainer checkpoints, so a resumed
run masks exactly as the uninterrupted one would have. `SampleMasker` makes the mask of a
sequence a pure function of (seed, epoch, sample index), as fairseq's MaskTokensDataset does:
every process, and every resumed or re-sharded run, masks a sample identically, whichever
batch or rank it lands in. It also offers whole-word masking (Google's BERT release, 2019): the
WordPiece pieces of a word (`##` continuations) are chosen together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from slimbert.data.batching import IGNORE_INDEX
from slimbert.tokenizer import Tokenizer


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
        random_ids = torch.randint(self.vocab_size, input_ids.shape, device=input_ids.device)
        masked = replace_chosen(input_ids, chosen, v, random_ids, self.mask_id, self.mask_share,
                                self.random_share)
        return masked, labels


def replace_chosen(input_ids: torch.Tensor, chosen: torch.Tensor, v: torch.Tensor, random_ids: torch.Tensor,
                   mask_id: int, mask_share: float, random_share: float) -> torch.Tensor:
    """The 80/10/10 rule: a chosen token whose uniform draw `v` is below `mask_share` becomes
    [MASK], one below `mask_share + random_share` becomes its `random_ids` entry, the rest stay."""
    to_mask = chosen & (v < mask_share)
    to_random = chosen & (v >= mask_share) & (v < mask_share + random_share)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    return torch.where(to_random, random_ids, masked)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for sample `index` in `epoch` of a run seeded `seed` (a hash, so nearby
    triples give unrelated streams)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass
class SampleMasker:
    """Dynamic masking whose draws depend only on (seed, epoch, sample index).

    Each sample gets its own generator, seeded from that triple (fairseq's `numpy_seed((seed,
    epoch, index))`): the same sample is masked afresh in every epoch, and identically in a
    resumed run or with any number of processes. 15% of the eligible tokens are chosen (all
    but the special ones), then split 80/10/10 as `MLMMasker` does. With `continuation` given
    ((V,) bool, True for `##` pieces), whole words are chosen: a word's pieces share the draw
    of its first piece; the 80/10/10 split stays per token, as in Google's release.
    """

    mask_id: int  # id of [MASK]
    vocab_size: int  # random replacements are drawn uniformly from the whole vocabulary
    special_ids: Sequence[int]  # [CLS], [SEP], [PAD], ...: never chosen
    probability: float = 0.15  # share of eligible tokens (or words) to predict
    mask_share: float = 0.8  # of the chosen: replaced by [MASK]
    random_share: float = 0.1  # of the chosen: replaced by a random token (the rest stay)
    seed: int = 0  # the run's seed
    continuation: torch.Tensor | None = None  # (V,) bool, True for "##" pieces: whole-word masking

    def __post_init__(self) -> None:
        if not 0 < self.probability < 1:
            raise ValueError(f"masking probability must be in (0, 1), got {self.probability}")
        if self.mask_share + self.random_share > 1:
            raise ValueError("mask_share + random_share must be at most 1")
        self._special = torch.tensor(sorted(set(self.special_ids)))

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, probability: float = 0.15, whole_word: bool = False,
                      seed: int = 0) -> SampleMasker:
        continuation = None
        if whole_word:
            continuation = torch.zeros(len(tokenizer), dtype=torch.bool)
            continuation[[i for t, i in tokenizer.vocab.items() if t.startswith("##")]] = True
        return cls(tokenizer.mask_id, len(tokenizer), tokenizer.special_ids, probability, seed=seed,
                   continuation=continuation)

    def __call__(self, input_ids: torch.Tensor, epoch: int, indices: Sequence[int]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids of the samples `indices` of `epoch` -> (masked ids, labels): labels hold the
        original id at chosen positions and IGNORE_INDEX elsewhere."""
        B, T = input_ids.shape
        u, v = torch.empty(B, T), torch.empty(B, T)
        random_ids = torch.empty(B, T, dtype=torch.long)
        for row, index in enumerate(indices):
            g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, int(index)))
            u[row] = torch.rand(T, generator=g)
            v[row] = torch.rand(T, generator=g)
            random_ids[row] = torch.randint(self.vocab_size, (T,), generator=g)
        eligible = ~torch.isin(input_ids, self._special)  # (B, T)
        if self.continuation is not None:
            # A word starts at a piece that is no continuation, or that follows a special token
            # (a sequence may begin mid-word); its later pieces take the draw at its start.
            after_special = torch.cat([torch.ones(B, 1, dtype=torch.bool), ~eligible[:, :-1]], dim=1)
            starts = eligible & (~self.continuation[input_ids] | after_special)
            positions = torch.arange(T).expand(B, T)
            start_of_word = torch.where(starts, positions, torch.zeros_like(positions)).cummax(dim=1).values
            u = u.gather(1, start_of_word)  # (B, T)
        chosen = eligible & (u < self.probability)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        masked = replace_chosen(input_ids, chosen, v, random_ids, self.mask_id, self.mask_share,
                                self.random_share)
        return masked, labels
