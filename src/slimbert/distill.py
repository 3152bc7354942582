"""The distillation jobs behind `slimbert distill` and `slimbert distill-general`.

Task-specific distillation (`distill`): a fine-tuned teacher labels a transfer set (the
training examples, plus Tang et al.'s augmented copies when asked), and a student learns from
those soft labels with the one Trainer. The teacher's logits over the transfer set are
computed once, in batches, and cached on disk under a key of teacher weights + encoded
transfer set + precision, so later epochs and later runs (other students, other seeds) reuse
them. The augmented transfer set is cached the same way.

General distillation (`distill_general`): a student learns to behave like the teacher on raw
text before it ever sees a task. With an MLM-head teacher this is DistilBERT's triple loss
(soft-target CE on the MLM logits + the student's own MLM loss + cosine of the last hidden
states, weights 5/2/1). A bare encoder (like the bundled MiniLM) has no MLM logits to match,
so the student matches its hidden states (MSE) and attention maps (KL) on mapped layers, as
TinyBERT and MiniLM do. Inputs are dynamically masked 80/10/10 in both cases.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slimbert.checkpoint import check_same_vocabulary, load_model, load_tokenizer, resolve
from slimbert.compress.students import (BertStudentSpec, CheckpointStudentSpec, StudentSpec,
                                        StudentSpecError, make_student)
from slimbert.config import BertConfig
from slimbert.data.augment import AugmentConfig, augment
from slimbert.data.batching import EncodedDataset, encode_examples
from slimbert.data.masking import MLMMasker
from slimbert.data.readers import Example
from slimbert.data.sources import TaskData
from slimbert.errors import DataError
from slimbert.inference import predict_logits
from slimbert.io import atomic_write, atomic_write_text
from slimbert.jobs import _check_head, resume_point, run_and_record, score
from slimbert.training.distillation import (DistillationObjective, LayerMapError, LossWeights,
                                            parse_layer_map, uniform_layer_map)
from slimbert.training.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$SLIMBERT_CACHE, else ~/.cache/slimbert."""
    return Path(os.environ.get("SLIMBERT_CACHE") or Path.home() / ".cache" / "slimbert")


@dataclass
class DistillOptions:
    """How a student learns from its teacher (see slimbert.training.distillation)."""

    weights: LossWeights = field(default_factory=LossWeights)
    temperature: float = 2.0
    layer_map: str | None = None  # "0:1,1:3,2:5"; None = uniform (used by hidden/attention terms)
    hidden_loss: str = "cosine"  # "cosine" or "mse"
    augment: AugmentConfig | None = None  # Tang et al. augmentation of the transfer set
    cache_dir: Path | None = None  # where teacher logits and augmented sets are kept
    layerdrop: float = 0.0  # LayerDrop probability for a BERT student (Fan et al. 2019)


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:24]


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.digest()


