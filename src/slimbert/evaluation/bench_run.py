"""`slimbert bench`: latency, throughput, memory and size of checkpoints x backends, in one run.

For every (checkpoint, backend) pair: latency at batch 1 (p50 and p90) on real dev sentences
cut or repeated to each sequence length; throughput at batch 32 over the whole dev split
(length-sorted, dynamically padded, as served), whose logits also give the accuracy; peak
memory of a fresh process serving one batch; parameters and file size; and, for BERT models,
the achieved GFLOP/s against the machine's measured matmul peak. Every pair is timed once per
round, round-robin, after a warm-up, with fixed threads and identical inputs; ratios are to the
first checkpoint's `torch` row (or its first backend) of the same run.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from slimbert.checkpoint import check_same_vocabulary, load_config, load_model, load_tokenizer
from slimbert.data.batching import EncodedDataset, encode_examples, throughput_batches
from slimbert.data.readers import Example
from slimbert.data.sources import TaskData
from slimbert.data.tasks import TASKS
from slimbert.errors import CheckpointError, SlimbertError
from slimbert.evaluation.backends import REFERENCES, BackendUnavailable, build, check_backend, load
from slimbert.evaluation.bench import (
    forward_flops,
    latency_batch,
    matmul_peak_gflops,
    measure_latency,
    peak_memory_mb,
    size_of,
    timed_pass,
)
from slimbert.evaluation.metrics import compute_metrics
from slimbert.evaluation.probe_cache import cached, file_stamp
from slimbert.hardware import detect_machine
from slimbert.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

SEQ_LENS = (16, 32, 128)


@dataclass
class BenchRow:
    model: str
    backend: str
    dtype: str
    parameters: int
    file_bytes: int
    score: float | None = None
    latency_ms: dict[int, dict[str, float]] = field(default_factory=dict)  # seq -> {"p50", "p90"}
    throughput: float = 0.0  # sequences/s, median over rounds
    throughput_rounds: list[float] = field(default_factory=list)
    peak_memory_mb: float | None = None
    gflops: float | None = None  # achieved, from the median throughput
    note: str = ""
    scores: dict[str, float] = field(default_factory=dict)  # main metric on each of `also_score`'s sets


def counted(n: int, noun: str) -> str:
    """'1 thread', '2 threads': a count with its noun in the right number."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def run_bench(checkpoints: list[Path], backends: list[str], data: TaskData, seq_lens=SEQ_LENS,
              batch_size: int = 32, rounds: int = 3, threads: int | None = None, memory: bool = True,
              references: bool = True, progress: bool = True, max_length: int = 128,
              throughput_examples: int | None = None) -> tuple[list[BenchRow], dict]:
    """Measure every checkpoint with every backend (and the references); returns the rows and
    the run's metadata, with the machine's measured matmul peaks (float32, and bfloat16 when a
    row serves in bf16). A requested backend that is unknown or not installed is an error; a
    reference that is not installed is listed in meta["skipped"]."""
    for backend in backends:
        check_backend(backend)
    pairs = []
    for ckpt in checkpoints:
        wanted = list(backends) + [b for b in REFERENCES if references and b not in backends]
        pairs += [(ckpt, b) for b in wanted]
    rows, meta = measure_pairs(pairs, data, seq_lens, batch_size, rounds, threads, memory, progress, max_length,
                               throughput_examples)
    cpu_bf16 = any(r.dtype in ("bf16", "bfloat16") and not r.backend.startswith("torch-cuda") for r in rows)
    dtypes = [torch.float32] + ([torch.bfloat16] if cpu_bf16 else [])
    meta["matmul_peak_gflops"] = {str(dtype).replace("torch.", ""): machine_peak_gflops(dtype) for dtype in dtypes}
    return rows, meta


def machine_peak_gflops(dtype: torch.dtype) -> float:
    """`matmul_peak_gflops(dtype)`, measured once per machine, torch version and thread count
    (kept in $SLIMBERT_CACHE/probes.json)."""
    return cached("matmul_peak_gflops", lambda: matmul_peak_gflops(dtype), dtype=dtype)


