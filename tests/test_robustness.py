"""Bad configs, checkpoints, training states and arguments: each is one line on stderr naming the
file, field or option, a non-zero exit, never a traceback, and nothing already written is lost."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TRAIN, synthetic_data, tiny_config
from safetensors.torch import save_file

from slimbert import CheckpointError, build_model, load_model, save_checkpoint
from slimbert.checkpoint import model_state_dict, read_state_dict
from slimbert.cli import build_parser, command_parser, main
from slimbert.config import CONFIG_CLASSES, BertConfig, ModelConfig
from slimbert.training.objectives import ClassificationObjective
from slimbert.training.trainer import STATE_FIELDS, TrainConfig, Trainer, TrainingError

CUDA = torch.cuda.is_available()


def one_line_error(capsys, *fragments: str) -> str:
    """stderr is exactly one line, without a traceback, and holds every fragment."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


class Evil:
    """A pickle that would create `marker` when unpickled by a loader that runs code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# ----------------------------------------------------------------------------- config.json


def _edit_json(path: Path, **changes):
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def _vocab_size(ckpt: Path) -> int:
    return json.loads((ckpt / "config.json").read_text())["vocab_size"]


CONFIG_CASES = {
    "size as a string": (lambda c: _edit_json(c / "config.json", max_position_embeddings="512"),
                         "config.json: config field 'max_position_embeddings': expected an integer, got \"512\""),
    "true as a size": (lambda c: _edit_json(c / "config.json", hidden_size=True),
                       "config field 'hidden_size': expected an integer, got true"),
    "eps as a string": (lambda c: _edit_json(c / "config.json", layer_norm_eps="abc"),
                        "config field 'layer_norm_eps': expected a finite number"),
    "eps NaN": (lambda c: _edit_json(c / "config.json", layer_norm_eps=float("nan")), "'layer_norm_eps'"),
    "dropout 5": (lambda c: _edit_json(c / "config.json", hidden_dropout_prob=5),
                  "config field 'hidden_dropout_prob': a dropout probability must be in [0, 1), got 5"),
    "negative attention dropout": (lambda c: _edit_json(c / "config.json", attention_probs_dropout_prob=-0.1),
                                   "'attention_probs_dropout_prob'"),
    "pad id past the vocabulary": (lambda c: _edit_json(c / "config.json", pad_token_id=_vocab_size(c)),
                                   "config field 'pad_token_id': must be an id below vocab_size"),
    "id2label as a list": (lambda c: _edit_json(c / "config.json", id2label=["neg", "pos"]),
                           "config field 'id2label': expected an object"),
    "pruned_heads as a list": (lambda c: _edit_json(c / "config.json", pruned_heads=[[0]]),
                               "config field 'pruned_heads': expected an object"),
    "model_type as a list": (lambda c: _edit_json(c / "config.json", model_type=["bert"]), "model_type"),
    "top level a list": (lambda c: (c / "config.json").write_text("[1, 2]"),
                         "config.json: expected a JSON object of field names and values, found a list"),
    "latin-1 config": (lambda c: (c / "config.json").write_bytes(
        (c / "config.json").read_bytes().replace(b'"none"', '"caf\xe9"'.encode("latin-1"))),
        ("config.json:", "not UTF-8 text (byte 0xe9); re-save it as UTF-8")),  # the file, its line, the byte
    "config is a directory": (lambda c: ((c / "config.json").unlink(), (c / "config.json").mkdir()),
                              "config.json: is a directory"),
    "tokenizer_config a list": (lambda c: (c / "tokenizer_config.json").write_text("[]"),
                                "tokenizer_config.json: expected a JSON object"),
    "tokenizer_config casing a string": (lambda c: _edit_json(c / "tokenizer_config.json", do_lower_case="no"),
                                         "tokenizer_config.json: field 'do_lower_case'"),
    "latin-1 vocab": (lambda c: (c / "vocab.txt").write_bytes(
        (c / "vocab.txt").read_bytes().replace(b"movie", "movi\xe9".encode("latin-1"))),
        "vocab.txt:"),
    "vocab is a directory": (lambda c: ((c / "vocab.txt").unlink(), (c / "vocab.txt").mkdir()),
                             "vocab.txt: is a directory"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_broken_checkpoint_config_is_one_line_and_quantize_writes_nothing(case, tiny_checkpoint, tmp_path,
                                                                             capsys):
    """Validated once, on load: quantize can no longer copy a broken config through."""
    break_it, message = CONFIG_CASES[case]
    break_it(tiny_checkpoint)
    out = tmp_path / "q"
    assert main(["quantize", "--model", str(tiny_checkpoint), "--out", str(out)]) == 2
    one_line_error(capsys, *([message] if isinstance(message, str) else message))
    assert not out.exists()


def _wrong_value(hint_text: str):
    """A JSON value of the wrong type for a field annotated `hint_text` (a list is wrong for
    every annotation but a list's)."""
    return {} if hint_text.startswith("list[") else []


@pytest.mark.parametrize("cls", sorted(set(CONFIG_CLASSES.values()), key=lambda c: c.__name__))
def test_every_config_field_is_type_checked_on_load(cls, tmp_path):
    """Driven by the annotations: a value of the wrong type is refused for every field of every
    config class, naming the field."""
    model_type = next(k for k, v in CONFIG_CLASSES.items() if v is cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        path = tmp_path / "config.json"
        path.write_text(json.dumps({"model_type": model_type, f.name: _wrong_value(str(f.type))}))
        with pytest.raises(CheckpointError, match=rf"config\.json: config field '{f.name}': expected "):
            ModelConfig.load(path)


def test_a_hugging_face_config_with_string_label_keys_and_extra_keys_still_loads(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "architectures": ["BertForSequenceClassification"], "model_type": "bert", "vocab_size": 100,
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64,
        "id2label": {"0": "NEGATIVE", "1": "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1},
        "classifier_dropout": None, "problem_type": None, "gradient_checkpointing": False, "use_cache": True,
        "transformers_version": "4.8.2", "torch_dtype": "float16", "hidden_dropout_prob": 0,
        "pruned_heads": {"0": [1]}}))
    cfg = ModelConfig.load(path)
    assert isinstance(cfg, BertConfig) and cfg.head == "classification"
    assert cfg.label_names() == ["NEGATIVE", "POSITIVE"] and cfg.pruned_heads == {0: [1]}


@pytest.mark.slow
def test_a_broken_config_from_the_console_script_is_one_line(tiny_checkpoint, tmp_path):
    """The real process: exactly one line on stderr (no warnings, no traceback), exit status 2."""
    _edit_json(tiny_checkpoint / "config.json", max_position_embeddings="512")
    proc = subprocess.run([sys.executable, "-m", "slimbert", "quantize", "--model", str(tiny_checkpoint),
                           "--out", str(tmp_path / "q")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "max_position_embeddings" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------- shards and pickles


def _tiny_sd(head="none"):
    torch.manual_seed(0)
    model = build_model(tiny_config(head=head))
    return model, model_state_dict(model)


def _sharded(tmp_path, sd, index: dict | str | None = None, shards=2) -> Path:
    """A Hugging Face sharded checkpoint (model-0000i-of-0000n.safetensors + index)."""
    d = tmp_path / "sharded"
    d.mkdir()
    keys = sorted(sd)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k].contiguous() for k in keys[i::shards]}
        save_file(part, str(d / name))
        weight_map.update({k: name for k in part})
    if index is None:
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (d / "model.safetensors.index.json").write_text(index if isinstance(index, str) else json.dumps(index))
    return d


def test_a_sharded_checkpoint_loads_every_tensor(tmp_path):
    _, sd = _tiny_sd()
    loaded = read_state_dict(_sharded(tmp_path, sd))
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)


