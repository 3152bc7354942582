"""`slimbert export`: ONNX (optionally with an ONNX Runtime int8 graph), or a checkpoint that
stock `transformers` loads (pruned models padded back with zero heads and neurons)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from slimbert.checkpoint import load_model, load_tokenizer
from slimbert.compress.export import ONNX_NAME, export_hf, export_onnx
from slimbert.errors import ConfigError


@dataclass
class ExportConfig:
    model: str  # checkpoint directory
    format: Literal["onnx", "hf"]  # onnx: model.onnx beside config.json and vocab.txt; hf: for transformers
    out: str  # output directory
    int8: bool = False  # onnx: also write model_int8.onnx (ONNX Runtime int8)

    def __post_init__(self) -> None:
        if self.int8 and self.format != "onnx":
            raise ConfigError("--int8 applies to --format onnx")


def export(config: ExportConfig) -> list[Path]:
    """Write `config.model` in `config.format`; returns the files written."""
    net = load_model(config.model)
    tokenizer = load_tokenizer(config.model)
    out = Path(config.out)
    if config.format == "hf":
        return [export_hf(net.float(), tokenizer, out)]
    files = export_onnx(net, out / ONNX_NAME, int8=config.int8)
    net.config.save(out / "config.json")
    tokenizer.save(out)
    return files
