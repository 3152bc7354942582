"""`slimbert <command>`: one subcommand per job, each a thin function over slimbert.jobs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from slimbert.errors import SlimbertError

# The serving backends of slimbert.evaluation.backends, named here so that the parser (and
# `--help`) need not import torch.
BACKENDS = ("torch", "torch-int8", "torch-int8-all", "torch-bf16", "onnxruntime", "onnxruntime-int8", "hf")

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


def _add_train_args(p: argparse.ArgumentParser, epochs: int, lr: float | None) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=_positive_int, default=epochs, help=f"(default: {epochs})")
    g.add_argument("--batch-size", type=_positive_int, default=32, help="(default: 32)")
    g.add_argument("--grad-accum", type=_positive_int, default=1,
                   help="micro-batches per optimizer step (effective batch = batch-size x grad-accum)")
    g.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default: {lr or 'by model kind'})")
    g.add_argument("--optimizer", choices=("adamw", "lamb"), default="adamw",
                   help="adamw, or lamb for very large batches (default: adamw)")
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--warmup-ratio", type=float, default=0.1)
    g.add_argument("--max-grad-norm", type=float, default=1.0)
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--save-every-steps", type=int, default=0,
                   help="also checkpoint every N steps (default: at epoch ends)")
    g.add_argument("--resume", action="store_true", help="continue from OUT/last")
    g.add_argument("--device", default="auto")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train_config(args, lr: float | None = None):
    from slimbert.training.trainer import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum,
                       lr=args.lr if args.lr is not None else lr, weight_decay=args.weight_decay,
                       warmup_ratio=args.warmup_ratio, max_grad_norm=args.max_grad_norm,
                       optimizer=args.optimizer, precision=args.precision, compile=args.compile,
                       seed=args.seed, save_every_steps=args.save_every_steps, device=args.device,
                       progress=not args.no_progress)


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


def _dev_data_for(args, model: str):
    """The dev split to score `model` on: the task its config.json names unless --task or
    --dev-file says otherwise; own files are read with the model's label names."""
    from slimbert.checkpoint import load_config

    cfg = load_config(model)
    if not args.task and not args.dev_file:
        args.task = cfg.task
    values = tuple(cfg.label_names()) if cfg.num_labels > 1 and not args.task else None
    return _task_data(args, ("dev",), label_values=values, regression=cfg.num_labels == 1)


# --------------------------------------------------------------------------- commands


def cmd_finetune(args) -> int:
    from slimbert.jobs import finetune

    data = _task_data(args, ("train", "dev"), max_train=args.max_train_examples)
    results = finetune(args.model, data, args.out, _train_config(args), args.max_length, args.resume,
                       layerdrop=args.layerdrop)
    if results["best"] is not None:
        print(f"{data.name}: best dev {results['main_metric']} = {results['best']:.4f} "
              f"(epoch {results['best_epoch']}); model saved to {args.out}")
    print(f"trained on {results['train_examples']} examples at "
          f"{results['train_seq_per_s']:.1f} sequences/s ({results['wall_seconds_this_run']:.0f} s)")
    return 0


# Learning rates that suit each kind of student when --lr is not given.
STUDENT_LR = {"bert": 1e-4, "bilstm": 2e-3, "cnn": 2e-3, "checkpoint": 1e-4}


def _student_kind(spec) -> str:
    from slimbert.compress.students import BertStudentSpec, BiLSTMStudentSpec, CNNStudentSpec

    return {BertStudentSpec: "bert", BiLSTMStudentSpec: "bilstm", CNNStudentSpec: "cnn"}.get(
        type(spec), "checkpoint")


def _loss_weights(args, kind: str, regression: bool):
    """--labels-only, explicit --*-weight values, or the defaults for this kind of student:
    soft-target CE for BERT students (DistilBERT), logit MSE for BiLSTM/CNN (Tang et al.)."""
    from slimbert.training.distillation import LossWeights

    if args.labels_only:
        return LossWeights(hard=1.0, soft=0.0)
    given = {name: getattr(args, f"{name}_weight") for name in
             ("hard", "soft", "logit_mse", "hidden", "attention")}
    if all(v is None for v in given.values()):
        logit_mse = regression or kind in ("bilstm", "cnn")
        given = {"soft": 0.0 if logit_mse else 1.0, "logit_mse": 1.0 if logit_mse else 0.0}
    try:
        return LossWeights(**{k: (0.0 if v is None else v) for k, v in given.items()})
    except ValueError as e:
        raise SlimbertError(str(e)) from None