@pytest.mark.parametrize("index, message", [
    ("{not json", r"model\.safetensors\.index\.json: not valid JSON \(line 1"),
    ({"metadata": {}}, r"index\.json: expected a 'weight_map' object"),
    ({"weight_map": ["model-00001-of-00002.safetensors"]}, r"index\.json: expected a 'weight_map' object"),
    ({"weight_map": {}}, r"'weight_map' is empty"),
    ({"weight_map": {"embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors",
                     "not.in.any.shard": "model-00001-of-00002.safetensors"}}, r"do not hold: not\.in\.any\.shard"),
])
def test_a_bad_shard_index_is_a_clear_error(tmp_path, index, message):
    _, sd = _tiny_sd()
    with pytest.raises(CheckpointError, match=message):
        read_state_dict(_sharded(tmp_path, sd, index))


@pytest.mark.parametrize("shard", ["../outside.safetensors", "{abs}", "sub/../../outside.safetensors"])
def test_a_shard_index_may_not_name_a_file_outside_the_checkpoint(tmp_path, shard):
    _, sd = _tiny_sd()
    outside = tmp_path / "outside.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(outside))  # a valid file: it would load
    shard = shard.replace("{abs}", str(outside))
    d = _sharded(tmp_path, sd, {"weight_map": {k: shard for k in sd}})
    with pytest.raises(CheckpointError, match=r"is not a file of .*sharded; a shard index may only name files"):
        read_state_dict(d)


