"""`slimbert optimize` on tiny models: the accuracy budget on the selection split, resume, bf16 on
an AVX2-only CPU, and the Pareto frontier.

Timing on a busy 2-core machine is noise at this size, so the search's decisions are made
reproducible by giving every candidate a speed computed from its size and dtype (`fixed_speed`);
everything else (pruning, distillation, scoring, serving) runs for real.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TRAIN, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from slimbert import build_model, save_checkpoint
from slimbert.cli import main
from slimbert.errors import ConfigError
from slimbert.hardware import Machine
from slimbert.recipes import optimize as opt
from slimbert.recipes.common import DataConfig, load_data
from slimbert.recipes.finetune import FinetuneConfig, finetune
from slimbert.training.trainer import TrainConfig

DTYPE_SPEED = {"float32": 1.0, "int8": 1.6, "bfloat16": 2.0, "bf16": 2.0}


@pytest.fixture
def task(tmp_path):
    """A sentiment task in CSV files with 96 training and 48 dev rows."""
    rows = [(t, "pos" if i % 2 == 0 else "neg") for i, t in enumerate(TRAIN)]
    train, dev = tmp_path / "train.csv", tmp_path / "dev.csv"
    train.write_text("review,sentiment\n" + "".join(f"\"{t}\",{y}\n" for t, y in rows * 2))
    dev.write_text("review,sentiment\n" + "".join(f"\"{t}\",{y}\n" for t, y in rows))
    return train, dev


@pytest.fixture
def teacher(tmp_path, tiny_tokenizer, task, one_thread):
    """A tiny 4-layer classifier fine-tuned for a few epochs on the task."""
    torch.manual_seed(0)
    net = build_model(tiny_config(head="classification", num_hidden_layers=4, num_labels=2,
                                  id2label={0: "pos", 1: "neg"}))
    start = save_checkpoint(net, tiny_tokenizer, tmp_path / "start")
    data = load_data(DataConfig(train_file=str(task[0]), dev_file=str(task[1]), text_col="review",
                                label_col="sentiment"), ("train", "dev"))
    finetune(FinetuneConfig(out=str(tmp_path / "teacher"), model=str(start)), data,
             TrainConfig(epochs=4, lr=3e-3, batch_size=16, progress=False))
    return tmp_path / "teacher"


@pytest.fixture
def fixed_speed(monkeypatch):
    """Every candidate's speed from its size and dtype: throughput = 1e6 / parameters x a dtype
    factor, latency its inverse; the calls made are counted in the returned list."""
    real = opt.measure_pairs
    calls = []

    def measure(pairs, *args, **kwargs):
        calls.append(list(pairs))
        rows, meta = real(pairs, *args, **kwargs)
        for row in rows:
            row.throughput = 1e6 / row.parameters * DTYPE_SPEED[row.dtype]
            row.latency_ms = {n: {"p50": 1e3 / row.throughput, "p90": 1e3 / row.throughput} for n in row.latency_ms}
        return rows, meta

    monkeypatch.setattr(opt, "measure_pairs", measure)
    return calls


def args(teacher, task, out, *extra):
    return ["optimize", "--model", str(teacher), "--out", str(out), "--train-file", str(task[0]),
            "--dev-file", str(task[1]), "--text-col", "review", "--label-col", "sentiment",
            "--backend", "torch", "torch-int8", "torch-int8-all", "--moves", "heads", "layers",
            "--ffn-multiple", "8", "--rounds", "1",
            "--throughput-examples", "8", "--distill-epochs", "2", "--recover-epochs", "1",
            "--batch-size", "16", "--budget", "20m", "--no-progress", "--cache-dir", str(out.parent / "cache"),
            *extra]


def report(out) -> dict:
    return json.loads((out / "optimize.json").read_text())


def test_search_keeps_the_fastest_candidate_within_max_drop_on_the_selection_split(tmp_path, teacher, task,
                                                                                   fixed_speed, capsys):
    out = tmp_path / "search"
    assert main(args(teacher, task, out, "--max-drop", "5", "--moves", "heads", "ffn", "layers", "--min-layers", "2")) == 0
    state = report(out)
    threshold = state["base_selection"] - 5
    assert state["threshold"] == pytest.approx(threshold)
    heldout_threshold = state["base_heldout"] - 5
    chosen = state["chosen"]
    assert chosen["selection"] >= threshold and chosen["heldout"] >= heldout_threshold
    # nothing faster is within the budget on the selection split and passes the held-out check
    for c in state["candidates"]:
        if c["speed"] > chosen["speed"]:
            assert c["selection"] < threshold or c["heldout"] < heldout_threshold
    # the search made smaller models and served them both ways
    made = {m["name"] for m in state["models"]}
    shapes = [(m["root"], m["heads"], m["ffn"], m.get("recoveries", 0)) for m in state["models"]]
    assert len(shapes) == len(set(shapes))  # no model is made twice by two paths
    assert {"given", "given-heads25", "layers2"} <= made
    assert {c["backend"] for c in state["candidates"]} == {"torch", "torch-int8", "torch-int8-all"}
    # everything the search made is under OUT; the given model's folder is left as it was
    assert sorted(p.name for p in teacher.parent.iterdir()) == ["cache", "dev.csv", "search", "start", "teacher",
                                                                "train.csv"]
    # the chosen model is in OUT/model, served as chosen, and scores what the search measured
    assert (out / "model" / "model.safetensors").exists()
    config = json.loads((out / "model" / "config.json").read_text())
    assert bool(config.get("quantization")) == (chosen["backend"] == "torch-int8")
    assert main(["evaluate", "--model", str(out / "model"), "--dev-file", str(task[1]), "--text-col", "review",
                 "--label-col", "sentiment", "--json"]) == 0
    assert (out / "optimize.md").read_text().count("**chosen**") == 1
    assert (out / "optimize.png").stat().st_size > 0
    assert "chosen:" in capsys.readouterr().out


def test_a_stricter_budget_never_chooses_a_less_accurate_candidate(tmp_path, teacher, task, fixed_speed):
    out = tmp_path / "strict"
    assert main(args(teacher, task, out, "--max-drop", "0", "--moves", "heads")) == 0
    state = report(out)
    assert state["chosen"]["selection"] >= state["base_selection"]


def test_the_held_out_split_is_disjoint_stratified_and_reported(tmp_path, teacher, task, fixed_speed):
    data = load_data(DataConfig(train_file=str(task[0]), dev_file=str(task[1]), text_col="review",
                                label_col="sentiment"), ("train", "dev"))
    selection, held = opt.split_dev(data.dev, 0.5, seed=3, regression=False)
    assert len(selection.examples) + len(held.examples) == len(data.dev.examples) == 48
    assert sorted(e.label for e in held.examples).count(0) == 12  # half of each label
    # a --test-file replaces the split: the whole dev file is the selection split
    out = tmp_path / "with-test"
    assert main(args(teacher, task, out, "--test-file", str(task[0]), "--moves", "heads", "--budget", "1s")) == 0
    state = report(out)
    assert state["selection_examples"] == 48 and state["heldout_examples"] == 96
    assert all("heldout" in c for c in state["candidates"])


def test_resumed_search_equals_an_uninterrupted_one(tmp_path, teacher, task, fixed_speed, monkeypatch):
    whole = tmp_path / "whole"
    assert main(args(teacher, task, whole, "--max-drop", "5")) == 0
    measured_whole = len(fixed_speed)

    real_distill = opt.distill

    def crash(*a, **k):
        raise KeyboardInterrupt  # the machine goes away in the middle of the distillation move

    monkeypatch.setattr(opt, "distill", crash)
    broken = tmp_path / "broken"
    assert main(args(teacher, task, broken, "--max-drop", "5")) == 130  # "interrupted"
    assert not report(broken).get("chosen") and report(broken)["models"]
    before = len(fixed_speed)
    assert main(args(teacher, task, broken, "--max-drop", "5")) == 2  # a search is there: --resume or another --out
    monkeypatch.setattr(opt, "distill", real_distill)
    assert main(args(teacher, task, broken, "--max-drop", "5", "--resume")) == 0
    # nothing recorded was measured again
    assert (before - measured_whole) + (len(fixed_speed) - before) == measured_whole

    a, b = report(whole), report(broken)
    assert [m["name"] for m in a["models"]] == [m["name"] for m in b["models"]]
    keys = ("model", "backend", "selection", "heldout", "speed")
    assert [[c[k] for k in keys] for c in a["candidates"]] == [[c[k] for k in keys] for c in b["candidates"]]
    assert (a["chosen"]["model"], a["chosen"]["backend"]) == (b["chosen"]["model"], b["chosen"]["backend"])
    wa, wb = load_file(whole / "model" / "model.safetensors"), load_file(broken / "model" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_an_int8_candidate_cut_off_while_written_is_made_again(tmp_path, teacher, task, fixed_speed,
                                                                         monkeypatch):
    whole = tmp_path / "whole"
    assert main(args(teacher, task, whole, "--budget", "1s")) == 0
    real_save = opt.save_checkpoint

    def cut_off(model, tokenizer, directory):
        if "int8-all" in str(directory):  # the weights are written, then the machine goes away
            real_save(model, None, directory)
            (directory / "config.json").unlink()
            raise KeyboardInterrupt
        return real_save(model, tokenizer, directory)

    monkeypatch.setattr(opt, "save_checkpoint", cut_off)
    broken = tmp_path / "broken"
    assert main(args(teacher, task, broken, "--budget", "1s")) == 130
    monkeypatch.setattr(opt, "save_checkpoint", real_save)
    again = ["--resume"] if (broken / "optimize.json").exists() else []  # cut off before the first record
    assert main(args(teacher, task, broken, "--budget", "1s", *again)) == 0
    keys = ("model", "backend", "selection", "heldout")
    assert [[c[k] for k in keys] for c in report(whole)["candidates"]] == \
        [[c[k] for k in keys] for c in report(broken)["candidates"]]


def test_resume_with_other_settings_is_refused(tmp_path, teacher, task, fixed_speed, capsys):
    out = tmp_path / "s"
    assert main(args(teacher, task, out, "--budget", "1s")) == 0
    capsys.readouterr()
    assert main(args(teacher, task, out, "--budget", "1s", "--max-drop", "3", "--resume")) == 2
    err = capsys.readouterr().err
    assert "max_drop" in err and len(err.strip().splitlines()) == 1


def test_resume_on_other_data_is_refused(tmp_path, teacher, task, fixed_speed, capsys):
    out = tmp_path / "s"
    assert main(args(teacher, task, out, "--budget", "1s")) == 0
    capsys.readouterr()
    fewer = tmp_path / "dev-fewer.csv"
    fewer.write_text("".join(task[1].read_text().splitlines(keepends=True)[:-8]))
    assert main(args(teacher, (task[0], fewer), out, "--budget", "1s", "--resume")) == 2
    err = capsys.readouterr().err
    assert "selection_examples" in err and len(err.strip().splitlines()) == 1


def test_torch_fp32_is_measured_whatever_backends_are_asked_for(tmp_path, teacher, task, fixed_speed):
    out = tmp_path / "int8"
    assert main(args(teacher, task, out, "--budget", "1s", "--backend", "torch-int8")) == 0
    state = report(out)
    assert state["backends"] == ["torch", "torch-int8"]
    assert {c["backend"] for c in state["candidates"]} == {"torch", "torch-int8"}
    assert state["base_selection"] == next(c["selection"] for c in state["candidates"] if c["backend"] == "torch")


def test_a_budget_too_small_for_any_move_measures_backends_only(tmp_path, teacher, task, fixed_speed):
    out = tmp_path / "quick"
    assert main(args(teacher, task, out, "--budget", "1s")) == 0
    state = report(out)
    assert [m["name"] for m in state["models"]] == ["given"]
    assert [s["kind"] for s in state["steps"]] == ["measure", "confirm"]


AVX2 = Machine("AMD EPYC 7B13", "AVX2", ("avx2",), 2)
AMX = Machine("Intel Xeon 8480", "AVX512", ("avx2", "avx512f", "avx512_bf16", "amx_bf16"), 2)


def test_bf16_is_refused_and_never_searched_on_an_avx2_only_cpu(monkeypatch, teacher):
    import slimbert.hardware as hw

    for machine, native in ((AVX2, False), (AMX, True)):
        monkeypatch.setattr(hw, "detect_machine", lambda m=machine: m)
        monkeypatch.setattr(opt, "detect_machine", lambda m=machine: m)
        searched = opt.serving_backends(opt.OptimizeConfig(model=str(teacher), out="o"))
        assert ("torch-bf16" in searched) == native
        assert "torch" in searched and "torch-int8-all" in searched
        if native:
            opt.OptimizeConfig(model=str(teacher), out="o", backend=["torch-bf16"])
        else:
            with pytest.raises(ConfigError, match="AVX2"):
                opt.OptimizeConfig(model=str(teacher), out="o", backend=["torch-bf16"])


def test_cuda_bf16_is_searched_only_on_a_gpu_with_native_bf16(monkeypatch, teacher):
    import dataclasses

    import slimbert.hardware as hw

    with_gpu = dataclasses.replace(AVX2, cuda="Tesla V100 (sm_70)")
    monkeypatch.setattr(opt, "detect_machine", lambda: with_gpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    monkeypatch.setattr(opt, "check_backend", lambda backend: None)
    for native in (False, True):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=native:
                            n or including_emulation)
        searched = opt.serving_backends(opt.OptimizeConfig(model=str(teacher), out="o"))
        assert "torch-cuda" in searched and ("torch-cuda-bf16" in searched) == native
        if native:
            hw.check_bf16("cuda", "backend torch-cuda-bf16")
        else:
            with pytest.raises(ConfigError, match="V100.*no native bf16"):
                opt.OptimizeConfig(model=str(teacher), out="o", backend=["torch-cuda-bf16"])


def candidate(selection, speed):
    return {"selection": selection, "speed": speed}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 20)), min_size=1, max_size=25),
       st.integers(0, 20))
def test_the_frontier_is_non_dominated_and_covers_every_candidate(points, threshold):
    cands = [candidate(float(a), float(s)) for a, s in points]
    front = opt.pareto_frontier(cands)
    assert front
    for f in front:  # no candidate dominates a frontier member
        assert not any(opt.dominates(c, f) for c in cands)
    for c in cands:  # every other candidate is dominated by a member, or equals one
        assert any(f is c or opt.dominates(f, c) or (f["selection"], f["speed"]) == (c["selection"], c["speed"])
                   for f in front)
    chosen = opt.choose(front, threshold)
    feasible = [c for c in cands if c["selection"] >= threshold]
    if not feasible:
        assert chosen is None
    else:  # the frontier holds the fastest feasible candidate
        assert chosen["speed"] == max(c["speed"] for c in feasible)


def test_a_candidate_without_a_score_is_on_no_frontier():
    nan = float("nan")
    cands = [candidate(80.0, 1.0), candidate(nan, 5.0), candidate(79.0, nan), candidate(78.0, 2.0)]
    assert [(c["selection"], c["speed"]) for c in opt.pareto_frontier(cands)] == [(78.0, 2.0), (80.0, 1.0)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(1, 20)), min_size=1, max_size=25),
       st.integers(0, 20), st.integers(0, 20))
def test_the_choice_is_the_fastest_candidate_within_both_checks(points, threshold, heldout_threshold):
    cands = [{"selection": float(a), "heldout": float(h), "speed": float(s)} for a, h, s in points]
    chosen = opt.choose(cands, threshold, heldout_threshold)
    ok = [c for c in cands if c["selection"] >= threshold and c["heldout"] >= heldout_threshold]
    if not ok:
        assert chosen is None
    else:
        assert chosen in ok and chosen["speed"] == max(c["speed"] for c in ok)


def test_search_frontier_is_non_dominated(tmp_path, teacher, task, fixed_speed):
    out = tmp_path / "f"
    assert main(args(teacher, task, out, "--moves", "heads")) == 0
    state = report(out)
    front = [c for c in state["candidates"] if [c["model"], c["backend"]] in state["frontier"]]
    assert front and all(not opt.dominates(c, f) for f in front for c in state["candidates"])


@pytest.mark.parametrize("extra, message", [
    (["--holdout", "1.5"], "holdout"),
    (["--holdout", "0"], "holdout"),
    (["--backend", "hf"], "hf"),
    (["--max-drop", "-1"], "max_drop"),
    (["--budget", "soon"], "duration"),
    (["--moves", "quantum"], "quantum"),
])
def test_bad_options_are_one_line(tmp_path, task, extra, message, capsys, tiny_tokenizer):
    model = save_checkpoint(build_model(tiny_config(head="classification")), tiny_tokenizer, tmp_path / "m")
    assert main(args(model, task, tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
