"""Export a slimbert `Seq2SeqTransformer` to Hugging Face's MarianMT layout (`MarianMTModel`).

MarianMT (Junczys-Dowmunt et al. 2018, https://arxiv.org/abs/1804.00344, as `transformers`
implements it) is the same post-norm encoder-decoder Transformer: sinusoidal positions added at
the embeddings, optionally sqrt(d)-scaled embeddings, q/k/v/out projections with biases, a
two-layer feed-forward network, LayerNorm after each residual sum, one shared
source/target/output embedding (or three untied ones) and no embedding LayerNorm. What it cannot
express, and the export refuses (`CheckpointError`): pre-norm blocks (`norm_style="pre"`),
learned or rotary positions, a LayerNorm epsilon other than 1e-5, an odd hidden size, an
int8 model, and an activation `transformers` names differently.

One difference remains, and the export removes it: the sinusoid's layout. slimbert interleaves
the features, PE[p, 2i] = sin(p w_i), PE[p, 2i+1] = cos(p w_i); Marian puts every sine first
and every cosine after, PE[p, i] = sin(p w_i), PE[p, H/2 + i] = cos(p w_i), with the same
frequencies w_i = 10000^(-2i/H). The two are one permutation of the hidden features apart, and
a post-norm Transformer computes the same function when every hidden axis of every weight is
permuted together (LayerNorm's mean and variance do not depend on the order of the features,
attention and feed-forward only sum over them, and tied logits h . E^T are a sum over them
too). So the Marian weights are slimbert's with hidden feature `PERM[m]` moved to position m:
the logits are equal up to float rounding (the tests hold them to 1e-4) and greedy and beam
search give the same tokens.

Generation settings are written to the model's `generation_config` so that HF `generate`
follows slimbert's search rules: decoding starts from <s> (`decoder_start_token_id`), <pad> and
<s> are never generated (`suppress_tokens`), and </s> is forced at the length limit
(`forced_eos_token_id`). Two differences remain: HF's forced </s> scores 0 where slimbert keeps
its log-probability (which can reorder the n-best list of hypotheses cut at the limit, never
greedy's tokens), and HF's default `early_stopping=False` heuristic stops beams differently
from slimbert's "K finished hypotheses" rule (`early_stopping=True` is the same rule).

Notation: H = model width, V = vocabulary, I = feed-forward width.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from slimbert.config import Seq2SeqTransformerConfig
from slimbert.errors import CheckpointError
from slimbert.models.seq2seq import Seq2SeqTransformer
from slimbert.modules import TransformerLayer

# slimbert's hidden_act -> transformers' ACT2FN name of the same function
MARIAN_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_new",
                      "gelu_pytorch_tanh": "gelu_pytorch_tanh", "silu": "silu"}
MARIAN_LAYER_NORM_EPS = 1e-5  # MarianMT's LayerNorms use torch's default epsilon


def check_marian_compatible(config: Seq2SeqTransformerConfig) -> None:
    """Raise a one-line CheckpointError naming the config field that MarianMT cannot express."""
    if not isinstance(config, Seq2SeqTransformerConfig):
        raise CheckpointError(f"only a Seq2SeqTransformer has a MarianMT form, not a {config.MODEL_TYPE}")
    why = None
    if config.quantization:
        why = "it is int8; export the fp32 model"
    elif config.norm_style != "post":
        why = "norm_style='pre': MarianMT's blocks are post-norm only"
    elif config.position_embedding_type != "sinusoidal":
        why = (f"position_embedding_type='{config.position_embedding_type}': MarianMT has fixed sinusoidal "
               "positions only")
    elif config.hidden_size % 2:
        why = f"hidden_size={config.hidden_size} is odd: the two sinusoid layouts differ by more than an order"
    elif config.layer_norm_eps != MARIAN_LAYER_NORM_EPS:
        why = f"layer_norm_eps={config.layer_norm_eps}: MarianMT's LayerNorms use {MARIAN_LAYER_NORM_EPS}"
    elif config.hidden_act not in MARIAN_ACTIVATIONS:
        why = f"hidden_act='{config.hidden_act}' has no MarianMT name"
    if why:
        raise CheckpointError(f"this model has no MarianMT form: {why}")


def marian_config(config: Seq2SeqTransformerConfig, max_positions: int | None = None):
    """The `transformers.MarianConfig` of the same shape. `max_positions`: rows of Marian's
    position table (default: the longer of the model's source and target limits, + 1)."""
    from transformers import MarianConfig

    check_marian_compatible(config)
    positions = max_positions or max(config.max_source_length, config.max_target_length) + 1
    return MarianConfig(
        vocab_size=config.vocab_size, decoder_vocab_size=config.vocab_size, d_model=config.hidden_size,
        encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.num_attention_heads, decoder_attention_heads=config.num_attention_heads,
        encoder_ffn_dim=config.intermediate_size, decoder_ffn_dim=config.intermediate_size,
        activation_function=MARIAN_ACTIVATIONS[config.hidden_act], max_position_embeddings=positions,
        scale_embedding=config.scale_embeddings, dropout=config.dropout,
        attention_dropout=config.attention_dropout, activation_dropout=0.0,
        share_encoder_decoder_embeddings=config.tie_embeddings, tie_word_embeddings=config.tie_embeddings,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.bos_token_id, forced_eos_token_id=config.eos_token_id)


def sinusoid_permutation(hidden_size: int) -> torch.Tensor:
    """PERM (H,): Marian's hidden feature m is slimbert's feature PERM[m] (sines, then cosines)."""
    return torch.cat([torch.arange(0, hidden_size, 2), torch.arange(1, hidden_size, 2)])


def _attention(prefix: str, attn: nn.Module, perm: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("q_proj", "k_proj", "v_proj"):  # input is the hidden axis, output the heads'
        proj = getattr(attn, name)
        out[f"{prefix}.{name}.weight"] = proj.weight[:, perm]  # (N*D, H)
        out[f"{prefix}.{name}.bias"] = proj.bias
    out[f"{prefix}.out_proj.weight"] = attn.out_proj.weight[perm]  # (H, N*D)
    out[f"{prefix}.out_proj.bias"] = attn.out_proj.bias[perm]
    return out


def _norm(prefix: str, norm: nn.LayerNorm, perm: torch.Tensor) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": norm.weight[perm], f"{prefix}.bias": norm.bias[perm]}


def _layer(prefix: str, layer: TransformerLayer, perm: torch.Tensor) -> dict[str, torch.Tensor]:
    """One block's weights under Marian's names (self_attn, encoder_attn, fc1, fc2, *_layer_norm)."""
    sd = {**_attention(f"{prefix}.self_attn", layer.attn, perm),
          **_norm(f"{prefix}.self_attn_layer_norm", layer.attn_norm, perm)}
    if layer.cross_attn is not None:
        sd.update(_attention(f"{prefix}.encoder_attn", layer.cross_attn, perm))
        sd.update(_norm(f"{prefix}.encoder_attn_layer_norm", layer.cross_norm, perm))
    fc_in, fc_out = layer.ffn.fc_in, layer.ffn.fc_out
    sd.update({f"{prefix}.fc1.weight": fc_in.weight[:, perm], f"{prefix}.fc1.bias": fc_in.bias,  # (I, H)
               f"{prefix}.fc2.weight": fc_out.weight[perm], f"{prefix}.fc2.bias": fc_out.bias[perm]})  # (H, I)
    sd.update(_norm(f"{prefix}.final_layer_norm", layer.ffn_norm, perm))
    return sd


def marian_state_dict(model: Seq2SeqTransformer) -> dict[str, torch.Tensor]:
    """slimbert's weights under MarianMTModel's names, hidden features in Marian's order.

    Position tables are not included (Marian computes them); `final_logits_bias` is zero."""
    check_marian_compatible(model.config)
    H, V = model.config.hidden_size, model.config.vocab_size
    perm = sinusoid_permutation(H)
    emb = model.embeddings
    source = emb.tokens.weight[:, perm]  # (V, H)
    target = (emb.target_tokens or emb.tokens).weight[:, perm]
    output = emb.output.weight[:, perm] if emb.output is not None else source
    sd = {"model.encoder.embed_tokens.weight": source, "model.decoder.embed_tokens.weight": target,
          "lm_head.weight": output, "final_logits_bias": torch.zeros(1, V)}
    if model.config.tie_embeddings:
        sd["model.shared.weight"] = source
    for stack, name in ((model.encoder, "encoder"), (model.decoder, "decoder")):
        for i, layer in enumerate(stack.layers):
            sd.update(_layer(f"model.{name}.layers.{i}", layer, perm))
    return {k: v.detach().float().clone() for k, v in sd.items()}


def to_marian(model: Seq2SeqTransformer, max_positions: int | None = None):
    """A `transformers.MarianMTModel` (eval mode) that computes what `model` computes.

    Every Marian weight is written, with its shape checked; the only ones not taken from
    `model` are the two position tables, which Marian builds itself (and never saves)."""
    from transformers import GenerationConfig, MarianMTModel

    config = model.config
    hf = MarianMTModel(marian_config(config, max_positions)).eval()
    sd = marian_state_dict(model)
    target = hf.state_dict()
    computed = {k for k in target if k.endswith("embed_positions.weight")}
    missing = sorted(set(target) - set(sd) - computed)
    unexpected = sorted(set(sd) - set(target))
    if missing or unexpected:
        raise CheckpointError(f"MarianMT layout mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}")
    for key, tensor in sd.items():
        if tuple(tensor.shape) != tuple(target[key].shape):
            raise CheckpointError(f"MarianMT weight {key}: shape {tuple(tensor.shape)} where Marian has "
                                  f"{tuple(target[key].shape)}")
    sd.update({k: target[k] for k in computed})
    hf.load_state_dict(sd, strict=True)
    hf.generation_config = GenerationConfig(
        decoder_start_token_id=config.bos_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        forced_eos_token_id=config.eos_token_id, suppress_tokens=[config.pad_token_id, config.bos_token_id],
        max_length=config.max_target_length + 1, num_beams=1)
    return hf


def export_marian(model: Seq2SeqTransformer, directory: str | Path, tokenizer_dir: str | Path | None = None,
                  max_positions: int | None = None) -> Path:
    """Write `model` as a MarianMTModel directory (`MarianMTModel.from_pretrained` reads it).

    With `tokenizer_dir` (a slimbert translation checkpoint), its `tokenizer.json` is written
    beside the model as a `PreTrainedTokenizerFast` (`AutoTokenizer` reads it) that appends
    </s> to every source, as slimbert's data does: `tokenizer(lines)` then gives the ids
    slimbert's `translate` decodes, and `batch_decode(..., skip_special_tokens=True)` the same
    detokenized text, so BLEU is computed on the same strings."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import processors

    directory = Path(directory)
    hf = to_marian(model, max_positions)
    hf.save_pretrained(directory)
    if tokenizer_dir is not None:
        from transformers import PreTrainedTokenizerFast

        source = Path(tokenizer_dir) / "tokenizer.json"
        if not source.exists():
            raise CheckpointError(f"{source}: no such tokenizer file")
        tok = RustTokenizer.from_file(str(source))
        eos = model.config.eos_token_id
        if tok.id_to_token(eos) != "</s>" or tok.get_vocab_size() != model.config.vocab_size:
            raise CheckpointError(f"{source}: not this model's vocabulary (size {tok.get_vocab_size()}, "
                                  f"id {eos} is {tok.id_to_token(eos)!r}, not '</s>')")
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                       bos_token="<s>", eos_token="</s>")
        fast.save_pretrained(directory)
    return directory
