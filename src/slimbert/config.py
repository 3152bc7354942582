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
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from slimbert.errors import CheckpointError

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
PROBLEM_TYPES = ("single_label_classification", "regression")
# How a checkpoint can be served (slimbert.evaluation.backends builds each; `slimbert bench`
# and `slimbert report --backend` choose among them).
Backend = Literal["torch", "torch-int8", "torch-int8-all", "torch-bf16", "onnxruntime", "onnxruntime-int8", "hf"]
BACKENDS: tuple[str, ...] = get_args(Backend)


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
        from slimbert.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path):
        """Read `path`; on the base class, the config class is chosen by `model_type`."""
        d = _read_json(path)
        config_cls = cls if cls is not ModelConfig else config_class(d.get("model_type", "bert"), path)
        return config_cls.from_dict(d, source=str(path))


def _read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no config.json (is this a checkpoint directory?)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def _labels_from_dict(d: dict[str, Any]) -> dict[Any, Any]:
    """Normalise the label fields of a config dict (HF writes "LABEL_0" names when none were given)."""
    id2label = d.get("id2label") or {}
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
    dtype = d.get("dtype") or d.get("torch_dtype") or "float32"
    d["dtype"] = dtype if dtype in DTYPES else "float32"
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


def _construct(cls, d: dict[str, Any], source: str):
    """cls(**d) over the fields cls knows (unknown keys ignored); errors name the source."""
    known = {f.name for f in dataclasses.fields(cls)}
    try:
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
        if self.hidden_size % self.num_attention_heads:
            raise bad("hidden_size", f"{self.hidden_size} is not divisible by "
                      f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise bad("hidden_act", f"'{self.hidden_act}' is not one of {ACTIVATIONS}")
        if self.norm_style not in ("post", "pre"):
            raise bad("norm_style", f"must be 'post' or 'pre', got '{self.norm_style}'")
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
        if model_type not in ("bert", "slimbert_bert"):
            raise CheckpointError(f"{source}: model_type '{model_type}' is not a BERT model")
        if "head" not in d:
            archs = d.get("architectures") or ["BertModel"]
            arch = archs[0]
            if arch not in ARCHITECTURE_TO_HEAD:
                raise CheckpointError(f"{source}: architecture '{arch}' is not supported; "
                                      f"expected one of {sorted(ARCHITECTURE_TO_HEAD)}")
            d["head"] = ARCHITECTURE_TO_HEAD[arch]
        return _construct(cls, _serving_fields(_labels_from_dict(d)), source)


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
        if self.head != "classification":
            raise CheckpointError(f"config field 'head': a {self.MODEL_TYPE} student is always a "
                                  f"classifier, got '{self.head}'")
        if not 0 <= self.dropout < 1:
            raise CheckpointError(f"config field 'dropout': must be in [0, 1), got {self.dropout}")
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


CONFIG_CLASSES: dict[str, type[ModelConfig]] = {
    "bert": BertConfig,
    "slimbert_bert": BertConfig,
    BiLSTMConfig.MODEL_TYPE: BiLSTMConfig,
    CNNConfig.MODEL_TYPE: CNNConfig,
}


def config_class(model_type: str, source: str | Path = "config") -> type[ModelConfig]:
    """The config class a `model_type` names."""
    if model_type not in CONFIG_CLASSES:
        raise CheckpointError(f"{source}: model_type '{model_type}' is not a model slimbert knows; "
                              f"expected one of {sorted(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[model_type]
