"""Large batches at equal tokens: batch 2,048 with LAMB against AdamW, and batch 128 with AdamW
as the reference (the claim of You et al. 2019, https://arxiv.org/abs/1904.00962, checked at a
small scale).

Three `slimbert pretrain` runs of the same shape, corpus, vocabulary, seed and token budget
(`--max-tokens`), so the large-batch runs take 16x fewer optimizer steps:
  - adamw-128:  AdamW, 128 sequences per step, at `--lr` (the reference);
  - adamw-2048: AdamW, 2,048 sequences per step (gradient accumulation), at `--lr` x sqrt(16);
  - lamb-2048:  LAMB, 2,048 sequences per step, at `--lamb-lr`.
The square-root scaling of AdamW's rate with the batch follows You et al. and Goyal-style
warm-up; every run warms up over `--warmup-ratio` of its own steps. Scores: the training MLM loss
of the last logged period and exp(masked-LM loss) on WikiText-2 valid with a fixed masking seed,
the same masked tokens for every model.

    python benchmarks/pretrain_batch.py --shape tiny --max-tokens 13107200 \
        --corpus ../shared/data/pretrain/wikipedia/*.txt ../shared/data/pretrain/books/*.txt \
        --vocab bundled:minilm-l6 --out benchmarks/results/pretrain_batch

Writes OUT/pretrain_batch.json and OUT/pretrain_batch.md; each run is kept in RUNS/<name>/ (--runs,
default runs/pretrain-batch). A run whose RUNS/<name>/results.json exists is not rerun.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import date
from pathlib import Path

import torch

from pretrain_arch import BASELINE, machine_lines, pretrain_once, scored, variant_config
from slimbert.recipes.pretrain import MODEL_PRESETS

SMALL, LARGE = 128, 2048


def runs(args) -> dict[str, dict]:
    """name -> the run's optimizer, global batch and peak learning rate."""
    scaled = args.lr * math.sqrt(LARGE / SMALL)
    return {
        "adamw-128": {"optimizer": "adamw", "global_batch": SMALL, "lr": args.lr},
        "adamw-2048": {"optimizer": "adamw", "global_batch": LARGE, "lr": scaled},
        "lamb-2048": {"optimizer": "lamb", "global_batch": LARGE, "lr": args.lamb_lr},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", nargs="+", required=True, help="raw text files to pretrain on")
    p.add_argument("--shape", default="tiny", choices=list(MODEL_PRESETS))
    p.add_argument("--max-tokens", type=int, required=True,
                   help="tokens per run (sequences x seq-length); a multiple of 2048 x seq-length keeps "
                        "every step full")
    p.add_argument("--vocab", help="vocab.txt directory or bundled:NAME (default: one trained on the corpus)")
    p.add_argument("--vocab-size", type=int, help="size of the vocabulary trained on the corpus")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW's peak rate at batch 128")
    p.add_argument("--lamb-lr", type=float, default=4e-3, help="LAMB's peak rate at batch 2048")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--micro-batch", type=int, default=128, help="sequences per forward pass")
    p.add_argument("--heldout", default="../shared/data/wikitext-2/wiki.valid.tokens")
    p.add_argument("--heldout-lines", type=int, help="score only the first N non-blank lines")
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log-steps", type=int, default=5,
                   help="optimizer steps per logged period at batch 2048 (x16 at batch 128)")
    p.add_argument("--mask-seed", type=int, default=0, help="masking seed of the held-out text")
    p.add_argument("--only", nargs="+", help="run only these of adamw-128, adamw-2048, lamb-2048")
    p.add_argument("--out", default="benchmarks/results/pretrain_batch", help="where the table goes")
    p.add_argument("--runs", default="runs/pretrain-batch", help="where the pretraining runs go")
    args = p.parse_args()
    out = Path(args.out)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    config_file = out / "configs" / f"{args.shape}.json"
    variant_config(args.shape, {}, vocab_size=30522).save(config_file)  # vocab_size: the vocabulary's

    rows = []
    for name, setting in runs(args).items():
        if args.only and name not in args.only:
            continue
        run = Path(args.runs) / name
        log_every = args.log_steps * (LARGE // setting["global_batch"])
        pretrain_once(name, run, ["--model-config", str(config_file), "--max-tokens", str(args.max_tokens),
                                  "--seq-length", str(args.seq_length), "--batch-size", str(args.micro_batch),
                                  "--global-batch", str(setting["global_batch"]),
                                  "--optimizer", setting["optimizer"], "--lr", repr(setting["lr"]),
                                  "--warmup-ratio", repr(args.warmup_ratio), "--seed", str(args.seed),
                                  "--eval-every-steps", str(log_every), "--no-progress"], args)
        rows.append({"run": name, **setting, **scored(name, run, args)})

    command = "python " + " ".join(sys.argv)
    report = {"date": date.today().isoformat(), "command": command, "shape": args.shape,
              "max_tokens": args.max_tokens, "heldout": args.heldout, "threads": torch.get_num_threads(),
              "architecture": BASELINE, "rows": rows}
    (out / "pretrain_batch.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"`{command}` ({args.shape}, {args.max_tokens:,} tokens per run, "
             f"{torch.get_num_threads()} threads, {date.today().isoformat()})", "",
             "| run | optimizer | batch | peak lr | steps | train MLM loss (last period) | WikiText-2 MLM loss "
             "| WikiText-2 ppl | wall |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        train = "n/a" if r["train_mlm_loss"] is None else f"{r['train_mlm_loss']:.3f}"
        wall = "n/a" if r["wall_seconds"] is None else f"{r['wall_seconds'] / 60:.1f} min"
        lines.append(f"| {r['run']} | {r['optimizer']} | {r['global_batch']} | {r['lr']:.2g} | {r['steps']} | "
                     f"{train} | {r['heldout_mlm_loss']:.3f} | {r['heldout_ppl']:.1f} | {wall} |")
    lines += ["", *machine_lines(rows, "a comparison of wall-clock (the losses compare at equal tokens)")]
    (out / "pretrain_batch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
