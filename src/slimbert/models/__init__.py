"""The models: BERT (bert.py) and the small BiLSTM / CNN students (students.py)."""

from __future__ import annotations

from torch import nn

from slimbert.config import BertConfig, ModelConfig
from slimbert.models import bert, students


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised model of the family and head `config` describes."""
    if isinstance(config, BertConfig):
        return bert.build_model(config)
    if type(config) in students.STUDENT_CLASSES:
        return students.STUDENT_CLASSES[type(config)](config)
    raise TypeError(f"no model for config type {type(config).__name__}")


def set_config(model: nn.Module, config: ModelConfig) -> None:
    """Give `model` a new config (after pruning, quantization, LayerDrop...): on the model and on
    every sub-model that holds the same config (the `BertModel` inside a classifier)."""
    old = model.config
    for module in model.modules():
        if getattr(module, "config", None) is old:
            module.config = config
