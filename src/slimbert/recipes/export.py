"""`slimbert export`: ONNX (optionally with an ONNX Runtime int8 graph), a checkpoint that
stock `transformers` loads (pruned models padded back with zero heads and neurons), or a
translation model for CTranslate2 (optionally with int8 weights) or for `transformers`' MarianMT."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from slimbert.checkpoint import load_model, load_tokenizer, resolve
from slimbert.compress.export import ONNX_NAME, export_hf, export_onnx
from slimbert.compress.export_ctranslate2 import export_ctranslate2
from slimbert.compress.export_marian import export_marian
from slimbert.config import Seq2SeqConfig
from slimbert.errors import ConfigError
from slimbert.recipes.translate import read_target_vocabulary


@dataclass
class ExportConfig:
    model: str  # checkpoint directory
    # onnx: model.onnx beside config.json and vocab.txt; hf: for transformers;
    # ctranslate2 / marian: a translation model (slimbert train-seq2seq) for CTranslate2 / for
    # transformers' MarianMTModel and AutoTokenizer (post-norm, sinusoidal positions)
    format: Literal["onnx", "hf", "ctranslate2", "marian"]
    out: str  # output directory
    int8: bool = False  # onnx: also write model_int8.onnx (ONNX Runtime int8); ctranslate2: int8 weights
    # ctranslate2: decode over the pieces this file of target-language text uses (e.g. the training
    # targets) only: CTranslate2's vocabulary map, faster decoding
    target_vocabulary: str | None = None

    def __post_init__(self) -> None:
        if self.int8 and self.format in ("hf", "marian"):
            raise ConfigError("--int8 applies to --format onnx and ctranslate2 (for an int8 torch model, "
                              "use slimbert quantize)")
        if self.target_vocabulary and self.format != "ctranslate2":
            raise ConfigError("--target-vocabulary applies to --format ctranslate2")


def export(config: ExportConfig) -> list[Path]:
    """Write `config.model` in `config.format`; returns the files written."""
    net = load_model(config.model)
    tokenizer = load_tokenizer(config.model)
    out = Path(config.out)
    if config.format == "hf":
        return [export_hf(net.float(), tokenizer, out)]
    if config.format == "ctranslate2":
        vocabulary = (read_target_vocabulary(config.target_vocabulary, tokenizer)
                      if config.target_vocabulary and isinstance(net.config, Seq2SeqConfig) else None)
        return [export_ctranslate2(net, tokenizer, out, int8=config.int8, target_vocabulary=vocabulary)]
    if config.format == "marian":
        return [export_marian(net, out, tokenizer_dir=resolve(config.model))]
    files = export_onnx(net, out / ONNX_NAME, int8=config.int8)
    net.config.save(out / "config.json")
    tokenizer.save(out)
    return files
