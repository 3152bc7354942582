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
