"""`slimbert distill-seq2seq`: sequence-level knowledge distillation of a translation model.

Kim & Rush 2016 (https://arxiv.org/abs/1606.07947): the teacher beam-decodes every training
source once, and the student is trained on those translations instead of the references
(Seq-KD). The teacher's outputs are consistent where the references are noisy or have several
valid forms, so a small student learns one mode instead of spreading itself over many. Options:
- `--mix-references` trains on the original pairs as well as the teacher's;
- `--word-kd-weight W --temperature T` adds word-level KD: the student's token distributions
  learn the teacher's, both teacher-forced on the same target prefix;
- `--references-only` trains the same student on the references alone (the no-teacher baseline).

The teacher's translations are cached in $SLIMBERT_CACHE/seqkd/KEY.jsonl (one line of token ids
per source), KEY a hash of the teacher's files, the sources and the search settings, so a second
run with the same teacher, data and settings does not decode again. The student (see
`slimbert.compress.seq2seq_students`) shares the teacher's vocabulary; the rest is
train-seq2seq's: validation BLEU after every epoch, the best model kept in OUT, OUT/last for
--resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from slimbert.checkpoint import load_model, resolve
from slimbert.compress.seq2seq_students import (Seq2SeqStudentSpec, make_seq2seq_student,
                                                parse_seq2seq_student, student_kind)
from slimbert.data.parallel import ParallelDataset, encode_parallel, parallel_batches
from slimbert.errors import ConfigError, DataError
from slimbert.generation import SearchConfig, translate
from slimbert.io import atomic_write_text, file_sha256
from slimbert.models import count_parameters
from slimbert.recipes.common import positive, resume_point, seed_everything
from slimbert.recipes.distill import default_cache_dir
from slimbert.recipes.train_seq2seq import (TRAIN_DEFAULTS, first_pairs, read_pairs, train_and_average,
                                             validator)
from slimbert.recipes.translate import load_translator
from slimbert.subword import SubwordTokenizer
from slimbert.training.objectives import Seq2SeqDistillationObjective
from slimbert.training.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)

CACHE_FORMAT = "seqkd-v1"  # part of every cache key: a new format never reads an old entry


@dataclass
class DistillSeq2SeqConfig:
    teacher: str  # translation checkpoint directory (from slimbert train-seq2seq)
    # transformer[:enc_layers=N,dec_layers=M,hidden=H,heads=A,ffn=F] | lstm[:hidden=H,embedding=E,layers=L]
    # (fields left out: the teacher's; a student as wide as the teacher starts from its layers)
    student: str
    train_src: str  # training sources, one sentence per line (the teacher translates them)
    train_tgt: str  # training references, aligned with --train-src
    valid_src: str  # validation sources (scored after every epoch)
    valid_tgt: str  # validation references, aligned with --valid-src
    out: str  # output directory (the best student by validation BLEU; last/ for --resume)
    beam: int = 5  # beam size of the teacher's translations of the training sources
    length_penalty: float = 1.0  # alpha of the teacher's beam search: hypotheses ranked by log p / len^alpha
    max_len_a: float = 1.5  # a teacher translation has at most max_len_a * source tokens + max_len_b tokens
    max_len_b: int = 10  # (see --max-len-a)
    decode_batch_size: int = 32  # sentences the teacher decodes together
    mix_references: bool = False  # train on the original pairs as well as the teacher's translations
    references_only: bool = False  # the no-teacher baseline: the same student trained on the references
    word_kd_weight: float = 0.0  # word-level KD: weight of the soft cross-entropy with the teacher, x T^2
    temperature: float = 1.0  # softmax temperature T of word-level KD
    label_smoothing: float = 0.1  # mass spread uniformly over the vocabulary in the hard loss
    valid_beam: int = 1  # beam size of the validation translations (1: greedy, fastest)
    max_valid_lines: int | None = None  # score only the first N validation pairs (faster epochs)
    no_empty_lines: bool = False  # an empty line is an error (default: the pair is skipped and counted)
    # where the teacher's translations are kept (default: $SLIMBERT_CACHE or ~/.cache/slimbert)
    cache_dir: str | None = None
    # also write OUT/averaged: the mean of the last N epochs' weights (checkpoint averaging), scored
    # on the validation pairs beside the best epoch
    average_last: int | None = None
    resume: bool = False  # continue from OUT/last

    def __post_init__(self) -> None:
        positive(self, "beam", "decode_batch_size", "temperature", "valid_beam", "max_valid_lines", "average_last")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.word_kd_weight < 0:
            raise ConfigError(f"word_kd_weight must be 0 or more, got {self.word_kd_weight}")
        if self.references_only and self.mix_references:
            raise ConfigError("references_only: the baseline trains on the references alone; "
                              "drop --mix-references")
        self.search()
        self.student_spec()

    def search(self) -> SearchConfig:
        """How the teacher translates the training sources."""
        try:
            return SearchConfig(beam_size=self.beam, length_penalty=self.length_penalty,
                                max_len_a=self.max_len_a, max_len_b=self.max_len_b)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def student_spec(self) -> Seq2SeqStudentSpec:
        return parse_seq2seq_student(self.student)


def train_defaults(config: DistillSeq2SeqConfig) -> dict:
    """train-seq2seq's training defaults for this kind of student."""
    return dict(TRAIN_DEFAULTS[student_kind(config.student_spec())])


