"""`slimbert distill`: task-specific distillation of a fine-tuned teacher into a student.

The teacher labels a transfer set (the training examples, plus Tang et al.'s augmented copies
when asked), and the student learns from those soft labels with the one Trainer. The teacher's
logits over the transfer set are computed once, in batches, and cached on disk under a key of
teacher weights + encoded transfer set + precision, so later epochs and later runs (other
students, other seeds) reuse them. The augmented transfer set is cached the same way.

The recipe's policy, which a Python caller gets as the CLI does: the loss mix defaults to
soft-target cross-entropy for BERT students (DistilBERT) and logit MSE for BiLSTM/CNN students
and regression tasks (Tang et al.); the learning rate defaults by kind of student
(`STUDENT_LR`); training runs 3 epochs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slimbert.checkpoint import check_same_vocabulary, fit_tokenizer, load_model, load_tokenizer, resolve
from slimbert.compress.students import (BertStudentSpec, BiLSTMStudentSpec, CheckpointStudentSpec,
                                        CNNStudentSpec, StudentSpec, StudentSpecError, make_student,
                                        parse_student_spec)
from slimbert.config import BertConfig
from slimbert.data.augment import AugmentConfig, augment
from slimbert.data.batching import EncodedDataset, encode_examples
from slimbert.data.readers import Example
from slimbert.data.sources import TaskData
from slimbert.errors import ConfigError, DataError
from slimbert.inference import predict_logits
from slimbert.io import atomic_write, atomic_write_text, file_sha256
from slimbert.models import count_parameters
from slimbert.recipes.common import (check_head, encode, fraction, positive, resume_point, run_and_record,
                                     scorer, seed_everything, set_layerdrop)
from slimbert.training.distillation import (DistillationObjective, LayerMap, LayerMapError, LossWeights,
                                            uniform_layer_map)
from slimbert.training.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)

# Learning rates that suit each kind of student when none is given: the word-level students
# train from (mostly) fresh weights and take a larger step.
STUDENT_LR = {"bert": 1e-4, "bilstm": 2e-3, "cnn": 2e-3, "checkpoint": 1e-4}
TRAIN_DEFAULTS = {"epochs": 3}
TASK_WEIGHTS = ("hard", "soft", "logit_mse", "hidden", "attention")


@dataclass
class DistillConfig:
    teacher: str  # fine-tuned teacher checkpoint directory
    # bert:layers=N[,hidden=H[,heads=A]] | bilstm[:hidden=300,mlp=400,embeddings=teacher]
    # | cnn[:filters=100,widths=3-4-5,embeddings=teacher] | a checkpoint directory
    student: str
    out: str  # output directory (best student; last/ for --resume)
    # teacher layers to initialise a bert student from, e.g. 0,2,4 (default: evenly spaced,
    # every other layer for half the depth)
    init_layers: tuple[int, ...] | None = None
    max_length: int = 128  # tokens per example
    labels_only: bool = False  # train the student on gold labels alone (the no-teacher baseline)
    # Loss weights: giving any sets the others to 0; giving none picks this student's default mix.
    hard_weight: float | None = None  # gold-label cross-entropy
    soft_weight: float | None = None  # soft-target cross-entropy with the teacher, x T^2
    logit_mse_weight: float | None = None  # squared distance to the teacher's logits
    hidden_weight: float | None = None  # hidden states of mapped layers (BERT students)
    attention_weight: float | None = None  # attention maps of mapped layers (BERT students)
    hidden_loss: Literal["cosine", "mse"] = "cosine"  # how hidden states are compared
    temperature: float = 2.0  # softmax temperature T
    layer_map: LayerMap | None = None  # student:teacher layer pairs, e.g. 0:1,1:3,2:5 (default: uniform)
    augment: int = 0  # Tang et al.: add up to N distinct augmented copies of every training example
    p_mask: float = 0.1  # augmentation, per word: replace by [MASK]
    p_pos: float = 0.1  # augmentation, per word: replace by a word of the same POS tag (0 needs no tagger)
    p_ngram: float = 0.25  # augmentation, per copy: keep one n-gram, n in 1..5
    augment_seed: int = 0  # seed of the augmentation
    # where teacher logits and augmented sets are kept (default: $SLIMBERT_CACHE or ~/.cache/slimbert)
    cache_dir: str | None = None
    layerdrop: float | None = None  # LayerDrop probability for a bert student
    resume: bool = False  # continue from OUT/last

    def __post_init__(self) -> None:
        positive(self, "max_length", "temperature")
        fraction(self, "layerdrop")
        if self.augment < 0:
            raise ConfigError(f"augment must be >= 0, got {self.augment}")
        AugmentConfig(copies=self.augment, p_mask=self.p_mask, p_pos=self.p_pos, p_ngram=self.p_ngram)
        if self.given_weights():
            LossWeights(**{name: self.given_weights().get(name, 0.0) for name in TASK_WEIGHTS})

    def given_weights(self) -> dict[str, float]:
        return {name: getattr(self, f"{name}_weight") for name in TASK_WEIGHTS
                if getattr(self, f"{name}_weight") is not None}

    def augment_config(self) -> AugmentConfig | None:
        if not self.augment:
            return None
        return AugmentConfig(copies=self.augment, p_mask=self.p_mask, p_pos=self.p_pos, p_ngram=self.p_ngram,
                             seed=self.augment_seed)

    def student_spec(self) -> StudentSpec:
        return parse_student_spec(self.student, self.init_layers)


def student_kind(spec: StudentSpec) -> str:
    """'bert', 'bilstm', 'cnn' or 'checkpoint': what the defaults of this recipe depend on."""
    return {BertStudentSpec: "bert", BiLSTMStudentSpec: "bilstm", CNNStudentSpec: "cnn"}.get(
        type(spec), "checkpoint")


def train_defaults(config: DistillConfig) -> dict:
    """TrainConfig values this recipe uses where the caller gives none: 3 epochs at the
    learning rate of this kind of student."""
    return {**TRAIN_DEFAULTS, "lr": STUDENT_LR[student_kind(config.student_spec())]}


def loss_weights(config: DistillConfig, kind: str, regression: bool) -> LossWeights:
    """--labels-only, the weights given, or the default mix for this kind of student: soft-target
    CE for BERT students (DistilBERT), logit MSE for BiLSTM/CNN students and regression (Tang et al.)."""
    if config.labels_only:
        return LossWeights(hard=1.0, soft=0.0)
    given = config.given_weights()
    if not given:
        logit_mse = regression or kind in ("bilstm", "cnn")
        given = {"soft": 0.0 if logit_mse else 1.0, "logit_mse": 1.0 if logit_mse else 0.0}
    return LossWeights(**{name: given.get(name, 0.0) for name in TASK_WEIGHTS})


def default_cache_dir() -> Path:
    """$SLIMBERT_CACHE, else ~/.cache/slimbert."""
    return Path(os.environ.get("SLIMBERT_CACHE") or Path.home() / ".cache" / "slimbert")


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:24]


def _teacher_digest(directory: Path) -> bytes:
    """Identity of a teacher: its weights files and config."""
    files = sorted(p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    return b"".join(p.name.encode() + file_sha256(p).digest() for p in files)


def _encoded_digest(data: EncodedDataset) -> bytes:
    lengths = np.asarray(data.lengths, dtype=np.int64)
    ids = np.fromiter((t for seq in data.input_ids for t in seq), dtype=np.int64, count=int(lengths.sum()))
    types = np.fromiter((t for seq in data.token_type_ids for t in seq), dtype=np.int64,
                        count=int(lengths.sum()))
    return lengths.tobytes() + ids.tobytes() + types.tobytes()


def cached_teacher_logits(teacher: nn.Module, teacher_dir: Path, data: EncodedDataset, pad_id: int,
                          precision: str, cache_dir: Path, batch_size: int = 128,
                          progress: bool = True) -> tuple[torch.Tensor, bool]:
    """The teacher's logits for every example of `data`, from the cache or computed (and stored).

    Returns (logits (N, C), whether they came from the cache).
    """
    key = _sha(_teacher_digest(teacher_dir), _encoded_digest(data), precision.encode())
    path = cache_dir / "teacher_logits" / f"{key}.safetensors"
    if path.exists():
        try:
            logits = load_file(path)["logits"]
            if logits.shape[0] == len(data):
                return logits, True
        except Exception as e:  # a damaged cache entry is recomputed, never trusted
            log.warning("%s: unreadable cache entry (%s); recomputing", path, e)
    logits = predict_logits(teacher, data, pad_id, batch_size, precision,
                            progress="teacher logits" if progress else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: save_file({"logits": logits.contiguous()}, str(p)))
    return logits, False


def transfer_set(train: list[Example], cfg: AugmentConfig | None, cache_dir: Path,
                 progress: bool = True) -> tuple[list[Example], int]:
    """The training examples followed by their augmented, unlabelled copies (cached).

    Returns (examples, number of augmented ones)."""
    if cfg is None or cfg.copies == 0:
        return list(train), 0
    digest = _sha(json.dumps([(e.text, e.text_pair) for e in train]).encode(),
                  json.dumps(cfg.as_dict(), sort_keys=True).encode())
    path = cache_dir / "transfer_sets" / f"{digest}.jsonl"
    extra: list[Example] | None = None
    if path.exists():
        try:
            extra = [Example(r["text"], r.get("text_pair"), None)
                     for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())]
        except (json.JSONDecodeError, KeyError) as e:
            log.warning("%s: unreadable cache entry (%s); augmenting again", path, e)
    if extra is None:
        extra = augment(train, cfg, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(json.dumps({"text": e.text, "text_pair": e.text_pair}) + "\n"
                                        for e in extra))
    return list(train) + extra, len(extra)


def matched_layers(weights: LossWeights, layer_map: LayerMap | None, student: nn.Module,
                   teacher: nn.Module) -> list[tuple[int, int]] | None:
    """The (student, teacher) layer pairs the hidden-state and attention terms match, if any:
    `layer_map` checked against both depths, or the uniform map. A `layer_map` given is checked
    even when no loss uses it, so that a wrong one is never silently ignored."""
    uses_layers = bool(weights.hidden or weights.attention)
    if not uses_layers and layer_map is None:
        return None
    if not (isinstance(student.config, BertConfig) and isinstance(teacher.config, BertConfig)):
        if not uses_layers:
            raise StudentSpecError("--layer-map pairs Transformer layers: a bilstm/cnn student has none")
        raise StudentSpecError("hidden-state and attention losses need a BERT student and teacher; "
                               "a bilstm/cnn student distils from logits only")
    ns, nt = student.config.num_hidden_layers, teacher.config.num_hidden_layers
    try:
        pairs = layer_map.check(ns, nt) if layer_map else uniform_layer_map(ns, nt)
    except LayerMapError as e:
        raise StudentSpecError(f"--layer-map: {e}") from None
    return pairs if uses_layers else None


def width(model: nn.Module) -> int | None:
    return getattr(model.config, "hidden_size", None)


def distill(config: DistillConfig, data: TaskData, train: TrainConfig | None = None) -> dict:
    """Distil the fine-tuned `config.teacher` into `config.student` on the task of `data`;
    returns the results (also in OUT/results.json)."""
    spec = config.student_spec()
    kind = student_kind(spec)
    train = train or TrainConfig(**train_defaults(config))
    out = Path(config.out)
    if data.train is None:
        raise DataError("distillation needs a train split")
    last = resume_point(out, config.resume)
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    teacher_dir = resolve(config.teacher)
    teacher_net = load_model(teacher_dir)
    check_head(teacher_net, config.teacher, data.num_labels, data.name)
    tokenizer = load_tokenizer(teacher_dir)
    w = loss_weights(config, kind, data.regression)
    if data.regression and w.soft:
        raise DataError(f"{data.name} is a regression task: distil with logit MSE (--logit-mse-weight), "
                        "not soft-target cross-entropy")
    augment_cfg = config.augment_config()
    if augment_cfg and set(w.active()) == {"hard"}:
        raise DataError("augmented examples have no gold labels: --augment needs a teacher loss")

    seed_everything(train.seed)
    has_pairs = data.train.examples[0].text_pair is not None
    if config.resume:
        net = load_model(last)
    else:
        if isinstance(spec, CheckpointStudentSpec):
            check_same_vocabulary(spec.path, tokenizer)
        net = make_student(spec, teacher_net, {
            "head": "classification", "num_labels": data.num_labels, "id2label": data.id2label,
            "task": data.name, "pairs": has_pairs,
            "problem_type": "regression" if data.regression else "single_label_classification"})
        if config.layerdrop:
            set_layerdrop(net, config.layerdrop)
    layers = matched_layers(w, config.layer_map, net, teacher_net)  # checked before any work
    fit_tokenizer(tokenizer, net.config, f"the student {config.student}")  # it reads what the teacher reads

    t0 = time.perf_counter()
    examples, n_aug = transfer_set(data.train.examples, augment_cfg, cache_dir, train.progress)
    augment_seconds = time.perf_counter() - t0
    train_set = encode_examples(examples, tokenizer, config.max_length, data.regression)
    teacher_seconds, cache_hit = 0.0, None
    if w.soft or w.logit_mse:
        t0 = time.perf_counter()
        train_set.teacher_logits, cache_hit = cached_teacher_logits(
            teacher_net, teacher_dir, train_set, tokenizer.pad_id, train.precision, cache_dir,
            progress=train.progress)
        teacher_seconds = time.perf_counter() - t0
    objective = DistillationObjective(
        teacher_net, w, config.temperature, layers,
        student_hidden=width(net), teacher_hidden=width(teacher_net), hidden_loss=config.hidden_loss,
        regression=data.regression)
    dev = encode(data.dev, tokenizer, config.max_length, data.regression)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(net, objective, train_set, train, out, tokenizer=tokenizer,
                      evaluate=scorer(dev, data, tokenizer.pad_id, train.precision),
                      main_metric=data.main_metric)
    log.info("distilling %s into %s on %s: %d transfer examples (%d augmented), %d steps",
             config.teacher, config.student, data.name, len(train_set), n_aug, trainer.total_steps())
    results = {
        "job": "distill",
        "task": data.name,
        "teacher": str(config.teacher),
        "student": config.student,
        "student_parameters": count_parameters(net),
        "teacher_parameters": count_parameters(teacher_net),
        "train_examples": len(data.train.examples),
        "augmented_examples": n_aug,
        "dev_examples": len(dev) if dev else 0,
        "main_metric": data.main_metric,
        "labels": data.label_mapping(),  # what each output of the model means
        "loss_weights": w.active(),
        "temperature": config.temperature,
        "layer_map": objective.layer_map,
        "augment": augment_cfg.as_dict() if augment_cfg else None,
        "augment_seconds": augment_seconds,
        "teacher_logits_seconds": teacher_seconds,
        "teacher_logits_cached": cache_hit,
        "seed": train.seed,
        "max_length": config.max_length,
    }
    return run_and_record(trainer, out, config.resume, results)
