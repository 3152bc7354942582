"""Model-parallel training on PyTorch's own engines: FSDP2 and tensor parallelism.

- Fully sharded data parallel (FSDP2, `torch.distributed.fsdp.fully_shard`; Zhao et al. 2023):
  every Transformer block and the rest of the model are sharded over the processes; parameters
  are all-gathered for use and gradients reduce-scattered (averaged). Each process reads its
  own data, as under DDP. For models whose weights, gradients and optimizer state do not fit
  one device.
- Tensor parallelism in Megatron-LM's layout (Shoeybi et al. 2019), through
  `torch.distributed.tensor.parallel`: in every block the q/k/v projections and the
  feed-forward's first layer are column-parallel, the attention output and the feed-forward's
  second layer row-parallel. A process holds num_heads / N heads and I / N neurons, and a block
  costs one all-reduce after attention and one after the feed-forward. Embeddings, norms and the
  MLM head stay replicated; every process reads the same batch.

The Trainer takes a `Sharding` and asks it to shard the model, to stop gradient sync between
micro-batches, to clip, and to gather and scatter full state dicts for checkpoints
(`torch.distributed.checkpoint.state_dict`), so that checkpoints are ordinary slimbert
directories and `--resume` works as it does on one process.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from slimbert.checkpoint import load_weights
from slimbert.errors import ConfigError
from slimbert.models import build_model

ShardingKind = Literal["fsdp", "tensor"]


def is_dtensor(t: torch.Tensor) -> bool:
    # DTensor's module is imported only when something shards (it costs a second to import).
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a DTensor; a plain tensor as it is."""
    return t.to_local() if is_dtensor(t) else t


def _state_dict_api():
    from torch.distributed.checkpoint import state_dict

    return state_dict


def _layers(model: nn.Module) -> nn.ModuleList:
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ConfigError(f"a {type(model).__name__} has no Transformer layers to shard")
    return layers


@dataclass
class Sharding:
    """How the model is split over the `world` processes of the run."""

    kind: ShardingKind  # "fsdp": parameters sharded, data split; "tensor": layers split, data shared
    world: int  # processes (all of them shard the model)

    def __post_init__(self) -> None:
        if self.kind not in ("fsdp", "tensor"):
            raise ConfigError(f"sharding must be 'fsdp' or 'tensor', got '{self.kind}'")
        if self.world < 2:
            raise ConfigError(f"{self.kind} sharding needs 2 or more processes (torchrun "
                              f"--nproc_per_node N), got {self.world}")

    @property
    def data_parallel_size(self) -> int:
        """Processes that read different data."""
        return self.world if self.kind == "fsdp" else 1

    def apply(self, model: nn.Module, device: torch.device) -> None:
        """Shard `model` in place (its parameters become DTensors); before the optimizer is made."""
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device.type, (self.world,))
        if self.kind == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for layer in _layers(model):
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            return
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

        plan = {"attn.q_proj": ColwiseParallel(), "attn.k_proj": ColwiseParallel(),
                "attn.v_proj": ColwiseParallel(), "attn.out_proj": RowwiseParallel(),
                "ffn.fc_in": ColwiseParallel(), "ffn.fc_out": RowwiseParallel()}
        for i, layer in enumerate(_layers(model)):
            heads, width = layer.attn.num_heads, layer.ffn.width
            if heads % self.world or width % self.world:
                raise ConfigError(f"tensor parallel {self.world}: layer {i} has {heads} heads and {width} "
                                  f"feed-forward neurons; both must divide by {self.world}")
            parallelize_module(layer, mesh, plan)
            layer.attn.num_heads = heads // self.world  # the heads this process computes

    def sync(self, model: nn.Module, sync: bool):
        """Gradient reduction on (the last micro-batch of a step) or off (the others)."""
        if self.kind == "fsdp":
            model.set_requires_gradient_sync(sync)
        return nullcontext()

    @staticmethod
    def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
        """torch's clip_grad_norm_ over a mix of DTensor and plain gradients: each DTensor's norm
        is reduced over its shards, replicated ones count once."""
        grads = [p.grad for p in parameters if p.grad is not None]
        norms = []
        for g in grads:
            n = torch.linalg.vector_norm(g.float())
            norms.append(n.full_tensor() if is_dtensor(n) else n)
        total = torch.linalg.vector_norm(torch.stack(norms))
        coef = float(torch.clamp(max_norm / (total + 1e-6), max=1.0))
        if coef < 1.0:
            for g in grads:
                g.mul_(coef)
        return total

    # ------------------------------------------------------------------ full state dicts
    def gathered_model(self, model: nn.Module) -> nn.Module | None:
        """A full copy of the model on the CPU on rank 0 (None elsewhere): what a checkpoint
        saves and an evaluation runs. Every process must call it (it gathers the shards)."""
        api = _state_dict_api()
        options = api.StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = api.get_model_state_dict(model, options=options)
        if dist.get_rank() != 0:
            return None
        full = build_model(model.config)
        full.load_state_dict(state, strict=False)
        return full.train(model.training)

    def load_model_state(self, model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
        """Scatter a checkpoint's weights (as `read_state_dict` gives them, every key and shape
        checked by `load_weights`) into the sharded model."""
        full = build_model(model.config)
        load_weights(full, state, source=source)
        api = _state_dict_api()
        expected = set(api.get_model_state_dict(model).keys())
        api.set_model_state_dict(model, {k: v for k, v in full.state_dict().items() if k in expected},
                                 options=api.StateDictOptions(full_state_dict=True))

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The full optimizer state (rank 0; every process must call it)."""
        api = _state_dict_api()
        options = api.StateDictOptions(full_state_dict=True, cpu_offload=True)
        return api.get_optimizer_state_dict(model, optimizer, options=options)

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        api = _state_dict_api()
        options = api.StateDictOptions(full_state_dict=True)
        api.set_optimizer_state_dict(model, optimizer, state, options=options)