# ----------------------------------------------------------------- the teacher's translations


def translations_key(teacher_dir: Path, sources: list[str], search: SearchConfig) -> str:
    """What the teacher's translations depend on: its weights, config and vocabulary (every
    .safetensors and .json file of its directory), the sources, and the search settings."""
    teacher_files = sorted(p for p in teacher_dir.iterdir() if p.suffix in (".safetensors", ".json"))
    parts = {
        "format": CACHE_FORMAT,
        "teacher": {p.name: file_sha256(p).hexdigest() for p in teacher_files},
        "sources": hashlib.sha256("\n".join(sources).encode()).hexdigest(),
        "search": asdict(search),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def read_translations(path: Path, count: int) -> list[list[int]] | None:
    """The cached token ids of `count` translations, or None when `path` is missing or damaged
    (a damaged entry is decoded again, never trusted)."""
    if not path.exists():
        return None
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        if len(rows) != count or not all(isinstance(row, list) and all(type(t) is int for t in row)
                                         for row in rows):
            raise ValueError(f"expected {count} lines of token ids")
        return rows
    except ValueError as e:
        log.warning("%s: unreadable cache entry (%s); decoding again", path, e)
        return None


def teacher_translations(teacher: nn.Module, tokenizer: SubwordTokenizer, teacher_dir: Path,
                         sources: list[str], search: SearchConfig, cache_dir: Path, batch_size: int = 32,
                         progress: bool = True) -> tuple[list[list[int]], Path, bool]:
    """The token ids (without </s>) of the teacher's best translation of every source, from the
    cache or decoded now (in length-sorted batches, with the KV cache, the vocabulary projection
    prepacked where it can be) and stored atomically.

    Returns (ids per source, the cache file, whether it was reused)."""
    path = cache_dir / "seqkd" / f"{translations_key(teacher_dir, sources, search)}.jsonl"
    cached = read_translations(path, len(sources))
    if cached is not None:
        log.info("reusing the teacher's translations of %d sources from %s", len(sources), path)
        return cached, path, True
    packed = teacher.embeddings.pack_output()  # for this decoding only: faster on the CPU, same output
    try:
        result = translate(teacher, tokenizer, sources, search, batch_size,
                           progress=f"teacher beam {search.beam_size}" if progress else None)
    finally:
        if packed:  # the teacher goes on to word-level KD and to initialise the student as it was
            teacher.embeddings.pack_output(False)
    ids = [hyps[0].tokens if hyps else [] for hyps in result.hypotheses]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in ids))
    log.info("the teacher translated %d sources in %.1f s; kept in %s", len(sources), result.seconds, path)
    return ids, path, False


def with_targets(data: ParallelDataset, targets: list[list[int]], eos_id: int) -> ParallelDataset:
    """`data`'s sources paired with `targets` (token ids without </s>) instead of its own.
    The teacher never generates more than the model's max_target_length, so none is cut."""
    return ParallelDataset(data.source_ids, [ids + [eos_id] for ids in targets], data.bos_id,
                           data.truncated_sources)


