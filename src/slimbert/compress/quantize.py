"""Serving precision: int8 dynamic quantization and bf16 weights.

int8 (`quantize_int8`): `nn.Linear` layers get int8 weights, one scale per output channel;
activations are quantized per batch at run time (one scale per tensor), and the int8 x int8
matmuls run in PyTorch's x86/fbgemm kernels. Embeddings, LayerNorms and the tied MLM decoder
stay fp32. Which Linear layers is the `scope`:
    "attention"  the attention projections (query, key, value, output), the pooler and the
                 classifier; the feed-forward layers stay fp32. The default: on the MiniLM SST-2
                 teacher its predictions agree with fp32 on 99.7% of the dev set.
    "all"        every Linear, feed-forward included: about 1.5x the speed of fp32 and a smaller
                 file, but 97.6% agreement there. One activation scale per tensor is too coarse
                 for the feed-forward layers' inputs; quantized alone, each of the two costs about
                 1.5-2% agreement (benchmarks/int8_agreement.py, BENCHMARKS.md). This uses PyTorch's eager dynamic quantization (`torch.ao.quantization`), which
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
import re
import warnings
from contextlib import contextmanager

import torch
from torch import nn

from slimbert.errors import CheckpointError
from slimbert.models import set_config

INT8 = "dynamic_int8"


@contextmanager
def _quiet():
    """torch.ao.quantization warns that it is deprecated on every call; say it once, in the docs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        yield


SCOPES = ("attention", "all")
_FEED_FORWARD = re.compile(r"\.(intermediate\.dense|output\.dense)$")


def quantizable_linears(model: nn.Module, scope: str = "attention") -> list[str]:
    """Names of the Linear modules int8 applies to in `scope` (never the MLM decoder, which is
    tied to the embeddings)."""
    if scope not in SCOPES:
        raise CheckpointError(f"int8 scope must be one of {SCOPES}, got '{scope}'")
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and not name.endswith("predictions.decoder")]
    if scope == "attention":  # a feed-forward Linear is intermediate.dense or the layer's own output.dense
        names = [n for n in names if not (_FEED_FORWARD.search(n) and ".attention." not in n
                                          and ".layer." in n)]
    return names


def _dynamic_quantize(model: nn.Module, names: list[str]) -> nn.Module:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with _quiet():
        return quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in names},
                                dtype=torch.qint8, inplace=True)


def quantize_int8(model: nn.Module, scope: str = "attention") -> nn.Module:
    """A CPU copy of `model` with int8 weights in the Linear layers of `scope` (dynamic
    quantization); config.quantization names them."""
    if getattr(model.config, "quantization", None):
        raise CheckpointError("the model is already quantized")
    if next(model.parameters()).dtype != torch.float32:
        raise CheckpointError("int8 quantization starts from fp32 weights; this model is "
                              f"{next(model.parameters()).dtype}")
    q = copy.deepcopy(model).cpu().eval()
    names = quantizable_linears(q, scope)
    q = _dynamic_quantize(q, names)
    set_config(q, model.config.replace(quantization={"method": INT8, "scope": scope, "modules": names}))
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
        owner = key.rsplit(".", 1)[0]
        if owner in names or owner.endswith("._packed_params") or not isinstance(value, torch.Tensor):
            continue  # the quantized modules' own entries (packed weights, unused output scale)
        out[key] = value.detach().contiguous()
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
    set_config(new, model.config.replace(dtype="bfloat16"))
    return new
