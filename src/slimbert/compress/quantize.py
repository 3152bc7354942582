"""Serving precision: int8 dynamic quantization and bf16 weights.

int8 (`quantize_int8`): every `nn.Linear` of the encoder and head gets int8 weights, one scale
per output channel; activations are quantized per batch at run time, and the int8 x int8
matmuls run in PyTorch's x86/fbgemm kernels. Embeddings, LayerNorms and the tied MLM decoder
stay fp32. This uses PyTorch's eager dynamic quantization (`torch.ao.quantization`), which
PyTorch now marks deprecated in favour of torchao; it still ships and is the path with fast
CPU kernels and no extra dependency.

A quantized checkpoint stores, for each quantized Linear, its int8 weight, the per-channel
scales and zero points, and the fp32 bias, in safetensors (never pickled), and names the
quantized modules in config.json (`quantization`). Loading rebuilds the same int8 tensors
bit for bit.

bf16 (`to_bf16`): all weights in bfloat16; on CPUs with AVX512-BF16/AMX and on GPUs the
matmuls run at about 2-3x their fp32 speed. `transformers` loads such a checkpoint too.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager

import torch
from torch import nn

from slimbert.errors import CheckpointError

INT8 = "dynamic_int8"


@contextmanager
def _quiet():
    """torch.ao.quantization warns that it is deprecated on every call; say it once, in the docs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        yield


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the Linear modules int8 applies to (all but the MLM decoder, tied to the embeddings)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and not name.endswith("predictions.decoder")]


def _dynamic_quantize(model: nn.Module, names: list[str]) -> nn.Module:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with _quiet():
        return quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in names},
                                dtype=torch.qint8, inplace=True)


def quantize_int8(model: nn.Module) -> nn.Module:
    """A CPU copy of `model` with int8 Linear weights (dynamic quantization); config updated."""
    if getattr(model.config, "quantization", None):
        raise CheckpointError("the model is already quantized")
    if next(model.parameters()).dtype != torch.float32:
        raise CheckpointError("int8 quantization starts from fp32 weights; this model is "
                              f"{next(model.parameters()).dtype}")
    q = copy.deepcopy(model).cpu().eval()
    names = quantizable_linears(q)
    q = _dynamic_quantize(q, names)
    q.config = model.config.replace(quantization={"method": INT8, "modules": names})
    return q


def is_int8(model: nn.Module) -> bool:
    return bool((getattr(model.config, "quantization", None) or {}).get("method") == INT8)


def int8_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain tensors for a quantized model: int8 weights + scales + zero points, the rest as is."""
    names = set(model.config.quantization["modules"])
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    for name in names:
        with _quiet():
            w = modules[name].weight()  # a per-channel quantized tensor
            bias = modules[name].bias()
        out[f"{name}.weight"] = w.int_repr().contiguous()  # (out, in) int8
        out[f"{name}.weight_scale"] = w.q_per_channel_scales().to(torch.float64).contiguous()
        out[f"{name}.weight_zero_point"] = w.q_per_channel_zero_points().to(torch.int64).contiguous()
        if bias is not None:
            out[f"{name}.bias"] = bias.detach().contiguous()
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor) and not value.is_quantized and "_packed_params" not in key:
            out.setdefault(key, value.detach().contiguous())
    out.pop("cls.predictions.decoder.weight", None)
    return out


def dequantized_state_dict(sd: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """The fp32 weights an int8 state dict stands for (int8 x scale), under the plain names."""
    out = {k: v for k, v in sd.items() if not k.endswith(("weight_scale", "weight_zero_point"))}
    for name in names:
        try:
            q, scale, zero = sd[f"{name}.weight"], sd[f"{name}.weight_scale"], sd[f"{name}.weight_zero_point"]
        except KeyError as e:
            raise CheckpointError(f"int8 checkpoint: missing tensor {e}") from None
        if q.dtype != torch.int8 or scale.shape[0] != q.shape[0]:
            raise CheckpointError(f"int8 checkpoint: '{name}.weight' is {q.dtype} {tuple(q.shape)} with "
                                  f"{scale.shape[0]} scales; expected int8 with one scale per row")
        out[f"{name}.weight"] = ((q.to(torch.float64) - zero[:, None]) * scale[:, None]).float()
    return out


def restore_int8(model: nn.Module, sd: dict[str, torch.Tensor]) -> nn.Module:
    """Quantize fp32 `model` (already holding the dequantized weights) and set each int8 weight
    to exactly the stored integers and scales."""
    names = model.config.quantization["modules"]
    model = _dynamic_quantize(model.cpu().eval(), names)
    modules = dict(model.named_modules())
    with _quiet():
        for name in names:
            q, scale, zero = sd[f"{name}.weight"], sd[f"{name}.weight_scale"], sd[f"{name}.weight_zero_point"]
            real = (q.to(torch.float64) - zero[:, None]) * scale[:, None]
            weight = torch.quantize_per_channel(real.float(), scale, zero, 0, torch.qint8)
            modules[name].set_weight_bias(weight, modules[name].bias())
    return model


def to_bf16(model: nn.Module) -> nn.Module:
    """A copy of `model` with bfloat16 weights; config.dtype records it."""
    if getattr(model.config, "quantization", None):
        raise CheckpointError("an int8 model cannot be cast to bf16; start from the fp32 model")
    new = copy.deepcopy(model).to(torch.bfloat16)
    new.config = model.config.replace(dtype="bfloat16")
    if hasattr(new, "bert"):
        new.bert.config = new.config
    return new
