"""Architectures compared at equal wall-clock: `slimbert pretrain` once per variant, then the
held-out WikiText-2 MLM perplexity of each.

Every variant is the baseline (BERT: post-norm, learned positions, multi-head attention,
1/sqrt(d) scaling) with one thing changed: pre-norm, rotary positions, the gated attention
unit of FLASH, or the entropy-invariant log(n)/log(512) scale. All runs share the model shape,
the corpus, the vocabulary, the seed and the `--time-budget` (the step count each run gets is
planned from its own measured step time, so a faster architecture gets more steps). Scores:
the training MLM loss at the end of the run, and exp(masked-LM loss) on WikiText-2 valid with a
fixed masking seed (slimbert.evaluation.perplexity), the same masked tokens for every model.
The train MLM loss is the mean over the run's last `--loss-window` steps.

    python benchmarks/pretrain_arch.py --shape mini --time-budget 30m \
        --corpus ../shared/data/pretrain/wikipedia/*.txt ../shared/data/pretrain/books/*.txt \
        --out benchmarks/results/pretrain_arch

Writes OUT/pretrain_arch.json and OUT/pretrain_arch.md (a Markdown table); each run is kept in
RUNS/<variant>/ (--runs, default runs/pretrain-arch). A variant whose RUNS/<variant>/results.json
exists is not rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import torch
from runner import run_command

from slimbert.checkpoint import load_model, load_tokenizer
from slimbert.config import BertConfig
from slimbert.evaluation.perplexity import mlm_perplexity
from slimbert.recipes.pretrain import MODEL_PRESETS

BASELINE = {"norm_style": "post", "position_embedding_type": "absolute", "attention_type": "mha",
            "attention_scale": "sqrt"}
VARIANTS = {  # name -> what changes from the baseline
    "bert (post-norm, learned, MHA, 1/sqrt(d))": {},
    "pre-norm": {"norm_style": "pre"},
    "RoPE positions": {"position_embedding_type": "rope"},
    "GAU (FLASH)": {"attention_type": "gau"},
    "log(n)/log(512) scale": {"attention_scale": "log_n"},
}
SLUGS = {name: slug for name, slug in zip(VARIANTS, ("baseline", "prenorm", "rope", "gau", "logn"))}


def variant_config(shape: str, changes: dict, vocab_size: int) -> BertConfig:
    """The preset shape (Turc et al. 2019) with the variant's fields."""
    layers, hidden = MODEL_PRESETS[shape]
    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden, head="mlm",
                      **{**BASELINE, **changes})


def final_train_loss(results: dict) -> float | None:
    """The mean training MLM loss of the run's last logged period (`--eval-every-steps` steps)."""
    history = results.get("history") or []
    return float(history[-1]["train_loss"]) if history else None


def pretrain_once(name: str, run: Path, options: list[str], args) -> None:
    """`slimbert pretrain --out RUN OPTIONS` with the corpus and vocabulary of `args`, unless RUN
    already holds a finished run (results.json). A run stopped midway continues (`--resume`)
    with the plan it started with."""
    if (run / "results.json").exists():
        return
    cmd = [sys.executable, "-m", "slimbert", "pretrain", "--corpus", *args.corpus, "--out", str(run), *options]
    if (run / "last").is_dir():
        cmd.append("--resume")
    if args.vocab:
        cmd += ["--vocab", args.vocab]
    elif args.vocab_size:
        cmd += ["--vocab-size", str(args.vocab_size)]
    run_command(cmd, name)


def scored(name: str, run: Path, args) -> dict:
    """A finished run's size, steps, tokens, time and final train MLM loss, and its MLM loss and
    perplexity on the held-out text of `args` (the same masked tokens for every model)."""
    results = json.loads((run / "results.json").read_text())
    model, tokenizer = load_model(run), load_tokenizer(run)
    ppl = mlm_perplexity(model, tokenizer, args.heldout, seq_length=args.seq_length, seed=args.mask_seed,
                         max_lines=args.heldout_lines)
    print(f"   {name}: held-out MLM loss {ppl.loss:.3f}, perplexity {ppl.perplexity:.1f}", flush=True)
    return {
        "parameters": sum(t.numel() for t in model.parameters()),
        "steps": results.get("total_steps"),
        "tokens": (results.get("total_steps") or 0) * (results.get("tokens_per_step") or 0),
        "wall_seconds": results.get("wall_seconds_this_run"),
        "machine": results.get("machine"),
        "train_mlm_loss": final_train_loss(results),
        "heldout_mlm_loss": ppl.loss, "heldout_ppl": ppl.perplexity,
        "heldout_masked_tokens": ppl.masked_tokens,
        "curve": [(h.get("step"), h.get("train_loss")) for h in results.get("history") or []],
    }


