"""The Trainer: invariances (accumulation, resume) and robustness (NaN losses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, synthetic_data, tiny_config

from slimbert import build_model, load_model
from slimbert.training.objectives import ClassificationObjective
from slimbert.training.trainer import TrainConfig, Trainer, TrainingError


def tiny_classifier(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return build_model(tiny_config(head="classification", hidden_dropout_prob=dropout,
                                   attention_probs_dropout_prob=dropout))


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run(tmp_path, data, objective=None, model=None, **cfg) -> tuple[Trainer, torch.nn.Module]:
    model = model or tiny_classifier(dropout=cfg.pop("dropout", 0.0))
    config = TrainConfig(**{"epochs": 1, "lr": 1e-3, "warmup_ratio": 0.0, "progress": False, **cfg})
    trainer = Trainer(model, objective or ClassificationObjective(), data, config, tmp_path)
    return trainer, model


def test_accumulated_micro_batches_equal_one_full_batch(tmp_path):
    data = synthetic_data(n=8, length=7)  # equal lengths: one window, so both runs see the same 8 examples
    t_full, full = run(tmp_path / "a", data, batch_size=8, grad_accum=1)
    t_acc, acc = run(tmp_path / "b", data, batch_size=4, grad_accum=2)
    assert [sorted(i for b in s for i in b) for s in t_full.epoch_steps(0)] == \
        [sorted(i for b in s for i in b) for s in t_acc.epoch_steps(0)]
    t_full.fit()
    t_acc.fit()
    a, b = params(full), params(acc)
    assert any(not torch.equal(a[k], params(tiny_classifier())[k]) for k in a), "training changed nothing"
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


class Interrupt(Exception):
    pass


class CrashAfter:
    """Wraps an objective and raises on its n-th call, as a killed job would stop."""

    def __init__(self, objective, n):
        self.objective, self.n, self.calls = objective, n, 0

    def __call__(self, model, batch):
        self.calls += 1
        if self.calls == self.n:
            raise Interrupt
        return self.objective(model, batch)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    data = synthetic_data(n=48)
    cfg = dict(epochs=2, batch_size=8, grad_accum=1, save_every_steps=4, dropout=0.1)

    t, uninterrupted = run(tmp_path / "full", data, **cfg)
    t.fit()

    # 6 steps per epoch; crash during step 9 (epoch 2), last checkpoint at step 8.
    t, _ = run(tmp_path / "crash", data, objective=CrashAfter(ClassificationObjective(), 9), **cfg)
    with pytest.raises(Interrupt):
        t.fit()
    assert (tmp_path / "crash" / "last" / "training_state.pt").exists()

    t, resumed = run(tmp_path / "crash", data, model=tiny_classifier(dropout=0.1, seed=123),
                     **{k: v for k, v in cfg.items() if k != "dropout"})
    state = t.fit(resume=True)
    assert state.global_step == 12 and state.epoch == 2
    a, b = params(uninterrupted), params(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert torch.equal(load_model(tmp_path / "crash" / "last", check_vocab=False).classifier.weight,
                       resumed.classifier.weight.cpu())


def test_resume_refuses_a_different_batch_size(tmp_path):
    data = synthetic_data(n=16)
    t, _ = run(tmp_path, data, batch_size=8)
    t.fit()
    t, _ = run(tmp_path, data, batch_size=4)
    with pytest.raises(Exception, match="batch_size=4.*batch_size=8"):
        t.fit(resume=True)


class NaNOn:
    def __init__(self, objective, bad_calls):
        self.objective, self.bad, self.calls = objective, set(bad_calls), 0

    def __call__(self, model, batch):
        self.calls += 1
        loss, metrics = self.objective(model, batch)
        return (loss * float("nan") if self.calls in self.bad else loss), metrics


def test_nan_steps_are_skipped_and_counted(tmp_path):
    data = synthetic_data(n=64)
    t, model = run(tmp_path, data, objective=NaNOn(ClassificationObjective(), {2, 5}), batch_size=8)
    state = t.fit()
    assert state.skipped_steps == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_repeated_nan_stops_the_run_with_a_message(tmp_path):
    data = synthetic_data(n=64)
    t, _ = run(tmp_path, data, objective=NaNOn(ClassificationObjective(), range(100)), batch_size=8,
               max_bad_steps=3)
    with pytest.raises(TrainingError, match="NaN/inf for 3 steps in a row"):
        t.fit()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_learns_the_synthetic_task(tmp_path, precision):
    data = synthetic_data(n=256)
    held_out = synthetic_data(n=128, seed=1)
    from slimbert.jobs import score

    t, model = run(tmp_path, data, epochs=6, batch_size=16, lr=3e-3, precision=precision)
    before = score(model, held_out, ("accuracy",), pad_id=0)["accuracy"]
    t.fit()
    after = score(model, held_out, ("accuracy",), pad_id=0)["accuracy"]
    assert before < 0.7 and after > 0.9


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tmp_path):
    """torchrun, 2 CPU processes (gloo): each takes half of every global batch, DDP averages the
    gradients, so the result equals one process that sees the whole batch of the same examples."""
    script = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           str(script), str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = load_model(tmp_path / "ddp" / "last", check_vocab=False)
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single"), "--single"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    one = load_model(tmp_path / "single" / "last", check_vocab=False)
    for (k, a), b in zip(ddp.state_dict().items(), one.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=f"{k} differs")


@pytest.mark.slow
def test_layerdrop_trains_under_two_process_ddp(tmp_path):
    """With LayerDrop a step leaves the skipped layers without gradients; DDP must accept that
    (it raises on the second step otherwise), and both replicas must stay identical."""
    from safetensors.torch import load_file

    script = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29534",
           str(script), str(tmp_path), "--layerdrop", "0.5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    torch.manual_seed(0)
    init = build_model(tiny_config(head="classification", layerdrop=0.5, num_hidden_layers=4)).state_dict()
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], msg=f"{key}: the replicas diverged")
    moved = [k for k in rank0 if "encoder.layer." in k and not torch.equal(rank0[k], init[k])]
    assert {k.split(".")[3] for k in moved} == {"0", "1", "2", "3"}  # every layer trained


def test_lamb_step_matches_the_paper_by_hand():
    from slimbert.training.optim import Lamb

    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    opt = Lamb([w], lr=0.1, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0)
    w.grad = torch.tensor([1.0, -2.0])
    opt.step()
    # step 1: m_hat = g, v_hat = g^2, so r = g / (|g| + eps) ~ sign(g), ||r|| = sqrt(2)
    r = torch.tensor([1.0, -2.0]) / (torch.tensor([1.0, 2.0]) + 1e-6)
    want = torch.tensor([3.0, 4.0]) - 0.1 * (5.0 / r.norm()) * r
    torch.testing.assert_close(w.detach(), want)


def test_lamb_trains_the_synthetic_task(tmp_path):
    from slimbert.jobs import score

    data, held_out = synthetic_data(n=256), synthetic_data(n=128, seed=1)
    # LAMB's step is lr x the weight norm of each tensor, so its lr reads larger than Adam's.
    t, model = run(tmp_path, data, epochs=6, batch_size=16, lr=3e-2, optimizer="lamb")
    t.fit()
    assert score(model, held_out, ("accuracy",), pad_id=0)["accuracy"] > 0.9
