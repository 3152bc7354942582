"""GLUE-lite: a pretrained BERT against the same architecture from random initialisation.

Both are fine-tuned with `slimbert finetune` on SST-2, MRPC, STS-B, CoLA and RTE, with the same
options and seeds; the score of a run is its dev metric at the epoch `finetune` kept (SST-2 and
RTE accuracy, MRPC F1, STS-B Spearman, CoLA Matthews correlation, in points). The GLUE-lite score
is the mean of the five task means. Turc et al. 2019's BERT-Mini (4 x 256, pretrained on
BooksCorpus + Wikipedia for 1M steps at batch 256, GLUE test set, best of a hyper-parameter grid)
is printed beside it as the far anchor.

    python benchmarks/glue_lite.py --model runs/mini-pretrained \
        --data-dir ../shared/data/glue --out benchmarks/results/glue_lite

The random initialisation is the pretrained model's config and vocabulary with fresh weights
(seed 0), saved once to RUNS/random-init. Each fine-tuning run is kept in
RUNS/<init>/<task>/s<seed> (--runs, default runs/glue-lite); a run whose results.json exists
is not rerun, and one stopped midway continues from its last epoch (`finetune --resume`), so
the script resumes where it stopped. `--jobs 2` runs two fine-tunings at a time with one thread
each. Writes OUT/glue_lite.json, OUT/glue_lite.md and OUT/glue_lite.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import torch
from runner import run_command

from slimbert.checkpoint import load_model, load_tokenizer, save_checkpoint
from slimbert.hardware import detect_machine
from slimbert.models import build_model

TASKS = {  # task -> (metric in finetune's records, what the table calls it)
    "sst2": ("accuracy", "SST-2 acc"),
    "mrpc": ("f1", "MRPC F1"),
    "stsb": ("spearman", "STS-B Spearman"),
    "cola": ("matthews_corr", "CoLA MCC"),
    "rte": ("accuracy", "RTE acc"),
}
# Turc et al. 2019, BERT-Mini (L=4, H=256), GLUE test set, from the BERT miniatures' release notes.
INITS = ("pretrained", "random-init")
TURC_MINI = {"sst2": 85.9, "mrpc": 81.1, "stsb": 73.3, "cola": 0.0, "rte": 57.9}


def random_init(pretrained: Path, where: Path, seed: int = 0) -> Path:
    """The pretrained model's architecture and vocabulary with freshly initialised weights."""
    if not (where / "model.safetensors").exists():
        config = load_model(pretrained).config
        torch.manual_seed(seed)
        save_checkpoint(build_model(config), load_tokenizer(pretrained), where)
    return where


