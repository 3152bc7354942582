"""Export a slimbert `Seq2SeqTransformer` to CTranslate2, and translate with the exported model.

CTranslate2 (OpenNMT, https://github.com/OpenNMT/CTranslate2) is a C++ inference engine for
Transformers: int8 GEMMs with one scale per weight row, the cross-attention K/V projected once
per source, beam search in C++. The export fills its `TransformerSpec` (the model description
of its Python converter API) with slimbert's weights, one to one:

    slimbert                                CTranslate2 spec
    embeddings.tokens (tied)                encoder.embeddings[0], decoder.embeddings, decoder.projection
    source/target_positions(0..P-1)         {encoder,decoder}.position_encodings.encodings (P, H)
    layer.attn q/k/v_proj, out_proj         layer.self_attention.linear[0] (q|k|v fused), linear[1]
    layer.cross_attn q_proj | k/v_proj      layer.attention.linear[0] | linear[1] (k|v fused), linear[2]
    layer.attn_norm, cross_norm, ffn_norm   layer.self_attention.layer_norm, attention.layer_norm, ffn.layer_norm
    layer.ffn.fc_in, fc_out                 layer.ffn.linear_0, linear_1
    {encoder,decoder}.final_norm (pre-norm) {encoder,decoder}.layer_norm

The position table is written out whole, so slimbert's interleaved sinusoid (and a learned
table) needs no permutation, unlike the MarianMT export. Both post-norm and pre-norm blocks
export. Refused, with the field named: rotary positions (CTranslate2's encoder-decoder has
none), an int8 model (export the fp32 model; CTranslate2 quantizes it itself with
`quantization="int8"`) and an activation CTranslate2 lacks.

The exported directory holds CTranslate2's `model.bin`, `config.json` and
`shared_vocabulary.json`, plus slimbert's `tokenizer.json` and the source model's config as
`slimbert_config.json` (for the length limits), so `slimbert translate --backend ctranslate2`
needs nothing else.

Search rules, as slimbert's (`slimbert.generation.search`): decoding starts from <s>, <pad> and
<s> are never generated, </s> is not allowed before `min_length` tokens, and each sentence has
its own length limit. CTranslate2 takes one limit per call (`max_decoding_length`, </s> not
counted), so a batch is decoded in groups of sentences with equal limits.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from slimbert.config import ModelConfig, Seq2SeqTransformerConfig
from slimbert.errors import CheckpointError
from slimbert.generation.search import Hypothesis, SearchConfig, length_limits
from slimbert.generation.translation import Translations, translate_ids
from slimbert.io import replace_dir
from slimbert.models.seq2seq import Seq2SeqTransformer
from slimbert.modules import TransformerLayer
from slimbert.subword import SubwordTokenizer

SLIMBERT_CONFIG = "slimbert_config.json"  # the source model's config (CTranslate2 owns config.json)
CT2_MODEL_FILE = "model.bin"
VMAP_FILE = "vmap.txt"  # CTranslate2's vocabulary map, when exported with a target vocabulary
# slimbert's hidden_act -> the name of CTranslate2's common_spec.Activation member
CT2_ACTIVATIONS = {"relu": "RELU", "gelu": "GELU", "gelu_new": "GELUTanh",
                   "gelu_pytorch_tanh": "GELUTanh", "silu": "SWISH"}


def ctranslate2_module():
    try:
        import ctranslate2
    except ImportError:
        raise CheckpointError("CTranslate2 export and decoding need the ctranslate2 package: "
                              "pip install 'slimbert[seq2seq]' (or ctranslate2)") from None
    return ctranslate2


def check_ctranslate2_compatible(config: ModelConfig) -> None:
    """Raise a one-line CheckpointError naming what CTranslate2 cannot express."""
    if not isinstance(config, Seq2SeqTransformerConfig):
        raise CheckpointError(f"only a Seq2SeqTransformer exports to CTranslate2, not a {config.MODEL_TYPE}")
    why = None
    if config.quantization:
        why = "it is int8; export the fp32 model (CTranslate2 quantizes it with --int8)"
    elif config.position_embedding_type == "rope":
        why = "position_embedding_type='rope': CTranslate2's encoder-decoder has no rotary positions"
    elif config.hidden_act not in CT2_ACTIVATIONS:
        why = f"hidden_act='{config.hidden_act}' has no CTranslate2 activation"
    elif config.dtype != "float32":
        why = f"dtype={config.dtype}: export the fp32 model"
    if why:
        raise CheckpointError(f"this model has no CTranslate2 form: {why}")


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU fp32 copy for the spec. Never the parameter itself: CTranslate2's converter changes
    the spec's arrays in place (its int8 quantization does), and a shared tensor would carry
    that back into the model being exported."""
    return tensor.detach().to(device="cpu", dtype=torch.float32, copy=True).contiguous()


def _linear(spec, *layers: nn.Linear) -> None:
    """Fill a LinearSpec with `layers` stacked along their outputs (a fused projection)."""
    spec.weight = _copy(torch.cat([layer.weight.detach() for layer in layers]))
    spec.bias = _copy(torch.cat([layer.bias.detach() for layer in layers]))


