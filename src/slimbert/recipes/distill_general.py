"""`slimbert distill-general`: task-agnostic distillation of a pre-trained BERT on raw text.

A student learns to behave like the teacher before it ever sees a task. With an MLM-head
teacher this is DistilBERT's triple loss (soft-target CE on the MLM logits + the student's own
MLM loss + cosine of the last hidden states, weights 5/2/1). A bare encoder (like the bundled
MiniLM) has no MLM logits to match, so the student matches its hidden states (MSE) and
attention maps (KL) on mapped layers, as TinyBERT and MiniLM do. Inputs are dynamically masked
80/10/10 in both cases. One epoch at 1e-4 unless told otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from slimbert.checkpoint import check_same_vocabulary, fit_tokenizer, load_model, load_tokenizer, resolve
from slimbert.compress.students import (BertStudentSpec, CheckpointStudentSpec, StudentSpecError,
                                        make_student, parse_student_spec)
from slimbert.config import BertConfig
from slimbert.data.batching import encode_examples
from slimbert.data.masking import MLMMasker
from slimbert.data.readers import Example, read_lines
from slimbert.errors import ConfigError, DataError
from slimbert.recipes.common import DEFAULT_MODEL, positive, resume_point, run_and_record, seed_everything
from slimbert.recipes.distill import matched_layers, width
from slimbert.training.distillation import DistillationObjective, LayerMap, LossWeights
from slimbert.training.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)

TRAIN_DEFAULTS = {"epochs": 1, "lr": 1e-4}
GENERAL_WEIGHTS = ("soft", "mlm", "hidden", "attention")


@dataclass
class DistillGeneralConfig:
    student: str  # bert:layers=N[,hidden=H] or a checkpoint directory
    corpus: list[str]  # plain-text files, one passage per line
    out: str  # output directory (the student; last/ for --resume)
    teacher: str = DEFAULT_MODEL  # pre-trained BERT: a bare encoder, or one with an MLM head
    init_layers: tuple[int, ...] | None = None  # teacher layers to copy, e.g. 0,2,4
    max_length: int = 128  # tokens per passage
    max_examples: int | None = None  # use only the first N lines
    mlm_probability: float = 0.15  # fraction of tokens masked (80% [MASK], 10% random, 10% kept)
    temperature: float = 2.0  # softmax temperature T of the soft-target loss
    # student:teacher layer pairs (default: last:last with an MLM teacher, uniform otherwise)
    layer_map: LayerMap | None = None
    # Loss weights: giving any sets the others to 0; giving none picks the teacher's default mix.
    soft_weight: float | None = None  # soft-target CE on the teacher's MLM logits, x T^2
    mlm_weight: float | None = None  # the student's own masked-LM loss
    hidden_weight: float | None = None  # hidden states of mapped layers
    attention_weight: float | None = None  # attention maps of mapped layers
    resume: bool = False  # continue from OUT/last

    def __post_init__(self) -> None:
        positive(self, "max_length", "max_examples", "temperature")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if not self.corpus:
            raise ConfigError("corpus: give at least one file")
        self.given_weights()

    def given_weights(self) -> LossWeights | None:
        """The loss weights given (the others 0), or None for the teacher's default mix."""
        given = {n: getattr(self, f"{n}_weight") for n in GENERAL_WEIGHTS}
        if all(v is None for v in given.values()):
            return None
        return LossWeights(**{n: v or 0.0 for n, v in given.items()})


def train_defaults(config: DistillGeneralConfig) -> dict:
    return dict(TRAIN_DEFAULTS)


def read_corpus(paths: list[str | Path], min_words: int = 3) -> list[Example]:
    """Lines of plain-text files with at least `min_words` words, one example each."""
    examples = []
    for path in paths:
        examples += [Example(line.strip()) for line in read_lines(path) if len(line.split()) >= min_words]
    if not examples:
        raise DataError(f"no lines of {min_words}+ words in {', '.join(map(str, paths))}")
    return examples


def distill_general(config: DistillGeneralConfig, train: TrainConfig | None = None) -> dict:
    """Task-agnostic distillation on raw text; the student keeps the teacher's head kind.
    Returns the results (also in OUT/results.json)."""
    spec = parse_student_spec(config.student, config.init_layers)
    if not isinstance(spec, (BertStudentSpec, CheckpointStudentSpec)):
        raise StudentSpecError("general distillation trains a BERT student (bert:layers=N or a checkpoint)")
    train = train or TrainConfig(**train_defaults(config))
    out = Path(config.out)
    last = resume_point(out, config.resume)
    teacher_dir = resolve(config.teacher)
    teacher_net = load_model(teacher_dir)
    tcfg = teacher_net.config
    if not isinstance(tcfg, BertConfig) or tcfg.head == "classification":
        raise DataError(f"{config.teacher}: general distillation needs a pre-trained BERT (a bare encoder "
                        "or one with an MLM head), not a task classifier")
    tokenizer = load_tokenizer(teacher_dir)
    mlm_teacher = tcfg.head == "mlm"
    weights = config.given_weights()
    if weights is None:
        weights = (LossWeights(soft=5.0, mlm=2.0, hidden=1.0) if mlm_teacher
                   else LossWeights(soft=0.0, hidden=1.0, attention=1.0))
    if (weights.soft or weights.mlm) and not mlm_teacher:
        raise DataError(f"{config.teacher} has no MLM head: its MLM logits cannot be matched; use hidden "
                        "and attention losses")
    seed_everything(train.seed)
    if config.resume:
        net = load_model(last)
    else:
        if isinstance(spec, CheckpointStudentSpec):
            check_same_vocabulary(spec.path, tokenizer)
        net = make_student(spec, teacher_net, {"head": tcfg.head})
    fit_tokenizer(tokenizer, net.config, f"the student {config.student}")  # it reads what the teacher reads
    examples = read_corpus(config.corpus)[:config.max_examples]
    train_set = encode_examples(examples, tokenizer, config.max_length)
    layer_map = config.layer_map
    if layer_map is None and mlm_teacher:  # DistilBERT: the last hidden state only
        layer_map = LayerMap(((net.config.num_hidden_layers - 1, tcfg.num_hidden_layers - 1),))
    masker = MLMMasker(tokenizer.mask_id, len(tokenizer), tokenizer.special_ids, config.mlm_probability)
    objective = DistillationObjective(
        teacher_net, weights, config.temperature, matched_layers(weights, layer_map, net, teacher_net),
        student_hidden=width(net), teacher_hidden=width(teacher_net),
        hidden_loss="cosine" if mlm_teacher else "mse", masker=masker)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(net, objective, train_set, train, out, tokenizer=tokenizer)
    log.info("general distillation of %s into %s: %d lines, %d steps", config.teacher, config.student,
             len(train_set), trainer.total_steps())
    results = {
        "job": "distill-general",
        "teacher": str(config.teacher),
        "student": config.student,
        "corpus": [str(p) for p in config.corpus],
        "train_examples": len(train_set),
        "loss_weights": weights.active(),
        "temperature": config.temperature,
        "layer_map": objective.layer_map,
        "mlm_probability": config.mlm_probability,
        "seed": train.seed,
        "max_length": config.max_length,
    }
    return run_and_record(trainer, out, config.resume, results)
