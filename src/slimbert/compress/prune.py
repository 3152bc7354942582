"""Structured pruning: remove whole attention heads, feed-forward neurons or layers.

Every operation returns a new model whose weight matrices are physically smaller, so it is
faster with no sparse kernels, and whose config records what was removed (`pruned_heads`,
`intermediate_sizes`, `num_hidden_layers`), so the checkpoint reloads with no special code.
`dense_equivalent` pads a pruned model back to Hugging Face's uniform shapes with zeros, which
computes exactly the same function, for export to stock `transformers`.

Which heads and neurons to remove comes from their importance (Michel et al. 2019,
https://arxiv.org/abs/1905.10650): a gate g = 1 multiplies every head's output and every
feed-forward neuron's activation, and the importance of a unit is the sum over a data sample
of |dL/dg|, L the task loss. Scores are L2-normalised within each layer, then ranked across
all layers, so a layer loses as many units as its scores say (but never its last one).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from slimbert.compress.students import keep_layers
from slimbert.config import BertConfig
from slimbert.data.batching import Batch
from slimbert.errors import SlimbertError
from slimbert.models import build_model, set_config
from slimbert.training.objectives import Objective

Units = dict[int, list[int]]  # layer -> unit indices (heads or neurons) in the layer as it is now


class PruneError(SlimbertError):
    """A pruning request that cannot be carried out (no such layer/head, nothing would be left)."""


@dataclass
class Gates:
    """One value per attention head and per feed-forward neuron, layer by layer."""

    heads: list[torch.Tensor]  # layer l: (N_l,)
    ffn: list[torch.Tensor]  # layer l: (I_l,)


def _layers(model: nn.Module, units: bool = True) -> nn.ModuleList:
    """The model's layers; `units`: they must have heads and neurons (multi-head attention)."""
    if not isinstance(getattr(model, "config", None), BertConfig):
        raise PruneError("pruning needs a BERT model (bilstm and cnn students have no heads or layers to prune)")
    if units and model.config.attention_type != "mha":
        raise PruneError(f"pruning needs multi-head attention layers; this model has attention_type="
                         f"'{model.config.attention_type}' (GAU), which has no heads or feed-forward neurons")
    return model.layers


def ones_like_units(model: nn.Module) -> Gates:
    """Gates of 1 (nothing masked) shaped like `model`'s heads and neurons."""
    device = next(model.parameters()).device
    layers = _layers(model)
    return Gates(heads=[torch.ones(layer.attn.num_heads, device=device) for layer in layers],
                 ffn=[torch.ones(layer.ffn.width, device=device) for layer in layers])


def masks(model: nn.Module, heads: Units | None = None, neurons: Units | None = None) -> Gates:
    """Gates that zero the given heads and neurons (and pass everything else)."""
    gates = ones_like_units(model)
    for layer, units in (heads or {}).items():
        gates.heads[layer][units] = 0.0
    for layer, units in (neurons or {}).items():
        gates.ffn[layer][units] = 0.0
    return gates


@contextmanager
def gated(model: nn.Module, gates: Gates | None = None) -> Iterator[Gates]:
    """Within the block, every head's output and every neuron's activation is multiplied by its gate.

    Multiplying a head's context vectors by g is multiplying its attention probabilities by g
    (the head mask of Michel et al.); a gate of 0 removes the unit from the computation.
    """
    gates = gates or ones_like_units(model)
    handles = []
    for layer, head_gate, ffn_gate in zip(_layers(model), gates.heads, gates.ffn):
        def scale_heads(module, args, attn=layer.attn, g=head_gate):
            context = args[0]  # the heads' outputs side by side, entering out_proj: (B, T, N*D)
            B, T, _ = context.shape
            per_head = context.view(B, T, attn.num_heads, attn.head_dim) * g.to(context.dtype)[:, None]
            return (per_head.view(B, T, -1),)

        handles.append(layer.attn.out_proj.register_forward_pre_hook(scale_heads))
        handles.append(layer.ffn.fc_out.register_forward_pre_hook(  # activations (B, T, I) * (I,)
            lambda module, args, g=ffn_gate: (args[0] * g.to(args[0].dtype),)))
    try:
        yield gates
    finally:
        for handle in handles:
            handle.remove()