def _norm(spec, norm: nn.LayerNorm) -> None:
    spec.gamma = _copy(norm.weight)
    spec.beta = _copy(norm.bias)


def _layer(spec, layer: TransformerLayer) -> None:
    attn = layer.attn
    _linear(spec.self_attention.linear[0], attn.q_proj, attn.k_proj, attn.v_proj)
    _linear(spec.self_attention.linear[1], attn.out_proj)
    _norm(spec.self_attention.layer_norm, layer.attn_norm)
    if layer.cross_attn is not None:
        cross = layer.cross_attn
        _linear(spec.attention.linear[0], cross.q_proj)
        _linear(spec.attention.linear[1], cross.k_proj, cross.v_proj)
        _linear(spec.attention.linear[2], cross.out_proj)
        _norm(spec.attention.layer_norm, layer.cross_norm)
    _linear(spec.ffn.linear_0, layer.ffn.fc_in)
    _linear(spec.ffn.linear_1, layer.ffn.fc_out)
    _norm(spec.ffn.layer_norm, layer.ffn_norm)


def _stack(spec, model: Seq2SeqTransformer, decoder: bool) -> None:
    config = model.config
    stack = model.decoder if decoder else model.encoder
    positions = model.target_positions if decoder else model.source_positions
    rows = (config.max_position_embeddings if config.position_embedding_type == "absolute"
            else max(config.max_source_length, config.max_target_length) + 1)
    with torch.no_grad():
        device = next(model.parameters()).device
        spec.position_encodings.encodings = _copy(positions(torch.arange(rows, device=device)[None])[0])
    spec.scale_embeddings = config.scale_embeddings
    for layer_spec, layer in zip(spec.layer, stack.layers):
        _layer(layer_spec, layer)
    if stack.final_norm is not None:
        _norm(spec.layer_norm, stack.final_norm)


def pieces_by_id(tokenizer: SubwordTokenizer) -> list[str]:
    """The vocabulary's pieces in id order (CTranslate2 speaks in pieces, slimbert in ids)."""
    pieces = sorted(tokenizer.vocab, key=tokenizer.vocab.get)
    if [tokenizer.vocab[t] for t in pieces] != list(range(len(pieces))):
        raise CheckpointError("the vocabulary's ids are not 0..V-1; CTranslate2 needs a dense vocabulary")
    return pieces


def ctranslate2_spec(model: Seq2SeqTransformer, tokenizer: SubwordTokenizer):
    """The CTranslate2 `TransformerSpec` of `model`, with its vocabulary and special tokens."""
    ctranslate2_module()  # a clear error when it is missing
    from ctranslate2.specs import common_spec, transformer_spec

    config = model.config
    check_ctranslate2_compatible(config)
    spec = transformer_spec.TransformerSpec.from_config(
        (config.encoder_layers, config.decoder_layers), config.num_attention_heads,
        pre_norm=config.norm_style == "pre",
        activation=getattr(common_spec.Activation, CT2_ACTIVATIONS[config.hidden_act]))
    embeddings = model.embeddings
    copies = {}  # one copy per distinct parameter: tied embeddings stay one array in the spec
    for field, weight in ((spec.encoder.embeddings[0], embeddings.tokens.weight),
                          (spec.decoder.embeddings, (embeddings.target_tokens or embeddings.tokens).weight),
                          (spec.decoder.projection, (embeddings.output or embeddings.tokens).weight)):
        field.weight = copies.setdefault(id(weight), _copy(weight))
    _stack(spec.encoder, model, decoder=False)
    _stack(spec.decoder, model, decoder=True)
    tokens = pieces_by_id(tokenizer)
    spec.register_source_vocabulary(tokens)
    spec.register_target_vocabulary(tokens)
    spec.config.layer_norm_epsilon = config.layer_norm_eps
    id2tok = dict(enumerate(tokens))
    spec.config.bos_token, spec.config.eos_token = id2tok[config.bos_token_id], id2tok[config.eos_token_id]
    spec.config.decoder_start_token = id2tok[config.bos_token_id]
    spec.config.unk_token = id2tok[tokenizer.unk_id]
    return spec


def export_ctranslate2(model: Seq2SeqTransformer, tokenizer: SubwordTokenizer, directory: str | Path,
                       int8: bool = False, target_vocabulary: Sequence[int] | None = None) -> Path:
    """Write the CTranslate2 model of `model` (int8 weights with `int8`) to `directory`, with
    slimbert's tokenizer and config beside it. The directory appears whole or not at all.

    `target_vocabulary` (piece ids, see `generation.target_vocabulary`) becomes CTranslate2's
    vocabulary map (`vmap.txt`, its always-allowed pieces): the model then decodes over those
    pieces only, as `SharedEmbeddings.restrict_output` does in PyTorch."""
    ctranslate2 = ctranslate2_module()
    spec = ctranslate2_spec(model, tokenizer)  # copies of the weights: `model` is left as it was

    class _SpecConverter(ctranslate2.converters.Converter):
        def _load(self):
            return spec

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent, prefix=f".{directory.name}.") as tmp:
        staged = Path(tmp) / "model"
        if target_vocabulary is not None:
            pieces = pieces_by_id(tokenizer)
            vmap = Path(tmp) / VMAP_FILE
            vmap.write_text("\t" + " ".join(pieces[i] for i in sorted(set(target_vocabulary))) + "\n",
                            encoding="utf-8")  # an empty source n-gram: pieces always allowed
            spec.register_vocabulary_mapping(str(vmap))
        _SpecConverter().convert(str(staged), quantization="int8" if int8 else None)
        tokenizer.save(staged)
        model.config.save(staged / SLIMBERT_CONFIG)
        replace_dir(staged, directory)
    return directory