def cmd_distill(args) -> int:
    from slimbert.compress.students import parse_student_spec
    from slimbert.data.augment import AugmentConfig
    from slimbert.distill import DistillOptions, distill

    spec = parse_student_spec(args.student, args.init_layers)
    kind = _student_kind(spec)
    data = _task_data(args, ("train", "dev"), max_train=args.max_train_examples)
    try:
        augment = AugmentConfig(copies=args.augment, p_mask=args.p_mask, p_pos=args.p_pos,
                                p_ngram=args.p_ngram, seed=args.augment_seed) if args.augment else None
    except ValueError as e:
        raise SlimbertError(str(e)) from None
    options = DistillOptions(weights=_loss_weights(args, kind, data.regression), temperature=args.temperature,
                             layer_map=args.layer_map, hidden_loss=args.hidden_loss, augment=augment,
                             cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                             layerdrop=args.layerdrop or 0.0)
    results = distill(args.teacher, spec, data, args.out, _train_config(args, STUDENT_LR[kind]), options,
                      args.max_length, args.resume, student_name=args.student)
    if results["best"] is not None:
        print(f"{data.name}: student {args.student}: best dev {results['main_metric']} = {results['best']:.4f} "
              f"(epoch {results['best_epoch']}); saved to {args.out}")
    print(f"transfer set: {results['train_examples']} examples + {results['augmented_examples']} augmented; "
          f"{results['student_parameters'] / 1e6:.2f} M student parameters "
          f"({results['teacher_parameters'] / results['student_parameters']:.1f}x fewer than the teacher)")
    return 0


def cmd_distill_general(args) -> int:
    from slimbert.compress.students import parse_student_spec
    from slimbert.distill import distill_general
    from slimbert.training.distillation import LossWeights

    spec = parse_student_spec(args.student, args.init_layers)
    weights = None
    if any(getattr(args, f"{n}_weight") is not None for n in ("soft", "mlm", "hidden", "attention")):
        try:
            weights = LossWeights(**{n: getattr(args, f"{n}_weight") or 0.0
                                     for n in ("soft", "mlm", "hidden", "attention")})
        except ValueError as e:
            raise SlimbertError(str(e)) from None
    results = distill_general(args.teacher, spec, args.corpus, args.out, _train_config(args, 1e-4), weights,
                              args.temperature, args.layer_map, args.mlm_probability, args.max_length,
                              args.max_examples, args.resume)
    last = results["history"][-1] if results["history"] else {}
    print(f"general distillation: {results['train_examples']} lines, losses {results['loss_weights']}, "
          f"final train loss {last.get('train_loss', float('nan')):.4f}; student saved to {args.out}")
    return 0


def cmd_report(args) -> int:
    import torch

    from slimbert.evaluation.report import measure, write_report

    runs = [Path(r) for r in args.runs]
    for r in runs:
        if not (r / "config.json").exists():
            raise SlimbertError(f"{r}: not a checkpoint directory (no config.json)")
    teacher = args.teacher
    if teacher is None:
        named = {json.loads((r / "results.json").read_text()).get("teacher") for r in runs
                 if (r / "results.json").exists()} - {None}
        if len(named) != 1:
            raise SlimbertError("give --teacher: the runs name " + (", ".join(sorted(named)) or "no teacher"))
        teacher = named.pop()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = _dev_data_for(args, teacher)
    rows = measure(runs, Path(teacher), data, rounds=args.rounds, progress=not args.no_progress,
                   backends=tuple(args.backend), threads=args.threads)
    summary = write_report(rows, data, args.out, args.rounds)
    print((Path(args.out) / "report.md").read_text(), end="")
    print(f"wrote {Path(args.out) / 'report.md'}, report.json and report.png ({len(summary)} rows)")
    return 0


def cmd_evaluate(args) -> int:
    from slimbert.jobs import evaluate

    data = _dev_data_for(args, args.model)
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


def _keep_layers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    if not text.startswith("keep="):
        raise SlimbertError(f"--layers {text}: expected keep=0,2,4")
    try:
        return [int(x) for x in text[len("keep="):].split(",")]
    except ValueError:
        raise SlimbertError(f"--layers {text}: layer numbers must be integers, e.g. keep=0,2,4") from None


