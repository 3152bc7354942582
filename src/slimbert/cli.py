"""`slimbert <command>`: one subcommand per recipe (slimbert.recipes).

Each command's options are generated from the recipe's config dataclass, plus `DataConfig` where
it reads a task and `TrainConfig` where it trains: an option is written once, as a field with its
type, default and comment. `--config FILE` reads the same options from a JSON or YAML mapping;
options on the command line win. Every error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import logging
import math
import re
import sys
import textwrap
import tokenize
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from slimbert.errors import ConfigError, SlimbertError


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `slimbert COMMAND: error: ...`, with exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def _one_line(message: str) -> str:
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


# ----------------------------------------------------------------- options from dataclass fields


def field_help(cls: type) -> dict[str, str]:
    """The comment of each field of dataclass `cls`: the one after it on its line, else the
    comment lines right above it."""
    helps: dict[str, str] = {}
    above: list[str] = []
    for line in textwrap.dedent(inspect.getsource(cls)).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r" {4}(\w+)\s*:", line)
        if match:
            helps[match.group(1)] = _trailing_comment(stripped) or " ".join(above)
        above = []
    return helps


def _trailing_comment(line: str) -> str:
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line + "\n").readline):
            if tok.type == tokenize.COMMENT:
                return tok.string.lstrip("#").strip()
    except (tokenize.TokenError, SyntaxError):
        pass
    return ""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,2,4, got '{text}'"
                                         ) from None


def _parsed_by(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


def _without_none(hint):
    """`X | None` -> X."""
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _value_kwargs(hint, parse: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """argparse `type` (and `choices`, `nargs`) for a field of type `hint`."""
    if parse is not None:
        return {"type": _parsed_by(parse)}
    origin = get_origin(hint)
    if origin is list:
        return {"nargs": "+", **_value_kwargs(get_args(hint)[0])}
    if origin is Literal:
        return {"choices": get_args(hint)}
    if origin is tuple and get_args(hint) == (int, Ellipsis):
        return {"type": _ints}
    if hint is int:
        return {"type": _int}
    if hint is float:
        return {"type": _float}
    if hint in (str, Path):
        return {}
    if callable(getattr(hint, "parse", None)):
        return {"type": _parsed_by(hint.parse)}
    raise TypeError(f"no command-line form for a field of type {hint}")


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def add_options(parser: argparse.ArgumentParser, cls: type, *, title: str | None = None, exclude=(),
                defaults: dict | None = None, notes: dict | None = None, given_only: bool = False) -> None:
    """An option for each field of dataclass `cls`: `--field-name VALUE` typed by the field's
    annotation (Literal -> choices, list -> several values, tuple[int, ...] -> 0,2,4, a class
    with `parse` -> parsed), `--flag` for a bool that defaults to False and `--no-flag` for one
    that defaults to True; a field without a default is required. Help is the field's comment.

    `defaults` replace the fields' own; `notes` replace the "(default: ...)" of a help line.
    With `given_only`, an option not on the command line stays out of the namespace, so that
    whoever builds `cls` applies its own defaults."""
    group = parser.add_argument_group(title) if title else parser
    hints = get_type_hints(cls)
    helps = field_help(cls)
    defaults, notes = defaults or {}, notes or {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        hint = _without_none(hints[f.name])
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        help_text = f.metadata.get("help") or helps.get(f.name, "")
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {}
        if hint is bool:
            if default is True:
                flag = "--no-" + f.name.replace("_", "-")
                help_text = f"turn off: {help_text}" if help_text else ""
            kwargs["action"] = "store_false" if default is True else "store_true"
        else:
            kwargs.update(_value_kwargs(hint, f.metadata.get("parse")))
            if "metavar" in f.metadata:
                kwargs["metavar"] = f.metadata["metavar"]
            elif kwargs.get("nargs") and kwargs.get("choices"):  # several of many: list them once, below
                kwargs["metavar"] = f.name.upper()
                help_text += f"; any of {', '.join(kwargs['choices'])}"
            note = notes.get(f.name)
            if note is None and default not in (None, dataclasses.MISSING) and "default" not in help_text:
                note = f"default: {_shown(default)}"
            if note:
                help_text = f"{help_text} ({note})" if help_text else f"({note})"
        kwargs["help"] = help_text.replace("%", "%%")
        if f.metadata.get("positional"):
            kwargs["nargs"] = "+" if get_origin(hint) is list else "?"
            group.add_argument(f.name, **kwargs)
            continue
        if given_only:
            kwargs["default"] = argparse.SUPPRESS
        elif default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        group.add_argument(flag, dest=f.name, **kwargs)


def build(cls: type, args: argparse.Namespace, **values):
    """`cls` from the options of `args` named like its fields (and `values`); what its
    validation refuses is a ConfigError."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if f.init and hasattr(args, f.name)}
    try:
        config = cls(**{**given, **values})
    except ValueError as e:  # ConfigError, or the ValueError of a config of a lower layer
        raise ConfigError(str(e)) from None
    _check_out_dir(getattr(config, "out", None))
    return config


