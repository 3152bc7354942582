"""Checkpoint directories: round trips, every Hugging Face layout, and clear errors on bad files."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file, save_file

from slimbert import CheckpointError, build_model, load_model, load_tokenizer, save_checkpoint
from slimbert.checkpoint import model_state_dict, read_state_dict, resolve
from slimbert.io import atomic_write_text


def _inputs(vocab):
    ids = torch.tensor([[2, 7, 8, 9, 3, 0], [2, 10, 3, 0, 0, 0]]) % vocab
    return ids, (ids != 0).long()


def _perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def test_round_trip_gives_identical_outputs(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    model = _perturbed(build_model(tiny_config(head="classification", num_labels=2,
                                               id2label={0: "neg", 1: "pos"}, task="sst2")))
    save_checkpoint(model, tiny_tokenizer, tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} >= {
        "config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"}
    again = load_model(tmp_path / "ckpt")
    assert again.config == model.config
    ids, mask = _inputs(model.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(again(ids, mask).logits, model(ids, mask).logits)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    assert load_tokenizer(tmp_path / "ckpt").vocab == tiny_tokenizer.vocab


def _hf_layout(tmp_path, sd, config, name="model.safetensors"):
    d = tmp_path / "hf"
    d.mkdir(exist_ok=True)
    if name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(d / name))
    else:
        torch.save(sd, d / name)
    (d / "config.json").write_text(json.dumps(config))
    return d


def _reference(head="none"):
    torch.manual_seed(0)
    model = _perturbed(build_model(tiny_config(head=head)))
    sd = model_state_dict(model)  # Hugging Face's names
    hf_config = {k: v for k, v in model.config.to_dict().items()
                 if k not in ("head", "norm_style", "task", "problem_type")}
    return model, sd, hf_config


@pytest.mark.parametrize("variant", ["bare", "bert_prefix", "legacy_gamma_beta", "pytorch_bin",
                                     "position_ids_buffer"])
def test_imports_every_bert_model_layout(tmp_path, variant):
    model, sd, cfg = _reference()
    if variant == "bert_prefix":
        sd = {"bert." + k: v for k, v in sd.items()}
    elif variant == "legacy_gamma_beta":
        sd = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in sd.items()}
    elif variant == "position_ids_buffer":
        sd = {**sd, "embeddings.position_ids": torch.arange(64)[None]}
    name = "pytorch_model.bin" if variant == "pytorch_bin" else "model.safetensors"
    loaded = load_model(_hf_layout(tmp_path, sd, cfg, name), check_vocab=False)
    ids, mask = _inputs(model.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state)


def test_imports_masked_lm_with_pretraining_heads(tmp_path):
    model, sd, cfg = _reference("mlm")
    sd = {**sd, "cls.seq_relationship.weight": torch.zeros(2, 32), "cls.seq_relationship.bias": torch.zeros(2),
          "cls.predictions.decoder.weight": model.bert.embeddings.word_embeddings.weight.detach().clone()}
    cfg["architectures"] = ["BertForPreTraining"]
    loaded = load_model(_hf_layout(tmp_path, sd, cfg), check_vocab=False)
    ids, mask = _inputs(model.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask).logits, model(ids, mask).logits)


def test_encoder_loads_into_a_fresh_classifier_with_a_warning(tmp_path, caplog):
    model, sd, cfg = _reference()
    d = _hf_layout(tmp_path, sd, cfg)
    with caplog.at_level(logging.WARNING):
        clf = load_model(d, head="classification", num_labels=3, check_vocab=False)
    assert "classifier.weight" in caplog.text and "initialised fresh" in caplog.text
    assert clf.classifier.out_features == 3
    assert torch.equal(clf.layers[0].attn.q_proj.weight, model.layers[0].attn.q_proj.weight)


def test_missing_encoder_tensor_is_an_error_naming_it(tmp_path):
    _, sd, cfg = _reference()
    del sd["encoder.layer.1.output.dense.weight"]
    with pytest.raises(CheckpointError, match=r"missing tensors: encoder\.layer\.1\.output\.dense\.weight"):
        load_model(_hf_layout(tmp_path, sd, cfg), check_vocab=False)


def test_unexpected_tensor_is_an_error_naming_it(tmp_path):
    _, sd, cfg = _reference()
    sd["encoder.layer.0.adapter.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"does not have: encoder\.layer\.0\.adapter\.weight"):
        load_model(_hf_layout(tmp_path, sd, cfg), check_vocab=False)


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    _, sd, cfg = _reference()
    cfg["intermediate_size"] = 48
    with pytest.raises(CheckpointError, match=r"intermediate\.dense\.weight' has shape \(64, 32\).*\(48, 32\)"):
        load_model(_hf_layout(tmp_path, sd, cfg), check_vocab=False)


def test_truncated_safetensors_is_a_clear_error(tmp_path, tiny_checkpoint):
    weights = tiny_checkpoint / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_model(tiny_checkpoint)


def test_vocabulary_that_does_not_match_the_checkpoint(tiny_checkpoint):
    vocab = tiny_checkpoint / "vocab.txt"
    vocab.write_text(vocab.read_text() + "extra\n")
    with pytest.raises(CheckpointError, match=r"has \d+ tokens but .*vocab_size=\d+"):
        load_model(tiny_checkpoint)


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    _, _, cfg = _reference()
    d = _hf_layout(tmp_path, {"x": Evil()}, cfg, name="pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights-only"):
        read_state_dict(d)


def test_bad_config_json_names_the_file(tmp_path, tiny_checkpoint):
    (tiny_checkpoint / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON \(line 1"):
        load_model(tiny_checkpoint)


def test_bundled_model_is_found_through_importlib(minilm_dir):
    assert resolve("bundled:minilm-l6") == minilm_dir
    assert (minilm_dir / "model.safetensors").exists()
    with pytest.raises(CheckpointError, match="unknown bundled model"):
        resolve("bundled:nope")
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        resolve("/nonexistent/dir/x")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")

    from slimbert.io import atomic_write

    def explode(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, explode)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_saved_mlm_checkpoint_omits_the_tied_decoder(tmp_path):
    model = build_model(tiny_config(head="mlm"))
    save_checkpoint(model, None, tmp_path / "m")
    keys = load_file(tmp_path / "m" / "model.safetensors").keys()
    assert "cls.predictions.decoder.weight" not in keys and "cls.predictions.bias" in keys
