"""Students of a translation teacher: what `distill-seq2seq --student SPEC` means, and how each
student is made from the teacher.

SPEC is one of
    transformer[:enc_layers=N,dec_layers=M,hidden=H,heads=A,ffn=F]
    lstm[:hidden=H,embedding=E,layers=L]
A field left out takes the teacher's value when the teacher is of the same kind, otherwise
train-seq2seq's size (`FRESH_SIZES`).

A Transformer student as wide as its Transformer teacher (same hidden, heads and ffn) starts
from the teacher: every weight outside the blocks is copied (embeddings, positions, final
norms), and its N encoder and M decoder blocks are N and M of the teacher's, evenly spaced
(`evenly_spaced_layers`: 3 of 6 -> 0, 2, 4). `dec_layers=1` with a deep encoder is Kasai et
al.'s deep-encoder, shallow-decoder student (https://arxiv.org/abs/2006.10369). Any other
student starts fresh, with the teacher's embeddings copied when they have the same shape.
Every student keeps the teacher's vocabulary, special tokens, lengths and dropout, so the
teacher's tokenizer serves it unchanged.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields

from torch import nn

from slimbert.compress.students import StudentSpecError, evenly_spaced_layers
from slimbert.config import Seq2SeqConfig, Seq2SeqLSTMConfig, Seq2SeqTransformerConfig
from slimbert.errors import CheckpointError
from slimbert.models import build_model


@dataclass(frozen=True)
class TransformerStudentSpec:
    enc_layers: int | None = None  # encoder blocks
    dec_layers: int | None = None  # decoder blocks
    hidden: int | None = None  # model width
    heads: int | None = None  # attention heads
    ffn: int | None = None  # feed-forward width


@dataclass(frozen=True)
class LSTMStudentSpec:
    hidden: int | None = None  # encoder units per direction (the decoder has twice as many)
    embedding: int | None = None  # word-embedding width
    layers: int | None = None  # LSTM layers of the encoder and of the decoder


Seq2SeqStudentSpec = TransformerStudentSpec | LSTMStudentSpec
KINDS: dict[str, type[Seq2SeqStudentSpec]] = {"transformer": TransformerStudentSpec, "lstm": LSTMStudentSpec}
# Sizes of a student whose teacher is of the other kind: train-seq2seq's defaults.
FRESH_SIZES = {
    "transformer": TransformerStudentSpec(enc_layers=3, dec_layers=3, hidden=256, heads=4, ffn=1024),
    "lstm": LSTMStudentSpec(hidden=256, embedding=256, layers=1),
}


def parse_seq2seq_student(text: str) -> Seq2SeqStudentSpec:
    """'transformer:enc_layers=6,dec_layers=1' -> TransformerStudentSpec(enc_layers=6, dec_layers=1).

    Every value is a positive integer; an unknown kind or field, a repeated field or a bad value
    is a StudentSpecError naming it."""
    kind, _, rest = text.partition(":")
    if kind not in KINDS:
        raise StudentSpecError(f"--student '{text}': unknown kind '{kind}'; expected one of {sorted(KINDS)}, "
                               "e.g. transformer:enc_layers=6,dec_layers=1 or lstm:hidden=256")
    cls = KINDS[kind]
    allowed = [f.name for f in fields(cls)]
    values: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in allowed:
            raise StudentSpecError(f"--student '{text}': unknown field '{key}'; a {kind} student takes "
                                   f"{', '.join(allowed)} (as KEY=VALUE)")
        if key in values:
            raise StudentSpecError(f"--student '{text}': field '{key}' is given twice")
        try:
            values[key] = int(value)
        except ValueError:
            raise StudentSpecError(f"--student '{text}': field '{key}' must be an integer, got '{value}'"
                                   ) from None
        if values[key] < 1:
            raise StudentSpecError(f"--student '{text}': field '{key}' must be at least 1, got {values[key]}")
    return cls(**values)


def spec_text(spec: Seq2SeqStudentSpec) -> str:
    """The spec as --student writes it: TransformerStudentSpec(enc_layers=3) -> 'transformer:enc_layers=3'."""
    given = ",".join(f"{k}={v}" for k, v in dataclasses.asdict(spec).items() if v is not None)
    return student_kind(spec) + (f":{given}" if given else "")


def student_kind(spec: Seq2SeqStudentSpec) -> str:
    """'transformer' or 'lstm'."""
    return next(kind for kind, cls in KINDS.items() if isinstance(spec, cls))


def teacher_sizes(teacher: Seq2SeqConfig) -> Seq2SeqStudentSpec:
    """The teacher's own sizes, as a spec."""
    if isinstance(teacher, Seq2SeqTransformerConfig):
        return TransformerStudentSpec(teacher.encoder_layers, teacher.decoder_layers, teacher.hidden_size,
                                      teacher.num_attention_heads, teacher.intermediate_size)
    return LSTMStudentSpec(teacher.hidden_size, teacher.embedding_dim, teacher.num_layers)