def is_ctranslate2_dir(directory: str | Path) -> bool:
    return (Path(directory) / CT2_MODEL_FILE).exists() and (Path(directory) / SLIMBERT_CONFIG).exists()


class CTranslate2Translator:
    """An exported model loaded in CTranslate2, translating text like `slimbert.generation.translate`.

    `compute_type`: "default" (the weights as saved), "float32", "int8" (quantized on load),
    "bfloat16"...; `threads`: CTranslate2's intra-op threads (0: its default)."""

    def __init__(self, directory: str | Path, device: str = "cpu", compute_type: str = "default",
                 threads: int = 0):
        ctranslate2 = ctranslate2_module()
        directory = Path(directory)
        if not is_ctranslate2_dir(directory):
            raise CheckpointError(f"{directory}: not a CTranslate2 model exported by slimbert (needs "
                                  f"{CT2_MODEL_FILE} and {SLIMBERT_CONFIG}); write one with "
                                  "slimbert export --format ctranslate2")
        self.config = ModelConfig.load(directory / SLIMBERT_CONFIG)
        self.tokenizer = SubwordTokenizer.from_dir(directory)
        try:
            self.translator = ctranslate2.Translator(str(directory), device=device, compute_type=compute_type,
                                                     inter_threads=1, intra_threads=threads)
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"{directory}: CTranslate2 cannot load it ({e})") from None
        self.id_to_token = pieces_by_id(self.tokenizer)
        self.use_vmap = (directory / VMAP_FILE).exists()  # exported with a target vocabulary
        self.suppressed = [[self.id_to_token[self.config.pad_token_id]],
                           [self.id_to_token[self.config.bos_token_id]]]

    def generate(self, ids: Sequence[Sequence[int]], search: SearchConfig) -> list[list[Hypothesis]]:
        """Decode a batch of sources (ids ending in </s>, unpadded) -> the n-best of each.

        A CTranslate2 call has one length limit for all its sentences, where slimbert has one per
        sentence. Beam search therefore decodes the batch in groups of equal limit (in a
        length-sorted batch, a few). Greedy search decodes the whole batch in one call at its
        largest limit, then decodes again, at their own limits, only the sentences that came within
        two tokens of their own: a greedy sentence that ends before its limit ends the same way
        under any larger one, so the result is the same as group by group, with one call instead
        of several."""
        limits = length_limits(torch.tensor([len(row) for row in ids]), search,
                               self.config.max_target_length).tolist()
        out: list[list[Hypothesis]] = [[] for _ in ids]
        rows = list(range(len(ids)))
        if search.beam_size == 1 and search.nbest == 1 and len(set(limits)) > 1:
            for i, hyps in zip(rows, self._decode(ids, rows, max(limits), search)):
                out[i] = hyps
            rows = [i for i in rows if len(out[i][0].tokens) >= limits[i] - 3]
        for limit in sorted({limits[i] for i in rows}):
            group = [i for i in rows if limits[i] == limit]
            for i, hyps in zip(group, self._decode(ids, group, limit, search)):
                out[i] = hyps
        return out

    def _decode(self, ids: Sequence[Sequence[int]], rows: list[int], limit: int,
                search: SearchConfig) -> list[list[Hypothesis]]:
        """The n-best of the sources ids[i] for i in `rows`, in one call, at most `limit` tokens
        generated (</s> included)."""
        results = self.translator.translate_batch(
            [[self.id_to_token[t] for t in ids[i]] for i in rows], beam_size=search.beam_size,
            num_hypotheses=search.nbest, length_penalty=search.length_penalty,
            max_decoding_length=max(limit - 1, 1), min_decoding_length=search.min_length,
            suppress_sequences=self.suppressed, return_scores=True, return_end_token=False,
            use_vmap=self.use_vmap)
        return [[Hypothesis([self.tokenizer.vocab[t] for t in tokens], score, float("nan"))
                 for tokens, score in zip(r.hypotheses, r.scores)] for r in results]

    def translate(self, lines: Sequence[str], search: SearchConfig, batch_size: int = 32,
                  progress: str | None = None) -> Translations:
        """Translate every line (an empty line gives an empty translation), as `generation.translate`."""
        return translate_ids(lambda batch: self.generate(batch, search), self.tokenizer, lines,
                             self.config.max_source_length, batch_size, progress)
