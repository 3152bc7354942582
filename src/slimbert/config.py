"""Model configuration.

`BertConfig` is the single source of truth for building a BERT-style model. It is saved as
`config.json` beside `model.safetensors`, in the Hugging Face layout (same keys, plus
`architectures`), so a checkpoint written by slimbert is also a checkpoint `transformers` reads,
and a user's Hugging Face `config.json` is read here without translation.

The small students (BiLSTM, CNN) have configs of their own, told apart by `model_type`;
`ModelConfig.load` picks the class a `config.json` names.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from slimbert.errors import CheckpointError
from slimbert.io import atomic_write_text, read_utf8

# Which head a model carries. "none" is the bare encoder (HF BertModel).
Head = Literal["none", "classification", "mlm"]
HEADS = get_args(Head)
# Hugging Face architecture name <-> slimbert head.
ARCHITECTURE_TO_HEAD = {
    "BertModel": "none",
    "BertForSequenceClassification": "classification",
    "BertForMaskedLM": "mlm",
    "BertForPreTraining": "mlm",  # the NSP head is dropped on import (slimbert pretrains without NSP)
}
HEAD_TO_ARCHITECTURE = {
    "none": "BertModel",
    "classification": "BertForSequenceClassification",
    "mlm": "BertForMaskedLM",
}
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")
NormStyle = Literal["post", "pre"]
PositionType = Literal["absolute", "sinusoidal", "rope"]
POSITION_TYPES = get_args(PositionType)
AttentionScale = Literal["sqrt", "log_n"]
AttentionType = Literal["mha", "gau"]
PROBLEM_TYPES = ("single_label_classification", "regression")
# How a checkpoint can be served (slimbert.evaluation.backends builds each; `slimbert bench`
# and `slimbert report --backend` choose among them).
Backend = Literal["torch", "torch-int8", "torch-int8-all", "torch-bf16", "onnxruntime", "onnxruntime-int8", "hf",
                  "torch-cuda", "torch-cuda-bf16"]
BACKENDS: tuple[str, ...] = get_args(Backend)
# How a translation model can be served (`slimbert bench-seq2seq`).
Seq2SeqBackend = Literal["torch", "torch-int8", "torch-int8-all", "torch-bf16", "ctranslate2", "ctranslate2-int8",
                         "hf"]
SEQ2SEQ_BACKENDS: tuple[str, ...] = get_args(Seq2SeqBackend)


class ModelConfig:
    """What every model config shares: labels, copying, and reading/writing `config.json`.

    Subclasses are dataclasses with `head`, `num_labels`, `id2label`, `task` fields and
    `to_dict`/`from_dict` methods; `MODEL_TYPE` is the `model_type` written to config.json.
    """

    MODEL_TYPE = ""
    head: str
    num_labels: int
    id2label: dict[int, str]

    def label_names(self) -> list[str]:
        """Names of the classifier outputs in index order (falls back to the index)."""
        return [self.id2label.get(i, str(i)) for i in range(self.num_labels)]

    @property
    def is_hf_compatible(self) -> bool:
        """True when stock `transformers` computes exactly what this config describes."""
        return False

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config"):
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path):
        """Read `path`; on the base class, the config class is chosen by `model_type`."""
        d = read_json_object(path)
        config_cls = cls if cls is not ModelConfig else config_class(d.get("model_type", "bert"), path)
        return config_cls.from_dict(d, source=str(path))


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object (mapping) in `path`: a missing, unreadable, undecodable or malformed file,
    or one whose top level is not an object, is a CheckpointError naming the file."""
    path = Path(path)
    text = read_utf8(path, CheckpointError, "a JSON file (is this a checkpoint directory?)")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: expected a JSON object of field names and values, "
                              f"found {_json_kind(d)}")
    return d


def _labels_from_dict(d: dict[str, Any]) -> dict[Any, Any]:
    """Normalise the label fields of a config dict (HF writes "LABEL_0" names when none were given)."""
    id2label = {} if d.get("id2label") is None else d["id2label"]
    if not isinstance(id2label, dict):  # left for the field check to name
        return d
    if "num_labels" not in d:
        d["num_labels"] = len(id2label) if id2label else 2
    if all(str(v) == f"LABEL_{k}" for k, v in id2label.items()):
        id2label = {}
    d["id2label"] = id2label
    return d


