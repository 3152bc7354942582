"""A Linear layer for fp32 inference on the CPU whose weight oneDNN lays out once, ahead of time.

A GEMM kernel reads the weight in a blocked layout of its own. `F.linear` hands it the plain
(out, in) matrix, so every call starts by reordering it; for a decoding step, a few rows times a
large matrix such as the vocabulary projection, that reordering costs as much as the product.
oneDNN can do it once ("prepacking"). torch.compile does the same when it freezes a model
(`torch._inductor.config.freezing`); `PackedLinear` does it without compiling, through the same
two operators: `torch.ops.mkldnn._reorder_linear_weight` and `torch.ops.mkldnn._linear_pointwise`.

They are internal to PyTorch, so `PackedLinear.available` tries them once and everything falls
back to the plain layer where they are missing. On a 2-core AMD EPYC (AVX-512), torch 2.13, the
(8000 x 256) vocabulary projection of a Multi30k translation model ran 2.5x faster for 1 row and
4.2x for 32; greedy decoding in batches of 32 ran 1.22x faster (BENCHMARKS.md,
`benchmarks/packed_projection.py`). Small matrices gain little or lose at 1 row, which is why
models pack only their projection.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


@functools.cache
def _operators_work() -> bool:
    try:
        weight = torch.randn(3, 2)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 4)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2), packed, None, "none", [], "")
        return bool(torch.allclose(out, weight.sum(1)[None], atol=1e-5))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


class PackedLinear(nn.Module):
    """y = x W^T + b, with W prepacked by oneDNN, for inference: nothing flows back to W, and an
    input that needs a gradient is refused. It copies nothing that can be trained: build it
    again after the source weights change. It is not meant for a checkpoint (the packed tensor
    has no storage); keep it out of `state_dict`, as `SharedEmbeddings` does."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, rows_hint: int = 32):
        super().__init__()
        if not self.supports(weight):
            raise ValueError(f"PackedLinear needs an fp32 CPU weight and oneDNN; got {weight.dtype} on "
                             f"{weight.device}")
        self.out_features, self.in_features = weight.shape
        self.rows_hint = rows_hint  # the number of rows oneDNN tunes the layout for
        # plain attributes, not buffers: the source weight is kept to copy the layer (the packed
        # tensor cannot be copied), and none of them belongs in a state dict
        self.source_weight = weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.source_weight.contiguous(), rows_hint)
        self.bias_ = None if bias is None else bias.detach().contiguous()

    @staticmethod
    def available() -> bool:
        """Whether this machine's PyTorch has oneDNN's packing operators, and they work."""
        return torch.backends.mkldnn.is_available() and _operators_work()

    @staticmethod
    def supports(weight: torch.Tensor) -> bool:
        """Whether `weight` can be packed here: fp32, on the CPU, with oneDNN's operators present."""
        return weight.device.type == "cpu" and weight.dtype == torch.float32 and PackedLinear.available()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("PackedLinear serves inference only; train the model's own layers")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias_, "none", [], "")

    def __deepcopy__(self, memo: dict) -> PackedLinear:
        bias = None if self.bias_ is None else self.bias_.clone()
        return PackedLinear(self.source_weight.clone(), bias, self.rows_hint)

    def extra_repr(self) -> str:
        bias = self.bias_ is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}"