def cmd_prune(args) -> int:
    from slimbert.compress.jobs import prune

    for name in ("heads", "ffn"):
        if not 0 <= getattr(args, name) < 1:
            raise SlimbertError(f"--{name}: the fraction to remove must be in [0, 1), got {getattr(args, name)}")
    keep = _keep_layers(args.layers)
    if not (args.heads or args.ffn or keep):
        raise SlimbertError("nothing to prune: give --heads, --ffn and/or --layers keep=...")
    data = _task_data(args, ("train", "dev") if (args.heads or args.ffn or args.recover_epochs) else ("dev",),
                      max_train=args.max_train_examples)
    recover = None
    if args.recover_epochs:
        args.epochs = args.recover_epochs
        recover = _train_config(args, 5e-5)
    results = prune(args.model, data, args.out, args.heads, args.ffn, keep, args.importance_examples,
                    max_length=args.max_length, recover=recover, teacher=args.teacher,
                    seed=args.seed, progress=not args.no_progress, ffn_multiple=args.ffn_multiple)
    metric = results["main_metric"]
    line = (f"{data.name}: {results['parameters_before'] / 1e6:.2f} M -> {results['parameters_after'] / 1e6:.2f} M "
            f"parameters; dev {metric} {results['dev_before'][metric]:.4f} -> "
            f"{results['dev_after_pruning'][metric]:.4f} after pruning")
    if recover:
        line += f" -> {results['dev_after_recovery']:.4f} after {args.recover_epochs} epoch(s) of {results['recovery']}"
        if results["kept"] == "pruned":
            line += " (recovery did not help: OUT keeps the model before recovery)"
    print(line + f"; saved to {args.out}")
    return 0


def cmd_quantize(args) -> int:
    from slimbert.checkpoint import load_config
    from slimbert.compress.jobs import quantize

    calibrate = args.task or args.train_file
    if calibrate and args.dtype != "int8":
        raise SlimbertError("calibration data (--task/--train-file) applies to int8 only")
    data = _task_data(args, ("train",), max_train=None) if calibrate else None
    out = quantize(args.model, args.out, args.dtype, args.int8_scope, data, args.calibration_examples,
                   args.smoothquant_alpha, args.max_length)
    what = args.dtype
    q = load_config(out).quantization  # the scope and calibration quantize settled on
    if q:
        what += f" ({q['scope']} scope{', SmoothQuant-calibrated' if 'smoothquant' in q else ''})"
    print(f"wrote the {what} model to {out}")
    return 0


