"""The device a job runs on, and the precision it computes in there."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" is CUDA when present, else the CPU; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast(device: torch.device, precision: str):
    """Autocast context for "bf16"/"fp16"; a no-op for "fp32"."""
    if precision == "fp32":
        return nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device; use bf16 on CPU")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)
