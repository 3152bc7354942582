"""Batched inference over an encoded dataset, in length-sorted batches."""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from slimbert.data.batching import EncodedDataset, collate, length_bucketed_batches, model_inputs
from slimbert.hardware import autocast


@torch.inference_mode()
def predict_logits(model: nn.Module, data: EncodedDataset, pad_id: int, batch_size: int = 64,
                   precision: str = "fp32", device: torch.device | None = None,
                   progress: str | None = None) -> torch.Tensor:
    """Logits for every example, in dataset order. Returns (N, C) float32 on the CPU.

    `progress`: a description to show a progress bar under (None: no bar)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    batches = length_bucketed_batches(data.lengths, batch_size, seed=0, epoch=0, shuffle=False)
    out: torch.Tensor | None = None
    for indices in tqdm(batches, desc=progress, disable=progress is None, unit="batch"):
        batch = {k: v.to(device) for k, v in collate(data, indices, pad_id).items() if k != "labels"}
        with autocast(device, precision):
            logits = model(**model_inputs(batch)).logits.float().cpu()
        if out is None:
            out = torch.empty((len(data), *logits.shape[1:]), dtype=torch.float32)
        out[indices] = logits
    model.train(was_training)
    return out