def _label_dict_entries(config: ModelConfig, d: dict[str, Any]) -> None:
    d["id2label"] = {str(k): v for k, v in sorted(config.id2label.items())}
    d["label2id"] = {v: k for k, v in sorted(config.id2label.items())}
    if not config.id2label:
        del d["id2label"], d["label2id"]


DTYPES = ("float32", "bfloat16")


def _serving_fields(d: dict[str, Any]) -> dict[str, Any]:
    """Read `dtype` (transformers 5 key, else the older `torch_dtype`); slimbert builds models in
    fp32 unless they were saved in bf16 for serving (float16 weights load as fp32, as in transformers)."""
    dtype = next((d[key] for key in ("dtype", "torch_dtype") if d.get(key) is not None), "float32")
    if isinstance(dtype, str):  # anything else is left for the field check to name
        dtype = dtype if dtype in DTYPES else "float32"
    d["dtype"] = dtype
    return d


def _check_serving(config: Any) -> None:
    if config.dtype not in DTYPES:
        raise CheckpointError(f"config field 'dtype': must be one of {DTYPES}, got '{config.dtype}'")
    q = config.quantization
    if q is not None and (not isinstance(q, dict) or q.get("method") != "dynamic_int8"
                          or not isinstance(q.get("modules"), list)):
        raise CheckpointError(f"config field 'quantization': expected {{'method': 'dynamic_int8', "
                              f"'modules': [...]}}, got {q!r}")
    if q is not None and config.dtype != "float32":
        raise CheckpointError("config fields 'quantization' and 'dtype': an int8 model has float32 "
                              f"non-quantized weights, got dtype '{config.dtype}'")


def _check_positive(config: Any, names: tuple[str, ...]) -> None:
    for name in names:
        if int(getattr(config, name)) <= 0:
            raise CheckpointError(f"config field '{name}': must be positive, got {getattr(config, name)}")


def _check_dropout(config: Any, names: tuple[str, ...]) -> None:
    for name in names:
        p = getattr(config, name)
        if p is not None and not 0 <= p < 1:
            raise CheckpointError(f"config field '{name}': a dropout probability must be in [0, 1), got {p}")


def _check_token_id(config: Any, name: str) -> None:
    if not 0 <= getattr(config, name) < config.vocab_size:
        raise CheckpointError(f"config field '{name}': must be an id below vocab_size={config.vocab_size}, "
                              f"got {getattr(config, name)}")


# ------------------------------------------------------------------ field types
# A config read from a file is checked field by field against the dataclass annotations before
# the dataclass is built, so that `"hidden_size": "768"` or `true` as a size is an error naming
# the field instead of a failure deep inside the model. JSON object keys are strings, so a
# `dict[int, ...]` field (id2label, pruned_heads) takes keys like "0".

_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
          float: ("a finite number", "numbers"), str: ("a string", "strings")}


def _json_kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             tuple: "a list", dict: "an object", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _arms(hint: Any) -> tuple[Any, ...] | None:
    """The members of a Union (X | Y) hint, else None."""
    return get_args(hint) if get_origin(hint) in (Union, types.UnionType) else None


def _expected(hint: Any, plural: bool = False) -> str:
    """What a value of type `hint` is, in words ("an integer", "a list of integers")."""
    arms = _arms(hint)
    if arms is not None:
        words = [_expected(a, plural) for a in arms if a is not type(None)]
        return " or ".join(words) + (" or null" if type(None) in arms else "")
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin is list:
        return ("lists" if plural else "a list") + f" of {_expected(args[0], plural=True)}"
    if origin is dict:
        what = "objects" if plural else "an object"
        if args and args[1] is not Any:
            key = "integer keys (\"0\", \"1\", ...)" if args[0] is int else "string keys"
            return f"{what} with {key} and values that are {_expected(args[1], plural=True)}"
        return what
    if hint in _NAMES:
        return _NAMES[hint][1 if plural else 0]
    return getattr(hint, "__name__", str(hint))