def machine_lines(rows: list[dict], why: str) -> list[str]:
    """Where the runs ran: one machine line, or each row's with a warning when they differ."""
    machines = {r.get("machine") or "not recorded" for r in rows}
    if len(machines) <= 1:
        return [f"Machine: {next(iter(machines), 'none')}."]
    return [f"**The runs ran on different machines, so this is not {why}:**", "",
            *(f"- {r.get('variant') or r.get('run')}: {r.get('machine') or 'not recorded'}" for r in rows)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", nargs="+", required=True, help="raw text files to pretrain on")
    p.add_argument("--shape", default="mini", choices=list(MODEL_PRESETS))
    p.add_argument("--time-budget", default="30m", help="wall-clock per variant, e.g. 30m or 20s")
    p.add_argument("--vocab", help="vocab.txt directory (default: one trained on the corpus, shared by all runs)")
    p.add_argument("--vocab-size", type=int, help="size of the vocabulary trained on the corpus")
    p.add_argument("--heldout", default="../shared/data/wikitext-2/wiki.valid.tokens")
    p.add_argument("--heldout-lines", type=int, help="score only the first N non-blank lines")
    p.add_argument("--variants", nargs="+", choices=list(SLUGS.values()), default=list(SLUGS.values()))
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--loss-window", type=int, default=200,
                   help="steps per logged period; the last period's mean is the train MLM loss reported")
    p.add_argument("--mask-seed", type=int, default=0, help="masking seed of the held-out text")
    p.add_argument("--out", default="benchmarks/results/pretrain_arch", help="where the table goes")
    p.add_argument("--runs", default="runs/pretrain-arch", help="where the pretraining runs go")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `slimbert pretrain` options")
    args = p.parse_args()
    out = Path(args.out)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    extra = [a for a in args.extra if a != "--"]

    rows = []
    for name, changes in VARIANTS.items():
        slug = SLUGS[name]
        if slug not in args.variants:
            continue
        run = Path(args.runs) / slug
        # vocab_size is replaced by the vocabulary's at build time; the shape and fields stay.
        config_file = out / "configs" / f"{slug}.json"
        variant_config(args.shape, changes, vocab_size=30522).save(config_file)
        pretrain_once(name, run, ["--model-config", str(config_file), "--time-budget", args.time_budget,
                                  "--seq-length", str(args.seq_length), "--batch-size", str(args.batch_size),
                                  "--seed", str(args.seed), "--eval-every-steps", str(args.loss_window),
                                  "--no-progress", *extra], args)
        rows.append({"variant": name, "slug": slug, "changes": changes, **scored(name, run, args)})

    command = "python " + " ".join(sys.argv)
    report = {"date": date.today().isoformat(), "command": command, "shape": args.shape,
              "time_budget": args.time_budget, "heldout": args.heldout, "threads": torch.get_num_threads(),
              "baseline": BASELINE, "rows": rows}
    (out / "pretrain_arch.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"`{command}` ({args.shape}, {args.time_budget} of wall-clock per variant, "
             f"{torch.get_num_threads()} threads, {date.today().isoformat()})", "",
             "| variant | parameters | steps | tokens | train MLM loss (last period) | WikiText-2 MLM loss | WikiText-2 ppl |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        train = "n/a" if r["train_mlm_loss"] is None else f"{r['train_mlm_loss']:.3f}"
        lines.append(f"| {r['variant']} | {r['parameters'] / 1e6:.2f} M | {r['steps']} | {r['tokens']:,} | "
                     f"{train} | {r['heldout_mlm_loss']:.3f} | {r['heldout_ppl']:.1f} |")
    lines += ["", *machine_lines(rows, "a comparison at equal wall-clock")]
    (out / "pretrain_arch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