def _teacher_digest(directory: Path) -> bytes:
    """Identity of a teacher: its weights files and config."""
    files = sorted(p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    return b"".join(p.name.encode() + _file_digest(p) for p in files)


def _encoded_digest(data: EncodedDataset) -> bytes:
    lengths = np.asarray(data.lengths, dtype=np.int64)
    ids = np.fromiter((t for seq in data.input_ids for t in seq), dtype=np.int64, count=int(lengths.sum()))
    types = np.fromiter((t for seq in data.token_type_ids for t in seq), dtype=np.int64, count=int(lengths.sum()))
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


def _layer_map(options: DistillOptions, student: nn.Module, teacher: nn.Module) -> list[tuple[int, int]] | None:
    w = options.weights
    if not (w.hidden or w.attention):
        return None
    if not (isinstance(student.config, BertConfig) and isinstance(teacher.config, BertConfig)):
        raise StudentSpecError("hidden-state and attention losses need a BERT student and teacher; "
                               "a bilstm/cnn student distils from logits only")
    ns, nt = student.config.num_hidden_layers, teacher.config.num_hidden_layers
    try:
        return (parse_layer_map(options.layer_map, ns, nt) if options.layer_map
                else uniform_layer_map(ns, nt))
    except LayerMapError as e:
        raise StudentSpecError(f"--layer-map: {e}") from None


def _width(model: nn.Module) -> int | None:
    return getattr(model.config, "hidden_size", None)


def distill(teacher: str, student: StudentSpec, data: TaskData, out: str | Path, config: TrainConfig,
            options: DistillOptions, max_length: int = 128, resume: bool = False,
            student_name: str | None = None) -> dict:
    """Task-specific distillation of a fine-tuned `teacher` into `student`; returns the results."""
    out = Path(out)
    if data.train is None:
        raise DataError("distillation needs a train split")
    last = resume_point(out, resume)
    cache_dir = options.cache_dir or default_cache_dir()
    teacher_dir = resolve(teacher)
    teacher_net = load_model(teacher_dir)
    _check_head(teacher_net, teacher, data.num_labels, data.name)
    tokenizer = load_tokenizer(teacher_dir)
    w = options.weights
    if data.regression and w.soft:
        raise DataError(f"{data.name} is a regression task: distil with logit MSE (--logit-mse-weight), "
                        "not soft-target cross-entropy")
    if options.augment and set(w.active()) == {"hard"}:
        raise DataError("augmented examples have no gold labels: --augment needs a teacher loss")

    torch.manual_seed(config.seed)
    has_pairs = data.train.examples[0].text_pair is not None
    if resume:
        net = load_model(last)
    else:
        if isinstance(student, CheckpointStudentSpec):
            check_same_vocabulary(student.path, tokenizer)
        net = make_student(student, teacher_net, {
            "head": "classification", "num_labels": data.num_labels, "id2label": data.id2label,
            "task": data.name, "pairs": has_pairs,
            "problem_type": "regression" if data.regression else "single_label_classification"})
        if options.layerdrop:
            from slimbert.compress.prune import set_layerdrop

            set_layerdrop(net, options.layerdrop)

    t0 = time.perf_counter()
    examples, n_aug = transfer_set(data.train.examples, options.augment, cache_dir, config.progress)
    augment_seconds = time.perf_counter() - t0
    train = encode_examples(examples, tokenizer, max_length, data.regression)
    teacher_seconds, cache_hit = 0.0, None
    if w.soft or w.logit_mse:
        t0 = time.perf_counter()
        train.teacher_logits, cache_hit = cached_teacher_logits(
            teacher_net, teacher_dir, train, tokenizer.pad_id, config.precision, cache_dir,
            progress=config.progress)
        teacher_seconds = time.perf_counter() - t0
    objective = DistillationObjective(
        teacher_net, w, options.temperature, _layer_map(options, net, teacher_net),
        student_hidden=_width(net), teacher_hidden=_width(teacher_net), hidden_loss=options.hidden_loss,
        regression=data.regression)
    dev = encode_examples(data.dev.examples, tokenizer, max_length, data.regression) if data.dev else None
    evaluate = (lambda m: score(m, dev, data.metrics, tokenizer.pad_id, precision=config.precision)
                ) if dev is not None else None
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(net, objective, train, config, out, tokenizer=tokenizer, evaluate=evaluate,
                      main_metric=data.main_metric)
    log.info("distilling %s into %s on %s: %d transfer examples (%d augmented), %d steps",
             teacher, student_name or student, data.name, len(train), n_aug, trainer.total_steps())
    results = {
        "job": "distill",
        "task": data.name,
        "teacher": str(teacher),
        "student": student_name or str(student),
        "student_parameters": sum(p.numel() for p in net.parameters()),
        "teacher_parameters": sum(p.numel() for p in teacher_net.parameters()),
        "train_examples": len(data.train.examples),
        "augmented_examples": n_aug,
        "dev_examples": len(dev) if dev else 0,
        "main_metric": data.main_metric,
        "loss_weights": w.active(),
        "temperature": options.temperature,
        "layer_map": objective.layer_map,
        "augment": options.augment.as_dict() if options.augment else None,
        "augment_seconds": augment_seconds,
        "teacher_logits_seconds": teacher_seconds,
        "teacher_logits_cached": cache_hit,
        "seed": config.seed,
        "max_length": max_length,
    }
    return run_and_record(trainer, out, resume, results)


def read_corpus(paths: list[str | Path], min_words: int = 3) -> list[Example]:
    """Lines of plain-text files with at least `min_words` words, one example each."""
    from slimbert.data.readers import read_lines

    examples = []
    for path in paths:
        examples += [Example(line.strip()) for line in read_lines(path) if len(line.split()) >= min_words]
    if not examples:
        raise DataError(f"no lines of {min_words}+ words in {', '.join(map(str, paths))}")
    return examples


def distill_general(teacher: str, student: StudentSpec, corpus: list[str | Path], out: str | Path,
                    config: TrainConfig, weights: LossWeights | None = None, temperature: float = 2.0,
                    layer_map: str | None = None, mlm_probability: float = 0.15,
                    max_length: int = 128, max_examples: int | None = None, resume: bool = False) -> dict:
    """Task-agnostic distillation on raw text; the student keeps the teacher's head kind."""
    out = Path(out)
    last = resume_point(out, resume)
    teacher_dir = resolve(teacher)
    teacher_net = load_model(teacher_dir)
    tcfg = teacher_net.config
    if not isinstance(tcfg, BertConfig) or tcfg.head == "classification":
        raise DataError(f"{teacher}: general distillation needs a pre-trained BERT (a bare encoder or "
                        "one with an MLM head), not a task classifier")
    if not isinstance(student, (BertStudentSpec, CheckpointStudentSpec)):
        raise StudentSpecError("general distillation trains a BERT student (bert:layers=N or a checkpoint)")
    tokenizer = load_tokenizer(teacher_dir)
    mlm_teacher = tcfg.head == "mlm"
    if weights is None:
        weights = (LossWeights(soft=5.0, mlm=2.0, hidden=1.0) if mlm_teacher
                   else LossWeights(soft=0.0, hidden=1.0, attention=1.0))
    if (weights.soft or weights.mlm) and not mlm_teacher:
        raise DataError(f"{teacher} has no MLM head: its MLM logits cannot be matched; use hidden "
                        "and attention losses")
    torch.manual_seed(config.seed)
    if resume:
        net = load_model(last)
    else:
        if isinstance(student, CheckpointStudentSpec):
            check_same_vocabulary(student.path, tokenizer)
        net = make_student(student, teacher_net, {"head": tcfg.head})
    examples = read_corpus(corpus)[:max_examples]
    train = encode_examples(examples, tokenizer, max_length)
    ns = net.config.num_hidden_layers
    if layer_map is None and mlm_teacher:  # DistilBERT: the last hidden state only
        layer_map = f"{ns - 1}:{tcfg.num_hidden_layers - 1}"
    options = DistillOptions(weights=weights, temperature=temperature, layer_map=layer_map,
                             hidden_loss="cosine" if mlm_teacher else "mse")
    masker = MLMMasker(tokenizer.mask_id, len(tokenizer), tokenizer.special_ids, mlm_probability)
    objective = DistillationObjective(
        teacher_net, weights, temperature, _layer_map(options, net, teacher_net),
        student_hidden=_width(net), teacher_hidden=_width(teacher_net),
        hidden_loss=options.hidden_loss, masker=masker)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(net, objective, train, config, out, tokenizer=tokenizer)
    log.info("general distillation of %s into %s: %d lines, %d steps", teacher, student, len(train),
             trainer.total_steps())
    results = {
        "job": "distill-general",
        "teacher": str(teacher),
        "student": str(student),
        "corpus": [str(p) for p in corpus],
        "train_examples": len(train),
        "loss_weights": weights.active(),
        "temperature": temperature,
        "layer_map": objective.layer_map,
        "mlm_probability": mlm_probability,
        "seed": config.seed,
        "max_length": max_length,
    }
    return run_and_record(trainer, out, resume, results)