def measure_pairs(pairs: list[tuple[Path, str]], data: TaskData, seq_lens=SEQ_LENS, batch_size: int = 32,
                  rounds: int = 3, threads: int | None = None, memory: bool = True, progress: bool = True,
                  max_length: int = 128, throughput_examples: int | None = None,
                  also_score: dict[str, list[Example]] | None = None) -> tuple[list[BenchRow], dict]:
    """Measure each (checkpoint, backend) pair, round-robin; pairs a backend cannot serve are
    listed in meta["skipped"]. The first checkpoint's tokenizer encodes the dev split.
    `also_score` names further labelled example sets (e.g. a held-out split) whose main metric
    each row gets in `scores`, from untimed passes. Every checkpoint must read the first one's
    vocabulary and take the longest of `seq_lens`; dev sentences are cut to the shortest limit of
    `max_length` and the models' own.

    Dev examples are encoded up to `max_length` tokens (as in training) for throughput and
    accuracy; latency inputs are cut or repeated to each of `seq_lens`. With
    `throughput_examples`, each round times that many dev sentences, evenly spread over the
    lengths (the same ones for every pair), and the accuracy comes from one untimed pass over
    the whole split."""
    tokenizer = load_tokenizer(pairs[0][0])
    for ckpt in dict.fromkeys(ckpt for ckpt, _ in pairs):
        # a missing or unreadable checkpoint, or one that cannot serve these inputs, fails here, before any work
        max_length = min(max_length, servable_length(ckpt, max(seq_lens)))
        check_same_vocabulary(ckpt, tokenizer, f"{pairs[0][0]}'s, which encodes the inputs of every model")
    longest = max(max_length, *seq_lens)
    if threads:
        torch.set_num_threads(threads)
    dev = encode_examples(data.dev.examples, tokenizer, max_length=max_length, regression=data.regression)
    batches = throughput_batches(dev, batch_size, tokenizer.pad_id)
    labels = torch.cat([b["labels"] for b in batches]).numpy() if "labels" in batches[0] else None
    timing = batches
    if throughput_examples and throughput_examples < len(dev):
        timing = throughput_batches(length_sample(dev, throughput_examples), batch_size, tokenizer.pad_id)
    # latency inputs are cut from the longest sentences, encoded untruncated up to the longest length asked for
    long_dev = dev if longest == max_length else encode_examples(data.dev.examples, tokenizer, max_length=longest,
                                                                 regression=data.regression)
    latency_inputs = {n: latency_batch(long_dev, n, tokenizer.pad_id) for n in seq_lens}
    extra = {}
    for name, examples in (also_score or {}).items():
        encoded = encode_examples(examples, tokenizer, max_length=max_length, regression=data.regression)
        extra_batches = throughput_batches(encoded, batch_size, tokenizer.pad_id)
        extra[name] = (extra_batches, torch.cat([b["labels"] for b in extra_batches]).numpy())
    work = Path(tempfile.mkdtemp(prefix="slimbert-bench-"))
    try:
        return _measure(pairs, work, data, batches, labels, latency_inputs, seq_lens, batch_size, rounds,
                        threads, memory, progress, len(dev), timing, extra)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def position_limit(ckpt: Path) -> int | None:
    """The most tokens `ckpt` takes (a BERT's max_position_embeddings), or None for no limit."""
    return getattr(load_config(ckpt), "max_position_embeddings", None)


def servable_length(ckpt: Path, longest: int) -> int:
    """The most tokens `ckpt` takes, which must be at least the `longest` latency input."""
    limit = position_limit(ckpt)
    if limit is None:
        return longest
    if longest > limit:
        raise CheckpointError(f"{ckpt}: takes at most {limit} tokens (max_position_embeddings), but --seq-lens "
                              f"asks for {longest}")
    return limit


