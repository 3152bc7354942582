"""`slimbert bench`: latency, throughput, memory and size of checkpoints x backends, every model
and backend timed round-robin on the same real dev sentences, with Hugging Face `transformers`
and ONNX Runtime on the same weights measured in every run as references."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from slimbert.config import Backend
from slimbert.errors import ConfigError, SlimbertError
from slimbert.evaluation.bench_run import run_bench, write_bench
from slimbert.recipes.common import DataConfig, dev_data_for, positive


@dataclass
class BenchConfig:
    model: list[str]  # checkpoint directories (slimbert or transformers)
    # backends to time (the hf and onnxruntime references are added)
    backend: list[Backend] = field(default_factory=lambda: ["torch"])
    references: bool = True  # add the hf and onnxruntime rows
    out: str = "bench"  # directory for bench.json, bench.md, bench.png
    seq_lens: tuple[int, ...] = (16, 32, 128)  # batch-1 latency lengths
    batch_size: int = 32  # throughput batch
    rounds: int = 3  # timing rounds
    threads: int | None = None  # torch / ONNX Runtime threads (default: torch's choice)
    memory: bool = True  # probe peak memory (a process per row)
    progress: bool = True  # show progress bars
    max_length: int = 128  # tokens per dev example in the throughput and accuracy passes

    def __post_init__(self) -> None:
        positive(self, "batch_size", "rounds", "threads", "max_length")
        if not self.seq_lens or min(self.seq_lens) < 1:
            raise ConfigError(f"seq_lens must be positive lengths, got {self.seq_lens}")


def bench(config: BenchConfig, source: DataConfig) -> Path:
    """Measure every model with every backend on the dev split of `source` (by default the task
    of the first model); writes OUT/bench.json, bench.md and bench.png and returns OUT."""
    data = dev_data_for(source, config.model[0])
    if data.dev is None:
        raise SlimbertError("bench times real dev sentences: give --task (and --data-dir) or --dev-file")
    rows, meta = run_bench([Path(m) for m in config.model], list(config.backend), data, config.seq_lens,
                           config.batch_size, config.rounds, config.threads, memory=config.memory,
                           references=config.references, progress=config.progress,
                           max_length=config.max_length)
    return write_bench(rows, meta, config.out)
