"""`slimbert report`: teacher and students side by side (accuracy, size, latency, throughput),
as Markdown, JSON and a plot. Runs named NAME-s1, NAME-s2, ... are seeds of one row."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from slimbert.config import Backend
from slimbert.errors import SlimbertError
from slimbert.evaluation.report import measure, write_report
from slimbert.recipes.common import DataConfig, dev_data_for, positive


@dataclass
class ReportConfig:
    # student checkpoint directories; NAME-s1, NAME-s2, ... are seeds of one row
    runs: list[str] = field(metadata={"positional": True, "metavar": "RUN_DIR"})
    out: str  # directory for report.md, report.json, report.png
    teacher: str | None = None  # teacher checkpoint (default: the one the runs' results.json name)
    # serve every run (and the teacher) with each of these, one row each; e.g. torch torch-bf16
    # onnxruntime-int8 puts bf16 and int8 on the plot
    backend: list[Backend] = field(default_factory=lambda: ["torch"])
    rounds: int = 3  # timing rounds
    threads: int | None = None  # torch threads (default: torch's choice)
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        positive(self, "rounds", "threads")


def find_teacher(runs: list[Path]) -> str:
    """The one teacher the runs' results.json files name."""
    named = {json.loads((r / "results.json").read_text()).get("teacher") for r in runs
             if (r / "results.json").exists()} - {None}
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
    if config.threads:
        torch.set_num_threads(config.threads)
    data = dev_data_for(source, teacher)
    rows = measure(runs, Path(teacher), data, rounds=config.rounds, progress=config.progress,
                   backends=tuple(config.backend), threads=config.threads)
    return write_report(rows, data, config.out, config.rounds)