def _fits(value: Any, hint: Any, key: bool = False, finite: bool = True) -> bool:
    """Whether `value` has type `hint` (bool is not an int; a key of a dict[int, ...] may be the
    string of an integer, as JSON writes it; with `finite`, a float is not NaN or inf)."""
    if hint is Any:
        return True
    arms = _arms(hint)
    if arms is not None:
        return any(_fits(value, a, key, finite) for a in arms)
    if hint is type(None):
        return value is None
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0], finite=finite) for v in value)
    if origin is dict:
        return isinstance(value, dict) and (not args or all(
            _fits(k, args[0], key=True) and _fits(v, args[1], finite=finite) for k, v in value.items()))
    if isinstance(value, bool):
        return hint is bool
    if hint is int:
        return isinstance(value, numbers.Integral) or (key and isinstance(value, str)
                                                       and re.fullmatch(r"-?\d+", value) is not None)
    if hint is float:
        return isinstance(value, numbers.Real) and (not finite or math.isfinite(value))
    if hint is bool:
        return False
    return isinstance(value, hint) if isinstance(hint, type) else True


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def check_field_types(cls: type, values: dict[str, Any], what: str = "config field",
                      finite: bool = True) -> None:
    """Check each of `values` that names an init field of dataclass `cls` against the field's
    annotation (int, float, bool, str, Literal, list[...], dict[..., ...], X | None; with `finite`,
    floats must be finite); the first mismatch is a CheckpointError naming the field, what it
    takes and what it got."""
    for name, hint in _field_types(cls).items():
        if name in values and not _fits(values[name], hint, finite=finite):
            value = values[name]
            raise CheckpointError(f"{what} '{name}': expected {_expected(hint)}, got {_shown(value)}"
                                  + ("" if isinstance(value, (dict, list)) else f" ({_json_kind(value)})"))


def _construct(cls, d: dict[str, Any], source: str):
    """cls(**d) over the fields cls knows (unknown keys ignored), each checked against its
    annotation first; errors name the source."""
    known = {f.name for f in dataclasses.fields(cls)}
    try:
        check_field_types(cls, d)
        return cls(**{k: v for k, v in d.items() if k in known})
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: {e}") from None


