"""Fuzzing the files of a checkpoint directory a user hands to slimbert: `config.json` values
(wrong types, out of range, missing, unknown, the wrong top level, undecodable bytes, a
directory), `tokenizer_config.json` and `vocab.txt`, loaded by `slimbert predict`.

The property: the command answers the input, or stops with one line naming the file or the field.
Sizes stay small here: a valid but huge size would only measure how long building the model takes."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzing import assert_success_or_clean_failure, cases, run_cli, tiny_checkpoints

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return tiny_checkpoints(tmp_path_factory.mktemp("models"))["classifier"]


JSON_SCALARS = (st.none() | st.booleans()
                | st.sampled_from([-3, -1, 0, 1, 2, 3, 4, 7, 16, 31, 32, 33, 64, 200]) | st.integers(-5, 300)
                | st.sampled_from([0.0, 0.5, 1.0, 5.0, -0.1, 1e-12, 1e300, float("nan"), float("inf")])
                | st.sampled_from(["", "512", "32", "abc", "gelu", "relu", "absolute", "rope", "post", "pre",
                                   "classification", "bert", "float32", "LABEL_0", "../x"])
                | st.text(max_size=8))
KEYS = st.sampled_from(["0", "1", "2", "-1", "x", "neg"])
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(KEYS, inner, max_size=3), max_leaves=6)


@st.composite
def checkpoint_faults(draw) -> tuple[str, object, object]:
    """(what is changed, key or file, new value)."""
    kind = draw(st.sampled_from(["set"] * 6 + ["delete", "top_level", "bytes", "directory",
                                              "tokenizer_config", "vocab"]))
    if kind == "set":
        key = draw(st.sampled_from(
            ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
             "type_vocab_size", "layer_norm_eps", "pad_token_id", "initializer_range",
             "position_embedding_type", "classifier_dropout", "norm_style", "head", "num_labels",
             "problem_type", "id2label", "label2id", "pruned_heads", "intermediate_sizes", "layerdrop",
             "dtype", "model_type", "torch_dtype", "architectures", "task", "quantization", "unknown_key"]))
        return kind, key, draw(JSON_VALUES)
    if kind == "delete":
        return kind, draw(st.sampled_from(["vocab_size", "hidden_size", "num_labels", "id2label",
                                           "model_type", "head", "num_hidden_layers"])), None
    if kind == "top_level":
        return kind, "config.json", draw(st.sampled_from([[], [1, 2], "bert", 3, None, True]))
    if kind == "bytes":
        return kind, "config.json", draw(st.sampled_from([b"", b"{", b"\xff\xfe{}", b'{"hidden_size": 32,}',
                                                          '{"task": "caf\xe9"}'.encode("latin-1")]))
    if kind == "directory":
        return kind, draw(st.sampled_from(["config.json", "vocab.txt", "model.safetensors"])), None
    if kind == "tokenizer_config":
        return kind, "tokenizer_config.json", draw(st.sampled_from([[], "x", 1, {"do_lower_case": "yes"},
                                                                     {"model_max_length": -1},
                                                                     {"do_lower_case": False}]))
    return kind, "vocab.txt", draw(st.sampled_from([b"", "caf\xe9\n".encode("latin-1"), b"[PAD]\n[PAD]\n",
                                                    b"\n\n\n"]))


def apply(directory: Path, fault: tuple[str, object, object]) -> None:
    kind, key, value = fault
    config_path = directory / "config.json"
    if kind in ("set", "delete"):
        config = json.loads(config_path.read_text())
        if kind == "set":
            config[key] = value
        else:
            config.pop(key, None)
        config_path.write_text(json.dumps(config))
    elif kind == "top_level":
        config_path.write_text(json.dumps(value))
    elif kind == "bytes":
        config_path.write_bytes(value)
    elif kind == "directory":
        target = directory / key
        target.unlink()
        target.mkdir()
    elif kind == "tokenizer_config":
        (directory / key).write_text(json.dumps(value))
    else:
        (directory / key).write_bytes(value)


@settings(max_examples=cases("checkpoint_files"))
@given(fault=checkpoint_faults())
def test_a_damaged_checkpoint_predicts_or_is_refused_naming_the_file_or_field(classifier, fault):
    kind, key, _ = fault
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        shutil.copytree(classifier, model)
        apply(model, fault)
        text = Path(tmp) / "input.txt"
        text.write_text("a good film\n\nthe worst plot\n")
        outcome = run_cli(["predict", "--model", model, text])
        names = [str(model), str(key)]
        if assert_success_or_clean_failure(outcome, *names):
            assert len(outcome.out.splitlines()) == 3, outcome.describe()  # one answer per input line