def cmd_export(args) -> int:
    from slimbert.compress.jobs import export

    files = export(args.model, args.format, args.out, args.int8)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def cmd_bench(args) -> int:
    from slimbert.evaluation.bench_run import run_bench, write_bench

    models = [Path(m) for m in args.model]
    data = _dev_data_for(args, args.model[0])
    if data.dev is None:
        raise SlimbertError("bench times real dev sentences: give --task (and --data-dir) or --dev-file")
    seq_lens = tuple(int(x) for x in args.seq_lens.split(","))
    backends = args.backend or ["torch"]
    rows, meta = run_bench(models, backends, data, seq_lens, args.batch_size, args.rounds, args.threads,
                           memory=not args.no_memory, references=not args.no_references,
                           progress=not args.no_progress, max_length=args.max_length)
    out = write_bench(rows, meta, args.out)
    print((out / "bench.md").read_text(), end="")
    print(f"wrote {out / 'bench.json'}, bench.md" + (" and bench.png" if (out / "bench.png").exists() else ""))
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
    p.add_argument("--layerdrop", type=float,
                   help="LayerDrop: skip each layer with this probability while training, so layers "
                   "can be dropped later (slimbert prune --layers keep=...)")
    _add_train_args(p, epochs=3, lr=5e-5)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("distill", help="distil a fine-tuned teacher into a smaller student on a task",
                       description="Task-specific distillation. Loss weights default to soft-target "
                       "cross-entropy for BERT students and logit MSE for bilstm/cnn students.")
    p.add_argument("--teacher", required=True, help="fine-tuned teacher checkpoint directory")
    p.add_argument("--student", required=True,
                   help="bert:layers=N[,hidden=H[,heads=A]] | bilstm[:hidden=300,mlp=400,embeddings=teacher] "
                   "| cnn[:filters=100,widths=3-4-5,embeddings=teacher] | a checkpoint directory")
    p.add_argument("--init-layers", help="teacher layers to initialise a bert student from, e.g. 0,2,4 "
                   "(default: evenly spaced, every other layer for half the depth)")
    p.add_argument("--out", required=True, help="output directory (best student; last/ for --resume)")
    _add_data_args(p, "train,dev")
    p.add_argument("--max-train-examples", type=_positive_int, help="use only the first N training rows")
    g = p.add_argument_group("losses (explicit weights; any weight given sets the others to 0)")
    g.add_argument("--labels-only", action="store_true",
                   help="train the student on gold labels alone (the no-teacher baseline)")
    g.add_argument("--hard-weight", type=float, help="gold-label cross-entropy")
    g.add_argument("--soft-weight", type=float, help="soft-target cross-entropy with the teacher, x T^2")
    g.add_argument("--logit-mse-weight", type=float, help="squared distance to the teacher's logits")
    g.add_argument("--hidden-weight", type=float, help="hidden states of mapped layers (BERT students)")
    g.add_argument("--attention-weight", type=float, help="attention maps of mapped layers (BERT students)")
    g.add_argument("--hidden-loss", choices=("cosine", "mse"), default="cosine")
    g.add_argument("--temperature", type=float, default=2.0, help="softmax temperature T (default: 2)")
    g.add_argument("--layer-map", help="student:teacher layer pairs, e.g. 0:1,1:3,2:5 (default: uniform)")
    g = p.add_argument_group("augmentation (Tang et al. 2019)")
    g.add_argument("--augment", type=int, default=0, metavar="N",
                   help="add up to N distinct augmented copies of every training example (default: 0)")
    g.add_argument("--p-mask", type=float, default=0.1, help="per word: replace by [MASK] (default: 0.1)")
    g.add_argument("--p-pos", type=float, default=0.1,
                   help="per word: replace by a word of the same POS tag (default: 0.1; 0 needs no tagger)")
    g.add_argument("--p-ngram", type=float, default=0.25, help="per copy: keep one n-gram, n in 1..5 (default: 0.25)")
    g.add_argument("--augment-seed", type=int, default=0)
    p.add_argument("--cache-dir", help="cache for teacher logits and augmented sets "
                   "(default: $SLIMBERT_CACHE or ~/.cache/slimbert)")
    p.add_argument("--layerdrop", type=float, help="LayerDrop probability for a bert student")
    _add_train_args(p, epochs=3, lr=None)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("distill-general", help="task-agnostic distillation of a pre-trained BERT on raw text",
                       description="DistilBERT's triple loss (soft CE 5, MLM 2, hidden cosine 1) when the "
                       "teacher has an MLM head; hidden-state MSE and attention KL on mapped layers when it "
                       "is a bare encoder. Inputs are masked dynamically, 80/10/10.")
    p.add_argument("--teacher", default=DEFAULT_MODEL, help=f"pre-trained BERT (default: {DEFAULT_MODEL})")
    p.add_argument("--student", required=True, help="bert:layers=N[,hidden=H] or a checkpoint directory")
    p.add_argument("--init-layers", help="teacher layers to copy, e.g. 0,2,4")
    p.add_argument("--corpus", nargs="+", required=True, help="plain-text files, one passage per line")
    p.add_argument("--out", required=True)
    p.add_argument("--max-length", type=_positive_int, default=128)
    p.add_argument("--max-examples", type=_positive_int, help="use only the first N lines")
    p.add_argument("--mlm-probability", type=float, default=0.15)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--layer-map", help="student:teacher layer pairs (default: last:last with an MLM "
                   "teacher, uniform otherwise)")
    for name in ("soft", "mlm", "hidden", "attention"):
        p.add_argument(f"--{name}-weight", type=float)
    _add_train_args(p, epochs=1, lr=None)
    p.set_defaults(func=cmd_distill_general)

    p = sub.add_parser("report", help="teacher and students side by side: accuracy, size, latency, "
                       "throughput; Markdown, JSON and a PNG plot")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="student checkpoint dirs; NAME-s1, NAME-s2, ... are seeds of one row")
    p.add_argument("--teacher", help="teacher checkpoint (default: the one the runs' results.json name)")
    p.add_argument("--out", required=True, help="directory for report.md, report.json, report.png")
    _add_data_args(p, "dev")
    p.add_argument("--backend", nargs="+", default=["torch"], choices=BACKENDS,
                   help="serve every run (and the teacher) with each of these, one row each; e.g. "
                   "torch torch-bf16 onnxruntime-int8 puts bf16 and int8 on the plot (default: torch)")
    p.add_argument("--rounds", type=_positive_int, default=3, help="timing rounds (default: 3)")
    p.add_argument("--threads", type=_positive_int, help="torch threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("prune", help="remove attention heads, feed-forward neurons and/or layers, "
                       "then optionally recover accuracy",
                       description="Structured pruning: heads and neurons are ranked by importance "
                       "(Michel et al. 2019) on a sample of the training set and the least important "
                       "removed; the model becomes physically smaller and config.json records it.")
    p.add_argument("--model", required=True, help="fine-tuned checkpoint directory")
    p.add_argument("--heads", type=float, default=0.0, help="fraction of all attention heads to remove")
    p.add_argument("--ffn", type=float, default=0.0, help="fraction of all feed-forward neurons to remove")
    p.add_argument("--ffn-multiple", type=_positive_int, default=64,
                   help="each layer keeps a multiple of this many neurons, which matmul kernels run "
                   "fastest (default: 64; 1 keeps the exact fraction)")
    p.add_argument("--layers", help="layers to keep, e.g. keep=0,2,4 (best after --layerdrop training)")
    p.add_argument("--importance-examples", type=_positive_int, default=2048,
                   help="training examples to score importance on (default: 2048)")
    p.add_argument("--out", required=True, help="output directory (the pruned model; with recovery "
                   "the better of recovered and unrecovered on dev, and the unrecovered one in OUT/pruned)")
    p.add_argument("--recover-epochs", type=int, default=0,
                   help="fine-tune (or, with --teacher, distil) this many epochs after pruning")
    p.add_argument("--teacher", help="recover by distilling from this model (usually the unpruned --model)")
    p.add_argument("--max-train-examples", type=_positive_int,
                   help="use only the first N training rows (importance sample and recovery)")
    _add_data_args(p, "train,dev")
    _add_train_args(p, epochs=1, lr=5e-5)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("quantize", help="int8 (dynamic) or bf16 copy of a checkpoint, for CPU serving")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=("int8", "bf16"), default="int8",
                   help="int8: dynamic quantization of Linear layers (default); bf16: bfloat16 weights")
    p.add_argument("--int8-scope", choices=("attention", "all"),
                   help="attention: attention projections, pooler and classifier; feed-forward kept fp32. "
                   "all: every Linear (about 1.5x faster than fp32). Default: all with calibration data, "
                   "attention without")
    p.add_argument("--calibration-examples", type=_positive_int, default=512,
                   help="int8 with --task/--train-file: training examples SmoothQuant calibrates on (default: 512)")
    p.add_argument("--smoothquant-alpha", type=float, default=0.9,
                   help="how much of the activations' range SmoothQuant moves into the weights (default: 0.9)")
    _add_data_args(p, "train")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("export", help="export to ONNX, or to a checkpoint stock transformers loads")
    p.add_argument("--model", required=True)
    p.add_argument("--format", choices=("onnx", "hf"), required=True)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--int8", action="store_true", help="onnx: also write model_int8.onnx (ONNX Runtime int8)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="latency, throughput, memory and size of checkpoints x backends",
                       description="Every model and backend is timed round-robin on the same real dev "
                       "sentences; Hugging Face transformers and ONNX Runtime on the same weights are "
                       "measured in every run as references.")
    p.add_argument("--model", nargs="+", required=True, help="checkpoint directories (slimbert or transformers)")
    p.add_argument("--backend", nargs="+", choices=BACKENDS,
                   help="backends to time (default: torch; hf and onnxruntime are always added)")
    p.add_argument("--no-references", action="store_true", help="do not add the hf and onnxruntime rows")
    p.add_argument("--out", default="bench", help="directory for bench.json, bench.md, bench.png")
    _add_data_args(p, "dev")
    p.add_argument("--seq-lens", default="16,32,128", help="batch-1 latency lengths (default: 16,32,128)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="throughput batch (default: 32)")
    p.add_argument("--rounds", type=_positive_int, default=3)
    p.add_argument("--threads", type=_positive_int, help="torch / ONNX Runtime threads (default: torch's choice)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe (a process per row)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_bench)

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