def finetune(model: Path, task: str, seed: int, run: Path, args) -> dict:
    """`slimbert finetune` once, unless `run` already holds a finished run; its results.json.
    With `--jobs` above 1, it runs with its share of the threads and writes its output to
    RUN/finetune.log."""
    if not (run / "results.json").exists():
        epochs = args.sst2_epochs if task == "sst2" else args.epochs
        cmd = [sys.executable, "-m", "slimbert", "finetune", "--model", str(model), "--task", task,
               "--data-dir", args.data_dir, "--out", str(run), "--epochs", str(epochs), "--lr", str(args.lr),
               "--batch-size", str(args.batch_size), "--warmup-ratio", "0.1", "--max-length", "128",
               "--seed", str(seed), "--keep-epochs", "0"]
        if (run / "last").is_dir():  # stopped during a run: continue from its last epoch
            cmd.append("--resume")
        if args.max_train_examples:
            cmd += ["--max-train-examples", str(args.max_train_examples)]
        if args.jobs > 1:
            threads = str(max(1, args.threads // args.jobs))
            run_command(cmd + ["--no-progress"], env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
                        log=run.parent / f"{run.name}-finetune.log")
        else:
            run_command(cmd)
    return json.loads((run / "results.json").read_text())


def kept_score(results: dict, metric: str) -> float:
    """`metric` (in points) at the evaluation whose model finetune kept (its best epoch)."""
    kept = [h for h in results["history"] if h["epoch"] == results["best_epoch"] and f"eval_{metric}" in h]
    return 100 * kept[-1][f"eval_{metric}"]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if t in table["pretrained"]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.27
    for i, (name, colour) in enumerate((("pretrained", "tab:blue"), ("random-init", "tab:gray"))):
        means = [table[name][t]["mean"] for t in tasks]
        stds = [table[name][t]["std"] for t in tasks]
        ax.bar([k + (i - 1) * width for k in range(len(tasks))], means, width, yerr=stds, capsize=3,
               color=colour, label=f"{name} (mean ± std over seeds, dev)")
    ax.bar([k + width for k in range(len(tasks))], [TURC_MINI[t] for t in tasks], width, color="tab:green",
           alpha=0.6, label="Turc et al. BERT-Mini (test)")
    ax.set_xticks(range(len(tasks)), [TASKS[t][1] for t in tasks])
    ax.set_ylabel("score (points)")
    ax.set_title("GLUE-lite: pretrained against random initialisation, same architecture")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the pretrained checkpoint (slimbert pretrain's OUT)")
    p.add_argument("--data-dir", default="../shared/data/glue")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=4, help="epochs on every task but SST-2 (Turc et al.: 4)")
    p.add_argument("--sst2-epochs", type=int, default=2, help="epochs on SST-2 (67k sentences)")
    p.add_argument("--lr", type=float, default=1e-4, help="from Turc et al.'s grid (3e-4, 1e-4, 5e-5, 3e-5)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--inits", nargs="+", default=list(INITS), choices=list(INITS),
                   help="which initialisations to fine-tune (the table compares them when both are given)")
    p.add_argument("--max-train-examples", type=int, help="train on the first N examples only (quick checks)")
    p.add_argument("--out", default="benchmarks/results/glue_lite", help="where the table goes")
    p.add_argument("--runs", default="runs/glue-lite", help="where the fine-tuning runs go")
    p.add_argument("--jobs", type=int, default=1,
                   help="fine-tuning runs side by side, each with threads/jobs threads (a small model "
                        "uses 2 cores better as 2 one-thread runs than as one two-thread run)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads shared by the jobs")
    args = p.parse_args()
    if args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")

    out = Path(args.out)
    runs = Path(args.runs)
    pretrained = Path(args.model)
    inits = {"pretrained": pretrained, "random-init": random_init(pretrained, runs / "random-init")}
    inits = {name: inits[name] for name in args.inits}
    table: dict[str, dict] = {name: {} for name in inits}
    work = [(task, name, seed) for task in args.tasks for name in inits for seed in args.seeds]

    def run(job: tuple[str, str, int]) -> dict:
        task, name, seed = job
        return finetune(inits[name], task, seed, runs / name / task / f"s{seed}", args)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(zip(work, pool.map(run, work)))
    for task in args.tasks:
        metric = TASKS[task][0]
        for name in inits:
            scores = [kept_score(results[task, name, seed], metric) for seed in args.seeds]
            m, s = mean_std(scores)
            table[name][task] = {"scores": scores, "mean": m, "std": s}
            print(f"   {task} {name}: {m:.2f} ± {s:.2f}", flush=True)
    for name in inits:
        table[name]["glue_lite"] = statistics.mean(table[name][t]["mean"] for t in args.tasks)
    anchor = statistics.mean(TURC_MINI[t] for t in args.tasks)
    gain = (table["pretrained"]["glue_lite"] - table["random-init"]["glue_lite"]) if len(inits) == 2 else None

    record = {"date": str(date.today()), "machine": detect_machine().line(), "model": args.model,
              "tasks": args.tasks, "seeds": args.seeds, "epochs": args.epochs,
              "sst2_epochs": args.sst2_epochs, "lr": args.lr, "batch_size": args.batch_size,
              "jobs": args.jobs, "threads": args.threads, "table": table,
              "turc_bert_mini_test": TURC_MINI,
              "turc_glue_lite": anchor, "gain": gain}
    out.mkdir(parents=True, exist_ok=True)
    (out / "glue_lite.json").write_text(json.dumps(record, indent=2) + "\n")
    header = "| model | " + " | ".join(TASKS[t][1] for t in args.tasks) + " | GLUE-lite |"
    lines = [f"Machine: {record['machine']}. Dev sets, mean ± std over seeds {args.seeds}.", "",
             header, "|---|" + "---:|" * (len(args.tasks) + 1)]
    for name in inits:
        cells = [f"{table[name][t]['mean']:.2f} ± {table[name][t]['std']:.2f}" for t in args.tasks]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {table[name]['glue_lite']:.2f} |")
    turc = " | ".join(f"{TURC_MINI[t]:.1f}" for t in args.tasks)
    lines.append(f"| Turc et al. BERT-Mini (test set) | {turc} | {anchor:.2f} |")
    if gain is not None:
        lines += ["", f"Pretrained minus random init: {gain:+.2f} points."]
        plot(table, out / "glue_lite.png")
    (out / "glue_lite.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
