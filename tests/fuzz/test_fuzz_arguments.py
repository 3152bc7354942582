"""Fuzzing command-line arguments: each case is a valid command line of one command with one to
three of its options given generated values (numbers at and past their limits, non-numbers,
unknown choices, missing files, directories, undecodable files, malformed specs).

The property: the command succeeds, or stops with one line that names the option (or the file
given to it). A training command that succeeds must have trained with the values given: its
results.json holds them. A few of the same command lines also go through the installed
`slimbert` console script."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzing import assert_success_or_clean_failure, cases, run_cli, tiny_checkpoints, write_train_tsv
from slimbert.cli import build_parser, command_parser

pytestmark = pytest.mark.slow

# Every case runs in a fresh working directory holding these; paths in arguments are relative to it.
BASE = {
    "finetune": ["--model", "enc", "--train-file", "train.tsv", "--dev-file", "dev.tsv", "--out", "out",
                 "--max-steps", "1", "--batch-size", "8", "--no-progress"],
    "distill": ["--teacher", "cls", "--student", "bert:layers=1", "--train-file", "train.tsv", "--out", "out",
                "--cache-dir", "cache", "--max-steps", "1", "--batch-size", "8", "--no-progress"],
    "distill-general": ["--teacher", "enc", "--student", "bert:layers=1", "--corpus", "corpus.txt", "--out",
                        "out", "--max-steps", "1", "--batch-size", "8", "--no-progress"],
    "prune": ["--model", "cls", "--out", "out", "--heads", "0.25", "--train-file", "train.tsv", "--dev-file",
              "dev.tsv", "--importance-examples", "8", "--no-progress"],
    "quantize": ["--model", "cls", "--out", "out"],
    "evaluate": ["--model", "cls", "--dev-file", "dev.tsv"],
    "predict": ["--model", "cls", "input.txt"],
    "vocab": ["--corpus", "corpus.txt", "--size", "60", "--out", "out"],
    "bench": ["--model", "cls", "--dev-file", "dev.tsv", "--no-references", "--no-memory", "--rounds", "1",
              "--seq-lens", "8", "--backend", "torch", "--no-progress", "--out", "out"],
    "export": ["--model", "cls", "--format", "hf", "--out", "out"],
}
# Options whose values only decide how long a case takes, or that reach outside the machine.
FIXED = {"--max-steps", "--no-progress", "--compile", "--report-to", "--augment", "--rounds", "--backend",
         "--no-references", "--no-memory", "--cache-dir", "--help"}
SLOW_INTS = {"--epochs", "--recover-epochs"}  # each unit is a pass over the data

PATHS = ["missing.tsv", "somedir", "notes.txt", "latin1.tsv", "empty.tsv", "train.tsv", "cls", "enc",
         "corpus.txt", "a file", "config_list.json", "config_unknown.json"]
INTS = ["-1", "0", "1", "2", "3", "8", "100", "x", "1.5", ""]
FLOATS = ["nan", "inf", "-inf", "-1", "0", "1e-3", "0.5", "1", "5", "abc", ""]
SPECS = {
    "--student": ["bert:layers=1", "bert:layers=1,heads=0", "bert:layers=0", "bert:layers=9", "bilstm", "cnn",
                  "cnn:filters=0", "bilstm:hidden=-1", "bert:layers=1,hidden=30", "x", "", "cls", "missing"],
    "--layer-map": ["0:1", "0:0,1:1", "5:9", "0:-1", "a", "", "0:1,0:1"],
    "--layers": ["keep=0", "keep=0,1", "keep=9", "keep=", "drop=1", "x"],
    "--init-layers": ["0", "0,1", "1,0", "5", "-1", "0,0", "a", ""],
    "--seq-lens": ["8", "8,16", "0", "-1", "100", "a", ""],
    "--device": ["cpu", "auto", "cuda", "cuda:1", "mps", "foo", ""],
    "--task": ["sst2", "nope", "mnli"],
    "--text-col": ["text", "label", "nope", "0", "", "id"],
    "--label-col": ["text", "label", "nope", "1", "", "id"],
    "--text-pair-col": ["text", "label", "nope", ""],
    "--format": ["tsv", "jsonl", "hf", "csv"],  # not onnx: exporting takes most of a minute
}


def options(command: str) -> list[argparse.Action]:
    parser = command_parser(build_parser(only=command), command)
    return [a for a in parser._actions if a.option_strings and a.option_strings[0] not in FIXED]


OPTIONS = {command: options(command) for command in BASE}  # built once: parsers import the recipes


def values_for(action: argparse.Action):
    flag = action.option_strings[0]
    if action.nargs == 0:  # a flag
        return st.just(None)
    if flag in SPECS:
        return st.sampled_from(SPECS[flag])
    if action.choices:
        return st.sampled_from([*action.choices, "bogus"])
    name = getattr(action.type, "__name__", "")
    if name == "_int":
        return st.sampled_from(["-1", "0", "1", "2", "x"] if flag in SLOW_INTS else INTS)
    if name == "_float":
        return st.sampled_from(FLOATS)
    if name == "_ints":
        return st.sampled_from(SPECS["--init-layers"])
    return st.sampled_from(PATHS)


@st.composite
def command_lines(draw) -> tuple[str, list[str], list[tuple[argparse.Action, str | None]]]:
    command = draw(st.sampled_from(sorted(BASE)))
    chosen = draw(st.lists(st.sampled_from(OPTIONS[command]), min_size=1, max_size=3,
                           unique_by=lambda a: a.dest))
    argv, given_values = [command, *BASE[command]], []
    for action in chosen:
        value = draw(values_for(action))
        argv += [action.option_strings[0]] + ([] if value is None else [value])
        if action.option_strings[0] == "--task":  # never the hub: a local folder, which has no GLUE
            argv += ["--data-dir", "somedir"]
        given_values.append((action, value))
    return command, argv, given_values


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The files every case may name."""
    root = tmp_path_factory.mktemp("args")
    models = tiny_checkpoints(root / "models")
    shutil.copytree(models["encoder"], root / "enc")
    shutil.copytree(models["classifier"], root / "cls")
    write_train_tsv(root / "train.tsv")
    write_train_tsv(root / "dev.tsv", repeat=1)
    (root / "somedir").mkdir()
    (root / "notes.txt").write_text("just some words\nand more\n")
    (root / "latin1.tsv").write_bytes("text\tlabel\ncaf\xe9\tpos\n".encode("latin-1"))
    (root / "empty.tsv").write_bytes(b"")
    (root / "corpus.txt").write_text("the movie was good\nthe plot was bad\n" * 8)
    (root / "input.txt").write_text("a good film\nthe worst plot\n")
    (root / "a file").write_text("not a directory\n")
    (root / "config_list.json").write_text("[1, 2]")
    (root / "config_unknown.json").write_text('{"no_such_option": 1}')
    return root