def _check_out_dir(out: str | None) -> None:
    """--out is a directory to write into: refuse, before any work, a path that is (or lies
    under) an existing file."""
    if out is None:
        return
    for path in (Path(out), *Path(out).parents):
        if path.exists():
            if not path.is_dir():
                what = "is a file" if path == Path(out) else f"lies under {path}, which is a file"
                raise ConfigError(f"--out {out}: {what}; give a directory to write into")
            return


def build_train(args: argparse.Namespace, defaults: dict):
    """The TrainConfig of a command: the recipe's `defaults`, then the options given."""
    from slimbert.training.trainer import TrainConfig

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    try:
        return TrainConfig(**{**defaults, **given})
    except ValueError as e:  # ConfigError, or the ValueError of a config of a lower layer
        raise ConfigError(str(e)) from None


def _data_options(p: argparse.ArgumentParser, splits: str) -> None:
    """Every command takes the same data options, so that one set of them serves a whole
    pipeline; a command that reads only the dev split says so when given --train-file
    (`recipes.common.dev_data_for`)."""
    from slimbert.recipes.common import DataConfig

    add_options(p, DataConfig, title=f"data (a GLUE task, or your own TSV/CSV/JSONL files; reads: {splits})")


def _train_options(p: argparse.ArgumentParser, defaults: dict, notes: dict | None = None, exclude=()) -> None:
    from slimbert.training.trainer import TrainConfig

    add_options(p, TrainConfig, title="training", defaults=defaults, notes=notes, exclude=exclude,
                given_only=True)


def _data(args: argparse.Namespace):
    from slimbert.recipes.common import DataConfig

    return build(DataConfig, args)


# --------------------------------------------------------------------------- commands


