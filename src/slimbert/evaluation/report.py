"""`slimbert report`: teacher and students side by side, as a Markdown table, JSON and a plot.

Every model is scored on the task's dev split and timed in the same process, round-robin over
the models so that drift in the machine's speed hits all of them alike: throughput at batch 32
over the dev sentences (length-sorted, dynamically padded, as served), and latency at batch 1
on inputs of 32 tokens. Speeds are reported as ratios to the teacher measured in that run.

With `--backend`, every run (and the teacher) is also served int8, bf16 or through ONNX Runtime
(see `slimbert bench`), each as its own row, so the serving choices sit on the same plot as the
students. Runs that differ only by seed (directories named NAME-s1, NAME-s2, ... or NAME-seed1, ...) are
one row: the mean and the sample standard deviation of their scores.
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from slimbert.data.sources import TaskData
from slimbert.evaluation.bench_run import (BACKEND_MARKERS, backend_handles, counted, draw_frontier,
                                           measure_pairs, model_name, ratio_axis, scored_on)
from slimbert.hardware import detect_machine
from slimbert.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

SEED_SUFFIX = re.compile(r"[-_](s|seed)(\d+)$")


@dataclass
class RunRow:
    """One checkpoint's measurements."""

    path: str
    group: str
    seed: int | None
    score: float
    parameters: int
    file_bytes: int
    latency_ms: float  # median, batch 1, 32 tokens
    throughput: float  # sequences/s, batch 32, dev sentences
    info: dict = field(default_factory=dict)  # from the run's results.json


def group_of(path: Path) -> tuple[str, int | None]:
    """A run's group and seed: `bert3-s2` -> ("bert3", 2); `run/pruned` -> ("run/pruned", None)."""
    name = model_name(str(path))
    m = SEED_SUFFIX.search(name)
    return (name[:m.start()], int(m.group(2))) if m else (name, None)


def _results(path: Path) -> dict:
    f = path / "results.json"
    return json.loads(f.read_text()) if f.exists() else {}


def measure(paths: list[Path], teacher: Path, data: TaskData, rounds: int = 3, batch_size: int = 32,
            seq_len: int = 32, progress: bool = True, backends: tuple[str, ...] = ("torch",),
            threads: int | None = None) -> list[RunRow]:
    """Score and time the teacher (first row: torch fp32) and every run, each served by every
    backend in `backends`, through `slimbert bench`'s measurement (a backend that cannot serve
    a run is left out with a warning). A row served other than by `torch` is its own group,
    "NAME (backend)"; the teacher is served by the other backends too."""
    groups = {teacher: ("teacher", None), **{p: group_of(p) for p in paths}}
    pairs = [(teacher, "torch")] + [(teacher, b) for b in backends if b != "torch"]
    pairs += [(p, b) for p in paths for b in backends]
    measured, meta = measure_pairs(pairs, data, (seq_len,), batch_size, rounds, threads, memory=False,
                                   progress=progress)
    for s in meta["skipped"]:
        log.warning("%s: not served by %s (%s)", s["model"], s["backend"], s["why"])
    native_bf16 = meta["machine"]["bf16_native"]
    rows = []
    for r in measured:
        path = Path(r.model)
        group, seed = groups[path]
        backend = r.backend + (", emulated" if r.backend == "torch-bf16" and not native_bf16 else "")
        rows.append(RunRow(r.model, group if r.backend == "torch" else f"{group} ({backend})", seed,
                           r.score, r.parameters, r.file_bytes, r.latency_ms[seq_len]["p50"], r.throughput,
                           {**_results(path), "backend": r.backend}))
    return rows


def summarise(rows: list[RunRow]) -> list[dict]:
    """One entry per group (teacher first): mean/std of the score, mean speeds, ratios to the teacher."""
    teacher = rows[0]
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    out = []
    for name, members in groups.items():
        scores = [r.score for r in members]
        mean = statistics.fmean(scores)
        info = members[0].info
        out.append({
            "name": name,
            "runs": len(members),
            "score_mean": mean,
            "score_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "scores": scores,
            "of_teacher": mean / teacher.score if teacher.score else math.nan,
            "parameters": members[0].parameters,
            "file_mb": members[0].file_bytes / 1e6,
            "latency_ms": statistics.fmean(r.latency_ms for r in members),
            "throughput": statistics.fmean(r.throughput for r in members),
            "params_ratio": teacher.parameters / members[0].parameters,
            "size_ratio": teacher.file_bytes / members[0].file_bytes if members[0].file_bytes else math.nan,
            "latency_speedup": teacher.latency_ms / statistics.fmean(r.latency_ms for r in members),
            "throughput_ratio": statistics.fmean(r.throughput for r in members) / teacher.throughput,
            "student": info.get("student", "teacher" if name == "teacher" else None),
            "augmented_examples": info.get("augmented_examples"),
            "loss_weights": info.get("loss_weights"),
            "backend": info.get("backend", "torch"),
        })
    return out


