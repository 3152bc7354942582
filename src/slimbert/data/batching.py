"""From examples to padded batches.

Texts are tokenized once, in one batched call. Each batch is padded only to its own longest
sequence (dynamic padding), and batches are drawn from buckets of similar length, which cuts the
padding tokens, and so the wasted compute, several times over against random batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

from slimbert.data.readers import Example
from slimbert.tokenizer import Tokenizer

IGNORE_INDEX = -100  # label of examples/tokens without a gold target (augmented examples, unmasked tokens)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the batch keys a model's forward takes

Batch = dict[str, torch.Tensor]  # (B, T) input tensors, plus the targets of the examples


def model_inputs(batch: Batch) -> dict[str, torch.Tensor]:
    """The keys of a batch that a model's forward takes."""
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


@dataclass
class EncodedDataset:
    """Token ids per example (unpadded) and the targets."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: torch.Tensor | None  # (N,) long for classes, float for regression
    # (N, C) teacher logits, computed once for a distillation transfer set (None otherwise)
    teacher_logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def encode_examples(examples: Sequence[Example], tokenizer: Tokenizer, max_length: int = 128,
                    regression: bool = False) -> EncodedDataset:
    texts = [e.text for e in examples]
    has_pairs = examples[0].text_pair is not None if examples else False
    pairs = [e.text_pair or "" for e in examples] if has_pairs else None
    enc = tokenizer.encode(texts, pairs, max_length=max_length)
    labels = None
    if any(e.label is not None for e in examples):
        # Unlabelled examples (augmented ones) get a target every loss knows to skip.
        missing = float("nan") if regression else IGNORE_INDEX
        dtype = torch.float32 if regression else torch.long
        labels = torch.tensor([missing if e.label is None else e.label for e in examples], dtype=dtype)
    return EncodedDataset(enc.input_ids, enc.token_type_ids, labels)


def collate(data: EncodedDataset, indices: Sequence[int], pad_id: int) -> Batch:
    """Pad the examples at `indices` to their longest sequence. Returns (B, T) tensors (+ labels)."""
    lengths = torch.tensor([len(data.input_ids[i]) for i in indices])  # (B,)
    input_ids = pad_sequence([torch.tensor(data.input_ids[i]) for i in indices], batch_first=True,
                             padding_value=pad_id)  # (B, T)
    token_type_ids = pad_sequence([torch.tensor(data.token_type_ids[i]) for i in indices], batch_first=True)
    attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()  # (B, T)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    if data.labels is not None:
        batch["labels"] = data.labels[list(indices)]
    if data.teacher_logits is not None:
        batch["teacher_logits"] = data.teacher_logits[list(indices)]
    return batch


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                            shuffle: bool = True, bucket_batches: int = 50,
                            num_replicas: int = 1, rank: int = 0) -> list[list[int]]:
    """The batches of one epoch, as lists of example indices.

    Shuffle, cut into windows of `bucket_batches * batch_size` examples, sort each window by
    length, cut it into batches, and shuffle the batch order: batches hold similar lengths but
    the epoch stays random. The order depends only on (seed, epoch), so a resumed run sees the
    same batches. With several processes, each takes every `num_replicas`-th batch (the count is
    trimmed so every process does the same number of steps).
    """
    if not shuffle:  # evaluation: sorted by length for speed; order of results restored by caller
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(lengths), generator=g).tolist()
        window = batch_size * bucket_batches
        batches = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start:start + window], key=lengths.__getitem__)
            batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[i] for i in perm]
    if num_replicas > 1:
        usable = len(batches) - len(batches) % num_replicas
        batches = batches[rank:usable:num_replicas]
    return batches


def throughput_batches(data: EncodedDataset, batch_size: int, pad_id: int) -> list[Batch]:
    """The whole dataset in length-sorted, dynamically padded batches (as served)."""
    order = length_bucketed_batches(data.lengths, batch_size, seed=0, epoch=0, shuffle=False)
    return [collate(data, idx, pad_id) for idx in order]


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """Plain shuffled batches (the baseline that bucketing is measured against)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def padding_tokens(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """How many [PAD] tokens these batches carry."""
    return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)
