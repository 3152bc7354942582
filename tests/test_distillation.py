"""Distillation: layer maps, the objective, students, and the test that knowledge is transferred."""

from __future__ import annotations

import pytest
import torch
from conftest import synthetic_data, tiny_config

from slimbert import build_model
from slimbert.compress.students import (BertStudentSpec, BiLSTMStudentSpec, CheckpointStudentSpec,
                                        CNNStudentSpec, StudentSpecError, evenly_spaced_layers,
                                        keep_layers, make_student, parse_student_spec)
from slimbert.data.batching import collate
from slimbert.data.masking import MLMMasker
from slimbert.inference import predict_logits
from slimbert.training.distillation import (DistillationObjective, LayerMapError, LossWeights,
                                            parse_layer_map, uniform_layer_map)
from slimbert.training.losses import IGNORE_INDEX
from slimbert.training.objectives import ClassificationObjective
from slimbert.training.trainer import TrainConfig, Trainer

HEAD = {"head": "classification", "num_labels": 2, "id2label": {}, "task": None, "pairs": False}


def teacher(layers=4, seed=0, head="classification", **kw):
    torch.manual_seed(seed)
    return build_model(tiny_config(head=head, num_hidden_layers=layers, **kw)).eval()


# ----------------------------------------------------------------------- layer maps


@pytest.mark.parametrize("ns,nt,want", [
    (3, 6, [(0, 1), (1, 3), (2, 5)]),
    (4, 6, [(0, 1), (1, 2), (2, 4), (3, 5)]),
    (1, 6, [(0, 5)]),
    (6, 6, [(i, i) for i in range(6)]),
    (5, 12, [(0, 1), (1, 4), (2, 6), (3, 9), (4, 11)]),
])
def test_uniform_layer_map_for_any_depths(ns, nt, want):
    got = uniform_layer_map(ns, nt)
    assert got == want
    assert got[-1] == (ns - 1, nt - 1)  # the last layer always meets the last


def test_layer_map_parsing_and_errors():
    assert parse_layer_map("0:1,1:3,2:5", 3, 6) == [(0, 1), (1, 3), (2, 5)]
    with pytest.raises(LayerMapError, match="teacher has layers 0..5"):
        parse_layer_map("0:6", 3, 6)
    with pytest.raises(LayerMapError, match="student has layers 0..2"):
        parse_layer_map("3:1", 3, 6)
    with pytest.raises(LayerMapError, match="appears twice"):
        parse_layer_map("0:1,0:2", 3, 6)
    with pytest.raises(LayerMapError, match="'0-1' is not STUDENT:TEACHER"):
        parse_layer_map("0-1", 3, 6)


# ------------------------------------------------------------------------- students


def test_student_specs_parse_into_dataclasses():
    assert parse_student_spec("bert:layers=3") == BertStudentSpec(3)
    assert parse_student_spec("bert:layers=2", (0, 3)) == BertStudentSpec(2, init_layers=(0, 3))
    assert parse_student_spec("bert:layers=4,hidden=128") == BertStudentSpec(4, hidden=128)
    assert parse_student_spec("bilstm") == BiLSTMStudentSpec()
    assert parse_student_spec("bilstm:hidden=64,embeddings=random") == BiLSTMStudentSpec(64, embeddings="random")
    assert parse_student_spec("cnn:widths=2-3") == CNNStudentSpec(widths=(2, 3))
    for bad, match in [("lstm", "unknown kind"), ("bert", "give the depth"), ("bert:depth=3", "KEY one of"),
                       ("bilstm:embeddings=glove", "teacher or random"), ("cnn:filters=x", "bad value")]:
        with pytest.raises(StudentSpecError, match=match):
            parse_student_spec(bad)
    with pytest.raises(StudentSpecError, match="needs the teacher's width"):
        parse_student_spec("bert:layers=2,hidden=64", "0,1")


def test_checkpoint_dir_is_a_student_spec(tmp_path):
    assert parse_student_spec(str(tmp_path)) == CheckpointStudentSpec(str(tmp_path))


def test_evenly_spaced_layers_is_every_other_for_half_depth():
    assert evenly_spaced_layers(3, 6) == [0, 2, 4]
    assert evenly_spaced_layers(6, 12) == [0, 2, 4, 6, 8, 10]
    assert evenly_spaced_layers(1, 6) == [0]
    with pytest.raises(StudentSpecError):
        evenly_spaced_layers(7, 6)


def test_student_from_teacher_layers_copies_those_layers():
    t = teacher(layers=4)
    s = make_student(BertStudentSpec(2, init_layers=(1, 3)), t, HEAD)
    assert s.config.num_hidden_layers == 2
    for new, old in [(0, 1), (1, 3)]:
        for (ka, a), (kb, b) in zip(s.layers[new].state_dict().items(),
                                    t.layers[old].state_dict().items()):
            assert ka == kb and torch.equal(a, b)
    assert torch.equal(s.bert.embeddings.word_embeddings.weight, t.bert.embeddings.word_embeddings.weight)
    assert torch.equal(s.classifier.weight, t.classifier.weight)
    # A 2-layer teacher cut to its own 2 layers computes exactly what it did.
    t2 = teacher(layers=2)
    same = keep_layers(t2, [0, 1]).eval()
    ids = torch.randint(5, 30, (2, 7))
    torch.testing.assert_close(same(ids).logits, t2(ids).logits)


