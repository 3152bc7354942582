"""What the fuzz suite shares: Hypothesis profiles, tiny checkpoints, and `slimbert` run in-process
with its exit status, stdout and stderr captured.

The property every fuzz test checks: a command either succeeds, or exits non-zero with exactly
one line on stderr that names the file, line, field or argument at fault. Never a traceback.

Profiles: the default ("ci") tries `CASES["ci"]` generated cases per run, with a fixed seed so
that a failure in CI is the same failure on a laptop. `SLIMBERT_FUZZ=long` draws fresh random
cases, many more of them (the "long" column).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from hypothesis import HealthCheck, settings

from conftest import tiny_config, tiny_vocab
from slimbert import Tokenizer, build_model, save_checkpoint

PROFILE = "long" if os.environ.get("SLIMBERT_FUZZ") == "long" else "ci"

# Generated cases per test, per profile (README "Robustness" quotes these numbers).
# Each of the 16 kinds of fault in a training file gets `data_files_per_fault` cases.
CASES = {
    "ci": {"data_files_valid": 10, "data_files_per_fault": 2, "predict_input": 25, "checkpoint_files": 30,
           "arguments": 50, "kill_points": 3},
    "long": {"data_files_valid": 40, "data_files_per_fault": 10, "predict_input": 150,
             "checkpoint_files": 120, "arguments": 200, "kill_points": 8},
}

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much, HealthCheck.large_base_example])
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
settings.register_profile("long", **_COMMON)
settings.load_profile(PROFILE)


def cases(kind: str) -> int:
    """How many cases the test of `kind` generates in this run's profile."""
    return CASES[PROFILE][kind]


# ------------------------------------------------------------------------------ running slimbert


@dataclass
class Outcome:
    argv: list[str]
    code: int
    out: str
    err: str

    def describe(self) -> str:
        return (f"slimbert {' '.join(self.argv)!r} -> {self.code}\n"
                f"stdout: {self.out[-600:]!r}\nstderr: {self.err!r}")


def run_cli(argv: list, stdin: bytes | None = None) -> Outcome:
    """`slimbert ARGV` in this process, as `slimbert.cli.main(argv)`; `stdin` is given as the
    bytes a pipe would carry. Any exception that escapes `main` is what a user would see as a
    traceback: it fails the test."""
    from slimbert.cli import main

    argv = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    threads, old_stdin = torch.get_num_threads(), sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")  # as a real pipe: bytes below text
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    except Exception as e:  # what the console script would print as a traceback
        raise AssertionError(f"slimbert {' '.join(argv)!r} raised {type(e).__name__}: {e}\n"
                             f"stderr so far: {err.getvalue()!r}") from e
    finally:
        sys.stdin = old_stdin
        torch.set_num_threads(threads)  # `--threads` of one case must not leak into the next
    return Outcome(argv, code, out.getvalue(), err.getvalue())


def assert_clean_failure(outcome: Outcome, *names: str) -> str:
    """Non-zero exit, one line on stderr, no traceback, and the line names one of `names`."""
    assert outcome.code != 0, "expected an error\n" + outcome.describe()
    assert "Traceback" not in outcome.err, outcome.describe()
    lines = outcome.err.splitlines()
    assert len(lines) == 1, "expected one line on stderr\n" + outcome.describe()
    line = lines[0]
    assert line.startswith("slimbert"), outcome.describe()
    if names:
        named = [n for n in map(str, names) if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", line)]
        assert named, f"the error names none of {names}\n" + outcome.describe()
    return line


def assert_success_or_clean_failure(outcome: Outcome, *names: str) -> bool:
    """The fuzz property. Returns whether the command succeeded."""
    if outcome.code == 0:
        assert "Traceback" not in outcome.err, outcome.describe()
        return True
    assert_clean_failure(outcome, *names)
    return False


# ----------------------------------------------------------------------------- tiny checkpoints

LABELS = {0: "neg", 1: "pos"}


def tiny_checkpoints(root: Path) -> dict[str, Path]:
    """A bare tiny encoder ("encoder", what fine-tuning starts from) and a tiny two-class
    classifier ("classifier": neg/pos) saved under `root`."""
    tokenizer = Tokenizer(tiny_vocab(), lowercase=True, max_length=64)
    torch.manual_seed(0)
    dropout = dict(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)  # resume must replay it exactly
    encoder = save_checkpoint(build_model(tiny_config(**dropout)), tokenizer, root / "encoder")
    torch.manual_seed(1)
    classifier = save_checkpoint(build_model(tiny_config(head="classification", id2label=dict(LABELS))),
                                 tokenizer, root / "classifier")
    return {"encoder": encoder, "classifier": classifier}


TRAIN_ROWS = ["a great fun movie", "the worst film", "great actors and a good plot", "boring and awful",
              "very good , the best", "terrible plot , bad actors", "i love this film", "i hate it"]


def write_train_tsv(path: Path, repeat: int = 2) -> Path:
    """A small valid neg/pos TSV (text, label)."""
    rows = [f"{t}\t{'pos' if i % 2 == 0 else 'neg'}" for i, t in enumerate(TRAIN_ROWS * repeat)]
    path.write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path
