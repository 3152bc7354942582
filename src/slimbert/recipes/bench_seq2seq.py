"""`slimbert bench-seq2seq`: BLEU, tokens per second and latency of translation models served by
slimbert (fp32, int8, bf16 where native), CTranslate2 (fp32, int8) and Hugging Face `generate`,
every system timed round-robin on the same test sentences."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from slimbert.data.parallel import read_parallel
from slimbert.errors import ConfigError, DataError
from slimbert.evaluation.bench_seq2seq import SEQ2SEQ_BACKENDS, run_bench_seq2seq, write_bench_seq2seq
from slimbert.recipes.common import positive
from slimbert.recipes.translate import load_translator, read_target_text


@dataclass
class BenchSeq2SeqConfig:
    model: list[str]  # translation checkpoints (the first is the baseline, e.g. the teacher)
    src: str = field(kw_only=True)  # test sources, one sentence per line
    ref: str = field(kw_only=True)  # references, aligned with --src line by line
    # backends: torch, torch-int8, torch-int8-all, torch-bf16 (native bf16 only), ctranslate2,
    # ctranslate2-int8, hf (MarianMT generate on the same weights)
    backend: list[str] = field(default_factory=lambda: list(SEQ2SEQ_BACKENDS))
    out: str = "bench-seq2seq"  # directory for bench.json, bench.md, bench.png
    beam: int = 5  # the beam search measured beside greedy (1: greedy only)
    batch_size: int = 32  # sentences per batch of the BLEU / throughput pass
    latency_sentences: int = 100  # first sentences decoded one at a time for the latency
    max_sentences: int | None = None  # use only the first N test pairs (default: all)
    rounds: int = 3  # timing rounds
    threads: int = 2  # torch and CTranslate2 threads
    max_len_a: float = 1.5  # a translation has at most max_len_a * source tokens + max_len_b tokens
    max_len_b: int = 10  # (see --max-len-a)
    # also serve every torch and CTranslate2 backend restricted to the pieces this file of
    # target-language text uses (e.g. the training targets), as BACKEND+vocab rows
    target_vocabulary: str | None = None
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        positive(self, "beam", "batch_size", "latency_sentences", "max_sentences", "rounds", "threads")
        unknown = [b for b in self.backend if b not in SEQ2SEQ_BACKENDS]
        if unknown:
            raise ConfigError(f"unknown backend {unknown[0]!r}; choose from {', '.join(SEQ2SEQ_BACKENDS)}")


def bench_seq2seq(config: BenchSeq2SeqConfig, stem: str = "bench") -> Path:
    pairs = read_parallel(config.src, config.ref)
    if not len(pairs):
        raise DataError(f"{config.src} / {config.ref}: no sentence pairs")
    n = config.max_sentences or len(pairs)
    labels = [Path(m).name or m for m in config.model]
    if len(set(labels)) < len(labels):  # two runs named alike: tell them apart by their full path
        labels = list(config.model)
    models = []
    for label, spec in zip(labels, config.model):
        model, tokenizer = load_translator(spec, "cpu")
        models.append((label, model.eval(), tokenizer, Path(spec)))
    target_text = read_target_text(config.target_vocabulary) if config.target_vocabulary else None
    out = Path(config.out)
    rows, meta = run_bench_seq2seq(models, config.backend, pairs.sources[:n], pairs.targets[:n], out / "work",
                                   beam=config.beam, batch_size=config.batch_size,
                                   latency_sentences=config.latency_sentences, rounds=config.rounds,
                                   threads=config.threads, max_len_a=config.max_len_a,
                                   max_len_b=config.max_len_b, progress=config.progress, target_text=target_text)
    return write_bench_seq2seq(rows, meta, out, "slimbert " + " ".join(sys.argv[1:]), stem)
