"""`slimbert <command>`: one subcommand per job, each a thin function over slimbert.jobs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from slimbert.errors import SlimbertError

DEFAULT_MODEL = "bundled:minilm-l6"


def _positive_int(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return n


def _add_data_args(p: argparse.ArgumentParser, splits: str) -> None:
    g = p.add_argument_group("data (a GLUE task, or your own TSV/CSV/JSONL files)")
    g.add_argument("--task", help="GLUE task: sst2, mrpc, rte, cola, stsb, qnli, qqp, mnli, wnli")
    g.add_argument("--data-dir", help="folder with GLUE task folders (e.g. ../shared/data/glue); "
                   "without it GLUE is downloaded with the `datasets` library")
    if "train" in splits:
        g.add_argument("--train-file", help="your own training file (.tsv, .csv or .jsonl)")
    g.add_argument("--dev-file", help="your own evaluation file")
    g.add_argument("--text-col", default="text", help="column of the text (default: text)")
    g.add_argument("--text-pair-col", help="column of the second text, for sentence-pair tasks")
    g.add_argument("--label-col", default="label", help="column of the label (default: label)")
    g.add_argument("--no-header", action="store_true",
                   help="files have no header row; columns are 0-based numbers")
    g.add_argument("--regression", action="store_true", help="labels are numbers to regress (like STS-B)")
    g.add_argument("--skip-bad-rows", action="store_true",
                   help="skip and count malformed rows instead of stopping at the first")
    g.add_argument("--max-length", type=_positive_int, default=128, help="tokens per example (default: 128)")


def _task_data(args, splits: tuple[str, ...], label_values=None, regression=None, max_train=None):
    from slimbert.data.sources import FileColumns, load_task_data

    if args.task and (getattr(args, "train_file", None) or args.dev_file):
        raise SlimbertError("give either --task or --train-file/--dev-file, not both")
    cols = FileColumns(args.text_col, args.text_pair_col, args.label_col, not args.no_header)
    data = load_task_data(args.task, args.data_dir, getattr(args, "train_file", None), args.dev_file, cols,
                          regression if regression is not None else args.regression, label_values,
                          splits, args.skip_bad_rows, max_train)
    for split in splits:
        table = getattr(data, split)
        if table is not None and table.stats.skipped:
            print(f"{table.path}: {table.stats.summary()}", file=sys.stderr)
    return data


# --------------------------------------------------------------------------- commands


def cmd_finetune(args) -> int:
    from slimbert.jobs import finetune
    from slimbert.training.trainer import TrainConfig

    data = _task_data(args, ("train", "dev"), max_train=args.max_train_examples)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum,
                         lr=args.lr, weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
                         max_grad_norm=args.max_grad_norm, precision=args.precision, compile=args.compile,
                         seed=args.seed, save_every_steps=args.save_every_steps, device=args.device,
                         progress=not args.no_progress)
    results = finetune(args.model, data, args.out, config, args.max_length, args.resume)
    if results["best"] is not None:
        print(f"{data.name}: best dev {results['main_metric']} = {results['best']:.4f} "
              f"(epoch {results['best_epoch']}); model saved to {args.out}")
    print(f"trained on {results['train_examples']} examples at "
          f"{results['train_seq_per_s']:.1f} sequences/s ({results['wall_seconds_this_run']:.0f} s)")
    return 0


def cmd_evaluate(args) -> int:
    from slimbert.checkpoint import load_config
    from slimbert.jobs import evaluate

    cfg = load_config(args.model)
    if not args.task and not args.dev_file:
        args.task = cfg.task
    values = tuple(cfg.label_names()) if cfg.num_labels > 1 and not args.task else None
    data = _task_data(args, ("dev",), label_values=values, regression=cfg.num_labels == 1)
    metrics = evaluate(args.model, data, args.batch_size, args.max_length, args.precision, args.device)
    if args.json:
        print(json.dumps({"task": data.name, "examples": len(data.dev.examples), **metrics}))
    else:
        print(f"{data.name} ({len(data.dev.examples)} examples): "
              + ", ".join(f"{k} = {v:.4f}" for k, v in metrics.items()))
    return 0


def cmd_predict(args) -> int:
    from slimbert.data.readers import read_lines
    from slimbert.jobs import predict

    lines = read_lines(args.file) if args.file and args.file != "-" else [
        line for line in sys.stdin if line.strip()]
    names, records = predict(args.model, lines, args.batch_size, args.max_length, args.device)
    for record in records:
        if args.format == "jsonl":
            print(json.dumps(record))
        elif "score" in record:
            print(f"{record['score']:.4f}")
        else:
            print(record["label"] + "\t" + "\t".join(f"{record['probs'][n]:.4f}" for n in names))
    return 0


def cmd_vocab(args) -> int:
    from slimbert.data.readers import read_lines, read_table
    from slimbert.jobs import train_vocab

    texts: list[str] = []
    for path in args.corpus:
        if Path(path).suffix.lower() in (".tsv", ".csv", ".jsonl", ".json") and args.text_col:
            texts += [e.text for e in read_table(path, args.text_col).examples]
        else:
            texts += read_lines(path)
    chars = sum(map(len, texts))
    tok, seconds = train_vocab(texts, args.size, args.out, lowercase=not args.cased,
                               min_frequency=args.min_frequency)
    print(f"trained a {len(tok)}-token WordPiece vocabulary on {len(texts)} lines "
          f"({chars / 1e6:.1f} M characters) in {seconds:.2f} s; wrote {Path(args.out) / 'vocab.txt'}")
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimbert", description=__doc__.split(":", 1)[0] + ": make "
                                     "BERT-style Transformers small and fast.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("finetune", help="fine-tune a BERT on a classification or regression task")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"checkpoint dir, Hugging Face BERT dir, or bundled:NAME (default: {DEFAULT_MODEL})")
    p.add_argument("--out", required=True, help="output directory (best model; last/ for --resume)")
    _add_data_args(p, "train,dev")
    p.add_argument("--max-train-examples", type=_positive_int, help="use only the first N training rows")
    p.add_argument("--epochs", type=_positive_int, default=3)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--grad-accum", type=_positive_int, default=1,
                   help="micro-batches per optimizer step (effective batch = batch-size x grad-accum)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--save-every-steps", type=int, default=0,
                   help="also checkpoint every N steps (default: at epoch ends)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="score a fine-tuned model on a task's dev split")
    p.add_argument("--model", required=True)
    _add_data_args(p, "dev")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label each line of a file (or stdin); a tab separates a pair")
    p.add_argument("--model", required=True)
    p.add_argument("file", nargs="?", help="text file, one example per line (default: stdin)")
    p.add_argument("--format", choices=("tsv", "jsonl"), default="tsv",
                   help="tsv: label then one probability per class; jsonl: one object per line")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--max-length", type=_positive_int, default=128)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("vocab", help="train a WordPiece vocabulary")
    p.add_argument("--corpus", nargs="+", required=True,
                   help="text files, one document per line (or .tsv/.csv/.jsonl with --text-col)")
    p.add_argument("--text-col", help="column to read from .tsv/.csv/.jsonl corpus files")
    p.add_argument("--size", type=_positive_int, required=True, help="vocabulary size")
    p.add_argument("--out", required=True, help="directory to write vocab.txt into")
    p.add_argument("--cased", action="store_true", help="keep case (default: lower-case)")
    p.add_argument("--min-frequency", type=_positive_int, default=2)
    p.set_defaults(func=cmd_vocab)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except SlimbertError as e:
        print(f"slimbert {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"slimbert {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