def options_finetune(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.finetune import TRAIN_DEFAULTS, FinetuneConfig

    add_options(p, FinetuneConfig)
    _data_options(p, "train,dev")
    _train_options(p, TRAIN_DEFAULTS)


def run_finetune(args) -> int:
    from slimbert.recipes.common import load_data
    from slimbert.recipes.finetune import FinetuneConfig, finetune, train_defaults

    config, source = build(FinetuneConfig, args), _data(args)
    train = build_train(args, train_defaults(config))
    data = load_data(source, ("train", "dev"))
    results = finetune(config, data, train)
    print(f"{data.name}: {data.label_summary()}")
    if results["best"] is not None:
        print(f"{data.name}: best dev {results['main_metric']} = {results['best']:.4f} "
              f"(epoch {results['best_epoch']}); model saved to {config.out}")
    print(f"trained on {results['train_examples']} examples at "
          f"{results['train_seq_per_s']:.1f} sequences/s ({results['wall_seconds_this_run']:.0f} s)")
    return 0


def options_distill(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.distill import STUDENT_LR, TRAIN_DEFAULTS, DistillConfig

    add_options(p, DistillConfig)
    _data_options(p, "train,dev")
    by_kind = ", ".join(f"{kind} {lr:g}" for kind, lr in STUDENT_LR.items())
    _train_options(p, TRAIN_DEFAULTS, notes={"lr": f"default by kind of student: {by_kind}"})


def run_distill(args) -> int:
    from slimbert.recipes.common import load_data
    from slimbert.recipes.distill import DistillConfig, distill, train_defaults

    config, source = build(DistillConfig, args), _data(args)
    train = build_train(args, train_defaults(config))
    data = load_data(source, ("train", "dev"))
    results = distill(config, data, train)
    print(f"{data.name}: {data.label_summary()}")
    if results["best"] is not None:
        print(f"{data.name}: student {config.student}: best dev {results['main_metric']} = "
              f"{results['best']:.4f} (epoch {results['best_epoch']}); saved to {config.out}")
    print(f"transfer set: {results['train_examples']} examples + {results['augmented_examples']} augmented; "
          f"{results['student_parameters'] / 1e6:.2f} M student parameters "
          f"({results['teacher_parameters'] / results['student_parameters']:.1f}x fewer than the teacher)")
    return 0


def options_distill_general(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.distill_general import TRAIN_DEFAULTS, DistillGeneralConfig

    add_options(p, DistillGeneralConfig)
    _train_options(p, TRAIN_DEFAULTS)


def run_distill_general(args) -> int:
    from slimbert.recipes.distill_general import DistillGeneralConfig, distill_general, train_defaults

    config = build(DistillGeneralConfig, args)
    results = distill_general(config, build_train(args, train_defaults(config)))
    last = results["history"][-1] if results["history"] else {}
    print(f"general distillation: {results['train_examples']} lines, losses {results['loss_weights']}, "
          f"final train loss {last.get('train_loss', float('nan')):.4f}; student saved to {config.out}")
    return 0


def options_pretrain(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.pretrain import TRAIN_DEFAULTS, PretrainConfig

    add_options(p, PretrainConfig)
    _train_options(p, TRAIN_DEFAULTS, notes={"max_steps": "default: one epoch, or what --max-tokens or "
                                                          "--time-budget give"})


def run_pretrain(args) -> int:
    from slimbert.recipes.pretrain import PretrainConfig, pretrain, train_defaults

    config = build(PretrainConfig, args)
    results = pretrain(config, build_train(args, train_defaults(config)))
    if results.get("history"):
        last = results["history"][-1]
        tokens = results["total_steps"] * results["tokens_per_step"]
        print(f"pretrained {results['model']['layers']} x {results['model']['hidden']} "
              f"({results['model']['parameters'] / 1e6:.1f} M parameters) for {results['total_steps']} steps "
              f"({tokens / 1e6:.1f} M tokens): final MLM loss {last['train_loss']:.4f}, "
              + (f"held-out perplexity {last['eval_heldout_ppl']:.1f}, " if "eval_heldout_ppl" in last else "")
              + f"{last.get('train_tokens_per_s', float('nan')):.0f} tokens/s; saved to {config.out}")
    return 0


def options_prune(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.prune import RECOVERY_LR, PruneConfig

    add_options(p, PruneConfig)
    _data_options(p, "train,dev")
    # recovery trains for --recover-epochs
    _train_options(p, {"lr": RECOVERY_LR}, exclude=("epochs",))


def run_prune(args) -> int:
    from slimbert.recipes.common import load_data
    from slimbert.recipes.prune import PruneConfig, prune, train_defaults

    config, source = build(PruneConfig, args), _data(args)
    train = build_train(args, train_defaults(config))
    data = load_data(source, config.splits())
    results = prune(config, data, train)
    metric = results["main_metric"]
    line = (f"{data.name}: {results['parameters_before'] / 1e6:.2f} M -> "
            f"{results['parameters_after'] / 1e6:.2f} M parameters; "
            f"dev {metric} {results['dev_before'][metric]:.4f} -> "
            f"{results['dev_after_pruning'][metric]:.4f} after pruning")
    if config.recover_epochs:
        line += (f" -> {results['dev_after_recovery']:.4f} after {config.recover_epochs} epoch(s) of "
                 f"{results['recovery']}")
        if results["kept"] == "pruned":
            line += " (recovery did not help: OUT keeps the model before recovery)"
    print(line + f"; saved to {config.out}")
    return 0


def options_quantize(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.quantize import QuantizeConfig

    add_options(p, QuantizeConfig)
    _data_options(p, "train")


def run_quantize(args) -> int:
    from slimbert.checkpoint import load_config
    from slimbert.recipes.common import load_data
    from slimbert.recipes.quantize import QuantizeConfig, quantize

    config, source = build(QuantizeConfig, args), _data(args)
    calibration = load_data(source, ("train",)) if (source.task or source.train_file) else None
    out = quantize(config, calibration)
    what = config.dtype
    q = load_config(out).quantization  # the scope and calibration quantize settled on
    if q:
        what += f" ({q['scope']} scope{', SmoothQuant-calibrated' if 'smoothquant' in q else ''})"
    print(f"wrote the {what} model to {out}")
    return 0


def options_average(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.average import AverageConfig

    add_options(p, AverageConfig)


def run_average(args) -> int:
    from slimbert.recipes.average import AverageConfig, average

    out, chosen = average(build(AverageConfig, args))
    print(f"wrote the average of {len(chosen)} checkpoints ({', '.join(str(c) for c in chosen)}) to {out}")
    return 0


def options_export(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.export import ExportConfig

    add_options(p, ExportConfig)


def run_export(args) -> int:
    from slimbert.recipes.export import ExportConfig, export

    files = export(build(ExportConfig, args))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def options_bench(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.bench import BenchConfig

    add_options(p, BenchConfig)
    _data_options(p, "dev")


def run_bench(args) -> int:
    from slimbert.recipes.bench import BenchConfig, bench

    out = bench(build(BenchConfig, args), _data(args))
    print((out / "bench.md").read_text(), end="")
    plot = " and bench.png" if (out / "bench.png").exists() else ""
    print(f"wrote {out / 'bench.json'}, bench.md{plot}")
    return 0


def options_bench_seq2seq(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.bench_seq2seq import BenchSeq2SeqConfig

    add_options(p, BenchSeq2SeqConfig)


def run_bench_seq2seq(args) -> int:
    from slimbert.recipes.bench_seq2seq import BenchSeq2SeqConfig, bench_seq2seq

    out = bench_seq2seq(build(BenchSeq2SeqConfig, args))
    print((out / "bench.md").read_text(), end="")
    print(f"wrote {out / 'bench.json'}, bench.md and bench.png")
    return 0


def options_optimize(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.optimize import OptimizeConfig

    add_options(p, OptimizeConfig, notes={"budget": "default: 2h"})
    _data_options(p, "train,dev")


def run_optimize(args) -> int:
    from slimbert.recipes.optimize import OptimizeConfig, optimize, task_data

    config, source = build(OptimizeConfig, args), _data(args)
    state = optimize(config, task_data(source, config.model), source.columns())
    chosen = state["chosen"]
    if chosen is None:
        print(f"no candidate is within {config.max_drop:g} points of the given model; see {config.out}/optimize.md")
        return 0
    print(f"chosen: {chosen['model']} served with {chosen['backend']}: {chosen['speed']:.2f}x the given model's "
          f"{config.target}, {state['metric']} {chosen['selection']:.2f} on selection "
          f"({chosen['selection'] - state['base_selection']:+.2f}) and {chosen['heldout']:.2f} held out "
          f"({chosen['heldout'] - state['base_heldout']:+.2f}); {len(state['candidates'])} candidates in "
          f"{state['elapsed_seconds'] / 60:.1f} min")
    print(f"wrote {config.out}/model, optimize.md, optimize.json and optimize.png")
    return 0


def options_report(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.report import ReportConfig

    add_options(p, ReportConfig)
    _data_options(p, "dev")


def run_report(args) -> int:
    from slimbert.recipes.report import ReportConfig, report

    config = build(ReportConfig, args)
    summary = report(config, _data(args))
    print((Path(config.out) / "report.md").read_text(), end="")
    print(f"wrote {Path(config.out) / 'report.md'}, report.json and report.png ({len(summary)} rows)")
    return 0


def options_evaluate(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.evaluate import EvaluateConfig

    add_options(p, EvaluateConfig)
    _data_options(p, "dev")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_evaluate(args) -> int:
    from slimbert.recipes.common import dev_data_for
    from slimbert.recipes.evaluate import EvaluateConfig, evaluate

    config, source = build(EvaluateConfig, args), _data(args)
    data = dev_data_for(source, config.model)
    metrics = evaluate(config, data)
    if args.json:
        print(json.dumps({"task": data.name, "examples": len(data.dev.examples), **metrics}))
    else:
        print(f"{data.name} ({len(data.dev.examples)} examples): "
              + ", ".join(f"{k} = {v:.4f}" for k, v in metrics.items()))
    return 0


def options_predict(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.evaluate import PredictConfig

    p.add_argument("file", nargs="?", help="text file, one example per line (default: stdin)")
    add_options(p, PredictConfig)
    p.add_argument("--format", choices=("tsv", "jsonl"), default="tsv",
                   help="tsv: label then one probability per class; jsonl: one object per line with its "
                   "line number. Every input line gets one output line: an empty input line gets empty "
                   'fields in tsv and {"line": N, "empty": true} in jsonl')


def run_predict(args) -> int:
    from slimbert.data.readers import numbered_lines, text_lines
    from slimbert.recipes.evaluate import PredictConfig, predict

    config = build(PredictConfig, args)
    if args.file and args.file != "-":
        source, lines = args.file, text_lines(args.file)
    elif hasattr(sys.stdin, "buffer"):  # bytes that are not UTF-8 are named by line, not a traceback
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="surrogateescape")
        try:
            source, lines = "stdin", numbered_lines(stdin, "stdin")
        finally:
            stdin.detach()  # leave sys.stdin open
    else:
        source, lines = "stdin", numbered_lines(sys.stdin, "stdin")
    names, records = predict(config, lines, source)
    for record in records:
        if args.format == "jsonl":
            print(json.dumps(record))
        elif record.get("empty"):
            print("\t" * (len(names) if len(names) > 1 else 0))  # an empty label and probabilities
        elif "score" in record:
            print(f"{record['score']:.4f}")
        else:
            print(record["label"] + "\t" + "\t".join(f"{record['probs'][n]:.4f}" for n in names))
    return 0


def options_vocab(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.vocab import VocabConfig

    add_options(p, VocabConfig)


def run_vocab(args) -> int:
    from slimbert.recipes.vocab import VocabConfig, read_corpus, train_vocab

    config = build(VocabConfig, args)
    texts = read_corpus(config)
    tok, seconds = train_vocab(config, texts)
    print(f"trained a {len(tok)}-token WordPiece vocabulary on {len(texts)} lines "
          f"({sum(map(len, texts)) / 1e6:.1f} M characters) in {seconds:.2f} s; "
          f"wrote {Path(config.out) / 'vocab.txt'}")
    return 0


# The training defaults of translation models (recipes.train_seq2seq.TRAIN_DEFAULTS), by architecture.
SEQ2SEQ_TRAIN_NOTES = {"epochs": "default: 10", "lr": "default: 7e-4 (transformer), 1e-3 (lstm)",
                       "batch_size": "default: 64",
                       "warmup_ratio": "default: 0.05 (transformer), 0.02 (lstm)",
                       "weight_decay": "default: 1e-4 (transformer), 0 (lstm)"}


def options_train_seq2seq(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.train_seq2seq import TrainSeq2SeqConfig

    add_options(p, TrainSeq2SeqConfig)
    _train_options(p, {}, notes=SEQ2SEQ_TRAIN_NOTES)


def run_train_seq2seq(args) -> int:
    from slimbert.recipes.train_seq2seq import TrainSeq2SeqConfig, train_defaults, train_seq2seq

    config = build(TrainSeq2SeqConfig, args)
    results = train_seq2seq(config, build_train(args, train_defaults(config)))
    last = results["history"][-1] if results["history"] else {}
    if results["best"] is not None:
        print(f"{config.arch}: best validation BLEU {results['best']:.2f} (epoch {results['best_epoch']}), "
              f"validation perplexity {last.get('eval_ppl', float('nan')):.2f} at the end; "
              f"model saved to {config.out}")
    print(f"{results['parameters'] / 1e6:.2f} M parameters, {results['vocab_size']}-token joint vocabulary; "
          f"trained on {results['train_pairs']} pairs at {results['train_seq_per_s']:.1f} pairs/s "
          f"({results['wall_seconds_this_run']:.0f} s)")
    return 0


def options_distill_seq2seq(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.distill_seq2seq import DistillSeq2SeqConfig

    add_options(p, DistillSeq2SeqConfig)
    _train_options(p, {}, notes=SEQ2SEQ_TRAIN_NOTES)


def run_distill_seq2seq(args) -> int:
    from slimbert.recipes.distill_seq2seq import DistillSeq2SeqConfig, distill_seq2seq, train_defaults

    config = build(DistillSeq2SeqConfig, args)
    results = distill_seq2seq(config, build_train(args, train_defaults(config)))
    if results["best"] is not None:
        print(f"student {config.student}: best validation BLEU {results['best']:.2f} "
              f"(epoch {results['best_epoch']}); model saved to {config.out}")
    reused = " (reused from the cache)" if results["teacher_translations_reused"] else ""
    print(f"trained on {results['train_pairs']} pairs of {results['targets']}{reused}; "
          f"{results['parameters'] / 1e6:.2f} M student parameters (teacher: "
          f"{results['teacher_parameters'] / 1e6:.2f} M), initialised: {results['student_init']}")
    return 0


def options_translate(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.translate import TranslateConfig

    p.add_argument("file", nargs="?", help="text file, one sentence per line (default: stdin)")
    add_options(p, TranslateConfig)


def _print_translations(result, nbest: int, first_line: int = 1) -> None:
    for i, (hyps, texts) in enumerate(zip(result.hypotheses, result.texts), start=first_line):
        if nbest == 1:
            print(texts[0] if texts else "")
        for hyp, text in zip(hyps, texts):
            if nbest > 1:
                print(f"{i}\t{hyp.score:.4f}\t{text}")
    sys.stdout.flush()


def run_translate(args) -> int:
    from slimbert.data.parallel import read_text_lines
    from slimbert.recipes.translate import TranslateConfig, translate_lines

    config = build(TranslateConfig, args)
    model, tokenizer = config.load()
    if args.file and args.file != "-":
        lines = read_text_lines(args.file)
        _print_translations(translate_lines(config, lines, model, tokenizer), config.nbest)
    elif sys.stdin.isatty():  # typed by hand: answer every line at once
        for i, line in enumerate(sys.stdin, start=1):
            _print_translations(translate_lines(config, [line], model, tokenizer), config.nbest, i)
    else:
        lines = [line.rstrip("\r\n") for line in sys.stdin]
        _print_translations(translate_lines(config, lines, model, tokenizer), config.nbest)
    return 0


def options_evaluate_seq2seq(p: argparse.ArgumentParser) -> None:
    from slimbert.recipes.evaluate_seq2seq import EvaluateSeq2SeqConfig

    add_options(p, EvaluateSeq2SeqConfig, exclude=("nbest",))
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_evaluate_seq2seq(args) -> int:
    from slimbert.recipes.evaluate_seq2seq import EvaluateSeq2SeqConfig, evaluate_seq2seq

    config = build(EvaluateSeq2SeqConfig, args)
    scores = evaluate_seq2seq(config)
    if args.json:
        print(json.dumps(scores))
        return 0
    print(f"sacreBLEU = {scores['sacrebleu']:.2f}  (cased, detokenized; {scores['signature']})")
    print(f"legacy BLEU = {scores['legacy']:.2f}  (lowercased, 13a-tokenized, as Multi30k tutorials report "
          f"it; not comparable with sacreBLEU; {scores['legacy_signature']})")
    skipped = f", {scores['skipped_empty']} with an empty side skipped" if scores["skipped_empty"] else ""
    print(f"{scores['pairs']} pairs{skipped}, beam {scores['beam']}, {scores['seconds']:.1f} s "
          f"({scores['tokens_per_second']:.0f} tokens/s)")
    return 0


@dataclasses.dataclass(frozen=True)
class Command:
    help: str
    options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


COMMANDS = {
    "finetune": Command("fine-tune a BERT on a classification or regression task",
                        options_finetune, run_finetune),
    "distill": Command("distil a fine-tuned teacher into a smaller student on a task",
                       options_distill, run_distill,
                       "Task-specific distillation. Loss weights default to soft-target cross-entropy for "
                       "BERT students and logit MSE for bilstm/cnn students."),
    "distill-general": Command("task-agnostic distillation of a pre-trained BERT on raw text",
                               options_distill_general, run_distill_general,
                               "DistilBERT's triple loss (soft CE 5, MLM 2, hidden cosine 1) when the "
                               "teacher has an MLM head; hidden-state MSE and attention KL on mapped layers "
                               "when it is a bare encoder. Inputs are masked dynamically, 80/10/10."),
    "pretrain": Command("pretrain a BERT with masked-LM on raw text, from scratch or from a checkpoint",
                        options_pretrain, run_pretrain,
                        "Masked-LM pretraining (no next-sentence prediction): the corpus is tokenized once "
                        "into memory-mapped shards, packed into full sequences with [SEP] between documents, "
                        "and masked dynamically (80/10/10) per sample. Runs under torchrun (DDP, --fsdp, "
                        "--tensor-parallel); --resume continues exactly, on any number of processes at the "
                        "same global batch."),
    "report": Command("teacher and students side by side: accuracy, size, latency, throughput; Markdown, "
                      "JSON and a PNG plot", options_report, run_report),
    "prune": Command("remove attention heads, feed-forward neurons and/or layers, then optionally recover "
                     "accuracy", options_prune, run_prune,
                     "Structured pruning: heads and neurons are ranked by importance (Michel et al. 2019) "
                     "on a sample of the training set and the least important removed; the model becomes "
                     "physically smaller and config.json records it."),
    "quantize": Command("int8 (dynamic) or bf16 copy of a checkpoint, for CPU serving",
                        options_quantize, run_quantize),
    "average": Command("checkpoint averaging: the mean of several checkpoints' weights (e.g. a run's last "
                       "epochs)", options_average, run_average),
    "export": Command("export to ONNX, or to a checkpoint stock transformers loads",
                      options_export, run_export),
    "bench": Command("latency, throughput, memory and size of checkpoints x backends",
                     options_bench, run_bench,
                     "Every model and backend is timed round-robin on the same real dev sentences; Hugging "
                     "Face transformers and ONNX Runtime on the same weights are measured in every run as "
                     "references."),
    "bench-seq2seq": Command("BLEU against speed of translation models: slimbert, int8, CTranslate2, HF generate",
                             options_bench_seq2seq, run_bench_seq2seq,
                             "Every model and backend decodes the same test sentences, greedy and with a beam, "
                             "timed round-robin on fixed threads: BLEU, tokens per second, latency per sentence "
                             "and agreement with fp32, with ratios measured in the same run."),
    "optimize": Command("find the fastest model this machine can serve within an accuracy budget",
                        options_optimize, run_optimize,
                        "Searches serving backends (torch fp32 / int8, ONNX Runtime fp32 / int8, bf16 where "
                        "native, CUDA where present), head and feed-forward pruning with recovery, and "
                        "distillation into fewer layers, within --budget; measures every candidate on the "
                        "same dev sentences and keeps the Pareto frontier of accuracy against speed. Part of "
                        "the dev split is held out to check the choice."),
    "evaluate": Command("score a fine-tuned model on a task's dev split", options_evaluate, run_evaluate),
    "predict": Command("label each line of a file (or stdin); a tab separates a pair",
                       options_predict, run_predict),
    "vocab": Command("train a WordPiece vocabulary", options_vocab, run_vocab),
    "train-seq2seq": Command("train a translation model (Transformer or LSTM with attention) on aligned "
                             "text files", options_train_seq2seq, run_train_seq2seq,
                             "Learns a joint BPE vocabulary on the training sources and targets, trains with "
                             "label-smoothed cross-entropy under teacher forcing on length-bucketed batches, "
                             "and keeps the model with the best validation BLEU."),
    "distill-seq2seq": Command("sequence-level knowledge distillation of a translation model into a "
                               "smaller one", options_distill_seq2seq, run_distill_seq2seq,
                               "The teacher beam-decodes the training sources once (cached), and the student "
                               "learns its translations (Kim & Rush 2016), optionally with the references "
                               "(--mix-references) and word-level KD (--word-kd-weight); the best student by "
                               "validation BLEU is kept."),
    "translate": Command("translate each line of a file (or stdin) with a translation model",
                         options_translate, run_translate),
    "evaluate-seq2seq": Command("BLEU of a translation model: sacreBLEU and the legacy lowercased BLEU",
                                options_evaluate_seq2seq, run_evaluate_seq2seq),
}


# ----------------------------------------------------------------------------- parser


def build_parser(only: str | None = None) -> ArgumentParser:
    """The parser of every command; with `only`, just that command's options are added (the
    others' recipes are not imported), which keeps `slimbert --help` and each command fast."""
    parser = ArgumentParser(prog="slimbert",
                            description="slimbert: make BERT-style Transformers small and fast.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description or command.help)
        if only is None or only == name:
            p.add_argument("--config", metavar="FILE",
                           help="read options from a JSON or YAML mapping of option names to values; "
                           "options on the command line win")
            command.options(p)
        p.set_defaults(command_run=command.run)
    return parser


def command_parser(parser: ArgumentParser, name: str) -> ArgumentParser:
    """The parser of command `name` in `parser` (from build_parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _command_in(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _read_config(path: str) -> dict:
    """The mapping in JSON or YAML file `path`; what is wrong with it is a ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        if Path(path).suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError("reading YAML needs PyYAML (pip install pyyaml)") from None
            try:
                values = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ConfigError(str(e)) from None
        else:
            values = json.loads(text)
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise ConfigError(str(e)) from None
    if not isinstance(values, dict):
        raise ConfigError("expected a mapping of option names to values")
    return values


def apply_config(p: ArgumentParser, path: str) -> None:
    """Make the values of config file `path` the defaults of command parser `p`. Keys are option
    names, with - or _ (`batch-size`, `batch_size`); a --no-X flag is `no-X: true` or `X: false`."""
    try:
        values = _read_config(path)
    except ConfigError as e:
        p.error(f"--config {path}: {e}")
    options: dict[str, tuple[argparse.Action, bool]] = {}  # name -> (action, whether it is the flag's name)
    for action in p._actions:
        if action.option_strings and action.dest not in ("help", "config"):
            for flag in action.option_strings:
                options[flag.lstrip("-").replace("_", "-")] = (action, True)
            options.setdefault(action.dest.replace("_", "-"), (action, False))
    for key, value in values.items():
        name = str(key).replace("_", "-")
        if name not in options:
            p.error(f"--config {path}: unknown option '{key}'")
        action, is_flag = options[name]
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                p.error(f"--config {path}: {key}: expected true or false, got {value!r}")
            if is_flag:
                value = action.const if value else not action.const
        elif value is not None:
            items = value if isinstance(value, list) else [value]
            if action.type is _ints and isinstance(value, list):
                items = [",".join(map(str, value))]
            if action.nargs is None and len(items) != 1:
                p.error(f"--config {path}: {key}: expected one value, got {value!r}")
            try:
                items = [action.type(str(v)) if action.type else str(v) for v in items]
            except argparse.ArgumentTypeError as e:
                p.error(f"--config {path}: {key}: {e}")
            for item in items:
                if action.choices is not None and item not in action.choices:
                    choices = ", ".join(map(str, action.choices))
                    p.error(f"--config {path}: {key}: {item!r} is not one of {choices}")
            value = items if action.nargs in ("+", "*") else items[0]
        p.set_defaults(**{action.dest: value})
        action.required = False


def _config_path(argv: list[str]) -> tuple[str | None, list[str]]:
    """The --config FILE of `argv`, and argv without it."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns the exit status (0, or 2 after a one-line error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    parser = build_parser(only=command if command in COMMANDS else "")
    try:
        config, argv = _config_path(argv)
        if config is not None and command in COMMANDS:
            apply_config(command_parser(parser, command), config)
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits after --help (0) and after a usage error (2)
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.command_run(args)
    except SlimbertError as e:
        print(f"slimbert {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # what the system refused: permission denied, disk full, ... (names the file)
        print(f"slimbert {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"slimbert {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
