"""The Trainer: invariances (accumulation, resume) and robustness (NaN losses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, synthetic_data, tiny_config

from slimbert import CheckpointError, build_model, load_model
from slimbert.data import batch_sources
from slimbert.data.batching import collate
from slimbert.data.masking import MLMMasker
from slimbert.errors import ConfigError
from slimbert.training.losses import hard_cross_entropy
from slimbert.training.objectives import ClassificationObjective, MaskedLMObjective
from slimbert.training.trainer import TrainConfig, Trainer, TrainingError


def tiny_classifier(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return build_model(tiny_config(head="classification", hidden_dropout_prob=dropout,
                                   attention_probs_dropout_prob=dropout))


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run(tmp_path, data, objective=None, model=None, evaluate=None, **cfg) -> tuple[Trainer, torch.nn.Module]:
    model = model or tiny_classifier(dropout=cfg.pop("dropout", 0.0))
    config = TrainConfig(**{"epochs": 1, "lr": 1e-3, "warmup_ratio": 0.0, "progress": False, **cfg})
    trainer = Trainer(model, objective or ClassificationObjective(), data, config, tmp_path,
                      evaluate=evaluate, main_metric="score" if evaluate else None)
    return trainer, model


def test_accumulated_micro_batches_equal_one_full_batch(tmp_path):
    data = synthetic_data(n=8, length=7)  # equal lengths: one window, so both runs see the same 8 examples
    t_full, full = run(tmp_path / "a", data, batch_size=8, grad_accum=1)
    t_acc, acc = run(tmp_path / "b", data, batch_size=4, grad_accum=2)
    assert [sorted(i for b in s for i in b) for s in t_full.source.epoch_steps(0)] == \
        [sorted(i for b in s for i in b) for s in t_acc.source.epoch_steps(0)]
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
    with pytest.raises(CheckpointError, match="batch_size=4.*batch_size=8"):
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
    from slimbert.recipes.common import score

    # bf16 is forced: the code path is under test, on any CPU (emulated bf16 is slow, not wrong)
    t, model = run(tmp_path, data, epochs=6, batch_size=16, lr=3e-3, precision=precision, force=precision == "bf16")
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
    moved = [k for k in rank0 if "encoder.layers." in k and not torch.equal(rank0[k], init[k])]
    assert {k.split(".")[3] for k in moved} == {"0", "1", "2", "3"}  # every layer trained


def test_lamb_trains_the_synthetic_task(tmp_path):
    from slimbert.recipes.common import score

    data, held_out = synthetic_data(n=256), synthetic_data(n=128, seed=1)
    # LAMB's step is lr x the weight norm of each tensor, so its lr reads larger than Adam's.
    t, model = run(tmp_path, data, epochs=6, batch_size=16, lr=3e-2, optimizer="lamb")
    t.fit()
    assert score(model, held_out, ("accuracy",), pad_id=0)["accuracy"] > 0.9


# ------------------------------------------------- batch sources, step-based stops, exact resume


class Recorder:
    """Wraps an objective and keeps the input ids of every micro-batch it is given."""

    def __init__(self, objective):
        self.objective, self.seen = objective, []

    def __call__(self, model, batch):
        self.seen.append(batch["input_ids"].clone())
        return self.objective(model, batch)


def classifier_score(model):
    """A deterministic stand-in for dev accuracy: moves with every update of the classifier."""
    return {"score": float(model.classifier.weight.detach().sum())}


def test_max_steps_stops_mid_epoch_and_overrides_epochs(tmp_path):
    data = synthetic_data(n=48)  # 6 steps of 8 per epoch
    t, _ = run(tmp_path / "a", data, batch_size=8, epochs=3, max_steps=4)
    assert t.total_steps() == 4
    state = t.fit()
    assert (state.global_step, state.epoch, state.step_in_epoch) == (4, 0, 4)
    assert [h["step"] for h in state.history] == [4]
    t, _ = run(tmp_path / "b", data, batch_size=8, epochs=1, max_steps=8)  # runs into a second epoch
    state = t.fit()
    assert (state.global_step, state.epoch) == (8, 1)
    assert [(h["epoch"], h["step"]) for h in state.history] == [(1, 6), (2, 8)]
    assert t.fit(resume=True).global_step == 8  # a finished run resumes to nothing more


class EndlessStream:
    """A source without epochs (like a streamed corpus): its position is a single counter."""

    steps_per_epoch = None

    def __init__(self, data, batch_size):
        self.data, self.batch_size, self.position = data, batch_size, 0

    def epoch_batches(self, epoch):
        while True:
            start = self.position * self.batch_size % len(self.data)
            self.position += 1
            yield [collate(self.data, range(start, min(start + self.batch_size, len(self.data))), 0)]

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def test_a_source_without_epochs_runs_for_max_steps(tmp_path):
    data = synthetic_data(n=32)
    stream = EndlessStream(data, 8)
    with pytest.raises(ConfigError, match="max_steps"):
        run(tmp_path, stream, batch_size=8)
    t, _ = run(tmp_path, stream, batch_size=8, max_steps=10, save_every_steps=5)
    state = t.fit()
    assert state.global_step == 10 and stream.position == 10 and state.epoch == 0
    saved = torch.load(tmp_path / "last" / "training_state.pt", weights_only=True)
    assert saved["source"] == {"position": 10}


def test_evaluates_and_saves_every_n_steps_and_at_epoch_ends(tmp_path):
    data = synthetic_data(n=48)  # 6 steps per epoch, 12 in all
    steps_evaluated = []

    def evaluate(model):
        steps_evaluated.append(t.state.global_step)
        model.eval()
        return classifier_score(model)

    t, model = run(tmp_path, data, objective=CrashAfter(ClassificationObjective(), 12), evaluate=evaluate,
                   epochs=2, batch_size=8, eval_every_steps=4, save_every_steps=5)
    with pytest.raises(Interrupt):  # during step 12
        t.fit()
    assert steps_evaluated == [4, 6, 8]  # every 4 steps and at the end of epoch 1, never twice
    assert [h["step"] for h in t.state.history] == [4, 6, 8]
    assert model.training  # back to training after each evaluation
    saved = torch.load(tmp_path / "last" / "training_state.pt", weights_only=True)
    assert saved["state"]["global_step"] == 10 and saved["source"]["step"] == 4  # step 10 = epoch 2, step 4
    assert saved["state"]["best_step"] in (4, 6, 8)


def test_resumed_mid_epoch_run_equals_uninterrupted_bit_for_bit_without_replaying_data(tmp_path, monkeypatch):
    """grad_accum 2, dropout, eval every 3 and save every 4 steps; killed during step 10, i.e. in
    epoch 2 after its checkpoint at step 8. Weights, loss history and the batches seen after the
    restart must be those of the uninterrupted run, and no batch before step 9 is produced again."""
    data = synthetic_data(n=48)
    cfg = dict(epochs=2, batch_size=4, grad_accum=2, save_every_steps=4, eval_every_steps=3,
               log_every_steps=2, dropout=0.1, warmup_ratio=0.2)

    full = Recorder(ClassificationObjective())
    t, uninterrupted = run(tmp_path / "full", data, objective=full, evaluate=classifier_score, **cfg)
    history = t.fit().history
    assert len(full.seen) == 24

    t, _ = run(tmp_path / "crash", data, objective=CrashAfter(ClassificationObjective(), 19),
               evaluate=classifier_score, **cfg)
    with pytest.raises(Interrupt):
        t.fit()

    collated = []
    monkeypatch.setattr(batch_sources, "collate", lambda *a: collated.append(a[1]) or collate(*a))
    resumed_objective = Recorder(ClassificationObjective())
    t, resumed = run(tmp_path / "crash", data, objective=resumed_objective, evaluate=classifier_score,
                     model=tiny_classifier(dropout=0.1, seed=123),
                     **{k: v for k, v in cfg.items() if k != "dropout"})
    state = t.fit(resume=True)
    assert state.global_step == 12
    assert len(collated) == 8 and len(resumed_objective.seen) == 8  # steps 9-12, 2 micro-batches each
    for a, b in zip(resumed_objective.seen, full.seen[16:]):
        assert torch.equal(a, b)
    a, b = params(uninterrupted), params(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"

    def comparable(h):
        return [{k: v for k, v in r.items() if k != "seconds" and not k.endswith("_per_s")} for r in h]  # timings

    assert [r["step"] for r in history] == [3, 6, 9, 12]
    assert comparable(state.history) == comparable(history)  # train losses and scores, bit for bit
    logged = [json.loads(line) for line in (tmp_path / "crash" / "train_log.jsonl").read_text().splitlines()]
    assert comparable(logged) == comparable(history)  # the records after the checkpoint are not doubled


@pytest.mark.parametrize("name,value", [
    ("batch_size", 0), ("epochs", -3), ("warmup_ratio", 7), ("lr", 0.0), ("lr", -1e-3), ("lr", float("nan")),
    ("lr", float("inf")), ("weight_decay", -0.01), ("save_every_steps", -1), ("eval_every_steps", -1),
    ("log_every_steps", 0), ("max_steps", -5), ("max_grad_norm", -1.0), ("max_grad_norm", float("nan")),
    ("grad_accum", 0), ("precision", "fp8"), ("optimizer", "sgd"), ("max_bad_steps", 0), ("epochs", 0),
])
def test_train_config_rejects_bad_values_naming_the_field(name, value):
    with pytest.raises(ConfigError, match=rf"^{name} must be") as e:
        TrainConfig(**{name: value})
    assert isinstance(e.value, ValueError)


def test_train_config_takes_max_steps_instead_of_epochs():
    assert TrainConfig(epochs=0, max_steps=100).max_steps == 100


def test_sparse_mlm_loss_equals_the_dense_loss(tiny_tokenizer):
    torch.manual_seed(0)
    model = build_model(tiny_config(head="mlm"))
    data = synthetic_data(n=8)
    batch = collate(data, range(8), pad_id=0)
    masker = MLMMasker(mask_id=4, vocab_size=model.config.vocab_size, special_ids=[0, 1, 2, 3, 4],
                       probability=0.3)
    head_rows = []
    model.cls.predictions.register_forward_hook(lambda m, args, out: head_rows.append(args[0].shape[0]))

    torch.manual_seed(1)
    sparse, _ = MaskedLMObjective(masker)(model, batch)
    sparse.backward()
    sparse_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()

    torch.manual_seed(1)  # the same masks
    masked_ids, labels = masker(batch["input_ids"], batch["attention_mask"])
    logits = model(masked_ids, batch["attention_mask"], batch["token_type_ids"]).logits  # (B, T, V)
    dense = hard_cross_entropy(logits, labels)
    dense.backward()

    n_masked = int((labels != -100).sum())
    assert head_rows[0] == n_masked and 0 < n_masked < batch["attention_mask"].sum()  # only the masked rows
    torch.testing.assert_close(sparse, dense)
    for k, p in model.named_parameters():
        torch.testing.assert_close(sparse_grads[k], p.grad, msg=f"{k}: gradients differ")
