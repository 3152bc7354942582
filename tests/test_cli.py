"""The `slimbert` command line: help, the finetune -> evaluate -> predict path, and error messages."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from slimbert.cli import build_parser, main

COMMANDS = ["finetune", "distill", "distill-general", "evaluate", "predict", "vocab"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: slimbert " + command in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "slimbert", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and all(c in out.stdout for c in COMMANDS)


def test_unknown_option_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--out", "x", "--learning-rate", "1"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --learning-rate" in capsys.readouterr().err


def test_parser_validates_numbers():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "--out", "x", "--epochs", "0"])


def test_finetune_evaluate_predict_on_own_csv(tmp_path, tiny_checkpoint, csv_task, capsys, monkeypatch):
    train, dev = csv_task
    out = tmp_path / "ft"
    cols = ["--text-col", "review", "--label-col", "sentiment"]
    assert main(["finetune", "--model", str(tiny_checkpoint), "--train-file", str(train), "--dev-file",
                 str(dev), *cols, "--out", str(out), "--epochs", "2", "--batch-size", "8", "--lr", "1e-3",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "best dev accuracy" in printed and "sequences/s" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["architectures"] == [
        "BertForSequenceClassification"]
    results = json.loads((out / "results.json").read_text())
    assert results["best_epoch"] in (1, 2) and len(results["history"]) == 2
    assert (out / "last" / "training_state.pt").exists()

    assert main(["evaluate", "--model", str(out), "--dev-file", str(dev), *cols, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["examples"] == 8 and metrics["accuracy"] == pytest.approx(results["best"])

    monkeypatch.setattr(sys, "stdin", io.StringIO("a great film\n\nthe worst plot\n"))
    assert main(["predict", "--model", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:
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


def test_evaluate_on_glue_dev_with_task_from_config(tmp_path, tiny_checkpoint, glue_dir, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(tiny_checkpoint), "--task", "rte", "--data-dir", str(glue_dir),
                 "--out", str(out), "--epochs", "1", "--max-train-examples", "32", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data-dir", str(glue_dir)]) == 0
    assert capsys.readouterr().out.startswith("rte (277 examples): accuracy = ")


def test_the_cli_names_every_serving_backend():
    from slimbert.cli import BACKENDS
    from slimbert.evaluation import backends

    assert BACKENDS == backends.BACKENDS