def test_narrow_bert_student_is_built_from_scratch():
    s = make_student(BertStudentSpec(2, hidden=16, heads=2), teacher(), HEAD)
    assert (s.config.hidden_size, s.config.num_attention_heads, s.config.intermediate_size) == (16, 2, 64)
    with pytest.raises(StudentSpecError, match="heads=A"):
        make_student(BertStudentSpec(2, hidden=20), teacher(), HEAD)


@pytest.mark.parametrize("spec", [BiLSTMStudentSpec(hidden=8, mlp=8), CNNStudentSpec(filters=4, widths=(1, 3))])
def test_word_students_copy_teacher_embeddings(spec):
    t = teacher()
    s = make_student(spec, t, HEAD)
    assert torch.equal(s.embeddings.weight, t.bert.embeddings.word_embeddings.weight)
    ids = torch.randint(5, 30, (3, 6))
    assert s(ids).logits.shape == (3, 2)


@pytest.mark.parametrize("spec", [BiLSTMStudentSpec(hidden=8, mlp=8, embeddings="random"),
                                  CNNStudentSpec(filters=4, widths=(2, 3), embeddings="random")])
def test_word_students_ignore_padding_and_encode_pairs_separately(spec):
    torch.manual_seed(0)
    s = make_student(spec, teacher(), {**HEAD, "pairs": True}).eval()
    a, b = [2, 11, 12, 13, 3], [14, 15, 3]
    ids = torch.tensor([a + b + [0, 0]])
    types = torch.tensor([[0] * 5 + [1] * 3 + [0, 0]])
    mask = torch.tensor([[1] * 8 + [0, 0]])
    out = s(ids, mask, types).logits
    # the same pair without padding gives the same logits
    torch.testing.assert_close(out, s(ids[:, :8], mask[:, :8], types[:, :8]).logits)
    # the pair features are [h1, h2, h1*h2, |h1-h2|] of separately encoded sentences
    h1 = s.encode(torch.tensor([a]), torch.ones(1, 5, dtype=torch.long))
    h2 = s.encode(torch.tensor([b]), torch.ones(1, 3, dtype=torch.long))
    torch.testing.assert_close(s(ids, mask, types).pooler_output, torch.cat([h1, h2, h1 * h2, (h1 - h2).abs()], -1))


def test_word_student_refuses_hidden_states():
    s = make_student(BiLSTMStudentSpec(hidden=8, mlp=8), teacher(), HEAD)
    with pytest.raises(ValueError, match="no Transformer layers"):
        s(torch.tensor([[2, 10, 3]]), output_hidden_states=True)


# ------------------------------------------------------------------------ objective


def batch_of(data, n=8, pad_id=0):
    return collate(data, list(range(n)), pad_id)


def test_cached_teacher_logits_give_the_same_loss_as_running_the_teacher():
    t, data = teacher(), synthetic_data(n=8)
    student = make_student(BertStudentSpec(2), t, HEAD).eval()
    objective = DistillationObjective(t, LossWeights(hard=0.5, soft=0.5), temperature=2.0)
    batch = batch_of(data)
    live, _ = objective(student, batch)
    data.teacher_logits = predict_logits(t, data, 0)
    cached, _ = objective(student, batch_of(data))
    torch.testing.assert_close(live, cached)


def test_teacher_is_frozen_and_not_part_of_the_objective_state():
    t = teacher()
    objective = DistillationObjective(t, LossWeights(soft=1.0, hidden=1.0), layer_map=[(0, 1), (1, 3)],
                                      student_hidden=32, teacher_hidden=32)
    assert list(objective.parameters()) == [] and objective.state_dict() == {}
    student = make_student(BertStudentSpec(2), t, HEAD).train()
    loss, metrics = objective(student, batch_of(synthetic_data(n=8)))
    loss.backward()
    assert all(p.grad is None for p in t.parameters())
    assert not t.training
    assert {"soft", "hidden", "agree"} <= set(metrics)


def test_narrow_student_hidden_states_are_projected_and_projections_train(tmp_path):
    t, data = teacher(), synthetic_data(n=32)
    student = make_student(BertStudentSpec(2, hidden=16, heads=2), t, HEAD)
    objective = DistillationObjective(t, LossWeights(soft=1.0, hidden=1.0, attention=1.0),
                                      layer_map=uniform_layer_map(2, 4), student_hidden=16,
                                      teacher_hidden=32, hidden_loss="mse")
    assert len(objective.projections) == 2
    before = objective.projections[0].weight.detach().clone()
    Trainer(student, objective, data, TrainConfig(epochs=1, batch_size=8, lr=1e-2, progress=False),
            tmp_path).fit()
    assert not torch.equal(before, objective.projections[0].weight)