def test_a_bin_holding_a_non_tensor_is_a_clear_error(tmp_path):
    _, sd = _tiny_sd()
    d = tmp_path / "bin"
    d.mkdir()
    torch.save({**sd, "step": 7}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: expected a state dict of tensors, found int "
                                              r"under 'step'"):
        read_state_dict(d)


def _pickle_in_bin(d, marker):
    torch.save({"x": Evil(marker)}, d / "pytorch_model.bin")


def _pickle_in_bin_shard(d, marker):
    torch.save({"x": Evil(marker)}, d / "pytorch_model-00001-of-00001.bin")
    (d / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"weight_map": {"x": "pytorch_model-00001-of-00001.bin"}}))


def _pickle_in_safetensors_shard(d, marker):
    torch.save({"x": Evil(marker)}, d / "model-00001-of-00001.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"x": "model-00001-of-00001.safetensors"}}))


@pytest.mark.parametrize("plant", [_pickle_in_bin, _pickle_in_bin_shard, _pickle_in_safetensors_shard])
def test_pickles_are_refused_in_every_weights_file_and_never_run(tmp_path, plant):
    d = tmp_path / "ckpt"
    d.mkdir()
    marker = tmp_path / "owned"
    plant(d, marker)
    with pytest.raises(CheckpointError, match=r"weights-only|not a readable safetensors file"):
        read_state_dict(d)
    assert not marker.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoint_files_follow_the_umask(tmp_path, tiny_tokenizer, umask):
    """As torch.save and safetensors create files: 0o666 less the umask (not mkstemp's 0600)."""
    old = os.umask(umask)
    try:
        d = save_checkpoint(build_model(tiny_config()), tiny_tokenizer, tmp_path / "ckpt")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()}
    assert set(modes) == {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"}
    assert set(modes.values()) == {0o666 & ~umask}, modes


# ----------------------------------------------------------------------- training state


def _trained(out: Path, data=None, model=None, **cfg) -> Trainer:
    config = TrainConfig(**{"epochs": 1, "batch_size": 8, "lr": 1e-3, "warmup_ratio": 0.0, "progress": False,
                            **cfg})
    torch.manual_seed(0)
    model = model or build_model(tiny_config(head="classification"))
    return Trainer(model, ClassificationObjective(), data or synthetic_data(n=32), config, out)


def _edit_state(path: Path, edit) -> None:
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


STATE_CASES = {
    "empty file": (lambda p: p.write_bytes(b""), "training_state.pt: empty file (0 bytes)"),
    "zeroed": (lambda p: p.write_bytes(bytes(p.stat().st_size)), "training_state.pt: not a readable training state"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:100]), "not a readable training state"),
    "a pickle": (lambda p: torch.save({"state": Evil(p.parent.parent / "owned")}, p),
                 "refused: it holds objects other than tensors and plain data"),
    "not a mapping": (lambda p: torch.save([1, 2], p), "expected a mapping of fields, found list"),
    "missing field": (lambda p: _edit_state(p, lambda s: s.pop("scaler")), "missing field(s) scaler"),
    "extra field": (lambda p: _edit_state(p, lambda s: s.update(extra=1)), "unknown field(s) extra"),
    "optimizer of the wrong type": (lambda p: _edit_state(p, lambda s: s.update(optimizer=[])),
                                    "field 'optimizer': expected dict, got list"),
    "fingerprint of the wrong type": (lambda p: _edit_state(p, lambda s: s.update(data_fingerprint=3)),
                                      "field 'data_fingerprint': expected str or NoneType, got int"),
    "step as a string": (lambda p: _edit_state(p, lambda s: s["state"].update(global_step="4")),
                         "field 'state' entry 'global_step': expected an integer"),
    "state without history": (lambda p: _edit_state(p, lambda s: s["state"].pop("history")),
                              "field 'state': missing history"),
    "source of another shape": (lambda p: _edit_state(p, lambda s: s.update(source={"epoch": "1"})),
                                "field 'source'"),
    "optimizer of another model": (lambda p: _edit_state(p, lambda s: s["optimizer"].update(param_groups=[])),
                                   "field 'optimizer' does not fit this run"),
    "rng of the wrong dtype": (lambda p: _edit_state(p, lambda s: s.update(torch_rng=torch.zeros(3))),
                               "field 'torch_rng' does not fit this run"),
}


