"""Kill-and-resume at random points: `slimbert finetune` runs in a subprocess that checkpoints
every step and is SIGKILLed at a generated step, a generated moment into the next one (so kills
land mid-step, mid-save and mid-swap of `last/`). Then the output directory must load, and
`--resume` must end with exactly the weights of the run that was never interrupted: its last
checkpoint and its best model, bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fuzzing import cases, run_cli, tiny_checkpoints, write_train_tsv
from slimbert.checkpoint import load_model, read_state_dict
from slimbert.io import existing_dir

pytestmark = pytest.mark.slow

STEPS = 32  # 64 training rows in batches of 4, 2 epochs
EXACT: list[int] = []  # the kill steps at which resume was exact (printed at the end of the module)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    encoder = tiny_checkpoints(root / "models")["encoder"]
    argv = ["finetune", "--model", encoder, "--train-file", write_train_tsv(root / "train.tsv", repeat=8),
            "--dev-file", write_train_tsv(root / "dev.tsv"), "--epochs", "2", "--batch-size", "4",
            "--lr", "1e-3", "--eval-every-steps", "5", "--save-every-steps", "1", "--no-progress"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses (OMP_NUM_THREADS=1): the same kernels, the same sums
    try:
        reference = run_cli([*argv, "--out", root / "reference"])
    finally:
        torch.set_num_threads(threads)
    assert reference.code == 0, reference.describe()
    yield argv, root / "reference"
    if EXACT:
        print(f"\nkill-and-resume: resume was exact at {len(EXACT)} kill points (steps {sorted(EXACT)})")


def step_of(out: Path) -> int:
    """The global step of OUT/last, or -1 while there is none (or it is being swapped)."""
    try:
        return torch.load(out / "last" / "training_state.pt", weights_only=True)["state"]["global_step"]
    except Exception:
        return -1


def kill_at(argv: list, out: Path, step: int, delay: float) -> bool:
    """Run `slimbert ARGV --out OUT` and SIGKILL it `delay` seconds after its step-`step`
    checkpoint appears. Returns whether the kill landed before the run ended."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "slimbert", *map(str, argv), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, deadline = -1, time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen = max(seen, step_of(out))
            if seen >= step:
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode in (0, -signal.SIGKILL), f"the run failed: {err.decode()[-2000:]}"
    return proc.returncode == -signal.SIGKILL


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return read_state_dict(directory)


@settings(max_examples=cases("kill_points"))
@given(step=st.integers(1, STEPS - 4), delay=st.floats(0, 0.03))
def test_a_run_killed_at_any_step_resumes_to_exactly_the_uninterrupted_run(job, step, delay):
    argv, reference = job
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        assume(kill_at(argv, out, step, delay))  # (a run faster than the delay was not killed)
        last = existing_dir(out / "last")
        assert last is not None, "no checkpoint survived the kill"
        load_model(last)  # the output directory loads
        if (out / "config.json").exists():
            load_model(out)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            resumed = run_cli([*argv, "--out", out, "--resume"])
        finally:
            torch.set_num_threads(threads)
        assert resumed.code == 0, resumed.describe()
        for name in ("last", "."):
            ours, theirs = weights(out / name), weights(reference / name)
            assert ours.keys() == theirs.keys()
            for key in theirs:
                assert torch.equal(ours[key], theirs[key]), f"{name}/{key} differs: killed at step {step}"
    EXACT.append(step)