@contextlib.contextmanager
def working_copy(root: Path):
    """A fresh copy of `root` as the working directory."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "w"
        shutil.copytree(root, work)
        os.chdir(work)
        try:
            yield work
        finally:
            os.chdir(cwd)


def names_of(given_values) -> list[str]:
    names = []
    for action, value in given_values:
        flag = action.option_strings[0]
        names += [flag, flag.lstrip("-"), action.dest, action.dest.replace("_", " ")]
        if value:
            names += [f"'{value}'"] + ([value] if len(value) >= 3 else [])  # a file or column given
    return names


@settings(max_examples=cases("arguments"))
@given(line=command_lines())
def test_arguments_work_or_are_refused_naming_the_option(workdir, line):
    command, argv, given_values = line
    with working_copy(workdir) as work:
        files = [a for a in argv[1:] if not a.startswith("-") and (work / a).exists()]  # a fault may be
        outcome = run_cli(argv)                                  # in a file given, as the options read it
        if not assert_success_or_clean_failure(outcome, *names_of(given_values), *files):
            return
        results = work / "out" / "results.json"
        if command in ("finetune", "distill", "distill-general") and results.exists():
            trained_with = json.loads(results.read_text())["config"]
            for action, value in given_values:
                if action.dest in trained_with:
                    expected = action.const if value is None else action.type(value) if action.type else value
                    assert trained_with[action.dest] == expected, (action.dest, outcome.describe())


# ---------------------------------------------------------------- through the console script

SCRIPT_CASES = [
    (["finetune", "--model", "enc", "--train-file", "somedir", "--out", "out"], None, "somedir"),
    (["predict", "--model", "cls"], "a good film\ncaf\xe9\n".encode("latin-1"), "stdin:2:"),
]


@pytest.mark.parametrize("argv, stdin, named", SCRIPT_CASES)
def test_the_console_script_prints_one_line_and_no_traceback(workdir, argv, stdin, named):
    script = shutil.which("slimbert", path=str(Path(sys.executable).parent)) or shutil.which("slimbert")
    assert script, "no `slimbert` script installed: pip install -e ."
    with working_copy(workdir):
        done = subprocess.run([script, *argv], input=stdin, capture_output=True, timeout=120)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode != 0 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and named in err, err