def importance(model: nn.Module, batches: Iterable[Batch], objective: Objective,
               progress: bool = False) -> Gates:
    """Michel et al.'s importance of every head and neuron: sum over `batches` of |dL/d gate|.

    The model is scored as it serves (eval mode: no dropout); its weights get no gradients.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores = ones_like_units(model)
    for t in scores.heads + scores.ffn:
        t.zero_()
    gates = ones_like_units(model)
    for g in gates.heads + gates.ffn:
        g.requires_grad_(True)
    with gated(model, gates):
        for batch in tqdm(batches, desc="importance", disable=not progress, unit="batch"):
            batch = {k: v.to(device) for k, v in batch.items()}
            loss, _ = objective(model, batch)
            grads = torch.autograd.grad(loss, gates.heads + gates.ffn)
            for total, grad in zip(scores.heads + scores.ffn, grads):
                total += grad.abs()
    model.train(was_training)
    return scores


def lowest(scores: list[torch.Tensor], fraction: float, keep_per_layer: int = 1,
           multiple_of: int = 1) -> Units:
    """The `fraction` of all units with the lowest per-layer-normalised scores, as
    {layer: [units]}; every layer keeps at least `keep_per_layer` units.

    With `multiple_of` m > 1 the number a layer keeps is then rounded to the nearest multiple
    of m (at least m; a layer of m units or fewer is left whole): matmul kernels run widths
    like 768 much faster than 757 (AMX bf16 tiles are 16 x 32, oneDNN blocks by 64), so the
    total removed is the target up to m/2 per layer."""
    if not 0 <= fraction < 1:
        raise PruneError(f"fraction to prune must be in [0, 1), got {fraction}")
    if multiple_of < 1:
        raise PruneError(f"multiple_of must be at least 1, got {multiple_of}")
    total = sum(len(s) for s in scores)
    n_remove = round(fraction * total)
    normalised = [(s / s.norm().clamp_min(1e-12)).tolist() for s in scores]
    ranked = sorted((v, layer, unit) for layer, s in enumerate(normalised) for unit, v in enumerate(s))
    removed: Units = {}
    for _, layer, unit in ranked:
        if n_remove == 0:
            break
        if len(scores[layer]) - len(removed.get(layer, [])) > keep_per_layer:
            removed.setdefault(layer, []).append(unit)
            n_remove -= 1
    if multiple_of > 1:
        for layer, s in enumerate(normalised):
            size = len(s)
            if size <= multiple_of:
                removed.pop(layer, None)
                continue
            kept = size - len(removed.get(layer, []))
            kept = min(size, max(multiple_of, multiple_of * round(kept / multiple_of)))
            order = sorted(range(size), key=lambda unit: s[unit])  # lowest score first
            removed[layer] = order[:size - kept]
        removed = {layer: units for layer, units in removed.items() if units}
    return {layer: sorted(units) for layer, units in sorted(removed.items())}


# ------------------------------------------------------------------ the operations


def _linear_subset(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A Linear keeping output rows (dim=0) or input columns (dim=1) at `index`."""
    weight = linear.weight.detach().index_select(dim, index)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach().index_select(0, index) if dim == 0 else linear.bias.detach())
    return new


def _check_units(units: Units, sizes: list[int], what: str) -> None:
    for layer, idx in units.items():
        if not 0 <= layer < len(sizes):
            raise PruneError(f"layer {layer} does not exist (the model has {len(sizes)})")
        if len(set(idx)) != len(idx) or not all(0 <= i < sizes[layer] for i in idx):
            raise PruneError(f"layer {layer}: {what} {sorted(idx)} are not distinct indices in 0..{sizes[layer] - 1}")
        if len(idx) >= sizes[layer]:
            raise PruneError(f"layer {layer} would lose all its {what}")


def prune_heads(model: nn.Module, heads: Units) -> nn.Module:
    """A copy of `model` without `heads` ({layer: [head indices in the layer as it is now]}).

    `config.pruned_heads` records the removed heads by their index in the unpruned layer,
    as Hugging Face does, so pruning twice composes.
    """
    layers = _layers(model)
    _check_units(heads, [layer.attn.num_heads for layer in layers], "heads")
    new = copy.deepcopy(model)
    cfg: BertConfig = new.config
    pruned = {layer: list(v) for layer, v in cfg.pruned_heads.items()}
    for layer_idx, drop in heads.items():
        attn = new.layers[layer_idx].attn
        n, d = attn.num_heads, attn.head_dim
        keep = [h for h in range(n) if h not in set(drop)]
        rows = _head_rows(keep, d, attn.q_proj.weight.device)
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(attn, name, _linear_subset(getattr(attn, name), rows, dim=0))
        attn.out_proj = _linear_subset(attn.out_proj, rows, dim=1)
        attn.num_heads = len(keep)
        original = [h for h in range(cfg.num_attention_heads) if h not in pruned.get(layer_idx, [])]
        pruned[layer_idx] = sorted(pruned.get(layer_idx, []) + [original[h] for h in drop])
    set_config(new, cfg.replace(pruned_heads=pruned))
    return new


