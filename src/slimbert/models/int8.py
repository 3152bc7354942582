"""The int8 form of a model: dynamically quantized Linear layers, and their plain-tensor form.

`slimbert.compress.quantize` decides which Linear layers go int8 and calibrates them
(SmoothQuant); this module holds what a checkpoint needs to save and rebuild such a model: an
int8 Linear's weight as int8 integers + one scale and zero point per output channel, its fp32
bias and any SmoothQuant `input_scale`, all plain tensors for safetensors (never pickled).
Loading rebuilds the same int8 tensors bit for bit.

This uses PyTorch's eager dynamic quantization (`torch.ao.quantization`), which PyTorch marks
deprecated in favour of torchao; it still ships and is the path with fast CPU kernels.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import nn

from slimbert.errors import CheckpointError

INT8 = "dynamic_int8"  # config.quantization["method"] of an int8 model


@contextmanager
def quiet_quantization():
    """torch.ao.quantization warns that it is deprecated on every call; say it once, in the docs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        yield


def dynamic_int8(model: nn.Module, names: list[str]) -> nn.Module:
    """Quantize the Linear modules `names` of `model` (in place): int8 weights, one scale per row."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with quiet_quantization():
        return quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in names},
                                dtype=torch.qint8, inplace=True)


def _scale_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0] * module.input_scale, *args[1:])


def set_input_scale(module: nn.Module, input_scale: torch.Tensor) -> None:
    """Make `module` multiply its input by `input_scale` (per channel) before its own forward."""
    module.register_buffer("input_scale", input_scale.float().contiguous())
    module.register_forward_pre_hook(_scale_input)


def is_int8(model: nn.Module) -> bool:
    return bool((getattr(model.config, "quantization", None) or {}).get("method") == INT8)


def int8_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain tensors for a quantized model: int8 weights + scales + zero points, the rest as is."""
    names = set(model.config.quantization["modules"])
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    for name in names:
        with quiet_quantization():
            w = modules[name].weight()  # a per-channel quantized tensor
            bias = modules[name].bias()
        out[f"{name}.weight"] = w.int_repr().contiguous()  # (out, in) int8
        out[f"{name}.weight_scale"] = w.q_per_channel_scales().to(torch.float64).contiguous()
        out[f"{name}.weight_zero_point"] = w.q_per_channel_zero_points().to(torch.int64).contiguous()
        if bias is not None:
            out[f"{name}.bias"] = bias.detach().contiguous()
        if hasattr(modules[name], "input_scale"):
            out[f"{name}.input_scale"] = modules[name].input_scale.contiguous()
    for key, value in model.state_dict().items():
        owner = key.rsplit(".", 1)[0]
        if owner in names or owner.endswith("._packed_params") or not isinstance(value, torch.Tensor):
            continue  # the quantized modules' own entries (packed weights, unused output scale)
        out[key] = value.detach().contiguous()
    out.pop("cls.predictions.decoder.weight", None)
    return out


def dequantized_state_dict(sd: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """The fp32 weights an int8 state dict stands for (int8 x scale), under the plain names."""
    out = {k: v for k, v in sd.items() if not k.endswith(("weight_scale", "weight_zero_point", "input_scale"))}
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
    model = dynamic_int8(model.cpu().eval(), names)
    modules = dict(model.named_modules())
    with quiet_quantization():
        for name in names:
            q, scale, zero = sd[f"{name}.weight"], sd[f"{name}.weight_scale"], sd[f"{name}.weight_zero_point"]
            real = (q.to(torch.float64) - zero[:, None]) * scale[:, None]
            weight = torch.quantize_per_channel(real.float(), scale, zero, 0, torch.qint8)
            modules[name].set_weight_bias(weight, modules[name].bias())
            if f"{name}.input_scale" in sd:  # SmoothQuant
                input_scale = sd[f"{name}.input_scale"]
                if input_scale.shape != (q.shape[1],):
                    raise CheckpointError(f"int8 checkpoint: '{name}.input_scale' has shape "
                                          f"{tuple(input_scale.shape)}; expected ({q.shape[1]},)")
                set_input_scale(modules[name], input_scale)
    return model


def int8_rows(linear: nn.Module, rows: torch.Tensor) -> nn.Module:
    """A dynamic int8 Linear of the output rows `rows` of `linear` (int8, one scale per row): the
    same integers and scales, so each kept output equals the full layer's. A SmoothQuant
    `input_scale` is kept."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    with quiet_quantization():
        weight = linear.weight()
        scale, zero = weight.q_per_channel_scales()[rows], weight.q_per_channel_zero_points()[rows]
        kept = torch.quantize_per_channel(weight.dequantize()[rows], scale, zero, 0, torch.qint8)
        bias = linear.bias()
        out = DynamicLinear(linear.in_features, len(rows), bias_=bias is not None, dtype=torch.qint8)
        out.set_weight_bias(kept, None if bias is None else bias[rows])
    if hasattr(linear, "input_scale"):
        set_input_scale(out, linear.input_scale)
    return out