@pytest.mark.parametrize("case", list(STATE_CASES))
def test_a_broken_training_state_is_named_and_the_checkpoint_kept(tmp_path, case):
    _trained(tmp_path, save_every_steps=2).fit()
    last = tmp_path / "last"
    weights = (last / "model.safetensors").read_bytes()
    break_it, message = STATE_CASES[case]
    break_it(last / "training_state.pt")
    with pytest.raises(CheckpointError, match=r"training_state\.pt: ") as e:
        _trained(tmp_path, save_every_steps=2).fit(resume=True)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert (last / "model.safetensors").read_bytes() == weights
    assert not (tmp_path / "owned").exists()


def test_the_training_state_fields_are_what_the_trainer_saves(tmp_path):
    _trained(tmp_path).fit()
    state = torch.load(tmp_path / "last" / "training_state.pt", weights_only=True)
    assert set(state) == set(STATE_FIELDS) and isinstance(state["data_fingerprint"], str)


def test_resume_refuses_other_data_naming_both_fingerprints(tmp_path):
    data = synthetic_data(n=32)
    _trained(tmp_path, data).fit()
    saved = torch.load(tmp_path / "last" / "training_state.pt", weights_only=True)["data_fingerprint"]
    relabelled = dataclasses.replace(data, labels=1 - data.labels)  # same texts, other labels
    trainer = _trained(tmp_path, relabelled)
    now = trainer.source.fingerprint()
    assert now != saved
    with pytest.raises(CheckpointError, match=rf"other data or labels \(fingerprint {saved}\); this data's "
                                              rf"is {now}"):
        trainer.fit(resume=True)
    regression = dataclasses.replace(data, labels=data.labels.float())  # the same numbers, another task
    assert _trained(tmp_path, regression).source.fingerprint() != saved
    assert _trained(tmp_path, data).fit(resume=True).global_step == 4  # the same data resumes


def test_resume_against_other_data_from_the_cli(tmp_path, tiny_checkpoint, csv_task, capsys):
    train, dev = csv_task
    cols = ["--text-col", "review", "--label-col", "sentiment", "--out", str(tmp_path / "ft"), "--no-progress",
            "--batch-size", "8", "--model", str(tiny_checkpoint)]
    assert main(["finetune", "--train-file", str(train), "--epochs", "1", *cols]) == 0
    capsys.readouterr()
    other = tmp_path / "other.csv"  # the same rows with the labels swapped
    other.write_text(train.read_text().replace(",pos", ",tmp").replace(",neg", ",pos").replace(",tmp", ",neg"))
    assert main(["finetune", "--train-file", str(other), "--epochs", "1", "--resume", *cols]) == 2
    one_line_error(capsys, "other data or labels (fingerprint ", "this data's is ")


# ------------------------------------------------------------------ non-finite weights


class BreakWeightsAt:
    """An objective that turns a weight into inf on its n-th call, after which the loss is NaN."""

    def __init__(self, n):
        self.objective, self.n, self.calls = ClassificationObjective(), n, 0

    def __call__(self, model, batch):
        self.calls += 1
        if self.calls == self.n:
            with torch.no_grad():
                model.classifier.weight.fill_(float("inf"))
        return self.objective(model, batch)


def test_non_finite_weights_stop_the_run_and_nothing_is_saved(tmp_path):
    """The best model and OUT/last of the good steps stay as they were."""
    torch.manual_seed(0)
    model = build_model(tiny_config(head="classification"))
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, warmup_ratio=0.0, progress=False, save_every_steps=2,
                         max_bad_steps=100)
    trainer = Trainer(model, BreakWeightsAt(6), synthetic_data(n=32), config, tmp_path,
                      evaluate=lambda m: {"score": 0.5}, main_metric="score")
    with pytest.raises(TrainingError, match="step 6: the weights are no longer finite .*Nothing was saved"):
        trainer.fit()  # epoch 1 = steps 1-4 (best saved at 4, last/ at 4); inf during step 6
    for d in (tmp_path, tmp_path / "last"):
        saved = load_model(d, check_vocab=False)
        assert all(torch.isfinite(p).all() for p in saved.parameters())
    assert torch.load(tmp_path / "last" / "training_state.pt", weights_only=True)["state"]["global_step"] == 4


