"""The `slimbert` command line: help, the finetune -> evaluate -> predict path, and error messages."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from slimbert.cli import apply_config, build_parser, command_parser, main


def subcommands() -> list[str]:
    """Every `slimbert` subcommand, as the parser defines them: a new command is tested too."""
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


COMMANDS = subcommands()


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    assert main([command, "--help"]) == 0
    assert "usage: slimbert " + command in capsys.readouterr().out


def test_console_script_is_installed():
    # The script pip installed beside this interpreter (a venv's bin/), else the one on PATH.
    script = shutil.which("slimbert", path=str(Path(sys.executable).parent)) or shutil.which("slimbert")
    assert script, "no `slimbert` script installed: pip install -e ."
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("usage: slimbert")
    assert {"finetune", "evaluate", "predict"} <= set(COMMANDS)
    assert all(c in out.stdout for c in COMMANDS)


def test_unknown_option_is_rejected(capsys):
    assert main(["finetune", "--out", "x", "--learning-rate", "1"]) == 2
    assert "unrecognized arguments: --learning-rate" in capsys.readouterr().err


def test_training_options_are_the_fields_of_train_config():
    from slimbert.training.trainer import TrainConfig

    flags = {flag for action in command_parser(build_parser(), "finetune")._actions
             for flag in action.option_strings}
    for f in fields(TrainConfig):
        flag = ("--no-" if f.default is True else "--") + f.name.replace("_", "-")
        assert flag in flags


DISTILL = ["distill", "--teacher", "t", "--student", "bilstm", "--out", "o"]
PRUNE = ["prune", "--model", "m", "--out", "o", "--heads", "0.5"]


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--out", "o", "--epochs", "0"], "epochs"),
    (["finetune", "--out", "o", "--epochs", "-3"], "epochs"),
    (["finetune", "--out", "o", "--batch-size", "0"], "batch_size"),
    (["finetune", "--out", "o", "--epochs", "x"], "expected an integer"),
    (["finetune", "--out", "o", "--lr", "0"], "lr"),
    (["finetune", "--out", "o", "--lr", "nan"], "finite"),
    (["finetune", "--out", "o", "--warmup-ratio", "7"], "warmup_ratio"),
    (["finetune", "--out", "o", "--precision", "fp64"], "invalid choice"),
    (["finetune", "--out", "o", "--layerdrop", "1.5"], "layerdrop"),
    (["finetune", "--out", "o", "--task", "sst2", "--train-file", "t.csv"], "not both"),
    (["finetune"], "required: --out"),
    ([*DISTILL, "--temperature", "0"], "temperature"),
    ([*DISTILL, "--layer-map", "0-1"], "not STUDENT:TEACHER"),
    ([*DISTILL, "--init-layers", "0,x"], "comma-separated integers"),
    ([*DISTILL, "--hard-weight", "-1"], "hard"),
    ([*DISTILL, "--p-mask", "2"], "p_mask"),
    ([*PRUNE, "--recover-epochs", "-1"], "recover_epochs"),
    ([*PRUNE, "--heads", "1.5"], "heads"),
    (["prune", "--model", "m", "--out", "o"], "nothing to prune"),
    (["prune", "--model", "m", "--out", "o", "--layers", "0,2"], "expected keep=0,2,4"),
    (["quantize", "--model", "m", "--out", "o", "--dtype", "fp8"], "invalid choice"),
    (["export", "--model", "m", "--out", "o", "--format", "hf", "--int8"], "--int8 applies to --format onnx"),
    (["bench", "--model", "m", "--seq-lens", "8,x"], "--seq-lens"),
    (["bench", "--model", "m", "--backend", "tpu"], "invalid choice"),
    (["bench", "--model", "m", "--rounds", "0"], "rounds"),
    (["vocab", "--corpus", "c.txt", "--size", "0", "--out", "v"], "size"),
    (["fly"], "invalid choice"),
])
def test_bad_arguments_are_one_line_errors_before_any_work(argv, message, capsys):
    """Checked before any file is read: none of the paths above exists."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert len(captured.err.splitlines()) == 1 and message in captured.err, captured.err
    assert captured.err.startswith("slimbert")