def prune_ffn(model: nn.Module, neurons: Units) -> nn.Module:
    """A copy of `model` without the feed-forward `neurons` ({layer: [neuron indices]});
    `config.intermediate_sizes` records each layer's new width."""
    layers = _layers(model)
    sizes = [layer.ffn.width for layer in layers]
    _check_units(neurons, sizes, "feed-forward neurons")
    new = copy.deepcopy(model)
    for layer_idx, drop in neurons.items():
        ffn = new.layers[layer_idx].ffn
        keep = torch.tensor([i for i in range(sizes[layer_idx]) if i not in set(drop)],
                            device=ffn.fc_in.weight.device)
        ffn.fc_in = _linear_subset(ffn.fc_in, keep, dim=0)
        ffn.fc_out = _linear_subset(ffn.fc_out, keep, dim=1)
        sizes[layer_idx] = len(keep)
    set_config(new, new.config.replace(intermediate_sizes=sizes))
    return new


def drop_layers(model: nn.Module, keep: list[int]) -> nn.Module:
    """A copy of `model` with only the layers `keep` (in that order); best after LayerDrop training."""
    _layers(model, units=False)
    return keep_layers(model, keep)


def _head_rows(heads: list[int], head_dim: int, device: torch.device) -> torch.Tensor:
    """Rows of a q/k/v projection (columns of out_proj) that belong to `heads`."""
    return torch.tensor([h * head_dim + j for h in heads for j in range(head_dim)], device=device)


def _place(dst: nn.Linear, src: nn.Linear, index: torch.Tensor, dim: int) -> None:
    """dst = zeros, with src's output rows (dim=0) or input columns (dim=1) at `index`."""
    dst.weight.zero_()
    dst.weight.index_copy_(dim, index, src.weight.detach())
    if dst.bias is not None:
        if dim == 0:
            dst.bias.zero_()
            dst.bias.index_copy_(0, index, src.bias.detach())
        else:
            dst.bias.copy_(src.bias.detach())


def dense_equivalent(model: nn.Module) -> nn.Module:
    """The same function in Hugging Face's uniform shapes: removed heads and neurons come back
    with all-zero weights. Exact: a head whose value projection is zero outputs zeros, and a
    neuron whose input row and bias are zero has activation act(0) = 0 and a zero output column."""
    cfg: BertConfig = model.config
    if not cfg.is_pruned:
        return model
    dense_cfg = cfg.replace(pruned_heads={}, intermediate_sizes=None,
                            intermediate_size=max(cfg.intermediate_size, *(cfg.intermediate_sizes or [0])))
    device = next(model.parameters()).device
    dense = build_model(dense_cfg).to(device)
    dense_state = dense.state_dict()
    with torch.no_grad():
        # Everything of the same shape (embeddings, norms, pooler, heads, unpruned layers) as it is ...
        dense.load_state_dict({k: v for k, v in model.state_dict().items()
                               if k in dense_state and dense_state[k].shape == v.shape}, strict=False)
        # ... then each layer's projections, heads at their original positions, neurons first.
        for i, (src, dst) in enumerate(zip(model.layers, dense.layers)):
            kept = [h for h in range(cfg.num_attention_heads) if h not in cfg.pruned_heads.get(i, [])]
            rows = _head_rows(kept, cfg.head_dim, device)
            for name in ("q_proj", "k_proj", "v_proj"):
                _place(getattr(dst.attn, name), getattr(src.attn, name), rows, dim=0)
            _place(dst.attn.out_proj, src.attn.out_proj, rows, dim=1)
            neurons = torch.arange(src.ffn.width, device=device)  # neurons carry no identity
            _place(dst.ffn.fc_in, src.ffn.fc_in, neurons, dim=0)
            _place(dst.ffn.fc_out, src.ffn.fc_out, neurons, dim=1)
    return dense.train(model.training)