def test_a_huge_learning_rate_never_saves_a_diverged_model_as_best(tmp_path, tiny_checkpoint, csv_task, capsys,
                                                                    caplog):
    """--lr 1e30: the first step leaves finite weights too large to compute with, every later
    loss is NaN. That model is never kept as the best, and the run stops saying why."""
    train, dev = csv_task
    out = tmp_path / "ft"
    args = ["finetune", "--model", str(tiny_checkpoint), "--train-file", str(train), "--dev-file", str(dev),
            "--text-col", "review", "--label-col", "sentiment", "--out", str(out), "--batch-size", "8",
            "--no-progress"]
    assert main([*args, "--lr", "1e-3", "--epochs", "1"]) == 0
    capsys.readouterr()
    best = (out / "model.safetensors").read_bytes()
    assert main([*args, "--lr", "1e30", "--epochs", "2"]) == 2  # 6 steps an epoch: NaN from step 2 on
    one_line_error(capsys, "the loss was NaN/inf for 10 steps in a row (step 11); lower the learning rate")
    assert "epoch 1: accuracy=" in caplog.text and "not kept as the best" in caplog.text
    assert (out / "model.safetensors").read_bytes() == best


# ------------------------------------------------------------------ arguments, before any work


DISTILL = ["distill", "--teacher", "t", "--student", "bilstm", "--out", "o"]


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--out", "o", "--lr", "-1"], "lr must be a positive number"),
    (["finetune", "--out", "o", "--lr", "inf"], "expected a finite number, got 'inf'"),
    (["finetune", "--out", "o", "--lr", "1e39"], "lr must be small enough for float32 steps"),
    (["finetune", "--out", "o", "--weight-decay", "-0.1"], "weight_decay must be 0 or more"),
    (["finetune", "--out", "o", "--warmup-ratio", "-0.1"], "warmup_ratio must be between 0 and 1"),
    (["finetune", "--out", "o", "--warmup-ratio", "1.5"], "warmup_ratio must be between 0 and 1"),
    (["finetune", "--out", "o", "--save-every-steps", "-1"], "save_every_steps must be 0 (off) or more"),
    ([*DISTILL, "--temperature", "-1"], "temperature must be positive"),
    (["finetune", "--out", "o", "--device", "foo"], "device must be auto, cpu, cuda, cuda:N or mps, got 'foo'"),
    (["finetune", "--out", "o", "--device", "cuda:99"], "device 'cuda:99': this machine has"),
    (["evaluate", "--model", "m", "--device", "tpu"], "device must be auto"),
    (["predict", "--model", "m", "--device", "cuda:99"], "device 'cuda:99'"),
    pytest.param(["finetune", "--out", "o", "--device", "cuda"], "device 'cuda': this machine has no CUDA",
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    pytest.param(["finetune", "--out", "o", "--precision", "fp16"], "precision fp16 needs a CUDA device",
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    pytest.param(["evaluate", "--model", "m", "--precision", "fp16"], "precision fp16 needs a CUDA device",
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    (["distill", "--teacher", "t", "--student", "bert:layers=2,hidden=64,heads=0", "--out", "o"],
     "bad value for heads: '0' (must be at least 1)"),
    (["distill", "--teacher", "t", "--student", "cnn:widths=3-0", "--out", "o"], "widths"),
    (["prune", "--model", "m", "--out", "o", "--heads", "0.5", "--recover-epochs", "-1"], "recover_epochs"),
])
def test_bad_training_arguments_are_one_line_before_any_work(argv, message, capsys):
    """None of the paths exists: the option is refused before anything is read."""
    assert main(argv) == 2
    one_line_error(capsys, message)


OUT_COMMANDS = {
    "finetune": [],
    "distill": ["--teacher", "t", "--student", "bilstm"],
    "distill-general": ["--student", "bert:layers=1", "--corpus", "c.txt"],
    "pretrain": ["--corpus", "c.txt"],
    "prune": ["--model", "m", "--heads", "0.5"],
    "quantize": ["--model", "m"],
    "export": ["--model", "m", "--format", "hf"],
    "average": ["m1", "m2"],
    "bench": ["--model", "m"],
    "bench-seq2seq": ["--model", "m", "--src", "s", "--ref", "r"],
    "optimize": ["--model", "m"],
    "report": ["r"],
    "vocab": ["--corpus", "c.txt", "--size", "100"],
    "train-seq2seq": ["--train-src", "s", "--train-tgt", "t", "--valid-src", "vs", "--valid-tgt", "vt"],
    "distill-seq2seq": ["--teacher", "t", "--student", "transformer:dec_layers=1", "--train-src", "s",
                        "--train-tgt", "t", "--valid-src", "vs", "--valid-tgt", "vt"],
}


def test_every_command_with_out_is_covered():
    parser = build_parser()
    with_out = {name for name in _commands(parser)
                if "--out" in {f for a in command_parser(parser, name)._actions for f in a.option_strings}}
    assert with_out == set(OUT_COMMANDS)


def _commands(parser):
    import argparse

    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


@pytest.mark.parametrize("command", list(OUT_COMMANDS))
@pytest.mark.parametrize("under", [False, True])
def test_out_pointing_at_a_file_is_one_line_before_any_work(tmp_path, command, under, capsys):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me\n")
    out = existing / "sub" if under else existing
    assert main([command, *OUT_COMMANDS[command], "--out", str(out)]) == 2
    one_line_error(capsys, f"--out {out}: ", "give a directory to write into")
    assert existing.read_text() == "keep me\n"


# ------------------------------------------------------------ inputs longer than the model


def _short_model(tmp_path, tiny_tokenizer, **overrides) -> Path:
    """A tiny checkpoint whose tokenizer_config says 512 tokens, but whose model has 16 positions."""
    torch.manual_seed(0)
    d = save_checkpoint(build_model(tiny_config(max_position_embeddings=16, **overrides)), tiny_tokenizer,
                        tmp_path / "short")
    _edit_json(d / "tokenizer_config.json", model_max_length=512)
    return d


def test_max_length_above_the_positions_is_capped_and_said_once(tmp_path, tiny_tokenizer, caplog):
    d = _short_model(tmp_path, tiny_tokenizer)
    long_texts = [" ".join([t] * 6) for t in TRAIN]  # 20+ tokens each
    train = tmp_path / "long.csv"
    train.write_text("text,label\n" + "".join(f'"{t}",{i % 2}\n' for i, t in enumerate(long_texts)))
    with caplog.at_level("WARNING"):
        assert main(["finetune", "--model", str(d), "--train-file", str(train), "--dev-file", str(train),
                     "--out", str(tmp_path / "ft"), "--epochs", "1", "--batch-size", "16", "--max-length", "100",
                     "--no-progress"]) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "slimbert.tokenizer"]
    assert len(said) == 1 and "max_length 100 is more than" in said[0] and "cut at 16 tokens" in said[0]