def concatenated(a: ParallelDataset, b: ParallelDataset) -> ParallelDataset:
    return ParallelDataset(a.source_ids + b.source_ids, a.target_ids + b.target_ids, a.bos_id,
                           a.truncated_sources + b.truncated_sources,
                           a.truncated_targets + b.truncated_targets)


# ------------------------------------------------------------------------------- the recipe


def distill_seq2seq(config: DistillSeq2SeqConfig, train: TrainConfig | None = None) -> dict:
    """Distil `config.teacher` into `config.student`; returns the results (also in OUT/results.json)."""
    train = train or TrainConfig(**train_defaults(config))
    if config.average_last:
        train = dataclasses.replace(train, keep_epochs=max(train.keep_epochs, config.average_last))
    out = Path(config.out)
    last = resume_point(out, config.resume)
    teacher_dir = resolve(config.teacher)
    teacher, tokenizer = load_translator(teacher_dir, train.device)
    train_text = read_pairs(config.train_src, config.train_tgt, config.no_empty_lines)
    valid_text = first_pairs(read_pairs(config.valid_src, config.valid_tgt, config.no_empty_lines),
                             config.max_valid_lines)
    seed_everything(train.seed)
    if config.resume:
        net, init = load_model(last), "resumed"
        if net.config.vocab_size != teacher.config.vocab_size:
            raise DataError(f"{last}: the student's vocabulary is not the teacher's {teacher_dir}")
    else:
        net, init = make_seq2seq_student(config.student_spec(), teacher)
    mc = net.config
    references = encode_parallel(tokenizer, train_text, mc.max_source_length, mc.max_target_length)
    valid_set = encode_parallel(tokenizer, valid_text, mc.max_source_length, mc.max_target_length)

    t0, cache_path, reused = time.perf_counter(), None, None
    if config.references_only:
        train_set = references
    else:
        ids, cache_path, reused = teacher_translations(
            teacher, tokenizer, teacher_dir, train_text.sources, config.search(),
            Path(config.cache_dir) if config.cache_dir else default_cache_dir(), config.decode_batch_size,
            train.progress)
        train_set = with_targets(references, ids, tokenizer.eos_id)
        if config.mix_references:
            train_set = concatenated(train_set, references)
    teacher_seconds = time.perf_counter() - t0

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    source = parallel_batches(train_set, train.batch_size, train.grad_accum, train.seed, tokenizer.pad_id,
                              rank, world)
    objective = Seq2SeqDistillationObjective(teacher, config.label_smoothing, config.word_kd_weight,
                                             config.temperature)
    out.mkdir(parents=True, exist_ok=True)
    evaluate = validator(valid_text, valid_set, tokenizer, config.valid_beam, train.precision)
    trainer = Trainer(net, objective, source, train, out, tokenizer=tokenizer, evaluate=evaluate,
                      main_metric="bleu")
    teacher.to(trainer.device)  # word-level KD runs it beside the student
    log.info("distilling %s (%.2f M parameters) into %s (%.2f M; %s) on %d pairs: %d steps on %s",
             teacher_dir, count_parameters(teacher) / 1e6, config.student, count_parameters(net) / 1e6, init,
             len(train_set), trainer.total_steps(), trainer.device)
    results = {
        "job": "distill-seq2seq",
        "teacher": str(config.teacher),
        "student": config.student,
        "student_init": init,
        "train": [config.train_src, config.train_tgt],
        "valid": [config.valid_src, config.valid_tgt],
        "targets": ("references" if config.references_only else
                    "teacher+references" if config.mix_references else "teacher"),
        "teacher_beam": config.beam,
        "word_kd_weight": config.word_kd_weight,
        "temperature": config.temperature,
        "teacher_parameters": count_parameters(teacher),
        "parameters": count_parameters(net),
        "vocab_size": len(tokenizer),
        "train_pairs": len(train_set),
        "valid_pairs": len(valid_set),
        "teacher_translations_cache": None if cache_path is None else str(cache_path),
        "teacher_translations_reused": reused,
        "teacher_seconds": teacher_seconds,
        "main_metric": "bleu",
        "model_config": mc.to_dict(),
    }
    return train_and_average(trainer, out, config.resume, results, config.average_last, tokenizer, evaluate)
