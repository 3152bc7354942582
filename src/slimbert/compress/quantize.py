"""Serving precision: int8 dynamic quantization and bf16 weights.

int8 (`quantize_int8`): `nn.Linear` layers get int8 weights, one scale per output channel;
activations are quantized per batch at run time (one scale per tensor), and the int8 x int8
matmuls run in PyTorch's x86/fbgemm kernels. Embeddings, LayerNorms and the tied MLM decoder
stay fp32. Which Linear layers is the `scope`:
    "attention"  the attention projections (query, key, value, output), the pooler and the
                 classifier; the feed-forward layers stay fp32. On the MiniLM SST-2 teacher its
                 predictions agree with fp32 on 99.7% of the dev set, but it gains little speed.
    "all"        every Linear, feed-forward included: about 1.5x the speed of fp32 and a smaller
                 file. Without calibration it agrees on only 97.6% there: one activation scale
                 per tensor is too coarse for the feed-forward layers, whose inputs have a few
                 channels far larger than the rest (benchmarks/int8_agreement.py).

Calibration (SmoothQuant, Xiao et al. 2022, https://arxiv.org/abs/2211.10438) fixes that. A
few hundred training examples give each Linear's largest input per channel, max|X_j|; then
s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha), the weight's column j is multiplied by s_j and
the input divided by it at run time: the same product, but the activations' outlier channels
are tamed and the per-channel weight scales absorb them. BERT is post-norm, so the division
cannot be folded into the LayerNorm before (its output also feeds the residual); it is one
elementwise multiply per Linear (`input_scale`). With alpha = 0.9 the "all" scope agrees with
fp32 on 99.3% of SST-2 dev on the MiniLM teacher, at the speed of uncalibrated "all".

This uses PyTorch's eager dynamic quantization (`torch.ao.quantization`), which PyTorch now
marks deprecated in favour of torchao; it still ships and is the path with fast CPU kernels and
no extra dependency.

A quantized checkpoint stores, for each quantized Linear, its int8 weight, the per-channel
scales and zero points, the fp32 bias and any `input_scale`, in safetensors (never pickled),
and names the quantized modules in config.json (`quantization`). Loading rebuilds the same
int8 tensors bit for bit.

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

from slimbert.data.batching import EncodedDataset
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


def input_ranges(model: nn.Module, names: list[str], calibration: EncodedDataset, pad_id: int,
                 batch_size: int = 32) -> dict[str, torch.Tensor]:
    """For each Linear in `names`: the largest |input| per input channel over `calibration`."""
    from slimbert.inference import predict_logits

    modules = dict(model.named_modules())
    ranges: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(module, args):
            x = args[0].detach().abs().flatten(0, -2).amax(0).float().cpu()
            ranges[name] = x if name not in ranges else torch.maximum(ranges[name], x)
        return hook

    handles = [modules[name].register_forward_pre_hook(record(name)) for name in names]
    try:
        predict_logits(model, calibration, pad_id, batch_size)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def _scale_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0] * module.input_scale, *args[1:])


def _set_input_scale(module: nn.Module, input_scale: torch.Tensor) -> None:
    """Make `module` multiply its input by `input_scale` (per channel) before its own forward."""
    module.register_buffer("input_scale", input_scale.float().contiguous())
    module.register_forward_pre_hook(_scale_input)


def quantize_int8(model: nn.Module, scope: str = "attention", calibration: EncodedDataset | None = None,
                  pad_id: int = 0, alpha: float = 0.9) -> nn.Module:
    """A CPU copy of `model` with int8 weights in the Linear layers of `scope` (dynamic
    quantization); config.quantization names them. With `calibration` (a few hundred encoded
    training examples), SmoothQuant with migration strength `alpha` first."""
    if getattr(model.config, "quantization", None):
        raise CheckpointError("the model is already quantized")
    if next(model.parameters()).dtype != torch.float32:
        raise CheckpointError("int8 quantization starts from fp32 weights; this model is "
                              f"{next(model.parameters()).dtype}")
    if not 0 <= alpha <= 1:
        raise CheckpointError(f"SmoothQuant alpha must be in [0, 1], got {alpha}")
    q = copy.deepcopy(model).cpu().eval()
    names = quantizable_linears(q, scope)
    settings = {"method": INT8, "scope": scope, "modules": names}
    input_scales = {}
    if calibration is not None:
        if len(calibration) == 0:
            raise CheckpointError("int8 calibration needs at least one example")
        ranges = input_ranges(q, names, calibration, pad_id)
        modules = dict(q.named_modules())
        for name in names:
            weight = modules[name].weight
            s = (ranges[name].clamp_min(1e-5) ** alpha
                 / weight.detach().abs().amax(0).clamp_min(1e-5) ** (1 - alpha)).clamp_min(1e-5)
            with torch.no_grad():
                weight.mul_(s)  # column j times s_j ...
            input_scales[name] = 1 / s  # ... input channel j divided by it
        settings["smoothquant"] = {"alpha": alpha, "calibration_examples": len(calibration)}
    q = _dynamic_quantize(q, names)
    modules = dict(q.named_modules())
    for name, input_scale in input_scales.items():
        _set_input_scale(modules[name], input_scale)
    set_config(q, model.config.replace(quantization=settings))
    return q


def is_int8(model: nn.Module) -> bool:
    return bool((getattr(model.config, "quantization", None) or {}).get("method") == INT8)


def int8_weight_count(model: nn.Module) -> int:
    """Weights and biases held by the int8 Linear modules (not among `model.parameters()`)."""
    if not is_int8(model):
        return 0
    modules = dict(model.named_modules())
    total = 0
    with _quiet():
        for name in model.config.quantization["modules"]:
            bias = modules[name].bias()
            total += modules[name].weight().numel() + (0 if bias is None else bias.numel())
    return total


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
    model = _dynamic_quantize(model.cpu().eval(), names)
    modules = dict(model.named_modules())
    with _quiet():
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
                _set_input_scale(modules[name], input_scale)
    return model


def to_bf16(model: nn.Module) -> nn.Module:
    """A copy of `model` with bfloat16 weights; config.dtype records it."""
    if getattr(model.config, "quantization", None):
        raise CheckpointError("an int8 model cannot be cast to bf16; start from the fp32 model")
    new = copy.deepcopy(model).to(torch.bfloat16)
    set_config(new, model.config.replace(dtype="bfloat16"))
    return new