def test_a_sentence_pair_on_a_single_segment_model_is_one_line(tmp_path, tiny_tokenizer, capsys):
    d = _short_model(tmp_path, tiny_tokenizer, type_vocab_size=1)
    train = tmp_path / "pairs.csv"
    train.write_text("a,b,label\n" + "".join(f'"{t}","{t}",{i % 2}\n' for i, t in enumerate(TRAIN)))
    assert main(["finetune", "--model", str(d), "--train-file", str(train), "--text-col", "a",
                 "--text-pair-col", "b", "--out", str(tmp_path / "ft"), "--no-progress"]) == 2
    one_line_error(capsys, "short: the model reads single texts (type_vocab_size=1), not sentence pairs")
    assert not (tmp_path / "ft" / "last").exists()


def test_a_layer_map_out_of_range_is_an_error_even_when_unused(tmp_path, tiny_tokenizer, csv_task, capsys):
    train, dev = csv_task
    torch.manual_seed(0)
    teacher = save_checkpoint(build_model(tiny_config(head="classification", id2label={0: "neg", 1: "pos"})),
                              tiny_tokenizer, tmp_path / "teacher")
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher), "--student", "bert:layers=1", "--layer-map", "0:7",
                 "--train-file", str(train), "--dev-file", str(dev), "--text-col", "review", "--label-col",
                 "sentiment", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 2
    one_line_error(capsys, "--layer-map: layer map 0:7: the teacher has layers 0..1")
    assert not out.exists() and not (tmp_path / "cache").exists()  # before the teacher labelled anything
