"""The models: BERT (bert.py), the small BiLSTM / CNN students (bilstm_cnn.py), and the
translation models, an encoder-decoder Transformer and an LSTM with attention (seq2seq.py)."""

from __future__ import annotations

from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

from slimbert.config import BertConfig, ModelConfig
from slimbert.models import bert, bilstm_cnn, seq2seq


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised model of the family and head `config` describes."""
    if isinstance(config, BertConfig):
        return bert.build_model(config)
    if type(config) in bilstm_cnn.STUDENT_CLASSES:
        return bilstm_cnn.STUDENT_CLASSES[type(config)](config)
    if type(config) in seq2seq.SEQ2SEQ_CLASSES:
        return seq2seq.SEQ2SEQ_CLASSES[type(config)](config)
    raise TypeError(f"no model for config type {type(config).__name__}")


def set_config(model: nn.Module, config: ModelConfig) -> None:
    """Give `model` a new config (after pruning, quantization, LayerDrop...): on the model and on
    every sub-model that holds the same config (the `BertModel` inside a classifier)."""
    old = model.config
    for module in model.modules():
        if getattr(module, "config", None) is old:
            module.config = config


def count_parameters(model: nn.Module) -> int:
    """Weights in `model`: its parameters (tied ones once) plus the weights and biases of its
    dynamically quantized int8 Linear layers, which PyTorch packs outside `parameters()`."""
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, DynamicInt8Linear):
            bias = module.bias()
            total += module.weight().numel() + (0 if bias is None else bias.numel())
    return total
