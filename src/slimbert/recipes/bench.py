"""`slimbert bench`: latency, throughput, memory and size of checkpoints x backends, every model
and backend timed round-robin on the same real dev sentences, with Hugging Face `transformers`
and ONNX Runtime on the same weights measured in every run as references."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from slimbert.config import Backend
from slimbert.errors import ConfigError, SlimbertError
from slimbert.evaluation.bench_run import SEQ_LENS, lengths_every_model_takes, run_bench, write_bench
from slimbert.recipes.common import DataConfig, dev_data_for, positive

QUICK_SEQ_LENS = (32,)
QUICK_THROUGHPUT_EXAMPLES = 256


@dataclass
class BenchConfig:
    model: list[str]  # checkpoint directories (slimbert or transformers)
    # backends to time (the hf and onnxruntime references are added)
    backend: list[Backend] = field(default_factory=lambda: ["torch"])
    references: bool = True  # add the hf and onnxruntime rows
    out: str = "bench"  # directory for bench.json, bench.md, bench.png
    # batch-1 latency lengths (default: 16,32,128, or 32 with --quick, leaving out those a model
    # cannot take; a length asked for that a model cannot take is an error)
    seq_lens: tuple[int, ...] | None = None
    batch_size: int = 32  # throughput batch
    rounds: int = 3  # timing rounds
    threads: int | None = None  # torch / ONNX Runtime threads (default: torch's choice)
    memory: bool = True  # probe peak memory (a process per row)
    progress: bool = True  # show progress bars
    max_length: int = 128  # tokens per dev example in the throughput and accuracy passes
    # dev sentences each throughput round times, evenly spread over the lengths (default: all);
    # the accuracy is still taken on the whole dev split
    throughput_examples: int | None = None
    # a quick measure for comparing many candidates: latency at 32 tokens only and throughput
    # timed on 256 dev sentences per round (unless --seq-lens / --throughput-examples say otherwise)
    quick: bool = False

    def __post_init__(self) -> None:
        positive(self, "batch_size", "rounds", "threads", "max_length", "throughput_examples")
        if self.quick and self.throughput_examples is None:
            self.throughput_examples = QUICK_THROUGHPUT_EXAMPLES
        if self.seq_lens is not None and (not self.seq_lens or min(self.seq_lens) < 1):
            raise ConfigError(f"seq_lens must be positive lengths, got {self.seq_lens}")


def bench(config: BenchConfig, source: DataConfig) -> Path:
    """Measure every model with every backend on the dev split of `source` (by default the task
    of the first model); writes OUT/bench.json, bench.md and bench.png and returns OUT."""
    data = dev_data_for(source, config.model[0])
    if data.dev is None:
        raise SlimbertError("bench times real dev sentences: give --task (and --data-dir) or --dev-file")
    seq_lens = config.seq_lens
    if seq_lens is None:  # not asked for: the defaults, cut to what every model can take
        seq_lens = lengths_every_model_takes([Path(m) for m in config.model],
                                             QUICK_SEQ_LENS if config.quick else SEQ_LENS)
    rows, meta = run_bench([Path(m) for m in config.model], list(config.backend), data, seq_lens,
                           config.batch_size, config.rounds, config.threads, memory=config.memory,
                           references=config.references, progress=config.progress,
                           max_length=config.max_length, throughput_examples=config.throughput_examples)
    return write_bench(rows, meta, config.out)
