"""Parallel text for translation: two plain-text files aligned by line, encoded with a joint
subword vocabulary, and padded per batch.

Nothing is lost silently. Files of different line counts are an error naming both files and
both counts (every later pair would be misaligned); a pair with an empty side is skipped and
counted (or, with `skip_empty=False`, an error naming the file and line); a sequence longer
than the model takes is cut and counted.

Sources end in </s>. Targets are the pieces and </s> (what the decoder must predict), and the
decoder reads them shifted right behind <s> (teacher forcing).

Notation: B = batch, S = source tokens, T = target tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from slimbert.data.batch_sources import BucketedBatches
from slimbert.data.batching import IGNORE_INDEX, Batch
from slimbert.errors import DataError
from slimbert.io import read_utf8
from slimbert.subword import SubwordTokenizer


def read_text_lines(path: str | Path) -> list[str]:
    """Every line of a UTF-8 text file, empty ones included (line i is element i - 1)."""
    lines = read_utf8(path, DataError).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line break ends the last line; it does not start another
    return [line.rstrip("\r") for line in lines]


@dataclass
class ParallelText:
    """The sentence pairs of two aligned files, and what reading them skipped."""

    sources: list[str]
    targets: list[str]
    source_path: Path
    target_path: Path
    lines: int  # line pairs in the files
    skipped_empty: list[int] = field(default_factory=list)  # line numbers of pairs with an empty side

    def __len__(self) -> int:
        return len(self.sources)

    def summary(self) -> str:
        if not self.skipped_empty:
            return f"{len(self)} pairs"
        first = ", ".join(map(str, self.skipped_empty[:5])) + (", ..." if len(self.skipped_empty) > 5 else "")
        return (f"{len(self)} of {self.lines} pairs kept; skipped {len(self.skipped_empty)} with an empty "
                f"side (lines {first})")


def read_parallel(source_path: str | Path, target_path: str | Path, skip_empty: bool = True) -> ParallelText:
    """The pairs (line i of `source_path`, line i of `target_path`).

    Different line counts are an error naming both files and counts. A pair whose source or
    target is empty (or only spaces) is skipped and counted, or with `skip_empty=False` an
    error naming the file and line.
    """
    source_path, target_path = Path(source_path), Path(target_path)
    sources, targets = read_text_lines(source_path), read_text_lines(target_path)
    if len(sources) != len(targets):
        raise DataError(f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}: "
                        "parallel files must be aligned line by line")
    kept_src, kept_tgt, skipped = [], [], []
    for lineno, (s, t) in enumerate(zip(sources, targets), start=1):
        if s.strip() and t.strip():
            kept_src.append(s.strip())
            kept_tgt.append(t.strip())
            continue
        if not skip_empty:
            empty = source_path if not s.strip() else target_path
            raise DataError(f"{empty}:{lineno}: empty line (its pair cannot be trained on or scored)")
        skipped.append(lineno)
    return ParallelText(kept_src, kept_tgt, source_path, target_path, len(sources), skipped)


def encode_sources(tokenizer: SubwordTokenizer, texts: Sequence[str], max_length: int
                   ) -> tuple[list[list[int]], int]:
    """Piece ids of each text followed by </s>, at most `max_length` in all; and how many were cut."""
    if max_length < 2:
        raise DataError(f"max_length must be at least 2 (a piece and </s>), got {max_length}")
    ids, truncated = [], 0
    for pieces in tokenizer.encode(texts):
        if len(pieces) > max_length - 1:
            pieces, truncated = pieces[:max_length - 1], truncated + 1
        ids.append(pieces + [tokenizer.eos_id])
    return ids, truncated


@dataclass
class ParallelDataset:
    """Encoded pairs: source ids and target ids, each ending in </s>, unpadded."""

    source_ids: list[list[int]]
    target_ids: list[list[int]]
    bos_id: int  # what the decoder reads before the first target token
    truncated_sources: int = 0  # sources cut to max_source_length
    truncated_targets: int = 0  # targets cut to max_target_length

    def __len__(self) -> int:
        return len(self.source_ids)

    @property
    def lengths(self) -> list[int]:
        """What a batch of a pair pads to: the longer of its two sides (for length buckets)."""
        return [max(len(s), len(t)) for s, t in zip(self.source_ids, self.target_ids)]

    @property
    def target_tokens(self) -> int:
        return sum(map(len, self.target_ids))

    def truncation_summary(self) -> str:
        return f"{self.truncated_sources} sources and {self.truncated_targets} targets truncated"


def encode_parallel(tokenizer: SubwordTokenizer, text: ParallelText, max_source_length: int,
                    max_target_length: int) -> ParallelDataset:
    src, cut_src = encode_sources(tokenizer, text.sources, max_source_length)
    tgt, cut_tgt = encode_sources(tokenizer, text.targets, max_target_length)
    return ParallelDataset(src, tgt, tokenizer.bos_id, cut_src, cut_tgt)


def pad_ids(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and their (B, T) 1/0 mask."""
    ids = pad_sequence([torch.tensor(s, dtype=torch.long) for s in sequences], batch_first=True,
                       padding_value=pad_id)  # (B, T)
    lengths = torch.tensor([len(s) for s in sequences])  # (B,)
    return ids, (torch.arange(ids.shape[1]) < lengths[:, None]).long()


def collate_pairs(data: ParallelDataset, indices: Sequence[int], pad_id: int) -> Batch:
    """The pairs at `indices`, each side padded to its own longest sequence:
    input_ids, attention_mask (B, S); decoder_input_ids, labels (B, T), labels IGNORE_INDEX at padding."""
    input_ids, attention_mask = pad_ids([data.source_ids[i] for i in indices], pad_id)
    targets = [data.target_ids[i] for i in indices]
    decoder_input_ids, _ = pad_ids([[data.bos_id] + t[:-1] for t in targets], pad_id)  # shifted right
    labels, _ = pad_ids(targets, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids, "labels": labels}


def parallel_batches(data: ParallelDataset, batch_size: int, grad_accum: int = 1, seed: int = 42,
                     pad_id: int = 0, rank: int = 0, world: int = 1) -> BucketedBatches:
    """The Trainer's batch source for translation: length-bucketed, shuffled pairs, padded per
    batch, resumable at its exact position (see `BucketedBatches`)."""
    return BucketedBatches(data, batch_size, grad_accum, seed, pad_id, rank, world, collate_fn=collate_pairs)
