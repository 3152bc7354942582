"""`slimbert report`: teacher and students side by side (accuracy, size, latency, throughput),
as Markdown, JSON and a plot. Runs named NAME-s1, NAME-s2, ... are seeds of one row.

For translation models (a teacher from `train-seq2seq`, students from `distill-seq2seq`) the
report is `slimbert bench-seq2seq` with the teacher first: BLEU, tokens/s and latency of every
model in greedy and beam search, on the validation pairs the teacher was trained with unless
--src/--ref name others."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from slimbert.checkpoint import load_config
from slimbert.config import BACKENDS, SEQ2SEQ_BACKENDS, Backend, Seq2SeqBackend, Seq2SeqConfig
from slimbert.errors import ConfigError, DataError, SlimbertError
from slimbert.evaluation.report import measure, write_report
from slimbert.recipes.bench_seq2seq import BenchSeq2SeqConfig, bench_seq2seq
from slimbert.recipes.common import DataConfig, dev_data_for, positive


@dataclass
class ReportConfig:
    # student checkpoint directories; NAME-s1, NAME-s2, ... are seeds of one row
    runs: list[str] = field(metadata={"positional": True, "metavar": "RUN_DIR"})
    out: str  # directory for report.md, report.json, report.png
    teacher: str | None = None  # teacher checkpoint (default: the one the runs' results.json name)
    # serve every run (and the teacher) with each of these, one row each; e.g. torch torch-bf16
    # onnxruntime-int8 puts bf16 and int8 on the plot. Encoders: torch, torch-int8, torch-int8-all,
    # torch-bf16, onnxruntime, onnxruntime-int8, hf, torch-cuda, torch-cuda-bf16; translation models:
    # torch, torch-int8, torch-int8-all, torch-bf16, ctranslate2, ctranslate2-int8, hf
    backend: list[Literal[Backend, Seq2SeqBackend]] = field(default_factory=lambda: ["torch"])
    rounds: int = 3  # timing rounds
    threads: int | None = None  # torch threads (default: torch's choice; 2 for translation models)
    # translation models: sources and references to score on (default: the teacher's validation pairs)
    src: str | None = None
    ref: str | None = None  # references aligned with --src
    beam: int = 5  # translation models: the beam search measured beside greedy
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        positive(self, "rounds", "threads", "beam")
        if (self.src is None) != (self.ref is None):
            raise ConfigError("give --src and --ref together")


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text()) if (run / "results.json").exists() else {}


def find_teacher(runs: list[Path]) -> str:
    """The one teacher the runs' results.json files name."""
    named = {_results(r).get("teacher") for r in runs} - {None}
    if len(named) != 1:
        raise SlimbertError("give --teacher: the runs name " + (", ".join(sorted(named)) or "no teacher"))
    return named.pop()


def report(config: ReportConfig, source: DataConfig) -> list[dict]:
    """Measure the teacher and every run on the dev split of `source` (by default the task the
    teacher was trained on) and write OUT/report.md, report.json and report.png; returns the rows."""
    runs = [Path(r) for r in config.runs]
    for r in runs:
        if not (r / "config.json").exists():
            raise SlimbertError(f"{r}: not a checkpoint directory (no config.json)")
    teacher = config.teacher or find_teacher(runs)
    if isinstance(load_config(teacher), Seq2SeqConfig):
        return translation_report(config, Path(teacher), runs, source)
    if config.src:
        raise ConfigError("--src/--ref score translation models; the teacher is an encoder "
                          "(give --task or --dev-file)")
    unknown = [b for b in config.backend if b not in BACKENDS]
    if unknown:
        raise ConfigError(f"unknown backend {unknown[0]!r} for an encoder; choose from {', '.join(BACKENDS)}")
    if config.threads:
        torch.set_num_threads(config.threads)
    data = dev_data_for(source, teacher)
    rows = measure(runs, Path(teacher), data, rounds=config.rounds, progress=config.progress,
                   backends=tuple(config.backend), threads=config.threads)
    return write_report(rows, data, config.out, config.rounds)


def translation_pairs(config: ReportConfig, teacher: Path) -> tuple[str, str]:
    """--src/--ref, or the validation pairs the teacher's results.json names."""
    if config.src and config.ref:
        return config.src, config.ref
    valid = _results(teacher).get("valid")
    if not valid or not all(Path(f).exists() for f in valid):
        raise DataError(f"{teacher}: give --src and --ref (the teacher's results.json names "
                        f"{'no validation files' if not valid else ' / '.join(valid) + ', not found here'})")
    return valid[0], valid[1]


def translation_report(config: ReportConfig, teacher: Path, runs: list[Path], source: DataConfig) -> list[dict]:
    """The teacher and its students through `bench-seq2seq`, written as OUT/report.{md,json,png}."""
    if source.task or source.dev_file or source.train_file:
        raise ConfigError("--task/--dev-file/--train-file score encoders; give --src and --ref for "
                          "translation models")
    unknown = [b for b in config.backend if b not in SEQ2SEQ_BACKENDS]
    if unknown:
        raise ConfigError(f"backend {unknown[0]!r} serves encoders; a translation model's backends are "
                          + ", ".join(SEQ2SEQ_BACKENDS))
    src, ref = translation_pairs(config, teacher)
    bench = BenchSeq2SeqConfig(model=[str(teacher)] + [str(r) for r in runs if r.resolve() != teacher.resolve()],
                               src=src, ref=ref, backend=list(config.backend), out=config.out, beam=config.beam,
                               rounds=config.rounds, threads=config.threads or 2, progress=config.progress)
    out = bench_seq2seq(bench, stem="report")
    return json.loads((out / "report.json").read_text())["rows"]
