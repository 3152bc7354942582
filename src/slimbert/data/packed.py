"""The batch source of pretraining: packed corpus sequences, shuffled, masked, split over processes.

Every optimizer step takes the next `global_batch` samples of the epoch's order (a permutation
drawn from (seed, epoch)); process r of W takes the r-th contiguous slice of them and cuts it
into its micro-batches. The position is therefore one number that does not depend on how many
processes there are: the samples of the epoch handed out so far. A run resumes by jumping
straight to that sample, reading nothing before it, on any number of processes that keep the
global batch (Mosaic streaming's elastic resumption; Hugging Face's and Cramming's loaders
replay or restart their data). Masks are drawn per sample from (seed, epoch, index)
(`SampleMasker`), so they too are the same whatever the split. Every process does the same
number of steps: an epoch is `num_samples // global_batch` steps, the rest of the order waits
for the next epoch's shuffle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import torch

from slimbert.data.batch_sources import Step
from slimbert.data.corpus import TokenCorpus
from slimbert.data.masking import SampleMasker
from slimbert.errors import CheckpointError, ConfigError, DataError
from slimbert.io import file_sha256


class PackedMLMBatches:
    """Masked-LM steps over the packed sequences of a `TokenCorpus`.

    Batches hold `input_ids` (masked) and `labels` (the original id at masked positions,
    IGNORE_INDEX elsewhere), (B, L) each; no attention mask, since nothing is padded.
    """

    elastic = True  # resumable on another number of processes, at the same global batch

    def __init__(self, corpus: TokenCorpus, seq_length: int, batch_size: int, grad_accum: int,
                 masker: SampleMasker, seed: int = 42, rank: int = 0, world: int = 1):
        for name, value in (("seq_length", seq_length), ("batch_size", batch_size),
                            ("grad_accum", grad_accum)):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        self.corpus, self.seq_length, self.masker, self.seed = corpus, seq_length, masker, seed
        self.batch_size, self.grad_accum, self.rank, self.world = batch_size, grad_accum, rank, world
        self.global_batch = batch_size * grad_accum * world  # sequences per optimizer step, all processes
        self.num_samples = corpus.num_samples(seq_length)
        self._steps = self.num_samples // self.global_batch
        if self._steps == 0:
            raise DataError(f"the corpus gives {self.num_samples} sequences of {seq_length} tokens, fewer "
                            f"than one step of {self.global_batch}; give more text or a smaller batch")
        self.epoch, self.sample = 0, 0  # the position: samples of `epoch` handed out, all processes
        self._resuming = False
        self._fingerprint: str | None = None

    @property
    def steps_per_epoch(self) -> int:
        return self._steps

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_length

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's permutation of the samples: a function of (seed, epoch) only."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=g)

    def step_indices(self, epoch: int, step: int, order: torch.Tensor | None = None) -> list[torch.Tensor]:
        """This process's micro-batches of `step`, as sample indices."""
        order = self.order(epoch) if order is None else order
        share = self.batch_size * self.grad_accum
        base = step * self.global_batch + self.rank * share
        return [order[base + j * self.batch_size: base + (j + 1) * self.batch_size]
                for j in range(self.grad_accum)]

    def epoch_batches(self, epoch: int) -> Iterator[Step]:
        start = self.sample // self.global_batch if self._resuming and epoch == self.epoch else 0
        self._resuming = False
        self.epoch, self.sample = epoch, start * self.global_batch
        return self._produce(epoch, start)

    def _produce(self, epoch: int, start: int) -> Iterator[Step]:
        order = self.order(epoch)
        for step in range(start, self._steps):
            micro_batches = []
            for indices in self.step_indices(epoch, step, order):
                ids = torch.from_numpy(self.corpus.samples(indices.tolist(), self.seq_length))  # (B, L)
                masked, labels = self.masker(ids, epoch, indices.tolist())
                micro_batches.append({"input_ids": masked, "labels": labels})
            # Counted when handed out: once the consumer is done with it, the position is past it.
            self.sample = (step + 1) * self.global_batch
            yield micro_batches

    def fingerprint(self) -> str:
        """What the data is (checked on resume): a digest of every shard's token ids, in order.
        It follows the text and the vocabulary, not the files' paths or times, so a run resumes
        on a copy of its corpus elsewhere; the shards are read once (about 0.1 s per 50 MB)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for shard in self.corpus.shards:
                digest.update(json.dumps([shard.tokens, shard.documents]).encode())
                digest.update(file_sha256(shard.path).digest())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "sample": self.sample, "global_batch": self.global_batch,
                "num_samples": self.num_samples, "seq_length": self.seq_length}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seq_length", "num_samples", "global_batch"):
            if state.get(key) != getattr(self, key):
                raise CheckpointError(
                    f"the run was saved with {key}={state.get(key)}, this one has {getattr(self, key)}: "
                    "resume with the same corpus, vocabulary and sequence length, and a global batch (batch "
                    "size x accumulation x processes) equal to the saved one")
        self.epoch, self.sample = state["epoch"], state["sample"]
        self._resuming = True
