"""Sources of training batches: what the Trainer iterates over, and where a run resumes.

A source cuts its data into optimizer steps, each a list of micro-batches (one per gradient
accumulation step), and keeps its position in them. Its state is that position: the Trainer
saves it with every checkpoint and hands it back on resume, and the source then goes straight
to the next step, without producing (reading, collating) the ones before it. In-memory data
(`BucketedBatches`) and packed or streamed corpora are sources alike; a stream that has no
epochs says so with `steps_per_epoch = None` and is run for a number of steps.

The protocol follows torchdata's stateful iterables (`state_dict` / `load_state_dict`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from slimbert.data.batching import Batch, EncodedDataset, collate, length_bucketed_batches
from slimbert.errors import CheckpointError, ConfigError

Step = list[Batch]  # the micro-batches of one optimizer step


class BatchSource(Protocol):
    @property
    def steps_per_epoch(self) -> int | None:
        """Optimizer steps in every epoch; None for an unbounded stream."""
        ...

    def epoch_batches(self, epoch: int) -> Iterator[Step]:
        """The steps of `epoch` (0-based), produced lazily. Right after `load_state_dict`, the
        epoch of the saved position starts at the saved step; every other call starts at 0."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The position: enough to produce the next step and everything after it exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...


class BucketedBatches:
    """An in-memory `EncodedDataset` in length-bucketed, shuffled micro-batches (see
    `length_bucketed_batches`), `grad_accum` of them per optimizer step, padded on demand.

    The order depends only on (seed, epoch), so the position is just (epoch, step). With
    several processes each takes its share of every epoch, at the same position on every rank.
    """

    def __init__(self, data: EncodedDataset, batch_size: int, grad_accum: int = 1, seed: int = 42,
                 pad_id: int = 0, rank: int = 0, world: int = 1,
                 collate_fn: Callable[[Any, list[int], int], Batch] | None = None):
        if batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {batch_size}")
        if grad_accum < 1:
            raise ConfigError(f"grad_accum: must be at least 1, got {grad_accum}")
        self.data = data
        self.batch_size, self.grad_accum, self.seed, self.pad_id = batch_size, grad_accum, seed, pad_id
        self.rank, self.world = rank, world
        # How a batch is padded: `collate` for an EncodedDataset; other data (a parallel corpus)
        # brings its own, and needs only `lengths` for the buckets.
        self.collate_fn = collate_fn
        self.epoch, self.step = 0, 0  # the position: steps of `epoch` handed out so far
        self._resuming = False
        self._fingerprint: str | None = None
        # Windows and batches are cut at the same boundaries every epoch, only their contents
        # change, so every epoch has as many steps as the first.
        self._steps_per_epoch = len(self.epoch_steps(0))

    @property
    def steps_per_epoch(self) -> int:
        return self._steps_per_epoch

    def epoch_steps(self, epoch: int) -> list[list[list[int]]]:
        """The optimizer steps of an epoch, each a list of micro-batches of example indices."""
        batches = length_bucketed_batches(self.data.lengths, self.batch_size, self.seed, epoch,
                                          num_replicas=self.world, rank=self.rank)
        k = self.grad_accum
        return [batches[i:i + k] for i in range(0, len(batches), k)]

    def epoch_batches(self, epoch: int) -> Iterator[Step]:
        start = self.step if self._resuming and epoch == self.epoch else 0
        self._resuming = False
        self.epoch, self.step = epoch, start
        return self._produce(self.epoch_steps(epoch)[start:])

    def _produce(self, steps: list[list[list[int]]]) -> Iterator[Step]:
        for micro_batches in steps:
            pad = self.collate_fn or collate
            step = [pad(self.data, indices, self.pad_id) for indices in micro_batches]
            # Counted when handed out: once the consumer is done with it, the position is past it.
            self.step += 1
            yield step

    def fingerprint(self) -> str | None:
        """A digest of the examples and labels (see `data_fingerprint`); None for data that is
        not an EncodedDataset. The Trainer records it, and --resume refuses other data."""
        if self._fingerprint is None and isinstance(self.data, EncodedDataset):
            self._fingerprint = data_fingerprint(self.data)
        return self._fingerprint

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "steps_per_epoch": self.steps_per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = self.state_dict()
        if set(state) != set(expected) or any(type(state[k]) is not type(v) for k, v in expected.items()):
            raise CheckpointError(f"the saved data position {_shown(state)} does not have the fields "
                                  f"{', '.join(expected)} (integers)")
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointError(f"the run was saved at {state['steps_per_epoch']} steps per epoch, this "
                                  f"data gives {self.steps_per_epoch}: resume with the same data, batch "
                                  "size, accumulation and number of processes")
        self.epoch, self.step = state["epoch"], state["step"]
        self._resuming = True


def data_fingerprint(data: EncodedDataset) -> str:
    """A short digest of a dataset as encoded: every example's token and segment ids, in order,
    and its label (with the labels' dtype, so classes and regression targets differ)."""
    h = hashlib.sha256()
    lengths = np.asarray(data.lengths, dtype=np.int64)
    h.update(lengths.tobytes())
    for sequences in (data.input_ids, data.token_type_ids):
        h.update(np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64).tobytes())
    if data.labels is not None:
        h.update(str(data.labels.dtype).encode())
        h.update(data.labels.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _shown(state: Any) -> str:
    text = repr(state)
    return text if len(text) <= 80 else text[:77] + "..."