def lengths_every_model_takes(checkpoints: list[Path], seq_lens: tuple[int, ...]) -> tuple[int, ...]:
    """The default latency lengths cut to what every checkpoint takes (a model with 64 learned
    positions is timed at 16 and 32 tokens, not 128); lengths a user asks for are checked by
    `servable_length` instead, and one a model cannot take is an error."""
    limit = min((n for n in map(position_limit, checkpoints) if n is not None), default=None)
    if limit is None:
        return tuple(seq_lens)
    kept = tuple(n for n in seq_lens if n <= limit)
    if len(kept) < len(seq_lens):
        log.warning("latency lengths over %d tokens left out: a model takes at most %d", limit, limit)
    return kept or (limit,)


def length_sample(dev: EncodedDataset, n: int) -> EncodedDataset:
    """`n` examples of `dev` evenly spaced in length order (short, typical and long alike)."""
    order = sorted(range(len(dev)), key=lambda i: len(dev.input_ids[i]))
    keep = [order[k * len(order) // n] for k in range(n)]
    return EncodedDataset([dev.input_ids[i] for i in keep], [dev.token_type_ids[i] for i in keep], None)


def _measure(pairs, work, data, batches, labels, latency_inputs, seq_lens, batch_size, rounds, threads,
             memory, progress, n_dev, timing, extra):
    served, rows, skipped = {}, {}, []
    configs, parameters, models = {}, {}, {}  # per checkpoint, whatever the backend
    index = {ckpt: i for i, ckpt in enumerate(dict.fromkeys(ckpt for ckpt, _ in pairs))}
    for ckpt, backend in tqdm(pairs, desc="build", disable=not progress):
        # one load per checkpoint, and one ONNX export for both onnxruntime rows
        workdir = work / f"{index[ckpt]}-{backend.removesuffix('-int8') if backend.startswith('onnx') else backend}"
        try:
            if ckpt not in models:
                models[ckpt] = load_model(ckpt)
            build(ckpt, backend, workdir, models[ckpt])
            s = load(ckpt, backend, workdir, threads)
        except (BackendUnavailable, CheckpointError) as e:
            skipped.append({"model": str(ckpt), "backend": backend, "why": str(e)})
            continue
        if ckpt not in configs:
            configs[ckpt] = load_config(ckpt)
            parameters[ckpt] = size_of(models[ckpt], ckpt).parameters
        served[(ckpt, backend)] = (s, workdir, configs[ckpt])
        rows[(ckpt, backend)] = BenchRow(str(ckpt), backend, s.dtype, parameters[ckpt], s.file_bytes)
    if not rows:
        why = "; ".join(f"{s['model']} with {s['backend']}: {s['why']}" for s in skipped)
        raise SlimbertError(f"no model could be served: {why}")

    latencies: dict = {key: {n: [] for n in seq_lens} for key in served}
    bar = tqdm(total=rounds * len(served), desc="timing", disable=not progress)
    for r in range(rounds):
        for key, (s, _, config) in served.items():
            row = rows[key]
            for n in seq_lens:
                latencies[key][n] += measure_latency(s.forward, latency_inputs[n], warmup=3)
            seq_s, logits = timed_pass(s.forward, timing)
            row.throughput_rounds.append(seq_s)
            if r == 0 and labels is not None and timing is not batches:
                _, logits = timed_pass(s.forward, batches, warmup=0)  # the accuracy, on the whole split
            if r == 0 and labels is not None and logits.numel():
                row.score = compute_metrics(data.metrics[:1], logits.numpy(), labels)[data.main_metric]
            for name, (extra_batches, extra_labels) in extra.items() if r == 0 else ():
                _, logits = timed_pass(s.forward, extra_batches, warmup=0)
                row.scores[name] = compute_metrics(data.metrics[:1], logits.numpy(), extra_labels)[data.main_metric]
            bar.update()
    bar.close()

    for key, (s, workdir, config) in served.items():
        row = rows[key]
        row.throughput = statistics.median(row.throughput_rounds)
        for n in seq_lens:
            p50, p90 = np.percentile(latencies[key][n], (50, 90)).tolist()
            row.latency_ms[n] = {"p50": 1e3 * p50, "p90": 1e3 * p90}
        flops = forward_flops(config, timing)
        if flops is not None:
            row.gflops = flops * row.throughput / sum(len(b["input_ids"]) for b in timing) / 1e9
        if memory:  # a fresh process per row, so measured once per model, backend and machine
            ckpt = Path(key[0])
            row.peak_memory_mb = cached(
                "peak_memory_mb", lambda: peak_memory_mb(ckpt, key[1], workdir, batch_size, max(seq_lens), threads),
                model=ckpt.resolve(), files=file_stamp(ckpt), backend=key[1], batch_size=batch_size,
                seq_len=max(seq_lens))
    meta = {"task": data.name, "scored_on": scored_on(data), "metric": data.main_metric, "dev_examples": n_dev,
            "throughput_examples": sum(len(b["input_ids"]) for b in timing), "batch_size": batch_size,
            "seq_lens": list(seq_lens), "rounds": rounds, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "skipped": skipped, "machine": detect_machine().as_dict()}
    return list(rows.values()), meta


def scored_on(data: TaskData) -> str:
    """What the scores were measured on, for column names and axis labels: "sst2 dev" for a
    GLUE task, "test.tsv (dev split)" for your own dev file (whose name is not a task's)."""
    if data.name in TASKS or data.dev is None:
        return f"{data.name} dev"
    return f"{Path(data.dev.path).name} (dev split)"


def baseline(rows: list[BenchRow]) -> BenchRow:
    """The row ratios are taken against: the first model's torch row, else its first row."""
    first = rows[0].model
    return next((r for r in rows if r.model == first and r.backend == "torch"), rows[0])


def markdown(rows: list[BenchRow], meta: dict) -> str:
    base = baseline(rows)
    seqs = meta["seq_lens"]
    head = (["model", "backend", "dtype", f"{meta['metric']} on {meta.get('scored_on', meta['task'] + ' dev')}",
             "params (M)", "size (MB)"]
            + [f"latency p50/p90 ms, {n} tokens" for n in seqs]
            + [f"seq/s, batch {meta['batch_size']}", "seq/s vs base", "peak memory MB", "GFLOP/s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [model_name(r.model), r.backend, dtype_label(r.dtype, meta),
                 "" if r.score is None else f"{100 * r.score:.2f}",
                 f"{r.parameters / 1e6:.2f}", f"{r.file_bytes / 1e6:.1f}"]
        cells += [f"{r.latency_ms[n]['p50']:.1f}/{r.latency_ms[n]['p90']:.1f}" for n in seqs]
        cells += [f"{r.throughput:.1f}", f"{r.throughput / base.throughput:.2f}x",
                  "" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.0f}",
                  "" if r.gflops is None else f"{r.gflops:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in meta["matmul_peak_gflops"].items())
    lines.append("")
    lines.append(f"{meta.get('scored_on', meta['task'] + ' dev')} ({meta['dev_examples']} examples), "
                 f"{counted(meta['threads'], 'thread')}, "
                 f"{counted(meta['rounds'], 'round')}"
                 + (f" of throughput on {meta['throughput_examples']} of them"
                    if meta.get("throughput_examples", meta["dev_examples"]) < meta["dev_examples"] else "")
                 + f"; ratios to {model_name(base.model)} ({base.backend}); "
                 f"measured matmul peak GFLOP/s: {peaks}.")
    if "machine" in meta:
        lines.append(f"Machine: {meta['machine']['line']}.")
    for s in meta["skipped"]:
        lines.append(f"- not measured: {model_name(s['model'])} with {s['backend']}: {s['why']}")
    return "\n".join(lines) + "\n"


def dtype_label(dtype: str, meta: dict) -> str:
    """The dtype column; bf16 on a CPU that only emulates it is marked so (its speed says little
    about bf16 where it is native)."""
    machine = meta.get("machine")
    if dtype in ("bf16", "bfloat16") and machine is not None and not machine["bf16_native"]:
        return f"{dtype} (emulated)"
    return dtype


def model_name(model: str) -> str:
    """How a model is named in tables and plots: its directory's name, with the parent's in front
    when the name alone says little (`run/pruned`, `run/last`, `run/best`)."""
    path = Path(model)
    if path.name in ("pruned", "last", "best", "model") and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name


BACKEND_MARKERS = {"torch": "o", "torch-bf16": "^", "torch-int8": "s", "torch-int8-all": "s",
                   "onnxruntime": "D", "onnxruntime-int8": "P", "hf": "v"}


def backend_handles(backends) -> list:
    """Legend entries for the marker of each backend (in first-seen order), shared by bench and report plots."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], color="gray", marker=BACKEND_MARKERS.get(b, "o"), ls="", label=f"served: {b}")
            for b in dict.fromkeys(backends)]


def ratio_axis(ax) -> None:
    """A log-scale x axis of speed ratios, ticks written 1x, 2x, 3x, 4x, 6x, 8x, 10x."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}x" if v in (2, 3, 4, 6, 8) else ""))


def frontier(points: list[tuple[float, float]]) -> list[int]:
    """The Pareto frontier of (speed, score) points, both higher-is-better: the indices of the
    points that no other point beats on one axis without losing on the other, fastest first."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    kept: list[int] = []
    for i in order:  # from the fastest down, a point joins when it scores above all faster ones
        if not kept or points[i][1] > points[kept[-1]][1]:
            kept.append(i)
    return kept


def draw_frontier(ax, points: list[tuple[float, float]]) -> None:
    """The frontier of `points` as a grey step line: the best score reachable at each speed."""
    front = sorted(points[i] for i in frontier(points))
    if len(front) > 1:
        ax.step([x for x, _ in front], [y for _, y in front], where="pre", color="gray", lw=1, alpha=0.6,
                zorder=0, label="frontier")


def plot(rows: list[BenchRow], meta: dict, path: Path) -> None:
    """Accuracy against throughput ratio, one point per (model, backend): the frontier. Colour is
    the model and marker the backend, both explained in legends beside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    base = baseline(rows)
    models = list(dict.fromkeys(model_name(r.model) for r in rows))
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    fig, ax = plt.subplots(figsize=(9, 5))
    scored = [r for r in rows if r.score is not None]
    for r in scored:
        ax.scatter(r.throughput / base.throughput, 100 * r.score, s=60, color=colours[model_name(r.model)],
                   marker=BACKEND_MARKERS.get(r.backend, "o"))
    draw_frontier(ax, [(r.throughput / base.throughput, 100 * r.score) for r in scored])
    handles = [Line2D([], [], color=colours[m], marker="o", ls="", label=m) for m in models]
    handles.append(Line2D([], [], color="gray", lw=1, alpha=0.6, label="frontier"))
    if base.score is not None:
        ax.axhline(100 * base.score - 1, color="gray", lw=0.8, ls=":")
        handles.append(Line2D([], [], color="gray", lw=0.8, ls=":", label=f"1 point below {model_name(base.model)}"))
    handles += backend_handles(r.backend for r in rows)
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    ratio_axis(ax)
    ax.set_xlabel(f"throughput relative to {model_name(base.model)} ({base.backend}), batch {meta['batch_size']}")
    ax.set_ylabel(f"{meta['metric']} on {meta.get('scored_on', meta['task'] + ' dev')} (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)


def write_bench(rows: list[BenchRow], meta: dict, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.json", json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]},
                                                     indent=2) + "\n")
    atomic_write_text(out / "bench.md", markdown(rows, meta))
    if any(r.score is not None for r in rows):
        plot(rows, meta, out / "bench.png")
    return out