@dataclass
class BertConfig(ModelConfig):
    """Hyper-parameters of a BERT encoder. Defaults are BERT-base (uncased)."""

    MODEL_TYPE = "bert"

    vocab_size: int = 30522  # rows of the word-embedding matrix; must equal the lines of vocab.txt
    hidden_size: int = 768  # width of every token representation (d_model)
    num_hidden_layers: int = 12  # number of transformer blocks
    num_attention_heads: int = 12  # heads per block; hidden_size must divide evenly by it
    intermediate_size: int = 3072  # width of the feed-forward inner layer (usually 4 * hidden_size)
    hidden_act: str = "gelu"  # feed-forward activation; "gelu" is the exact (erf) GELU
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and on each sub-layer's output
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention probabilities
    max_position_embeddings: int = 512  # longest sequence the learned positions cover
    type_vocab_size: int = 2  # number of segment ids (sentence A / sentence B)
    layer_norm_eps: float = 1e-12  # epsilon of every LayerNorm
    pad_token_id: int = 0  # id of [PAD]; padded positions are masked out of attention
    initializer_range: float = 0.02  # std of the normal init of fresh weights
    # "absolute" (learned, BERT), "sinusoidal" (Vaswani et al.) or "rope" (rotary, Su et al.);
    # only learned absolute positions are what Hugging Face BERT computes.
    position_embedding_type: PositionType = "absolute"
    classifier_dropout: float | None = None  # dropout before the classifier; None = hidden_dropout_prob
    # --- slimbert additions (ignored by `transformers`) ---
    norm_style: NormStyle = "post"  # "post" = original BERT (LayerNorm after the residual), "pre" = pre-LN
    # attention scores times 1/sqrt(d) ("sqrt", BERT) or log(n)/log(512) * 1/sqrt(d) ("log_n",
    # entropy-invariant; n = the real keys a query attends to)
    attention_scale: AttentionScale = "sqrt"
    # "mha": multi-head attention + feed-forward (BERT); "gau": one gated attention unit per
    # layer in their place (FLASH, Hua et al. 2022), expansion 2 * hidden_size
    attention_type: AttentionType = "mha"
    gau_key_size: int = 128  # GAU: width s of the shared query/key projection
    head: Head = "none"  # which head the model carries: "none", "classification" or "mlm"
    num_labels: int = 2  # classifier outputs; 1 means regression
    problem_type: str | None = None  # "single_label_classification" or "regression"
    id2label: dict[int, str] = field(default_factory=dict)  # class index -> label name
    task: str | None = None  # the task the head was trained on, e.g. "sst2" (informational)
    # Heads removed by pruning, per layer, as indices of the unpruned layer (the field of the
    # same name in `transformers` 4.x).
    pruned_heads: dict[int, list[int]] = field(default_factory=dict)
    # Feed-forward width of each layer after neuron pruning; None = intermediate_size everywhere.
    intermediate_sizes: list[int] | None = None
    # LayerDrop (Fan et al. 2019): during training each layer is skipped with this probability.
    layerdrop: float = 0.0
    dtype: str = "float32"  # weights' dtype when served: "float32" or "bfloat16" (slimbert quantize --dtype)
    quantization: dict[str, Any] | None = None  # int8: {"method": "dynamic_int8", "modules": [...]}

    def __post_init__(self) -> None:
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        self.pruned_heads = {int(k): sorted(int(h) for h in v) for k, v in self.pruned_heads.items() if v}
        if self.intermediate_sizes is not None:
            self.intermediate_sizes = [int(n) for n in self.intermediate_sizes]
        if self.problem_type is None and self.head == "classification":
            self.problem_type = "regression" if self.num_labels == 1 else "single_label_classification"
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def bad(field_name: str, why: str) -> CheckpointError:
            return CheckpointError(f"config field '{field_name}': {why}")

        _check_positive(self, ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size",
                               "max_position_embeddings", "type_vocab_size"))
        if self.num_hidden_layers < 0:
            raise bad("num_hidden_layers", f"must be >= 0, got {self.num_hidden_layers}")
        _check_dropout(self, ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"))
        if not self.layer_norm_eps > 0:
            raise bad("layer_norm_eps", f"must be positive, got {self.layer_norm_eps}")
        if not self.initializer_range >= 0:
            raise bad("initializer_range", f"must be >= 0, got {self.initializer_range}")
        _check_token_id(self, "pad_token_id")
        if self.hidden_size % self.num_attention_heads:
            raise bad("hidden_size", f"{self.hidden_size} is not divisible by "
                      f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise bad("hidden_act", f"'{self.hidden_act}' is not one of {ACTIVATIONS}")
        if self.norm_style not in ("post", "pre"):
            raise bad("norm_style", f"must be 'post' or 'pre', got '{self.norm_style}'")
        if self.attention_scale not in get_args(AttentionScale):
            raise bad("attention_scale", f"must be 'sqrt' or 'log_n', got '{self.attention_scale}'")
        if self.attention_type not in get_args(AttentionType):
            raise bad("attention_type", f"must be 'mha' or 'gau', got '{self.attention_type}'")
        if self.gau_key_size <= 0:
            raise bad("gau_key_size", f"must be positive, got {self.gau_key_size}")
        if self.attention_type == "gau" and self.position_embedding_type == "rope" and self.gau_key_size % 2:
            raise bad("gau_key_size", f"rotary positions need an even size, got {self.gau_key_size}")
        if self.attention_type == "gau" and (self.pruned_heads or self.intermediate_sizes is not None):
            raise bad("attention_type", "a GAU model has no heads or feed-forward neurons to prune")
        if self.head not in HEADS:
            raise bad("head", f"must be one of {HEADS}, got '{self.head}'")
        if self.position_embedding_type not in POSITION_TYPES:
            raise bad("position_embedding_type",
                      f"must be one of {POSITION_TYPES}, got '{self.position_embedding_type}'")
        if self.position_embedding_type == "rope" and self.head_dim % 2:
            raise bad("position_embedding_type", f"rotary positions need an even head dim, got {self.head_dim}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise bad("problem_type", f"must be one of {PROBLEM_TYPES}, got '{self.problem_type}'")
        if self.num_labels < 1:
            raise bad("num_labels", f"must be >= 1, got {self.num_labels}")
        for layer, heads in self.pruned_heads.items():
            if not 0 <= layer < self.num_hidden_layers:
                raise bad("pruned_heads", f"layer {layer} does not exist")
            if len(heads) >= self.num_attention_heads:
                raise bad("pruned_heads", f"layer {layer} would lose all its heads")
            if len(set(heads)) != len(heads) or not all(0 <= h < self.num_attention_heads for h in heads):
                raise bad("pruned_heads", f"layer {layer}: {heads} are not distinct heads of "
                          f"0..{self.num_attention_heads - 1}")
        if self.intermediate_sizes is not None:
            if len(self.intermediate_sizes) != self.num_hidden_layers:
                raise bad("intermediate_sizes", f"{len(self.intermediate_sizes)} sizes for "
                          f"{self.num_hidden_layers} layers")
            if min(self.intermediate_sizes, default=1) <= 0:
                raise bad("intermediate_sizes", f"must be positive, got {self.intermediate_sizes}")
        if not 0 <= self.layerdrop < 1:
            raise bad("layerdrop", f"must be in [0, 1), got {self.layerdrop}")
        _check_serving(self)

    # --------------------------------------------------------------- derived
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def heads_in_layer(self, layer: int) -> int:
        """Number of attention heads left in `layer` after pruning."""
        return self.num_attention_heads - len(self.pruned_heads.get(layer, []))

    def ffn_size_in_layer(self, layer: int) -> int:
        """Feed-forward width of `layer` after neuron pruning."""
        return self.intermediate_size if self.intermediate_sizes is None else self.intermediate_sizes[layer]

    @property
    def is_pruned(self) -> bool:
        """Heads or feed-forward neurons were removed (the weights are smaller than the HF shapes)."""
        return bool(self.pruned_heads) or (
            self.intermediate_sizes is not None
            and any(n != self.intermediate_size for n in self.intermediate_sizes))

    @property
    def is_hf_compatible(self) -> bool:
        """True when stock `transformers` BERT computes exactly what this config describes
        with weights of these shapes. A pruned model is not (transformers 5 has no per-layer
        shapes); `slimbert export --format hf` pads it back with zeros, which is exact."""
        return (self.norm_style == "post" and self.position_embedding_type == "absolute"
                and self.attention_scale == "sqrt" and self.attention_type == "mha"
                and not self.is_pruned and self.quantization is None)

    # ------------------------------------------------------------- HF layout
    def to_dict(self) -> dict[str, Any]:
        """The `config.json` content: Hugging Face keys plus slimbert's own."""
        d = dataclasses.asdict(self)
        _label_dict_entries(self, d)
        d["pruned_heads"] = {str(k): v for k, v in sorted(self.pruned_heads.items())}
        # `transformers` reads model_type/architectures; a pre-norm or pruned model gets a
        # model_type transformers does not know, so it refuses the checkpoint instead of silently
        # computing something else (or failing on shapes).
        d["model_type"] = "bert" if self.is_hf_compatible else "slimbert_bert"
        d["torch_dtype"] = self.dtype  # the key transformers 4.x reads
        if self.quantization is None:
            del d["quantization"]
        d["architectures"] = [HEAD_TO_ARCHITECTURE[self.head]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> BertConfig:
        """Read a slimbert or Hugging Face BERT config dict. Unknown HF keys are ignored."""
        d = dict(d)
        model_type = d.get("model_type", "bert")
        if model_type == "roformer":
            d = bert_config_from_roformer(d, source)
            model_type = d["model_type"]
        if model_type not in ("bert", "slimbert_bert"):
            raise CheckpointError(f"{source}: model_type {_shown(model_type)} is not a BERT model")
        if "head" not in d:
            archs = d.get("architectures") or ["BertModel"]
            if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
                raise CheckpointError(f"{source}: config field 'architectures': expected a list of "
                                      f"strings, got {_shown(archs)}")
            arch = archs[0]
            if arch not in ARCHITECTURE_TO_HEAD:
                raise CheckpointError(f"{source}: architecture '{arch}' is not supported; "
                                      f"expected one of {sorted(ARCHITECTURE_TO_HEAD)}")
            d["head"] = ARCHITECTURE_TO_HEAD[arch]
        return _construct(cls, _serving_fields(_labels_from_dict(d)), source)


# transformers' RoFormer (a BERT with rotary positions) by slimbert head: slimbert.compress.roformer
# writes these, and `bert_config_from_roformer` reads them
ROFORMER_ARCHITECTURES = {"mlm": "RoFormerForMaskedLM", "none": "RoFormerModel"}


def bert_config_from_roformer(d: dict[str, Any], source: str) -> dict[str, Any]:
    """A RoFormer config.json (`transformers`' RoFormerForMaskedLM or RoFormerModel) as the
    fields of a rotary BertConfig; what slimbert's BERT cannot compute is a CheckpointError.
    (The q/k rows are put back in slimbert's pairing by `checkpoint.from_roformer_state_dict`.)"""
    refused = []
    if d.get("rotary_value", False):
        refused.append("rotary_value=true (values rotated too)")
    if d.get("embedding_size", d.get("hidden_size")) != d.get("hidden_size"):
        refused.append(f"embedding_size {d.get('embedding_size')} != hidden_size {d.get('hidden_size')} "
                       "(a projection after the embeddings)")
    archs = d.get("architectures") or ["RoFormerModel"]
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    head = {v: k for k, v in ROFORMER_ARCHITECTURES.items()}.get(arch)
    if head is None:
        refused.append(f"architecture {_shown(archs)} (RoFormer's classifier differs from BERT's; "
                       f"expected one of {sorted(ROFORMER_ARCHITECTURES.values())})")
    if refused:
        raise CheckpointError(f"{source}: a RoFormer slimbert cannot read: {'; '.join(refused)}")
    d = {k: v for k, v in d.items() if k not in ("embedding_size", "rotary_value", "architectures")}
    return {**d, "model_type": "slimbert_bert", "position_embedding_type": "rope", "head": head}


# ------------------------------------------------------------------ small students


@dataclass
class WordStudentConfig(ModelConfig):
    """Fields shared by the non-Transformer students: they read word embeddings of the
    teacher's WordPiece vocabulary and end in a classifier. Sentence pairs are encoded one
    sentence at a time and compared as [h1, h2, h1 * h2, |h1 - h2|] (Tang et al. 2019)."""

    vocab_size: int = 30522  # rows of the embedding matrix; must equal the lines of vocab.txt
    embedding_dim: int = 300  # width of the word embeddings (the teacher's hidden size when copied)
    pad_token_id: int = 0  # id of [PAD]
    pairs: bool = False  # inputs are sentence pairs (segment 0 and segment 1)
    dropout: float = 0.1  # dropout on the embeddings and before the classifier
    num_labels: int = 2  # classifier outputs; 1 means regression
    id2label: dict[int, str] = field(default_factory=dict)  # class index -> label name
    task: str | None = None  # the task the head was trained on (informational)
    head: str = "classification"  # always a classifier
    dtype: str = "float32"  # weights' dtype when served: "float32" or "bfloat16"
    quantization: dict[str, Any] | None = None  # int8: {"method": "dynamic_int8", "modules": [...]}

    def __post_init__(self) -> None:
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        _check_positive(self, ("vocab_size", "embedding_dim", "num_labels"))
        _check_token_id(self, "pad_token_id")
        if self.head != "classification":
            raise CheckpointError(f"config field 'head': a {self.MODEL_TYPE} student is always a "
                                  f"classifier, got '{self.head}'")
        _check_dropout(self, ("dropout",))
        _check_serving(self)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        _label_dict_entries(self, d)
        d["model_type"] = self.MODEL_TYPE
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config"):
        d = dict(d)
        if d.get("model_type") != cls.MODEL_TYPE:
            raise CheckpointError(f"{source}: model_type '{d.get('model_type')}' is not {cls.MODEL_TYPE}")
        return _construct(cls, _serving_fields(_labels_from_dict(d)), source)


@dataclass
class BiLSTMConfig(WordStudentConfig):
    """Tang et al. 2019 (https://arxiv.org/abs/1903.12136): embeddings -> one BiLSTM layer ->
    max-pooling over time -> ReLU MLP -> classifier."""

    MODEL_TYPE = "slimbert_bilstm"
    hidden_size: int = 300  # LSTM units per direction
    mlp_size: int = 400  # width of the ReLU layer before the classifier

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, ("hidden_size", "mlp_size"))


@dataclass
class CNNConfig(WordStudentConfig):
    """Kim 2014 (https://arxiv.org/abs/1408.5882): embeddings -> parallel 1-D convolutions of
    several widths -> ReLU -> max-pooling over time -> classifier."""

    MODEL_TYPE = "slimbert_cnn"
    num_filters: int = 100  # feature maps per kernel width
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 4, 5])  # convolution widths, in tokens
    dropout: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kernel_sizes = [int(k) for k in self.kernel_sizes]
        if self.num_filters <= 0 or not self.kernel_sizes or min(self.kernel_sizes) <= 0:
            raise CheckpointError("config fields 'num_filters'/'kernel_sizes': must be positive, got "
                                  f"{self.num_filters} / {self.kernel_sizes}")


# ------------------------------------------------------------------ sequence to sequence


@dataclass
class Seq2SeqConfig(ModelConfig):
    """Fields both translation models share: one joint source/target vocabulary (a
    `slimbert.subword.SubwordTokenizer`), its special ids, and the longest sequences."""

    vocab_size: int = 37000  # rows of the joint source/target embedding; must equal the tokenizer's size
    pad_token_id: int = 0  # <pad>: padding, never generated
    bos_token_id: int = 2  # <s>: the decoder's first input
    eos_token_id: int = 3  # </s>: ends every source and every target
    max_source_length: int = 128  # source tokens kept (the rest are cut when data is encoded)
    max_target_length: int = 128  # target tokens kept, and the most a decoder generates
    tie_embeddings: bool = True  # one matrix for source embedding, target embedding and output projection
    dropout: float = 0.1  # on embeddings and on every sub-layer's output
    dtype: str = "float32"  # weights' dtype when served: "float32" or "bfloat16"
    quantization: dict[str, Any] | None = None  # int8: {"method": "dynamic_int8", "modules": [...]}

    @property
    def head(self) -> str:
        """A translation model carries a generator over the vocabulary, not a classifier."""
        return "seq2seq"

    def __post_init__(self) -> None:
        _check_positive(self, ("vocab_size", "max_source_length", "max_target_length"))
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            _check_token_id(self, name)
        _check_dropout(self, ("dropout",))
        _check_serving(self)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model_type"] = self.MODEL_TYPE
        if self.quantization is None:
            del d["quantization"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config"):
        d = dict(d)
        if d.get("model_type") != cls.MODEL_TYPE:
            raise CheckpointError(f"{source}: model_type '{d.get('model_type')}' is not {cls.MODEL_TYPE}")
        return _construct(cls, _serving_fields(d), source)


@dataclass
class Seq2SeqTransformerConfig(Seq2SeqConfig):
    """An encoder-decoder Transformer (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762).
    Defaults are the paper's base model."""

    MODEL_TYPE = "slimbert_seq2seq"

    hidden_size: int = 512  # d_model: width of every token representation
    encoder_layers: int = 6  # blocks in the encoder
    decoder_layers: int = 6  # blocks in the decoder (each adds cross-attention to the encoder's output)
    num_attention_heads: int = 8  # heads per attention; hidden_size must divide evenly by it
    intermediate_size: int = 2048  # width of the feed-forward inner layer
    hidden_act: str = "relu"  # feed-forward activation
    attention_dropout: float = 0.0  # dropout on the attention probabilities
    norm_style: NormStyle = "post"  # "post" (the paper) or "pre" (LayerNorm first; trains without warm-up)
    # "sinusoidal" (the paper), "absolute" (learned) or "rope" (rotary, inside attention)
    position_embedding_type: PositionType = "sinusoidal"
    max_position_embeddings: int = 256  # longest sequence learned positions cover
    layer_norm_eps: float = 1e-5  # epsilon of every LayerNorm
    scale_embeddings: bool = True  # multiply embeddings by sqrt(hidden_size), as the paper does

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, ("hidden_size", "num_attention_heads", "intermediate_size",
                               "max_position_embeddings"))
        for name in ("encoder_layers", "decoder_layers"):
            if getattr(self, name) < 1:
                raise CheckpointError(f"config field '{name}': must be at least 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise CheckpointError(f"config field 'hidden_size': {self.hidden_size} is not divisible by "
                                  f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise CheckpointError(f"config field 'hidden_act': '{self.hidden_act}' is not one of "
                                  f"{ACTIVATIONS}")
        if self.norm_style not in ("post", "pre"):
            raise CheckpointError(f"config field 'norm_style': must be 'post' or 'pre', got "
                                  f"'{self.norm_style}'")
        if self.position_embedding_type not in POSITION_TYPES:
            raise CheckpointError(f"config field 'position_embedding_type': must be one of {POSITION_TYPES}, "
                                  f"got '{self.position_embedding_type}'")
        if self.position_embedding_type == "rope" and self.head_dim % 2:
            raise CheckpointError(f"config field 'position_embedding_type': rotary positions need an even "
                                  f"head dim, got {self.head_dim}")
        _check_dropout(self, ("attention_dropout",))
        longest = max(self.max_source_length, self.max_target_length)
        if self.position_embedding_type == "absolute" and longest > self.max_position_embeddings:
            raise CheckpointError(f"config field 'max_position_embeddings': learned positions cover "
                                  f"{self.max_position_embeddings} tokens, but sequences may have {longest}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


Attention = Literal["general", "dot", "additive"]
ATTENTIONS = get_args(Attention)


@dataclass
class Seq2SeqLSTMConfig(Seq2SeqConfig):
    """A bidirectional LSTM encoder and an attentional LSTM decoder: Luong et al. 2015
    (https://arxiv.org/abs/1508.04025; "general" or "dot" scores, input feeding) or Bahdanau
    et al. 2015 (https://arxiv.org/abs/1409.0473; "additive" scores from the previous state)."""

    MODEL_TYPE = "slimbert_seq2seq_lstm"

    embedding_dim: int = 256  # width of the (joint) word embeddings
    hidden_size: int = 256  # encoder units per direction; the decoder has 2 x hidden_size
    num_layers: int = 1  # LSTM layers of the encoder and of the decoder
    attention: Attention = "general"  # "general" / "dot" (Luong) or "additive" (Bahdanau)
    input_feeding: bool = True  # Luong: feed the last attentional vector to the next step's input

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, ("embedding_dim", "hidden_size", "num_layers"))
        if self.attention not in ATTENTIONS:
            raise CheckpointError(f"config field 'attention': must be one of {ATTENTIONS}, got "
                                  f"'{self.attention}'")


CONFIG_CLASSES: dict[str, type[ModelConfig]] = {
    "bert": BertConfig,
    "slimbert_bert": BertConfig,
    "roformer": BertConfig,  # read as a BERT with rotary positions (slimbert.compress.roformer)
    BiLSTMConfig.MODEL_TYPE: BiLSTMConfig,
    CNNConfig.MODEL_TYPE: CNNConfig,
    Seq2SeqTransformerConfig.MODEL_TYPE: Seq2SeqTransformerConfig,
    Seq2SeqLSTMConfig.MODEL_TYPE: Seq2SeqLSTMConfig,
}


def config_class(model_type: str, source: str | Path = "config") -> type[ModelConfig]:
    """The config class a `model_type` names."""
    if not isinstance(model_type, str) or model_type not in CONFIG_CLASSES:
        raise CheckpointError(f"{source}: model_type {_shown(model_type)} is not a model slimbert knows; "
                              f"expected one of {sorted(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[model_type]