def test_the_same_errors_from_the_console_script():
    out = subprocess.run([sys.executable, "-m", "slimbert", "bench", "--model", "m", "--seq-lens", "8,x"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr


def test_options_from_a_config_file(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"out": "o", "batch-size": 8, "lr": 1e-3, "no_progress": True,
                                  "precision": "bf16", "text_col": "review"}))
    parser = build_parser("finetune")
    sub = command_parser(parser, "finetune")
    apply_config(sub, str(config))
    args = parser.parse_args(["finetune", "--lr", "2e-3"])  # the command line wins
    assert (args.out, args.batch_size, args.lr, args.progress, args.precision, args.text_col) == (
        "o", 8, 2e-3, False, "bf16", "review")
    assert not hasattr(args, "epochs")  # training options not given stay the recipe's

    yaml = pytest.importorskip("yaml")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": "m", "seq_lens": [8, 16], "backend": ["torch", "hf"],
                                      "memory": False}))
    sub = command_parser(build_parser("bench"), "bench")
    apply_config(sub, str(config))
    args = sub.parse_args([])
    assert (args.model, args.seq_lens, args.backend, args.memory) == (["m"], (8, 16), ["torch", "hf"], False)


@pytest.mark.parametrize("values, message", [
    ({"out": "o", "learning_rate": 1}, "unknown option 'learning_rate'"),
    ({"out": "o", "epochs": "x"}, "expected an integer"),
    ({"out": "o", "precision": "fp64"}, "not one of"),
    ({"out": "o", "compile": "yes"}, "expected true or false"),
    ([1, 2], "expected a mapping"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, values, message, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(values))
    assert main(["finetune", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err and str(config) in err, err
    config.write_text("{not json")
    assert main(["finetune", "--config", str(config)]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_finetune_evaluate_predict_on_own_csv(tmp_path, tiny_checkpoint, csv_task, capsys, monkeypatch):
    train, dev = csv_task
    out = tmp_path / "ft"
    cols = ["--text-col", "review", "--label-col", "sentiment"]
    assert main(["finetune", "--model", str(tiny_checkpoint), "--train-file", str(train), "--dev-file",
                 str(dev), *cols, "--out", str(out), "--epochs", "2", "--batch-size", "8", "--lr", "1e-3",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "best dev accuracy" in printed and "sequences/s" in printed
    assert "labels 0 = neg, 1 = pos" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["architectures"] == [
        "BertForSequenceClassification"]
    results = json.loads((out / "results.json").read_text())
    assert results["labels"] == {"0": "neg", "1": "pos"}
    assert results["best_epoch"] in (1, 2) and len(results["history"]) == 2
    assert (out / "last" / "training_state.pt").exists()

    assert main(["evaluate", "--model", str(out), "--dev-file", str(dev), *cols, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["examples"] == 8 and metrics["accuracy"] == pytest.approx(results["best"])

    monkeypatch.setattr(sys, "stdin", io.StringIO("a great film\n\nthe worst plot\n"))
    assert main(["predict", "--model", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1] == "\t\t"  # one answer per input line; the empty one is marked
    for line in lines[::2]:
        label, p_neg, p_pos = line.split("\t")
        assert label in ("neg", "pos") and float(p_neg) + float(p_pos) == pytest.approx(1, abs=1e-3)
        assert label == ("pos" if float(p_pos) > float(p_neg) else "neg")


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, tiny_checkpoint, csv_task, capsys):
    train, _ = csv_task
    code = main(["finetune", "--model", str(tiny_checkpoint), "--train-file", str(train), "--text-col",
                 "review", "--label-col", "sentiment", "--out", str(tmp_path / "none"), "--resume"])
    assert code == 2 and "nothing to resume" in capsys.readouterr().err


def test_bad_row_error_names_file_and_line(tmp_path, tiny_checkpoint, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\ngood\t1\nno label here\n")
    code = main(["finetune", "--model", str(tiny_checkpoint), "--train-file", str(bad), "--out",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.tsv:3: 1 fields, the header has 2" in err and "Traceback" not in err


@pytest.fixture
def tiny_classifier_dir(tmp_path, tiny_tokenizer):
    from conftest import tiny_config

    from slimbert import build_model, save_checkpoint

    return save_checkpoint(build_model(tiny_config(head="classification", id2label={0: "neg", 1: "pos"})),
                           tiny_tokenizer, tmp_path / "classifier")


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_predict_answers_every_line_and_names_the_true_line(tmp_path, tiny_classifier_dir, capsys,
                                                             monkeypatch):
    text = "a good film\n\n   \nthe worst plot\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert main(["predict", "--model", str(tiny_classifier_dir), "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4]
    assert records[1] == {"line": 2, "empty": True} and records[2] == {"line": 3, "empty": True}
    assert records[0]["label"] in ("neg", "pos") and set(records[3]["probs"]) == {"neg", "pos"}

    bad = tmp_path / "in.txt"
    bad.write_text("a good film\n\n\n\nthree\ttab\tfields\n")
    assert main(["predict", "--model", str(tiny_classifier_dir), str(bad)]) == 2
    assert f"{bad}:5: 3 tab-separated fields" in one_error_line(capsys)
    monkeypatch.setattr(sys, "stdin", io.StringIO("a pair\tof texts\n\none text\n"))
    assert main(["predict", "--model", str(tiny_classifier_dir)]) == 2
    assert "stdin:3: a single text, but line 1 is a sentence pair" in one_error_line(capsys)


def test_predict_names_undecodable_stdin_and_directories(tmp_path, tiny_classifier_dir, capsys, monkeypatch):
    latin1 = io.TextIOWrapper(io.BytesIO("a good film\ncaf\xe9\n".encode("latin-1")), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", latin1)
    assert main(["predict", "--model", str(tiny_classifier_dir)]) == 2
    assert "stdin:2: not UTF-8 text (byte 0xE9 at character 4); re-save it as UTF-8" in one_error_line(capsys)
    assert main(["predict", "--model", str(tiny_classifier_dir), str(tmp_path)]) == 2
    assert f"{tmp_path}: is a directory" in one_error_line(capsys)
    assert main(["vocab", "--corpus", str(tmp_path), "--size", "50", "--out", str(tmp_path / "v")]) == 2
    assert f"{tmp_path}: is a directory" in one_error_line(capsys)


def test_a_directory_or_a_latin1_file_as_training_data(tmp_path, tiny_checkpoint, capsys):
    for flag in ("--train-file", "--dev-file"):
        assert main(["finetune", "--model", str(tiny_checkpoint), flag, str(tmp_path), "--out",
                     str(tmp_path / "o")]) == 2
        assert f"{tmp_path}: is a directory" in one_error_line(capsys)
    latin1 = tmp_path / "t.jsonl"
    latin1.write_bytes('{"text": "fine", "label": "x"}\n{"text": "caf\xe9", "label": "y"}\n'
                       .encode("latin-1"))
    assert main(["finetune", "--model", str(tiny_checkpoint), "--train-file", str(latin1), "--out",
                 str(tmp_path / "o")]) == 2
    assert f"{latin1}:2: not UTF-8 text" in one_error_line(capsys)


def test_one_class_is_refused_and_regression_is_asked_for(tmp_path, tiny_checkpoint, capsys):
    train = tmp_path / "t.tsv"
    train.write_text("text\tscore\ngood\t1\ngreat\t1\n")
    argv = ["finetune", "--model", str(tiny_checkpoint), "--train-file", str(train), "--label-col", "score",
            "--out", str(tmp_path / "o"), "--max-steps", "1", "--no-progress"]
    assert main(argv) == 2
    assert "every label in column 'score' is '1'" in one_error_line(capsys)
    assert main([*argv, "--regression"]) == 0
    assert "regression: one score per example" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "results.json").read_text())["labels"] == "regression"


def test_bench_with_every_model_skipped_is_one_line(tmp_path, tiny_classifier_dir, capsys):
    int8 = tmp_path / "int8"
    assert main(["quantize", "--model", str(tiny_classifier_dir), "--out", str(int8)]) == 0
    capsys.readouterr()
    dev = tmp_path / "dev.tsv"
    dev.write_text("text\tlabel\na good film\tpos\nthe worst\tneg\n")
    assert main(["bench", "--model", str(int8), "--backend", "torch-int8", "--no-references", "--no-memory",
                 "--dev-file", str(dev), "--rounds", "1", "--no-progress", "--out", str(tmp_path / "b")]) == 2
    assert "no model could be served" in one_error_line(capsys)


def test_prune_without_recovery(tmp_path, tiny_classifier_dir, csv_task, capsys):
    train, dev = csv_task
    assert main(["prune", "--model", str(tiny_classifier_dir), "--heads", "0.25", "--train-file", str(train),
                 "--dev-file", str(dev), "--text-col", "review", "--label-col", "sentiment", "--out",
                 str(tmp_path / "p"), "--no-progress"]) == 0, capsys.readouterr().err
    assert "after pruning" in capsys.readouterr().out


def test_evaluate_on_glue_dev_with_task_from_config(tmp_path, tiny_checkpoint, glue_dir, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(tiny_checkpoint), "--task", "rte", "--data-dir", str(glue_dir),
                 "--out", str(out), "--epochs", "1", "--max-train-examples", "32", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data-dir", str(glue_dir)]) == 0
    assert capsys.readouterr().out.startswith("rte (277 examples): accuracy = ")


def test_the_cli_offers_every_serving_backend():
    from slimbert.evaluation import backends

    from slimbert.config import SEQ2SEQ_BACKENDS

    offered = {}
    for command in ("bench", "report"):
        sub = command_parser(build_parser(command), command)
        (action,) = [a for a in sub._actions if a.dest == "backend"]
        offered[command] = set(action.choices or ())
    assert offered["bench"] == set(backends.BACKENDS)
    assert offered["report"] == set(backends.BACKENDS) | set(SEQ2SEQ_BACKENDS)  # encoders and translation models


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every `slimbert ...` command line in the code blocks of README.md and BENCHMARKS.md, as
    (where, argv). `[--optional parts]` are left out; the seed placeholder S becomes 1."""
    import re
    import shlex

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in (root / "README.md", root / "BENCHMARKS.md"):
        text = "\n".join(re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S))
        text = text.replace("\\\n", " ")
        for number, line in enumerate(text.splitlines(), 1):
            line = re.sub(r"\s#.*$", "", line)  # a trailing comment
            match = re.search(r"(?:^|[|;&(]\s*|-m |/)slimbert (\S.*)$", line.strip())
            if not match or line.lstrip().startswith("#"):
                continue
            rest = re.sub(r"\[[^\]]*\]", "", match.group(1))
            rest = re.sub(r"(--seed |-s)S\b", r"\g<1>1", rest)
            found.append((f"{path.name}:{number}", shlex.split(rest)))
    return found


DOCUMENTED = documented_commands()


def test_documented_commands_are_found():
    commands = {argv[0] for _, argv in DOCUMENTED}
    assert len(DOCUMENTED) > 30 and {"finetune", "distill", "prune", "bench", "report", "quantize"} <= commands


@pytest.mark.parametrize("where,argv", DOCUMENTED, ids=[w for w, _ in DOCUMENTED])
def test_every_documented_command_line_still_parses(where, argv):
    """The options the docs and scripts use are the options the CLI takes (parsing only)."""
    parser = build_parser(only=argv[0])
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{where}: slimbert {' '.join(argv)} -> exit {e.code}")