def student_config(spec: Seq2SeqStudentSpec, teacher: Seq2SeqConfig) -> Seq2SeqConfig:
    """The student's config: the spec's sizes (the fields left out filled as the module's
    docstring says); vocabulary, lengths and dropout, and for a student of the teacher's kind
    everything else (positions, norms, attention), the teacher's."""
    own = teacher_sizes(teacher)
    same_kind = type(own) is type(spec)
    base = own if same_kind else FRESH_SIZES[student_kind(spec)]
    s = dataclasses.replace(base, **{k: v for k, v in dataclasses.asdict(spec).items() if v is not None})
    if isinstance(s, TransformerStudentSpec):
        sizes = {"encoder_layers": s.enc_layers, "decoder_layers": s.dec_layers, "hidden_size": s.hidden,
                 "num_attention_heads": s.heads, "intermediate_size": s.ffn}
        fresh = Seq2SeqTransformerConfig
    else:
        sizes = {"embedding_dim": s.embedding, "hidden_size": s.hidden, "num_layers": s.layers}
        fresh = Seq2SeqLSTMConfig
    try:
        if same_kind:
            return teacher.replace(**sizes, dtype="float32", quantization=None)
        shared = {f.name: getattr(teacher, f.name) for f in fields(Seq2SeqConfig)
                  if f.name not in ("dtype", "quantization")}
        extra = {"norm_style": "pre"} if fresh is Seq2SeqTransformerConfig else {}  # as train-seq2seq's
        return fresh(**shared, **sizes, **extra)
    except CheckpointError as e:  # e.g. a width the heads do not divide
        raise StudentSpecError(f"--student '{spec_text(spec)}': {str(e).replace('config field ', 'field ')}"
                               ) from None


def copies_teacher_layers(student: Seq2SeqConfig, teacher: Seq2SeqConfig) -> bool:
    """Whether the student's blocks can be copies of the teacher's: both Transformers of the
    same width, heads and feed-forward width (only the depths differ), the teacher not int8."""
    if not (isinstance(student, Seq2SeqTransformerConfig) and isinstance(teacher, Seq2SeqTransformerConfig)):
        return False
    depths = {"encoder_layers": teacher.encoder_layers, "decoder_layers": teacher.decoder_layers}
    return teacher.quantization is None and student.replace(**depths) == teacher.replace(dtype="float32")


def make_seq2seq_student(spec: Seq2SeqStudentSpec, teacher: nn.Module) -> tuple[nn.Module, str]:
    """The student of `teacher` that `spec` describes, initialised as the module's docstring
    says. Returns it and a line saying how it was initialised."""
    config = student_config(spec, teacher.config)
    student = build_model(config)
    if copies_teacher_layers(config, teacher.config):
        layers = {}
        for stack in ("encoder", "decoder"):
            n, of = getattr(config, f"{stack}_layers"), getattr(teacher.config, f"{stack}_layers")
            if n > of:
                raise StudentSpecError(f"--student '{spec_text(spec)}': field '{stack[:3]}_layers' is {n}, "
                                       f"more than the teacher's {of} {stack} layers; a student as wide as "
                                       "the teacher starts from its layers")
            layers[stack] = evenly_spaced_layers(n, of)
        student.load_state_dict(teacher_weights_for(student, teacher, layers))
        return student, (f"teacher's encoder layers {layers['encoder']} and decoder layers "
                         f"{layers['decoder']}, embeddings copied")
    shapes = [{k: v.shape for k, v in m.embeddings.state_dict().items()} for m in (student, teacher)]
    if shapes[0] == shapes[1]:
        student.embeddings.load_state_dict(teacher.embeddings.state_dict())
        return student, "fresh, the teacher's embeddings copied"
    return student, "fresh"


_BLOCK = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.")


def teacher_weights_for(student: nn.Module, teacher: nn.Module, layers: dict[str, list[int]]) -> dict:
    """The student's state dict filled from the teacher's: block i of each stack from the
    teacher's block layers[stack][i], every other weight from the same name. Every name must
    exist in the teacher with the same shape (a mismatch is a bug, never skipped)."""
    source = teacher.state_dict()
    weights = {}
    for name, value in student.state_dict().items():
        match = _BLOCK.match(name)
        origin = name
        if match:
            stack, i = match.group(1), int(match.group(2))
            origin = f"{stack}.layers.{layers[stack][i]}.{name[match.end():]}"
        if origin not in source or source[origin].shape != value.shape:
            raise AssertionError(f"student weight {name} has no teacher weight {origin} of shape "
                                 f"{tuple(value.shape)}")
        weights[name] = source[origin]
    return weights
