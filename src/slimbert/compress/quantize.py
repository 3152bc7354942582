"""Serving precision: int8 dynamic quantization and bf16 weights.

int8 (`quantize_int8`): `nn.Linear` layers get int8 weights, one scale per output channel;
activations are quantized per batch at run time (one scale per tensor), and the int8 x int8
matmuls run in PyTorch's x86/fbgemm kernels. Embeddings, LayerNorms and the tied MLM decoder
stay fp32. Which Linear layers is the `scope`:
    "attention"  the attention projections (query, key, value, output), the pooler and the
                 classifier; the feed-forward layers stay fp32. On the MiniLM SST-2 teacher its
                 predictions agree with fp32 on 99.7% of the dev set, but it gains little speed.
    "all"        every Linear, feed-forward included (and a translation model's vocabulary
                 projection, as an int8 copy of the tied embedding matrix, which itself stays
                 fp32): about 1.5x the speed of fp32 and a smaller
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

import torch
from torch import nn

from slimbert.data.batching import EncodedDataset
from slimbert.errors import CheckpointError
from slimbert.models import set_config
from slimbert.models.int8 import INT8, dynamic_int8, set_input_scale
from slimbert.models.seq2seq import SharedEmbeddings
from slimbert.modules.layer import TransformerLayer

SCOPES = ("attention", "all")


def quantizable_linears(model: nn.Module, scope: str = "attention") -> list[str]:
    """Names of the Linear modules int8 applies to in `scope` (never the MLM decoder, which is
    tied to the embeddings). "attention" leaves out the feed-forward layers of every block."""
    if scope not in SCOPES:
        raise CheckpointError(f"int8 scope must be one of {SCOPES}, got '{scope}'")
    decoder = model.cls.predictions.decoder if model.config.head == "mlm" else None
    feed_forward = set()
    if scope == "attention":  # every TransformerLayer, of an encoder or of a seq2seq model's two stacks
        feed_forward = {id(m) for layer in model.modules() if isinstance(layer, TransformerLayer)
                        for m in (layer.ffn.fc_in, layer.ffn.fc_out)}
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and module is not decoder and id(module) not in feed_forward]


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
    if scope == "all" and isinstance(getattr(q, "embeddings", None), SharedEmbeddings):
        q.embeddings.untie_output()  # a translation model's vocabulary projection: a fifth of a decoding step
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
    q = dynamic_int8(q, names)
    modules = dict(q.named_modules())
    for name, input_scale in input_scales.items():
        set_input_scale(modules[name], input_scale)
    set_config(q, model.config.replace(quantization=settings))
    return q


def to_bf16(model: nn.Module) -> nn.Module:
    """A copy of `model` with bfloat16 weights; config.dtype records it."""
    if getattr(model.config, "quantization", None):
        raise CheckpointError("an int8 model cannot be cast to bf16; start from the fp32 model")
    new = copy.deepcopy(model).to(torch.bfloat16)
    set_config(new, model.config.replace(dtype="bfloat16"))
    return new
