"""`slimbert quantize`: an int8 (dynamic) or bf16 copy of a checkpoint, for serving.

int8 given calibration data (a task's train split) is SmoothQuant-calibrated and covers every
Linear layer; without data it covers the attention layers only, whose activations quantize well
uncalibrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from slimbert.checkpoint import load_model, load_tokenizer, save_checkpoint
from slimbert.compress.quantize import quantize_int8, to_bf16
from slimbert.data.sources import TaskData
from slimbert.errors import ConfigError, DataError
from slimbert.hardware import check_bf16
from slimbert.recipes.common import positive, train_sample


@dataclass
class QuantizeConfig:
    model: str  # checkpoint directory to quantize
    out: str  # output directory
    # int8: dynamic quantization of Linear layers; bf16: bfloat16 weights
    dtype: Literal["int8", "bf16"] = "int8"
    # int8 "attention": attention projections, pooler and classifier, the feed-forward kept fp32;
    # "all": every Linear (about 1.5x faster than fp32). None: all with calibration data, attention without
    scope: Literal["attention", "all"] | None = field(default=None, metadata={"flag": "--int8-scope"})
    calibration_examples: int = 512  # int8 with data: training examples SmoothQuant calibrates on
    smoothquant_alpha: float = 0.9  # how much of the activations' range SmoothQuant moves into the weights
    max_length: int = 128  # tokens per calibration example
    force: bool = False  # write bf16 weights even on a CPU that only emulates bf16 (tens of times slower)

    def __post_init__(self) -> None:
        positive(self, "calibration_examples", "max_length")
        if not 0 <= self.smoothquant_alpha <= 1:
            raise ConfigError(f"smoothquant_alpha must be in [0, 1], got {self.smoothquant_alpha}")
        if self.scope is not None and self.dtype != "int8":
            raise ConfigError("--int8-scope applies to --dtype int8")
        if self.dtype == "bf16":  # served here, on the CPU
            check_bf16("cpu", "dtype bf16", force=self.force)


def quantize(config: QuantizeConfig, calibration: TaskData | None = None) -> Path:
    """Write the int8 or bf16 copy of `config.model` to `config.out`; int8 with `calibration`
    (its train split) is SmoothQuant-calibrated on a seeded sample of `calibration_examples`."""
    if calibration is not None and config.dtype != "int8":
        raise DataError("calibration data (--task/--train-file) applies to int8 only")
    net = load_model(config.model)
    tokenizer = load_tokenizer(config.model)
    if config.dtype == "bf16":
        return save_checkpoint(to_bf16(net), tokenizer, config.out)
    sample = (None if calibration is None else
              train_sample(calibration, tokenizer, config.calibration_examples, config.max_length))
    scope = config.scope or ("all" if sample is not None else "attention")
    q = quantize_int8(net, scope, sample, tokenizer.pad_id, config.smoothquant_alpha)
    return save_checkpoint(q, tokenizer, config.out)