def test_objective_validates_its_inputs():
    with pytest.raises(ValueError, match="regression task distils with logit_mse"):
        DistillationObjective(None, LossWeights(soft=1.0), regression=True)
    with pytest.raises(ValueError, match="needs a layer map"):
        DistillationObjective(None, LossWeights(hidden=1.0))
    with pytest.raises(ValueError, match="every loss weight is 0"):
        LossWeights(soft=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        LossWeights(hard=-1.0)


def test_mlm_triple_loss_runs_on_masked_inputs():
    t = teacher(head="mlm")
    student = make_student(BertStudentSpec(2), t, {"head": "mlm"})
    masker = MLMMasker(mask_id=4, vocab_size=t.config.vocab_size, special_ids=[0, 1, 2, 3, 4], probability=0.3)
    objective = DistillationObjective(t, LossWeights(soft=5.0, mlm=2.0, hidden=1.0), temperature=2.0,
                                      layer_map=[(1, 3)], student_hidden=32, teacher_hidden=32, masker=masker)
    torch.manual_seed(0)
    loss, metrics = objective(student, batch_of(synthetic_data(n=8)))
    assert {"soft", "mlm", "hidden"} <= set(metrics) and torch.isfinite(loss)
    want = 5 * metrics["soft"] + 2 * metrics["mlm"] + metrics["hidden"]
    torch.testing.assert_close(loss.detach(), want)


# -------------------------------------------------------------------- MLM masking


def test_dynamic_masking_is_80_10_10_of_15_percent_of_eligible_tokens():
    torch.manual_seed(0)
    ids = torch.randint(10, 1000, (64, 256))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    mask = torch.ones_like(ids)
    mask[:, 200:] = 0
    masker = MLMMasker(mask_id=4, vocab_size=1000, special_ids=[0, 1, 2, 3, 4])
    masked, labels = masker(ids, mask)
    chosen = labels != IGNORE_INDEX
    assert not chosen[:, 0].any() and not chosen[:, 200:].any()  # no specials, no padding
    assert torch.equal(labels[chosen], ids[chosen])
    rate = chosen.sum() / (64 * 199)
    assert abs(rate - 0.15) < 0.01
    as_mask = (masked[chosen] == 4).float().mean()
    kept = (masked[chosen] == ids[chosen]).float().mean()
    assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02
    assert torch.equal(masked[~chosen], ids[~chosen])
    again, _ = masker(ids, mask)
    assert not torch.equal(again, masked)  # dynamic: fresh masks each call


# ------------------------------------------------------------ knowledge transfer


def agreement(student, reference, data) -> tuple[float, float]:
    """(share of equal predicted classes, mean KL(reference || student)) over `data`."""
    p = predict_logits(reference, data, 0).log_softmax(-1)
    q = predict_logits(student, data, 0).log_softmax(-1)
    return float((p.argmax(-1) == q.argmax(-1)).float().mean()), float((p.exp() * (p - q)).sum(-1).mean())


@pytest.mark.slow
def test_distillation_transfers_the_teachers_knowledge(tmp_path):
    """A student trained with the teacher ends closer to the teacher's predictions on unseen
    examples than the same student (same init, same data, same steps) trained on labels alone.

    The teacher learned the task's rule from clean labels; the students get the same inputs
    with 40% of the labels flipped, so only a student that listens to the teacher recovers it.
    """
    train, unseen = synthetic_data(n=256, seed=1), synthetic_data(n=256, seed=2)
    t = teacher(layers=2, seed=7)
    Trainer(t, ClassificationObjective(), train, TrainConfig(epochs=6, batch_size=16, lr=3e-3, progress=False),
            tmp_path / "teacher").fit()
    t.eval()
    teacher_acc = float((predict_logits(t, unseen, 0).argmax(-1) == unseen.labels).float().mean())
    assert teacher_acc > 0.95, "the teacher did not learn the rule; the test would prove nothing"
    flip = torch.rand(len(train), generator=torch.Generator().manual_seed(0)) < 0.4
    train.labels = torch.where(flip, 1 - train.labels, train.labels)
    train.teacher_logits = predict_logits(t, train, 0)
    results = {}
    for name, weights in [("labels", LossWeights(hard=1.0, soft=0.0)), ("distilled", LossWeights(soft=1.0))]:
        torch.manual_seed(3)
        student = make_student(BiLSTMStudentSpec(hidden=16, mlp=16, embeddings="random"), t, HEAD)
        objective = DistillationObjective(t, weights, temperature=2.0)
        Trainer(student, objective, train, TrainConfig(epochs=6, batch_size=16, lr=1e-2, warmup_ratio=0.0,
                                                      progress=False, seed=0), tmp_path / name).fit()
        results[name] = agreement(student.eval(), t, unseen)
    (agree_labels, kl_labels), (agree_distilled, kl_distilled) = results["labels"], results["distilled"]
    assert agree_distilled > agree_labels + 0.1, results
    assert kl_distilled < 0.5 * kl_labels, results
