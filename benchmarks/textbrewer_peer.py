"""Side-by-side peer run: TextBrewer and `slimbert distill` on the same distillation problem.

The same teacher, the same initial student (`bert:layers=3` from teacher layers 0, 2, 4, built
once by slimbert and handed to TextBrewer as a stock `transformers` BertForSequenceClassification),
the same SST-2 training rows and tokenization, epochs, batch size, temperature, optimizer (AdamW,
decay on matrices only), learning rate, warm-up, clipping and seed. Both keep the student of the
best dev epoch; both are timed end to end (loading, teacher logits, training, dev evaluation).

TextBrewer's `kd_ce_loss` is not scaled by T^2; it is given `kd_loss_weight = T^2` so that both
optimise the same loss (slimbert's `soft_cross_entropy` carries the T^2 factor itself).
TextBrewer runs in fp32 (its mixed precision needs NVIDIA apex); slimbert is timed in fp32 and in
bf16. Install the `peer` extra first: `pip install -e ".[peer]"` (TextBrewer, tensorboard, transformers).

    python benchmarks/textbrewer_peer.py --teacher runs/minilm-sst2-full \
        --data-dir ../shared/data/glue --out runs/peer --train-examples 5000 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def slimbert_run(args, out: Path, precision: str, cache: Path) -> dict:
    """`slimbert distill` as a user runs it, with a cold teacher-logit cache; wall time of the process."""
    cmd = [sys.executable, "-m", "slimbert", "distill", "--teacher", args.teacher, "--student", "bert:layers=3",
           "--init-layers", "0,2,4", "--task", "sst2", "--data-dir", args.data_dir,
           "--max-train-examples", str(args.train_examples), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--temperature", str(args.temperature),
           "--precision", precision, "--seed", str(args.seed), "--cache-dir", str(cache),
           "--no-progress", "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    results = json.loads((out / "results.json").read_text())
    return {"tool": "slimbert distill", "precision": precision, "dev_accuracy": results["best"],
            "best_epoch": results["best_epoch"], "wall_seconds": wall, "command": " ".join(cmd[1:])}


def textbrewer_run(args, work: Path) -> dict:
    import textbrewer
    from textbrewer import BasicDistiller, DistillationConfig, TrainingConfig
    from transformers import BertForSequenceClassification

    from slimbert import load_model
    from slimbert.checkpoint import load_tokenizer
    from slimbert.compress.export import export_hf
    from slimbert.compress.students import BertStudentSpec, make_student
    from slimbert.data.batching import collate, encode_examples
    from slimbert.data.sources import load_task_data
    from slimbert.inference import predict_logits
    from slimbert.training.optim import linear_warmup_decay, parameter_groups

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    data = load_task_data("sst2", args.data_dir, max_train_examples=args.train_examples)
    teacher = load_model(args.teacher)
    tokenizer = load_tokenizer(args.teacher)
    student = make_student(BertStudentSpec(layers=3, init_layers=(0, 2, 4)), teacher, {
        "head": "classification", "num_labels": data.num_labels, "id2label": data.id2label, "task": "sst2"})
    export_hf(teacher, tokenizer, work / "teacher-hf")
    export_hf(student, tokenizer, work / "student-hf")
    model_t = BertForSequenceClassification.from_pretrained(work / "teacher-hf").eval()
    model_s = BertForSequenceClassification.from_pretrained(work / "student-hf")

    train = encode_examples(data.train.examples, tokenizer, args.max_length)
    dev = encode_examples(data.dev.examples, tokenizer, args.max_length)
    loader = torch.utils.data.DataLoader(  # dynamic padding, shuffled: a TextBrewer user's loader
        range(len(train)), batch_size=args.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
        collate_fn=lambda idx: collate(train, idx, tokenizer.pad_id))
    history = []

    def evaluate(model, step):  # TextBrewer's callback at each epoch end; slimbert's batching and scoring
        preds = predict_logits(model, dev, tokenizer.pad_id).argmax(-1)
        history.append({"step": step, "dev_accuracy": (preds == dev.labels).float().mean().item()})

    def adaptor(batch, outputs):
        return {"logits": outputs.logits}

    steps = len(loader) * args.epochs
    optimizer = torch.optim.AdamW(parameter_groups(model_s, 0.01), lr=args.lr)
    distiller = BasicDistiller(
        TrainingConfig(device="cpu", output_dir=str(work / "textbrewer"), log_dir=str(work / "tb-logs")),
        DistillationConfig(temperature=args.temperature, kd_loss_type="ce",
                           kd_loss_weight=args.temperature ** 2, hard_label_weight=0.0),
        model_T=model_t, model_S=model_s, adaptor_T=adaptor, adaptor_S=adaptor)

    def batch_postprocessor(batch):  # the student is trained on the teacher alone, as in slimbert
        return {k: v for k, v in batch.items() if k != "labels"}

    with distiller:
        distiller.train(optimizer, loader, num_epochs=args.epochs, max_grad_norm=1.0,
                        scheduler_class=lambda optimizer, **kw: linear_warmup_decay(optimizer, **kw),
                        scheduler_args={"warmup_steps": int(0.1 * steps), "total_steps": steps},
                        callback=evaluate, batch_postprocessor=batch_postprocessor)
    wall = time.perf_counter() - t0
    best = max(history, key=lambda h: h["dev_accuracy"])
    return {"tool": f"TextBrewer {textbrewer.__version__} BasicDistiller", "precision": "fp32",
            "dev_accuracy": best["dev_accuracy"], "best_epoch": history.index(best) + 1,
            "wall_seconds": wall, "history": history}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-examples", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows.append(textbrewer_run(args, tmp))
        print(json.dumps(rows[-1]), flush=True)
        for precision in ("fp32", "bf16"):
            rows.append(slimbert_run(args, out / f"slimbert-{precision}", precision, tmp / f"cache-{precision}"))
            print(json.dumps(rows[-1]), flush=True)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"torch {torch.__version__}, {torch.get_num_threads()} threads",
            "date": time.strftime("%Y-%m-%d"), **{k: v for k, v in vars(args).items() if k != "out"}}
    (out / "peer.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    base = rows[0]["wall_seconds"]
    print("| tool | precision | SST-2 dev accuracy | best epoch | wall-clock | speed vs TextBrewer |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tool']} | {r['precision']} | {100 * r['dev_accuracy']:.2f} | {r['best_epoch']} | "
              f"{r['wall_seconds']:.0f} s | {base / r['wall_seconds']:.2f}x |")


if __name__ == "__main__":
    main()
