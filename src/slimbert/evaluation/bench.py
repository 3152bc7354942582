"""Speed and size measurements shared by `slimbert report` (and the benchmark scripts).

Every figure is taken after a warm-up, with a fixed number of threads, on the same inputs for
every model; ratios are only ever formed between models measured in the same process.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimbert.checkpoint import WEIGHTS_NAME, resolve
from slimbert.data.batching import EncodedDataset, collate, length_bucketed_batches
from slimbert.training.objectives import model_inputs


@dataclass
class SizeInfo:
    parameters: int
    file_bytes: int


def size_of(model: nn.Module, checkpoint: str | Path) -> SizeInfo:
    """Parameter count (tied weights once) and the bytes of the checkpoint's weights file(s)."""
    directory = resolve(checkpoint)
    files = list(directory.glob("*.safetensors")) or [directory / WEIGHTS_NAME]
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return SizeInfo(params, sum(f.stat().st_size for f in files if f.exists()))


def latency_batch(data: EncodedDataset, seq_len: int, pad_id: int, n: int = 32) -> list[dict[str, torch.Tensor]]:
    """`n` single-example inputs of exactly `seq_len` tokens, cut from the longest examples
    (shorter ones are repeated to length), for batch-1 latency."""
    order = sorted(range(len(data)), key=lambda i: -len(data.input_ids[i]))[:n]
    batches = []
    for i in order:
        ids = list(data.input_ids[i])
        types = list(data.token_type_ids[i])
        while len(ids) < seq_len:
            ids, types = ids + ids, types + types
        one = EncodedDataset([ids[:seq_len]], [types[:seq_len]], None)
        batches.append(collate(one, [0], pad_id))
    return batches


@torch.inference_mode()
def measure_latency(model: nn.Module, inputs: list[dict[str, torch.Tensor]], warmup: int = 5) -> list[float]:
    """Seconds per forward pass for each input (after `warmup` passes)."""
    model.eval()
    for batch in inputs[:warmup]:
        model(**model_inputs(batch))
    times = []
    for batch in inputs:
        t0 = time.perf_counter()
        model(**model_inputs(batch))
        times.append(time.perf_counter() - t0)
    return times


def throughput_batches(data: EncodedDataset, batch_size: int, pad_id: int) -> list[dict[str, torch.Tensor]]:
    """The whole dataset in length-sorted, dynamically padded batches (as served)."""
    order = length_bucketed_batches(data.lengths, batch_size, seed=0, epoch=0, shuffle=False)
    return [collate(data, idx, pad_id) for idx in order]


@torch.inference_mode()
def measure_throughput(model: nn.Module, batches: list[dict[str, torch.Tensor]], warmup: int = 2) -> float:
    """Sequences per second over one pass of `batches` (after `warmup` batches)."""
    model.eval()
    for batch in batches[:warmup]:
        model(**model_inputs(batch))
    n = sum(len(b["input_ids"]) for b in batches)
    t0 = time.perf_counter()
    for batch in batches:
        model(**model_inputs(batch))
    return n / (time.perf_counter() - t0)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
