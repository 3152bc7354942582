"""A BERT with rotary positions, written as `transformers`' RoFormer (Su et al. 2021).

RoFormer is BERT (post-norm, multi-head attention, the same embeddings minus the position
table, the same MLM head) whose attention rotates q and k. Two things differ from slimbert's
`BertConfig(position_embedding_type="rope")`, and this module bridges both:

- Names: the encoder is `roformer.*` instead of `bert.*`.
- Which features are paired for the rotation. slimbert rotates feature i with feature i + D/2
  of each head ("rotate half"); RoFormer rotates feature 2i with 2i + 1 (interleaved). Both use
  the angle p * 10000^(-2i/D) for pair i. So the export reorders the rows of the query and key
  projections inside every head: RoFormer's feature 2i is slimbert's i, and 2i + 1 is
  slimbert's i + D/2. q and k are reordered alike, so every score q . k is unchanged (a dot
  product does not depend on the order of its terms), and v is untouched.

What RoFormer cannot hold: a classifier (its head is dense + the hidden activation on [CLS],
where BERT's is a tanh pooler), pre-norm, GAU and the log(n) scale. The other way, `load_model`
reads a RoFormerForMaskedLM or RoFormerModel checkpoint whose values are not rotated and whose
embeddings are hidden-wide (`config.bert_config_from_roformer`, `checkpoint.from_roformer_state_dict`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from slimbert.checkpoint import CONFIG_NAME, WEIGHTS_NAME, model_state_dict, reorder_head_rows, rotary_pairing
from slimbert.config import ROFORMER_ARCHITECTURES, BertConfig
from slimbert.errors import CheckpointError
from slimbert.io import atomic_write, atomic_write_text
from slimbert.tokenizer import Tokenizer

ARCHITECTURES = ROFORMER_ARCHITECTURES


def roformer_blocker(config: BertConfig) -> str | None:
    """Why this model has no RoFormer form, or None when it has one."""
    if config.position_embedding_type != "rope":
        return "it has no rotary positions"
    unsupported = [(config.norm_style != "post", "norm_style='pre'"),
                   (config.attention_type != "mha", "attention_type='gau'"),
                   (config.attention_scale != "sqrt", "attention_scale='log_n'"),
                   (config.head not in ARCHITECTURES, "a classification head (RoFormer's differs from BERT's)"),
                   (config.quantization is not None, "int8 weights")]
    reasons = [why for bad, why in unsupported if bad]
    return f"RoFormer cannot compute {', '.join(reasons)}" if reasons else None


def interleave_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The rows (output features) of a q or k projection, reordered inside each head from
    slimbert's rotate-half pairing (i, i + D/2) to RoFormer's interleaved one (2i, 2i + 1).
    Works for a weight (N*D, H) and a bias (N*D,)."""
    return reorder_head_rows(weight, num_heads, rotary_pairing(weight.shape[0] // num_heads))


def roformer_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """slimbert's weights (HF BERT names) -> RoFormer's names, q/k rows interleaved."""
    config: BertConfig = model.config
    out = {}
    for name, value in model_state_dict(model).items():
        if ".pooler." in f".{name}":
            continue  # RoFormerModel has no pooler
        parts = name.split(".")
        if parts[0] == "bert":  # a bare encoder's names have no prefix, in both layouts
            parts[0] = "roformer"
        if len(parts) > 2 and parts[-3] == "self" and parts[-2] in ("query", "key"):
            value = interleave_rows(value, config.num_attention_heads)
        out[".".join(parts)] = value
    prefix = "roformer." if config.head == "mlm" else ""
    out[f"{prefix}encoder.embed_positions.weight"] = rotary_table(config.max_position_embeddings, config.head_dim)
    return out


def rotary_table(positions: int, head_dim: int) -> torch.Tensor:
    """RoFormer's table of rotation angles (P, D): sin(p * theta_i) for the first D/2 columns,
    cos(p * theta_i) for the rest, theta_i = 10000^(-2i/D), in float64 as `transformers` makes it.
    It is a fixed function of the shape; writing it keeps the loaded checkpoint complete."""
    theta = 10000.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * theta  # (P, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def roformer_config(config: BertConfig) -> dict:
    """The config.json `transformers` builds a RoFormer from."""
    fields = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
              "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id")
    return {"model_type": "roformer", "architectures": [ARCHITECTURES[config.head]],
            **{k: getattr(config, k) for k in fields},
            "embedding_size": config.hidden_size, "rotary_value": False, "tie_word_embeddings": True,
            "torch_dtype": "float32"}


def export_roformer(model: nn.Module, tokenizer: Tokenizer | None, directory: str | Path) -> Path:
    """Write a checkpoint `transformers.RoFormerForMaskedLM` (or `RoFormerModel`) loads with the
    same outputs as this rotary slimbert BERT."""
    config = model.config
    why = roformer_blocker(config)
    if why:
        raise CheckpointError(f"this model has no RoFormer form: {why}; keep it as a slimbert checkpoint")
    if tokenizer is not None and len(tokenizer) != config.vocab_size:
        raise CheckpointError(f"tokenizer has {len(tokenizer)} tokens but the model's "
                              f"vocab_size is {config.vocab_size}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = roformer_state_dict(model)
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(sd, str(p), metadata={"format": "pt"}))
    atomic_write_text(directory / CONFIG_NAME, json.dumps(roformer_config(config), indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(directory)  # tokenizer_config.json names BertTokenizer: RoFormer's own is for Chinese
    return directory
