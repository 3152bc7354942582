"""Students: what `--student SPEC` means, and how each kind of student is made from a teacher.

SPEC is one of
    bert:layers=N[,hidden=H[,heads=A]]   a BERT of N layers. Without `hidden`: the teacher's
                                         width, initialised from N of its layers (every other
                                         one by default; `--init-layers` picks them). With
                                         `hidden`: a narrower BERT from scratch.
    bilstm[:hidden=300,mlp=400,embeddings=teacher|random]   Tang et al. 2019
    cnn[:filters=100,widths=3-4-5,embeddings=teacher|random]  Kim 2014
    a checkpoint directory               e.g. a general-distilled student; gets a fresh head
                                         if it has none
Specs are parsed into small dataclasses; unknown kinds or keys are errors that list the
allowed ones.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from slimbert.checkpoint import load_model
from slimbert.config import BertConfig, BiLSTMConfig, CNNConfig, ModelConfig
from slimbert.errors import SlimbertError
from slimbert.models import build_model
from slimbert.models.bert import encoder_of


class StudentSpecError(SlimbertError):
    """A --student / --init-layers / --layer-map value that cannot be used."""


@dataclass(frozen=True)
class BertStudentSpec:
    layers: int  # Transformer layers
    hidden: int | None = None  # width; None = the teacher's, with weights copied from its layers
    heads: int | None = None  # attention heads when `hidden` is given (default: hidden / 64)
    init_layers: tuple[int, ...] | None = None  # teacher layers to copy (default: evenly spaced)


@dataclass(frozen=True)
class BiLSTMStudentSpec:
    hidden: int = 300  # LSTM units per direction
    mlp: int = 400  # ReLU layer width
    embeddings: str = "teacher"  # "teacher": copy the teacher's word embeddings; "random"


@dataclass(frozen=True)
class CNNStudentSpec:
    filters: int = 100  # feature maps per width
    widths: tuple[int, ...] = (3, 4, 5)  # kernel widths
    embeddings: str = "teacher"


@dataclass(frozen=True)
class CheckpointStudentSpec:
    path: str  # a checkpoint directory to start from


StudentSpec = BertStudentSpec | BiLSTMStudentSpec | CNNStudentSpec | CheckpointStudentSpec
_KINDS = {"bert": BertStudentSpec, "bilstm": BiLSTMStudentSpec, "cnn": CNNStudentSpec}


def parse_student_spec(text: str, init_layers: tuple[int, ...] | None = None) -> StudentSpec:
    """Parse `--student`; `init_layers` (teacher layers to copy) applies to bert students."""
    kind, _, rest = text.partition(":")
    if kind not in _KINDS:
        if Path(text).is_dir():
            if init_layers:
                raise StudentSpecError("--init-layers applies to bert:layers=N students, not a checkpoint")
            return CheckpointStudentSpec(text)
        raise StudentSpecError(f"--student '{text}': unknown kind '{kind}'; expected bert:layers=N, "
                               "bilstm, cnn, or an existing checkpoint directory")
    cls = _KINDS[kind]
    allowed = {f.name: f for f in fields(cls) if f.name != "init_layers"}
    values: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in allowed:
            raise StudentSpecError(f"--student '{text}': '{item}' is not KEY=VALUE with KEY one of "
                                   f"{sorted(allowed)}")
        try:
            if key == "embeddings":
                if value not in ("teacher", "random"):
                    raise ValueError("expected teacher or random")
                values[key] = value
            elif key == "widths":
                values[key] = tuple(int(w) for w in value.split("-"))
                if min(values[key]) < 1:
                    raise ValueError("every width must be at least 1")
            else:
                values[key] = int(value)
                if values[key] < 1:
                    raise ValueError("must be at least 1")
        except ValueError as e:
            raise StudentSpecError(f"--student '{text}': bad value for {key}: '{value}' ({e})") from None
    if cls is BertStudentSpec:
        if "layers" not in values:
            raise StudentSpecError(f"--student '{text}': give the depth, e.g. bert:layers=3")
        if init_layers:
            if values.get("hidden") is not None:
                raise StudentSpecError("--init-layers copies teacher layers, which needs the teacher's "
                                       "width: drop hidden= from --student")
            values["init_layers"] = tuple(init_layers)
    elif init_layers:
        raise StudentSpecError(f"--init-layers applies to bert:layers=N students, not {kind}")
    try:
        return cls(**values)
    except TypeError as e:
        raise StudentSpecError(f"--student '{text}': {e}") from None


def evenly_spaced_layers(n_student: int, n_teacher: int) -> list[int]:
    """N of the teacher's layers, spread evenly, starting from the first: every other layer
    when the student has half the depth (DistilBERT), e.g. 3 of 6 -> [0, 2, 4]."""
    if not 1 <= n_student <= n_teacher:
        raise StudentSpecError(f"a student of {n_student} layers cannot be initialised from a "
                               f"teacher of {n_teacher}")
    return [(i * n_teacher) // n_student for i in range(n_student)]


# --------------------------------------------------------------------- operations


def keep_layers(model: nn.Module, layers: list[int], config: BertConfig | None = None) -> nn.Module:
    """A new BERT with only `layers` of `model` (in that order), every other weight copied.

    `config` (default: `model.config`) sets the new model's head; its depth and per-layer
    head pruning are taken from `layers`. Weights for a head `model` lacks start fresh.
    This is `student_from_teacher` for distillation and `drop_layers` for pruning.
    """
    src_cfg: BertConfig = model.config
    n = src_cfg.num_hidden_layers
    bad = [i for i in layers if not 0 <= i < n]
    if bad or len(set(layers)) != len(layers) or not layers:
        raise StudentSpecError(f"layers {list(layers)}: need distinct layer numbers in 0..{n - 1}")
    config = (config or src_cfg).replace(
        num_hidden_layers=len(layers),
        pruned_heads={new: src_cfg.pruned_heads[old] for new, old in enumerate(layers)
                      if old in src_cfg.pruned_heads},
        intermediate_sizes=(None if src_cfg.intermediate_sizes is None
                            else [src_cfg.intermediate_sizes[old] for old in layers]))
    new = build_model(config)
    src, dst = encoder_of(model), encoder_of(new)
    with torch.no_grad():
        dst.embeddings.load_state_dict(src.embeddings.state_dict())
        for new_i, old in enumerate(layers):
            dst.encoder.layers[new_i].load_state_dict(src.encoder.layers[old].state_dict())
        if dst.encoder.final_norm is not None and src.encoder.final_norm is not None:
            dst.encoder.final_norm.load_state_dict(src.encoder.final_norm.state_dict())
        if dst.pooler is not None and src.pooler is not None:
            dst.pooler.load_state_dict(src.pooler.state_dict())
        # The head of the same kind comes along (e.g. a fine-tuned classifier).
        if config.head == src_cfg.head == "classification" and config.num_labels == src_cfg.num_labels:
            new.classifier.load_state_dict(model.classifier.state_dict())
        elif config.head == src_cfg.head == "mlm":
            new.cls.predictions.transform.load_state_dict(model.cls.predictions.transform.state_dict())
            new.cls.predictions.bias.copy_(model.cls.predictions.bias)
    return new


def make_student(spec: StudentSpec, teacher: nn.Module, head_config: dict) -> nn.Module:
    """The student `spec` describes, built against `teacher` (its vocabulary, width, layers).

    `head_config` holds the classifier fields: head, num_labels, id2label, task and, for the
    word-level students, pairs.
    """
    tcfg: ModelConfig = teacher.config
    if isinstance(spec, CheckpointStudentSpec):
        student = load_model(spec.path, head=head_config["head"], num_labels=head_config.get("num_labels"),
                             id2label=head_config.get("id2label"), task=head_config.get("task"))
        if student.config.vocab_size != tcfg.vocab_size:
            raise StudentSpecError(f"{spec.path}: vocabulary of {student.config.vocab_size} tokens, "
                                   f"but the teacher's has {tcfg.vocab_size}; they must share one")
        return student
    if isinstance(spec, BertStudentSpec):
        if not isinstance(tcfg, BertConfig):
            raise StudentSpecError("a bert student needs a BERT teacher")
        bert_head = {k: v for k, v in head_config.items() if k != "pairs"}
        if spec.hidden is None:
            layers = (list(spec.init_layers) if spec.init_layers is not None
                      else evenly_spaced_layers(spec.layers, tcfg.num_hidden_layers))
            if len(layers) != spec.layers:
                raise StudentSpecError(f"--init-layers names {len(layers)} layers for a student of "
                                       f"{spec.layers}")
            return keep_layers(teacher, layers, tcfg.replace(**bert_head))
        heads = spec.heads or (spec.hidden // 64 if spec.hidden % 64 == 0 else None)
        if heads is None or spec.hidden % heads:
            raise StudentSpecError(f"hidden={spec.hidden}: give heads=A with hidden divisible by A")
        config = tcfg.replace(hidden_size=spec.hidden, num_attention_heads=heads,
                              intermediate_size=4 * spec.hidden, num_hidden_layers=spec.layers,
                              pruned_heads={}, intermediate_sizes=None, **bert_head)
        return build_model(config)
    word_cfg = dict(vocab_size=tcfg.vocab_size, pad_token_id=getattr(tcfg, "pad_token_id", 0),
                    num_labels=head_config["num_labels"], id2label=head_config.get("id2label") or {},
                    task=head_config.get("task"), pairs=bool(head_config.get("pairs")))
    copy_embeddings = spec.embeddings == "teacher"
    if copy_embeddings:
        if not isinstance(tcfg, BertConfig):
            raise StudentSpecError("embeddings=teacher needs a BERT teacher; use embeddings=random")
        word_cfg["embedding_dim"] = tcfg.hidden_size
    if isinstance(spec, BiLSTMStudentSpec):
        student = build_model(BiLSTMConfig(hidden_size=spec.hidden, mlp_size=spec.mlp, **word_cfg))
    else:
        student = build_model(CNNConfig(num_filters=spec.filters, kernel_sizes=list(spec.widths), **word_cfg))
    if copy_embeddings:
        with torch.no_grad():
            student.embeddings.weight.copy_(encoder_of(teacher).embeddings.word_embeddings.weight)
    return student
