"""Checkpoint averaging: a run keeps its last epochs' models (`--keep-epochs`), and `slimbert
average` / `train-seq2seq --average-last` average them. Kept epochs are the models of those
epochs, the average is the elementwise mean, and what cannot be averaged is a one-line error."""

from __future__ import annotations

import json

import pytest
import torch
from test_generation import PAD, tiny_transformer
from test_seq2seq import copy_task, multi30k_dir, multi30k_sample, train_args  # noqa: F401 (fixtures)

from slimbert import CheckpointError, load_model, save_checkpoint
from slimbert.checkpoint import average_checkpoints
from slimbert.cli import main
from slimbert.data.parallel import parallel_batches
from slimbert.models import build_model
from slimbert.training.objectives import Seq2SeqObjective
from slimbert.training.trainer import TrainConfig, Trainer, epoch_checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory):
    """A tiny Transformer trained 3 epochs keeping the last 2, with its weights at each epoch end."""
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = build_model(tiny_transformer(dropout=0.1))
    config = TrainConfig(epochs=3, batch_size=8, lr=3e-3, warmup_ratio=0.1, keep_epochs=2, progress=False)
    source = parallel_batches(copy_task(), config.batch_size, seed=config.seed, pad_id=PAD)
    at_epoch_end = []

    def evaluate(m):  # called at every epoch end: a copy of the weights then
        at_epoch_end.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"score": float(len(at_epoch_end))}

    Trainer(model, Seq2SeqObjective(0.1), source, config, out, evaluate=evaluate, main_metric="score").fit()
    return out, at_epoch_end


def test_kept_epochs_are_the_models_of_the_last_epochs(kept_run):
    out, at_epoch_end = kept_run
    kept = epoch_checkpoints(out)
    assert [k.name for k in kept] == ["epoch-002", "epoch-003"]  # epoch 1 removed once 3 was kept
    for path, weights in zip(kept, at_epoch_end[1:]):
        for k, v in load_model(path).state_dict().items():
            assert torch.equal(v, weights[k]), (path.name, k)
    assert any(not torch.equal(v, at_epoch_end[2][k]) for k, v in at_epoch_end[1].items())  # it trained


def test_the_average_is_the_elementwise_mean(kept_run):
    out, at_epoch_end = kept_run
    averaged = average_checkpoints(epoch_checkpoints(out)).state_dict()
    for k, v in averaged.items():
        expected = (at_epoch_end[1][k].double() + at_epoch_end[2][k].double()) / 2
        torch.testing.assert_close(v, expected.float(), rtol=0, atol=1e-7)
    alone = average_checkpoints(epoch_checkpoints(out)[-1:]).state_dict()
    assert all(torch.equal(v, at_epoch_end[2][k]) for k, v in alone.items())


def test_average_command_writes_a_checkpoint_that_translates(kept_run, tmp_path, capsys):
    out, at_epoch_end = kept_run
    assert main(["average", str(out), "--last", "2", "--out", str(tmp_path / "avg")]) == 0
    assert "average of 2 checkpoints" in capsys.readouterr().out
    by_cli = load_model(tmp_path / "avg").state_dict()
    direct = average_checkpoints(epoch_checkpoints(out)).state_dict()
    assert all(torch.equal(v, direct[k]) for k, v in by_cli.items())
    kept = [str(k) for k in epoch_checkpoints(out)]
    assert main(["average", *kept, "--out", str(tmp_path / "avg2")]) == 0  # the same, named one by one
    assert all(torch.equal(v, direct[k]) for k, v in load_model(tmp_path / "avg2").state_dict().items())


def test_what_cannot_be_averaged_is_a_one_line_error(kept_run, tmp_path, capsys):
    out, _ = kept_run
    other = save_checkpoint(build_model(tiny_transformer(hidden_size=16, num_attention_heads=2)), None,
                            tmp_path / "other")
    kept = [str(k) for k in epoch_checkpoints(out)]
    for argv, message in (([str(tmp_path)], "no epoch models"),
                          ([str(out), "--last", "3"], "fewer than --last 3"),
                          ([*kept, "--last", "1"], "--last picks epochs of one run"),
                          ([kept[0], str(other)], "config.json differs")):
        assert main(["average", *argv, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    with pytest.raises(CheckpointError, match="no checkpoint"):
        average_checkpoints([])


@pytest.mark.slow
def test_train_seq2seq_average_last_scores_the_average(tmp_path, multi30k_sample, capsys):
    out = tmp_path / "model"
    assert main(train_args(multi30k_sample, out, "--epochs", "3", "--average-last", "2")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["averaged"]["epochs"] == [2, 3] and results["config"]["keep_epochs"] == 2
    assert {"bleu", "legacy_bleu", "nll"} <= set(results["averaged"])
    assert "average of 2 epochs" in capsys.readouterr().out
    assert main(["evaluate-seq2seq", "--model", str(out / "averaged"), "--src", str(multi30k_sample["valid_src"]),
                 "--ref", str(multi30k_sample["valid_tgt"]), "--beam", "1", "--json", "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["sacrebleu"] == pytest.approx(results["averaged"]["bleu"])
