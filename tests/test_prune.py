"""Structured pruning: physically smaller models that compute what the masked model computes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import padded_batch, synthetic_data, tiny_config

from slimbert import build_model, load_model, save_checkpoint
from slimbert.compress.prune import (PruneError, dense_equivalent, drop_layers, gated, importance, lowest,
                                     masks, prune_ffn, prune_heads)
from slimbert.compress.students import StudentSpecError
from slimbert.data.batching import collate
from slimbert.models import count_parameters
from slimbert.training.objectives import ClassificationObjective


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(tiny_config(head="classification", num_hidden_layers=3)).eval()


@pytest.fixture
def batch():
    ids, mask = padded_batch([[2, 10, 11, 12, 13, 3], [2, 14, 15, 3], [2, 16, 3]])
    return {"input_ids": ids, "attention_mask": mask}


def test_pruned_model_computes_what_the_masked_model_computes(model, batch):
    heads = {0: [1], 1: [0, 2], 2: [3]}
    neurons = {0: list(range(0, 64, 3)), 2: [5, 6, 7]}
    with torch.no_grad(), gated(model, masks(model, heads, neurons)):
        masked = model(**batch)
    pruned = prune_ffn(prune_heads(model, heads), neurons)
    with torch.no_grad():
        out = pruned(**batch, output_attentions=True)
    torch.testing.assert_close(out.last_hidden_state, masked.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits, masked.logits, atol=1e-5, rtol=1e-5)
    # Physically smaller, and the config says how.
    assert [layer.attn.num_heads for layer in pruned.layers] == [3, 2, 3]
    assert pruned.layers[1].attn.q_proj.weight.shape == (16, 32)
    assert pruned.config.pruned_heads == {0: [1], 1: [0, 2], 2: [3]}
    assert pruned.config.intermediate_sizes == [64 - 22, 64, 61]
    assert out.attentions[1].shape[1] == 2
    assert count_parameters(pruned) < count_parameters(model)
    # Unmasked, the original model computes something else: the masks did matter.
    with torch.no_grad():
        assert not torch.allclose(model(**batch).last_hidden_state, masked.last_hidden_state, atol=1e-2)


def test_pruning_twice_records_heads_by_their_original_index(model, batch, tmp_path, tiny_tokenizer):
    once = prune_heads(model, {0: [1]})  # layer 0 keeps heads 0, 2, 3
    twice = prune_heads(once, {0: [1]})  # index 1 now is original head 2
    assert twice.config.pruned_heads == {0: [1, 2]}
    with torch.no_grad(), gated(model, masks(model, {0: [1, 2]})):
        masked = model(**batch).last_hidden_state
    torch.testing.assert_close(twice(**batch).last_hidden_state, masked, atol=1e-5, rtol=1e-5)
    # The checkpoint reloads with no special code, and says it is not stock-transformers-shaped.
    save_checkpoint(prune_ffn(twice, {1: [0, 1]}), tiny_tokenizer, tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["pruned_heads"] == {"0": [1, 2]} and config["intermediate_sizes"] == [64, 62, 64]
    assert config["model_type"] == "slimbert_bert"
    reloaded = load_model(tmp_path / "p")
    torch.testing.assert_close(reloaded(**batch).logits, prune_ffn(twice, {1: [0, 1]})(**batch).logits)


def test_pruning_refuses_to_empty_a_layer_or_name_missing_units(model):
    with pytest.raises(PruneError, match="lose all its heads"):
        prune_heads(model, {0: [0, 1, 2, 3]})
    with pytest.raises(PruneError, match="layer 7 does not exist"):
        prune_heads(model, {7: [0]})
    with pytest.raises(PruneError, match="not distinct indices"):
        prune_ffn(model, {0: [64]})


def test_dense_equivalent_is_exact_and_loads_in_transformers(model, batch, tmp_path, tiny_tokenizer):
    transformers = pytest.importorskip("transformers")
    from slimbert.compress.export import export_hf

    pruned = prune_ffn(prune_heads(model, {0: [1], 2: [0, 3]}), {1: list(range(40))})
    dense = dense_equivalent(pruned)
    assert not dense.config.is_pruned and dense.layers[1].ffn.fc_in.out_features == 64
    torch.testing.assert_close(dense(**batch).last_hidden_state, pruned(**batch).last_hidden_state,
                               atol=1e-6, rtol=1e-6)
    export_hf(pruned, tiny_tokenizer, tmp_path / "hf")
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        hf_out = hf(**batch, output_hidden_states=True)
        ours = pruned(**batch)
    torch.testing.assert_close(hf_out.hidden_states[-1], ours.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hf_out.logits, ours.logits, atol=1e-5, rtol=1e-5)


def test_importance_finds_a_head_that_does_nothing(model):
    """A head whose value projection is zero cannot change the loss: its importance is 0 and
    it is the first to go; every other head matters."""
    with torch.no_grad():
        v = model.layers[1].attn.v_proj
        v.weight[8:16].zero_()  # head 1 of layer 1 (head size 8)
        v.bias[8:16].zero_()
    data = synthetic_data(n=32)
    batches = [collate(data, list(range(i, i + 8)), 0) for i in range(0, 32, 8)]
    scores = importance(model, batches, ClassificationObjective())
    assert scores.heads[1][1] == 0
    assert all(float(s.min()) > 0 for i, s in enumerate(scores.heads) if i != 1)
    assert lowest(scores.heads, 1 / 12) == {1: [1]}
    # Any fraction leaves every layer at least one head.
    assert all(len(v) <= 3 for v in lowest(scores.heads, 0.9).values())
    assert not any(p.grad is not None for p in model.parameters())


def test_lowest_rounds_what_each_layer_keeps_to_a_multiple():
    scores = [torch.arange(1.0, 101.0), torch.arange(1.0, 101.0) * 0.5 + 10, torch.arange(1.0, 11.0)]
    exact = lowest(scores, 0.5)
    rounded = lowest(scores, 0.5, multiple_of=16)
    for layer, s in enumerate(scores):
        kept = len(s) - len(rounded.get(layer, []))
        if len(s) <= 16:
            assert kept == len(s)  # too small to round: left whole
        else:
            assert kept % 16 == 0 and abs(kept - (len(s) - len(exact.get(layer, [])))) <= 8
            # still the lowest-scoring units of the layer that go
            assert rounded[layer] == sorted(torch.argsort(s)[:len(s) - kept].tolist())
    with pytest.raises(PruneError, match="multiple_of"):
        lowest(scores, 0.5, multiple_of=0)


def test_drop_layers_keeps_the_chosen_layers(model, batch):
    dropped = drop_layers(model, [0, 2])
    assert dropped.config.num_hidden_layers == 2
    torch.testing.assert_close(dropped.layers[1].ffn.fc_out.weight,
                               model.layers[2].ffn.fc_out.weight)
    with pytest.raises(StudentSpecError, match="distinct layer numbers"):
        drop_layers(model, [0, 5])


def test_layerdrop_skips_layers_only_while_training(model, batch):
    model.set_layerdrop(0.5)
    assert model.config.layerdrop == 0.5
    torch.manual_seed(3)
    model.train()
    skipped = 0
    for _ in range(20):
        states = model(**batch, output_hidden_states=True).hidden_states
        skipped += sum(torch.equal(a, b) for a, b in zip(states, states[1:]))
    assert 10 < skipped < 50  # about half of 60 layer applications
    model.eval()
    states = model(**batch, output_hidden_states=True).hidden_states
    assert not any(torch.equal(a, b) for a, b in zip(states, states[1:]))


def test_prune_cli_prunes_recovers_and_reports(tmp_path, tiny_tokenizer, csv_task, capsys):
    from slimbert.cli import main

    torch.manual_seed(0)
    teacher = save_checkpoint(build_model(tiny_config(head="classification", num_hidden_layers=3,
                                                      id2label={0: "neg", 1: "pos"})),
                              tiny_tokenizer, tmp_path / "teacher")
    train, dev = csv_task
    data = ["--train-file", str(train), "--dev-file", str(dev), "--text-col", "review", "--label-col", "sentiment"]
    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(teacher), "--heads", "0.25", "--ffn", "0.4", "--ffn-multiple", "16",
                 "--layers", "keep=0,2", *data, "--out", str(out), "--recover-epochs", "1", "--teacher", str(teacher),
                 "--batch-size", "8", "--no-progress"]) == 0
    results = json.loads((out / "prune.json").read_text())
    assert results["parameters_after"] < results["parameters_before"]
    assert sum(len(v) for v in results["removed_heads"].values()) == 2  # 25% of 2 layers x 4 heads
    assert results["recovery"] == "distill" and results["dev_after_recovery"] is not None
    for directory in (out, out / "pruned"):
        model = load_model(directory)
        # 40% of 2 x 64 neurons leaves 77; each layer keeps a multiple of 16 (rounded to the nearest)
        sizes = model.config.intermediate_sizes
        assert model.config.num_hidden_layers == 2 and all(n % 16 == 0 and 16 <= n <= 64 for n in sizes)
        assert 77 - 16 <= sum(sizes) <= 77 + 16
        assert sum(len(v) for v in model.config.pruned_heads.values()) == 2
    assert "after pruning" in capsys.readouterr().out
    assert main(["prune", "--model", str(teacher), "--layers", "0,2", *data, "--out", str(tmp_path / "x")]) == 2
    assert "expected keep=0,2,4" in capsys.readouterr().err


def test_prune_keeps_the_pruned_model_when_recovery_makes_it_worse(tmp_path, tiny_tokenizer, monkeypatch):
    """Recovery is scored against the pruned model as its "epoch 0": OUT holds the better of the two."""
    import slimbert.recipes.prune as recipe
    from slimbert.cli import main

    def flipping_recovery(config, data, train):
        # A "recovery" that swaps the two classes, so it is right exactly where the pruned model is wrong.
        net = load_model(config.model)
        with torch.no_grad():
            net.classifier.weight.neg_()
            net.classifier.bias.neg_()
        save_checkpoint(net, tiny_tokenizer, config.out)
        (Path(config.out) / "results.json").write_text('{"job": "finetune"}')
        return {"best": None}

    monkeypatch.setattr(recipe, "finetune", flipping_recovery)
    rows = "review,sentiment\n" + "".join(f"\"{t}\",pos\n" for t in ["a great film", "good fun", "the best"])
    (tmp_path / "train.csv").write_text(rows + "\"the worst\",neg\n")
    (tmp_path / "dev.csv").write_text(rows)  # one class only: a constant predictor scores 1 or 0
    data = ["--train-file", str(tmp_path / "train.csv"), "--dev-file", str(tmp_path / "dev.csv"),
            "--text-col", "review", "--label-col", "sentiment"]
    kept = set()
    for sign in (1.0, -1.0):
        torch.manual_seed(0)
        net = build_model(tiny_config(head="classification", num_hidden_layers=3, id2label={0: "neg", 1: "pos"}))
        with torch.no_grad():  # always predicts "neg" (sign 1) or "pos" (sign -1)
            net.classifier.weight.zero_()
            net.classifier.bias.copy_(torch.tensor([5.0, -5.0]) * sign)
        teacher = save_checkpoint(net, tiny_tokenizer, tmp_path / f"teacher{sign}")
        out = tmp_path / f"out{sign}"
        assert main(["prune", "--model", str(teacher), "--layers", "keep=0,2", *data, "--out", str(out),
                     "--recover-epochs", "1", "--no-progress"]) == 0
        results = json.loads((out / "prune.json").read_text())
        after, recovered = results["dev_after_pruning"]["accuracy"], results["dev_after_recovery"]
        assert {after, recovered} == {0.0, 1.0}
        expected = "pruned" if after > recovered else "recovered"
        assert results["kept"] == expected
        kept.add(expected)
        served = load_model(out).classifier.bias
        source = load_model(out / "pruned").classifier.bias
        torch.testing.assert_close(served, source if expected == "pruned" else -source)
        # results.json describes the served model only when it is the recovered one
        assert (out / "results.json").exists() == (expected == "recovered")
        assert (out / "recovery.json").exists() == (expected == "pruned")
    assert kept == {"pruned", "recovered"}
