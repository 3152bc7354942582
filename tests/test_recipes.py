"""Recipes own their policy: a Python caller gets the defaults the CLI does, and configs refuse
bad values with an error that names the field."""

from __future__ import annotations

import pytest

from slimbert.errors import ConfigError
from slimbert.recipes.distill import STUDENT_LR, DistillConfig, loss_weights, student_kind, train_defaults
from slimbert.recipes.prune import PruneConfig
from slimbert.recipes.quantize import QuantizeConfig
from slimbert.training.distillation import LayerMap, LayerMapError


@pytest.mark.parametrize("student, kind, active", [
    ("bert:layers=3", "bert", {"soft": 1.0}),
    ("bilstm", "bilstm", {"logit_mse": 1.0}),
    ("cnn:filters=4", "cnn", {"logit_mse": 1.0}),
])
def test_distill_defaults_depend_on_the_kind_of_student(student, kind, active):
    config = DistillConfig(teacher="t", student=student, out="o")
    assert student_kind(config.student_spec()) == kind
    assert train_defaults(config) == {"epochs": 3, "lr": STUDENT_LR[kind]}
    assert loss_weights(config, kind, regression=False).active() == active
    assert loss_weights(config, kind, regression=True).active() == {"logit_mse": 1.0}


def test_given_loss_weights_replace_the_default_mix():
    config = DistillConfig(teacher="t", student="bert:layers=3", out="o", hidden_weight=1.0)
    assert loss_weights(config, "bert", regression=False).active() == {"hidden": 1.0}
    labels = DistillConfig(teacher="t", student="bilstm", out="o", labels_only=True)
    assert loss_weights(labels, "bilstm", regression=False).active() == {"hard": 1.0}


@pytest.mark.parametrize("make, field", [
    (lambda: DistillConfig(teacher="t", student="bilstm", out="o", temperature=0), "temperature"),
    (lambda: DistillConfig(teacher="t", student="bilstm", out="o", augment=-1), "augment"),
    (lambda: DistillConfig(teacher="t", student="bilstm", out="o", soft_weight=-1.0), "soft"),
    (lambda: PruneConfig(model="m", out="o", heads=0.5, recover_epochs=-1), "recover_epochs"),
    (lambda: PruneConfig(model="m", out="o", ffn=1.0), "ffn"),
    (lambda: QuantizeConfig(model="m", out="o", smoothquant_alpha=2.0), "smoothquant_alpha"),
])
def test_configs_name_the_field_they_refuse(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_nothing_to_prune_is_an_error():
    with pytest.raises(ConfigError, match="nothing to prune"):
        PruneConfig(model="m", out="o")


def test_layer_map_parses_checks_and_prints():
    layer_map = LayerMap.parse("0:1, 1:3,2:5")
    assert layer_map.pairs == ((0, 1), (1, 3), (2, 5)) and str(layer_map) == "0:1,1:3,2:5"
    assert layer_map.check(3, 6) == [(0, 1), (1, 3), (2, 5)]
    with pytest.raises(LayerMapError, match="teacher has layers 0..3"):
        layer_map.check(3, 4)
    for text in ("", "0-1", "a:b"):
        with pytest.raises(LayerMapError):
            LayerMap.parse(text)