def markdown(summary: list[dict], metric: str, task: str, meta: dict) -> str:
    head = (f"| model | runs | {metric} on {meta.get('scored_on', task + ' dev')} (mean ± std) | % of teacher | "
            "parameters | size | latency (batch 1, 32 tokens) | latency speed-up | throughput (batch 32) | "
            "throughput x teacher |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    def fewer(ratio: float) -> str:
        return f" ({ratio:.1f}x fewer)" if round(ratio, 1) != 1.0 else ""

    lines = []
    for s in summary:
        lines.append(
            f"| {s['name']} | {s['runs']} | {100 * s['score_mean']:.2f} ± {100 * s['score_std']:.2f} | "
            f"{100 * s['of_teacher']:.1f}% | {s['parameters'] / 1e6:.2f} M{fewer(s['params_ratio'])} | "
            f"{s['file_mb']:.1f} MB | {s['latency_ms']:.2f} ms | {s['latency_speedup']:.2f}x | "
            f"{s['throughput']:.0f} seq/s | {s['throughput_ratio']:.2f}x |")
    foot = (f"\nMeasured in one process: {counted(meta['threads'], 'thread')}, torch {meta['torch']}, "
            "served in fp32 by slimbert's own model unless the row names another backend, "
            f"{counted(meta['rounds'], 'timing round')} (medians). "
            "Std is the sample standard deviation over seeds."
            + (f" Machine: {meta['machine']['line']}." if "machine" in meta else "") + "\n")
    return head + "\n".join(lines) + "\n" + foot


def plot(summary: list[dict], metric: str, task: str, path: Path, max_labels: int = 12) -> None:
    """Accuracy against throughput ratio (log scale), the teacher marked. Colour is the model,
    marker the backend; with more than `max_labels` rows, legends replace the point labels. The
    y axis stops 10 points below the teacher; rows further down are counted in a note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    models = list(dict.fromkeys(s["name"].split(" (")[0] for s in summary))
    colours = {m: plt.cm.tab20(i % 20) for i, m in enumerate(models)}
    colours["teacher"] = "black"
    teacher = 100 * summary[0]["score_mean"]
    floor = teacher - 10
    labelled = len(summary) <= max_labels
    fig, ax = plt.subplots(figsize=(9, 6))
    below = []
    for s in summary:
        x, y = s["throughput_ratio"], 100 * s["score_mean"]
        if y < floor:
            below.append(f"{s['name']} ({y:.1f})")
            continue
        model = s["name"].split(" (")[0]
        ax.errorbar(x, y, yerr=100 * s["score_std"], fmt="*" if s["name"] == "teacher" else BACKEND_MARKERS.get(s["backend"], "o"),
                    markersize=14 if s["name"] == "teacher" else 8, capsize=3, color=colours[model])
        if labelled:
            ax.annotate(s["name"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    draw_frontier(ax, [(s["throughput_ratio"], 100 * s["score_mean"]) for s in summary
                       if 100 * s["score_mean"] >= floor])
    ax.axhline(teacher, color="gray", lw=0.8, ls="--")
    ax.axhline(teacher - 1, color="gray", lw=0.8, ls=":")
    handles = [Line2D([], [], color="gray", lw=0.8, ls=":", label="1 point below the teacher"),
               Line2D([], [], color="gray", lw=1, alpha=0.6, label="frontier (mean over seeds)")]
    if not labelled:
        handles += [Line2D([], [], color=colours[m], marker="o", ls="", label=m) for m in models]
        handles += backend_handles(s["backend"] for s in summary)
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    if below:
        ax.text(0.01, 0.01, "below the plot: " + ", ".join(below), transform=ax.transAxes, fontsize=7,
                va="bottom", wrap=True)
    ratio_axis(ax)
    ax.set_xlabel("throughput relative to the teacher (batch 32, log scale)")
    ax.set_ylabel(f"{metric} on {task} (%)")
    ax.set_title(f"{metric} vs. speed on {task} (mean ± std over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png", bbox_inches="tight"))
    plt.close(fig)


def write_report(rows: list[RunRow], data: TaskData, out: str | Path, rounds: int) -> list[dict]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__, "rounds": rounds,
            "task": data.name, "scored_on": scored_on(data), "metric": data.main_metric,
            "machine": detect_machine().as_dict()}
    atomic_write_text(out / "report.json", json.dumps(
        {"meta": meta, "summary": summary, "runs": [asdict(r) for r in rows]}, indent=2, default=str) + "\n")
    atomic_write_text(out / "report.md", markdown(summary, data.main_metric, data.name, meta))
    plot(summary, data.main_metric, meta["scored_on"], out / "report.png")
    return summary
