"""Measurements of the machine that do not change between runs (its matmul peak, a model's
peak memory under a backend), kept in $SLIMBERT_CACHE/probes.json so that each is taken once.

Every entry is keyed by the machine line of `hardware.detect_machine()` (CPU model, ISA,
threads, bf16 native or not), the torch version and the thread count, plus what the probe
itself depends on; a different machine, torch or thread count measures again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from slimbert.hardware import detect_machine
from slimbert.io import atomic_write_text

CACHE_FILE = "probes.json"


def cache_path() -> Path:
    """$SLIMBERT_CACHE/probes.json (default ~/.cache/slimbert)."""
    root = Path(os.environ.get("SLIMBERT_CACHE") or Path.home() / ".cache" / "slimbert")
    return root / CACHE_FILE


def probe_key(kind: str, **parts) -> str:
    """The cache key of probe `kind` on this machine, torch and thread count, with `parts`."""
    key = {"probe": kind, "machine": detect_machine().line(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), **{k: str(v) for k, v in parts.items()}}
    return json.dumps(key, sort_keys=True)


def _read(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or damaged: measure again
        return {}
    return entries if isinstance(entries, dict) else {}


def cached(kind: str, measure: Callable[[], float | None], **parts) -> float | None:
    """The value `measure()` gave on this machine for (kind, parts), measuring only when the
    cache has none; a None result (the probe failed) is not kept."""
    key = probe_key(kind, **parts)
    path = cache_path()
    entries = _read(path)
    if key in entries:
        return entries[key]
    value = measure()
    if value is not None:
        entries = {**_read(path), key: value}  # another run may have added entries meanwhile
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(entries, indent=1, sort_keys=True) + "\n")
        except OSError:  # a read-only home: the value still serves this run
            pass
    return value


def file_stamp(directory: Path) -> str:
    """What identifies a checkpoint's model: its config and weight files' names, sizes and
    modification times (a rewritten model is probed again; a rewritten results.json is not)."""
    files = sorted(f for f in Path(directory).iterdir()
                   if f.suffix in (".safetensors", ".onnx", ".bin") or f.name == "config.json")
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
