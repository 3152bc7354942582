"""`slimbert optimize`: the fastest model this machine can serve within an accuracy budget.

Given a fine-tuned model and its task, the search makes smaller models and serves each of them
every way this machine runs well, measures every (model, backend) candidate on the same dev
sentences, and keeps the Pareto frontier of accuracy against speed. In plain terms:

1. **Two dev splits.** The dev split is cut in two, seeded and stratified by label: every decision
   of the search is made on the *selection* part. The *held-out* part (or `--test-file`) is scored
   for every candidate and only checks the choice: the chosen candidate must be within
   `--max-drop` there too. Both scores are reported, so the selection bias of picking the best of
   many is in plain sight.
2. **Backends.** Every model is served with torch fp32, torch int8 (attention layers; and every
   Linear, SmoothQuant-calibrated on the train split), ONNX Runtime fp32 and int8, bf16 only where
   the CPU runs it natively, and CUDA where there is a GPU.
3. **Moves** make new models from a *feasible* one (its fp32 score on the selection split at most
   `--max-drop` points below the given model's), the fastest feasible model first:
   - `heads`: remove another quarter of its root's attention heads (importance-ranked, Michel et
     al.); when the pruned model misses the accuracy budget, distil it back from the given model
     for `--recover-epochs`;
   - `ffn`: the same for feed-forward neurons;
   - `layers`: distil the given model into `bert:layers=N` with half the layers of a root (the
     given model or an earlier student), which then gets moves of its own.
   A move is taken only when its estimated time fits in what is left of `--budget`.
4. **Stop** when the budget is spent or no move can help. The frontier and the choice (the fastest
   candidate within `--max-drop` on both splits) are then timed again beside the given model.

Speeds are ratios to the given model served by torch fp32, measured in the same run as the
candidate. Every step is recorded in OUT/optimize.json as it ends, and `--resume` continues from
it without measuring or training again what is recorded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from slimbert.checkpoint import load_config, load_model, load_tokenizer, resolve, save_checkpoint
from slimbert.compress.quantize import quantize_int8
from slimbert.config import Backend, BertConfig
from slimbert.data.readers import Table
from slimbert.data.sources import FileColumns, TaskData, load_test_file
from slimbert.errors import ConfigError, DataError, SlimbertError
from slimbert.evaluation.backends import BackendUnavailable, build, check_backend, converted
from slimbert.evaluation.bench_run import BenchRow, measure_pairs, ratio_axis
from slimbert.hardware import check_bf16, detect_machine, gpu_bf16_native
from slimbert.io import atomic_write, atomic_write_text
from slimbert.recipes.common import DataConfig, fraction, model_data, positive, train_sample
from slimbert.recipes.distill import DistillConfig, distill
from slimbert.recipes.distill import train_defaults as distill_defaults
from slimbert.recipes.pretrain import parse_duration
from slimbert.recipes.prune import RECOVERY_LR, PruneConfig, prune
from slimbert.training.trainer import TrainConfig

log = logging.getLogger(__name__)

STEP = 0.25  # each pruning move removes another quarter of its root's heads or neurons
MAX_PRUNED = 0.75  # ... up to three quarters
SMOOTHQUANT = "torch-int8-all"  # served from an int8 checkpoint calibrated on the train split
CALIBRATION_EXAMPLES = 512
IMPORTANCE_EXAMPLES = 2048  # training examples head and neuron importance is scored on
# Training one example (forward, backward, update) costs about this many inference passes: the
# factor that turns a measured inference throughput into a training-time estimate.
TRAIN_COST = 3.0
STATE = "optimize.json"


@dataclass
class OptimizeConfig:
    model: str  # the fine-tuned model to make faster (a checkpoint directory)
    # output directory: the chosen model in OUT/model, optimize.md/.json/.png, every model made in OUT/candidates
    out: str
    max_drop: float = 1.0  # points of the task's main metric the chosen model may lose (on the selection split)
    # throughput: sequences/s at --batch-size; latency: batch-1 p50 at --seq-len tokens
    target: Literal["throughput", "latency"] = "throughput"
    # wall-clock time the search may take, e.g. 2h or 45m, in seconds when bare (a move is started only if
    # its estimate fits)
    budget: float = field(default=7200.0, metadata={"parse": parse_duration, "metavar": "DURATION"})
    # held-out examples in the dev file's format (default: --holdout of the dev split is held back)
    test_file: str | None = None
    holdout: float = 0.5  # fraction of the dev split held back when there is no --test-file
    # serving backends to try (default: every one this machine runs well; bf16 only where native)
    backend: list[Backend] | None = None
    # how new models are made: prune heads, prune feed-forward neurons, distil into fewer layers
    moves: list[Literal["heads", "ffn", "layers"]] = field(default_factory=lambda: ["heads", "ffn", "layers"])
    recover_epochs: int = 1  # distillation epochs that recover a pruned model which lost too much
    # epochs of each bert:layers=N student (on all of SST-2, a 3-layer student distilled from MiniLM-L6
    # lost 2.06 points after 2 epochs and 0.88 after 4, 3 seeds: BENCHMARKS.md)
    distill_epochs: int = 4
    min_layers: int = 1  # distil into no fewer layers than this
    ffn_multiple: int = 64  # pruned feed-forward widths are multiples of this (fast matmul shapes)
    batch_size: int = 32  # throughput batch
    seq_len: int = 32  # tokens of the batch-1 latency inputs
    throughput_examples: int = 256  # dev sentences each throughput round times
    rounds: int = 3  # timing rounds per measurement
    threads: int | None = None  # torch / ONNX Runtime threads (default: torch's choice)
    max_length: int = 128  # tokens per example
    seed: int = 0  # the dev split, samples and training
    cache_dir: str | None = None  # teacher logits (default: $SLIMBERT_CACHE or ~/.cache/slimbert)
    resume: bool = False  # continue the search recorded in OUT/optimize.json
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        positive(self, "budget", "recover_epochs", "distill_epochs", "min_layers", "ffn_multiple", "batch_size",
                 "seq_len", "throughput_examples", "rounds", "threads", "max_length")
        if not 0 <= self.max_drop < math.inf:
            raise ConfigError(f"max_drop must be a number of points >= 0, got {self.max_drop}")
        fraction(self, "holdout")
        if not 0 < self.holdout:
            raise ConfigError("holdout must be in (0, 1): part of the dev split is held back to check the choice "
                              "(or give --test-file)")
        for backend in self.backend or ():
            if backend == "hf":
                raise ConfigError("backend: hf is a reference for bench, not a way to serve a slimbert model")
            if backend.endswith("bf16"):
                check_bf16("cuda" if backend.startswith("torch-cuda") else "cpu", f"backend {backend}")

    def settings(self) -> dict:
        """What a resumed search must share with the one it continues."""
        keep = ("max_drop", "target", "test_file", "holdout", "backend", "moves", "recover_epochs",
                "distill_epochs", "min_layers", "ffn_multiple", "batch_size", "seq_len", "throughput_examples",
                "threads", "max_length", "seed")
        return {"model": str(resolve(self.model)), **{name: getattr(self, name) for name in keep}}


def serving_backends(config: OptimizeConfig) -> list[str]:
    """The backends the search tries: those asked for, or every one this machine runs well (bf16
    only on a CPU with AVX512-BF16/AMX; CUDA when torch sees a GPU; ONNX Runtime when installed).
    torch fp32 is always among them: its score decides which models are feasible, and every speed
    is a ratio to the given model's torch fp32 row."""
    if config.backend:
        for backend in config.backend:
            check_backend(backend)
        return list(dict.fromkeys(["torch", *config.backend]))
    machine = detect_machine()
    wanted = ["torch", "torch-int8", SMOOTHQUANT, "onnxruntime", "onnxruntime-int8"]
    if machine.bf16_native:
        wanted.append("torch-bf16")
    if machine.cuda:
        wanted.append("torch-cuda")
        if gpu_bf16_native():
            wanted.append("torch-cuda-bf16")
    available = []
    for backend in wanted:
        try:
            check_backend(backend)
            available.append(backend)
        except BackendUnavailable as e:
            log.warning("not searched: %s", e)
    return available


# ------------------------------------------------------------------------- splits


def split_dev(table: Table, held: float, seed: int, regression: bool) -> tuple[Table, Table]:
    """(selection, held-out): `held` of the examples held back, the same share of each label
    (seeded); both keep the file's order."""
    groups: dict = {}
    for i, ex in enumerate(table.examples):
        groups.setdefault(None if regression else ex.label, []).append(i)
    rng = random.Random(seed)
    held_out = set()
    for key in sorted(groups, key=str):
        members = groups[key]
        rng.shuffle(members)
        held_out.update(members[:round(held * len(members))])
    if not held_out or len(held_out) == len(table.examples):
        raise DataError(f"{table.path}: {len(table.examples)} dev examples cannot be split into selection and "
                        "held-out parts; give a larger dev split or --test-file")
    selection = [ex for i, ex in enumerate(table.examples) if i not in held_out]
    kept = [ex for i, ex in enumerate(table.examples) if i in held_out]
    return dataclasses.replace(table, examples=selection), dataclasses.replace(table, examples=kept)


def task_data(source: DataConfig, model: str) -> TaskData:
    """The train and dev splits to search with (`model_data`): the task `model`'s config.json
    names unless `source` names one or gives files; the user's files are read with the model's labels."""
    if not (source.task or source.train_file or source.dev_file) and load_config(model).task is None:
        raise DataError(f"{model}: its config.json names no task; give --task or --train-file/--dev-file")
    only_dev = source.dev_file and not source.train_file  # a dev file alone: backends are all it can search
    return model_data(source, model, ("dev",) if only_dev else ("train", "dev"))


def selection_and_heldout(config: OptimizeConfig, data: TaskData, columns: FileColumns | None = None
                          ) -> tuple[TaskData, Table]:
    """The task data whose dev split is the selection part, and the held-out examples (read from
    --test-file with `columns`, or held back from the dev split)."""
    if data.dev is None:
        raise DataError("optimize measures candidates on a dev split: give --task (and --data-dir) or --dev-file")
    if config.test_file:
        return data, load_test_file(config.test_file, data, columns)
    selection, held = split_dev(data.dev, config.holdout, config.seed, data.regression)
    return dataclasses.replace(data, dev=selection), held


# ------------------------------------------------------------------------- the frontier


def dominates(a: dict, b: dict) -> bool:
    """`a` is at least as accurate and as fast as `b`, and better in one."""
    return (a["selection"] >= b["selection"] and a["speed"] >= b["speed"]
            and (a["selection"] > b["selection"] or a["speed"] > b["speed"]))


def pareto_frontier(candidates: list[dict]) -> list[dict]:
    """The candidates no other candidate dominates, fastest first. A candidate without a number
    for its score or speed (NaN: a model that predicts one constant has no correlation) is on no
    frontier: NaN compares false with everything, so nothing would ever dominate it."""
    scored = [c for c in candidates if not (math.isnan(c["selection"]) or math.isnan(c["speed"]))]
    front = [c for c in scored if not any(dominates(o, c) for o in scored if o is not c)]
    return sorted(front, key=lambda c: (-c["speed"], -c["selection"]))


def choose(candidates: list[dict], threshold: float, heldout_threshold: float | None = None) -> dict | None:
    """The fastest candidate whose selection score is at least `threshold` (ties: the more
    accurate) and, given `heldout_threshold`, whose held-out score passes that check too."""
    feasible = [c for c in candidates if c["selection"] >= threshold
                and (heldout_threshold is None or c["heldout"] >= heldout_threshold)]
    return max(feasible, key=lambda c: (c["speed"], c["selection"]), default=None)


# ------------------------------------------------------------------------- the search


@dataclass
class Search:
    """The search's state: what it made, measured and spent; OUT/optimize.json is this, written
    after every step."""

    config: OptimizeConfig
    data: TaskData  # dev = the selection split
    heldout: Table
    backends: list[str]
    models: list[dict] = field(default_factory=list)  # every model made, in order
    candidates: list[dict] = field(default_factory=list)  # every (model, backend) measured
    steps: list[dict] = field(default_factory=list)  # what each step did, and how long it took
    finished: bool = False
    machine: dict = field(default_factory=lambda: detect_machine().as_dict())  # the machine line and flags
    _started: float = field(default_factory=time.perf_counter)  # when this process began the search
    _before: float = 0.0  # seconds earlier runs of this search spent (before a --resume)

    def spent(self) -> float:
        """Wall-clock seconds the search has taken, this run and the ones it resumes, all included
        (loading the data, measuring, training, and what lies between)."""
        return self._before + time.perf_counter() - self._started

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def base(self) -> dict:
        return self.models[0]

    def threshold(self) -> float:
        """The lowest selection score (in points) a feasible candidate may have."""
        return self.base["selection"] - self.config.max_drop

    def base_heldout(self) -> float:
        """The given model's held-out score (torch fp32), in points."""
        return next(c["heldout"] for c in self.candidates if c["model"] == self.base["name"] and c["backend"] == "torch")

    def heldout_threshold(self) -> float:
        """The lowest held-out score (in points) the chosen candidate may have."""
        return self.base_heldout() - self.config.max_drop

    def feasible(self, model: dict) -> bool:
        return model["selection"] is not None and model["selection"] >= self.threshold()

    def say(self, message: str) -> None:
        tqdm.write(f"optimize: {message}") if self.config.progress else log.info(message)

    # -------------------------------------------------------------- state on disk

    def state(self) -> dict:
        """What OUT/optimize.json holds."""
        return {"settings": self.config.settings(), "task": self.data.name, "metric": self.data.main_metric,
                "backends": self.backends, "selection_examples": len(self.data.dev.examples),
                "heldout": str(self.config.test_file or f"{self.config.holdout:g} of the dev split"),
                "heldout_examples": len(self.heldout.examples), "budget_seconds": self.config.budget,
                "elapsed_seconds": self.spent(), "finished": self.finished, "machine": self.machine,
                "torch": torch.__version__, "models": self.models, "candidates": self.candidates,
                "steps": self.steps}

    def save(self, state: dict | None = None) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / STATE, json.dumps(state or self.state(), indent=2) + "\n")

    def restore(self) -> None:
        path = self.out / STATE
        if not path.exists():
            raise DataError(f"--resume: {path} does not exist; nothing to resume")
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            settings, models, candidates, steps = (state["settings"], state["models"], state["candidates"],
                                                   state["steps"])
            elapsed = float(state["elapsed_seconds"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not a search slimbert optimize wrote ({e})") from None
        # as JSON has it (tuples become lists); the data too: the task and the size of each split
        ours = json.loads(json.dumps(self.config.settings()))
        data_then = {k: state.get(k) for k in ("task", "selection_examples", "heldout_examples")}
        data_now = {k: self.state()[k] for k in data_then}
        settings, ours = {**settings, **data_then}, {**ours, **data_now}
        if settings != ours:
            differ = sorted(k for k in set(settings) | set(ours) if settings.get(k) != ours.get(k))
            raise ConfigError(f"--resume: {path} was a search with other settings ({', '.join(differ)}); "
                              "give the same options, or another --out")
        self.models, self.candidates, self.steps, self._before = models, candidates, steps, elapsed

    # -------------------------------------------------------------- measuring

    def measure(self, model: dict) -> None:
        """Serve `model` with every backend, beside the given model's torch fp32 row, and record the
        candidates with their speed relative to that row."""
        served = {self.served_pair(model, backend): backend for backend in self.backends}
        base_pair, by_pair, meta = self.time_pairs(list(served), also_score={"heldout": self.heldout.examples})
        for skipped in meta["skipped"]:
            self.say(f"{model['name']} with {served.get((Path(skipped['model']), skipped['backend']))}: "
                     f"not served ({skipped['why']})")
        for pair, backend in served.items():
            if pair in by_pair:
                self.candidates.append(self._candidate(model, backend, by_pair[pair], by_pair[base_pair]))
        fp32 = next((c for c in self.candidates if c["model"] == model["name"] and c["backend"] == "torch"), None)
        model["selection"] = fp32["selection"] if fp32 else None

    def served_pair(self, model: dict, backend: str) -> tuple[Path, str]:
        """The (checkpoint, bench backend) that serves `model` with `backend`: the SmoothQuant
        int8 checkpoint with torch for SMOOTHQUANT, else the model's own with that backend."""
        return (self.smoothquant(model), "torch") if backend == SMOOTHQUANT else (Path(model["path"]), backend)

    def time_pairs(self, pairs: list[tuple[Path, str]], also_score: dict | None = None) -> tuple:
        """`pairs` timed round-robin beside the given model's torch row: (that row's pair, the rows
        by pair, bench's meta)."""
        base_pair = (Path(self.base["path"]), "torch")
        rows, meta = measure_pairs(list(dict.fromkeys([base_pair, *pairs])), self.data, (self.config.seq_len,),
                                   self.config.batch_size, self.config.rounds, self.config.threads, memory=False,
                                   progress=self.config.progress, max_length=self.config.max_length,
                                   throughput_examples=self.config.throughput_examples, also_score=also_score)
        return base_pair, {(Path(r.model), r.backend): r for r in rows}, meta

    def _candidate(self, model: dict, backend: str, row: BenchRow, base: BenchRow) -> dict:
        latency = row.latency_ms[self.config.seq_len]["p50"]
        base_latency = base.latency_ms[self.config.seq_len]["p50"]
        speed = (row.throughput / base.throughput if self.config.target == "throughput"
                 else base_latency / latency)
        return {"model": model["name"], "backend": backend, "dtype": row.dtype,
                "selection": 100 * row.score, "heldout": 100 * row.scores.get("heldout", math.nan), "speed": speed,
                "throughput": row.throughput, "latency_ms": latency, "base_throughput": base.throughput,
                "base_latency_ms": base_latency, "parameters": row.parameters, "file_mb": row.file_bytes / 1e6}

    def smoothquant(self, model: dict) -> Path:
        """`model` with int8 weights in every Linear layer, SmoothQuant-calibrated on the train
        split (or on the selection split when there is no train split)."""
        path = self.out / "candidates" / f"{model['name']}-int8-all"
        if path.exists():  # complete: it is written beside and renamed into place
            return path
        staged = path.with_name(path.name + ".tmp")
        shutil.rmtree(staged, ignore_errors=True)  # what an interrupted run left
        net, tokenizer = load_model(model["path"]), load_tokenizer(model["path"])
        calibration = self.data if self.data.train is not None else dataclasses.replace(self.data,
                                                                                         train=self.data.dev)
        sample = train_sample(calibration, tokenizer, CALIBRATION_EXAMPLES, self.config.max_length,
                              self.config.seed)
        save_checkpoint(quantize_int8(net, "all", sample, tokenizer.pad_id), tokenizer, staged)
        staged.rename(path)
        return path

    # -------------------------------------------------------------- moves

    def moves_of(self, model: dict) -> list[dict]:
        """The moves not yet tried from `model`: pruning (cheap) and distillation into fewer layers
        from a feasible model; recovery of a pruned model that missed the accuracy budget."""
        cfg, moves = self.config, []
        if self.data.train is None:
            return []  # every move scores importance or trains on the train split
        if self.feasible(model):
            made = {(m["root"], m["heads"], m["ffn"], m.get("recoveries", 0)) for m in self.models}
            for kind in ("heads", "ffn"):
                after = {"heads": model["heads"], "ffn": model["ffn"], kind: model[kind] + STEP}
                if (kind in cfg.moves and after[kind] <= MAX_PRUNED + 1e-9
                        and (model["root"], after["heads"], after["ffn"], model.get("recoveries", 0)) not in made):
                    # (a model made by another path, e.g. heads then ffn against ffn then heads, is not made again)
                    moves.append({"kind": kind, "parent": model["name"]})
            layers = math.ceil(model["layers"] / 2)
            if ("layers" in cfg.moves and model["heads"] == model["ffn"] == 0
                    and cfg.min_layers <= layers < model["layers"]
                    and not any(m["layers"] == layers and m["root"] == m["name"] for m in self.models)):
                moves.append({"kind": "layers", "parent": model["name"], "layers": layers})
        elif model.get("recoverable"):
            moves.append({"kind": "recover", "parent": model["name"]})
        tried = {(s["parent"], s["kind"]) for s in self.steps if "parent" in s}
        return [m for m in moves if (m["parent"], m["kind"]) not in tried]

    def new_name(self, move: dict) -> str:
        parent = self.model(move["parent"])
        if move["kind"] == "layers":
            name = f"layers{move['layers']}"
        elif move["kind"] == "recover":
            name = f"{parent['name']}-recovered"
        else:
            heads = parent["heads"] + (STEP if move["kind"] == "heads" else 0)
            ffn = parent["ffn"] + (STEP if move["kind"] == "ffn" else 0)
            name = "-".join([parent["root"]] + ([f"heads{round(100 * heads)}"] if heads else [])
                            + ([f"ffn{round(100 * ffn)}"] if ffn else []))
            if parent["name"].endswith("-recovered"):
                name += "-r"  # pruned further after a recovery
        taken = {m["name"] for m in self.models}
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name}-{n}", n + 1
        return unique

    def model(self, name: str) -> dict:
        return next(m for m in self.models if m["name"] == name)

    def best_speed(self, model: dict, feasible_only: bool = True) -> float:
        """The fastest candidate of `model` (that is feasible); 0 when there is none."""
        return max((c["speed"] for c in self.candidates if c["model"] == model["name"]
                    and (not feasible_only or c["selection"] >= self.threshold())), default=0.0)

    def best_feasible_speed(self) -> float:
        return max((self.best_speed(m) for m in self.models), default=0.0)

    def predicted_speed(self, move: dict) -> float:
        """How fast the model a costly move makes should serve: a recovered model as fast as it was
        measured before recovery; a student with half the layers about twice as fast as the
        fastest feasible model of its teacher's line (which pruning may have sped up)."""
        parent = self.model(move["parent"])
        if move["kind"] == "recover":
            return self.best_speed(parent, feasible_only=False)
        # the student can be pruned and served as its teacher's line was: about layers/N times as
        # fast as the fastest feasible model of the parent's root
        line = max(self.best_speed(m) for m in self.models if m["root"] == parent["root"])
        return line * parent["layers"] / move["layers"]

    def estimate(self, move: dict) -> float:
        """Seconds `move` should take: its training from the measured inference throughput of the
        model it trains (x TRAIN_COST for the backward pass), plus measuring the result as long as
        the last measurement took."""
        parent = self.model(move["parent"])
        train_n = len(self.data.train.examples)
        measuring = next((s["seconds"] for s in reversed(self.steps) if s["kind"] == "measure"), 0.0)
        if move["kind"] == "layers":
            student = self.throughput(parent) * parent["layers"] / move["layers"]
            return (train_n / self.throughput(self.base)  # the teacher's logits (cached after the first student)
                    + TRAIN_COST * train_n * self.config.distill_epochs / student + measuring)
        if move["kind"] == "recover":
            return TRAIN_COST * train_n * self.config.recover_epochs / self.throughput(parent) + measuring
        return TRAIN_COST * min(IMPORTANCE_EXAMPLES, train_n) / self.throughput(parent) + measuring

    def throughput(self, model: dict) -> float:
        """Inference sequences/s of `model` in torch fp32, as last measured."""
        rows = [c for c in self.candidates if c["model"] == model["name"] and c["backend"] == "torch"]
        return rows[-1]["throughput"] if rows else self.throughput(self.model(model["parent"]))

    def next_move(self) -> tuple[dict | None, str]:
        """The next move, and why there is none when there is none.

        Pruning moves are cheap (no training): they are taken first, from the fastest feasible model
        down. Of the costly moves (distillation, recovery), the one expected to raise the fastest
        feasible speed most per second of its estimate is taken; one that cannot raise it is not."""
        left = self.config.budget - self.spent()
        pending = [move for m in sorted(self.models, key=lambda m: -self.best_speed(m)) for move in self.moves_of(m)]
        if not pending:
            return None, "no feasible model has a move left"
        for move in pending:
            move["estimate"] = self.estimate(move)
        fits = [m for m in pending if m["estimate"] <= left]
        cheap = [m for m in fits if m["kind"] in ("heads", "ffn")]
        if cheap:
            return cheap[0], ""
        best = self.best_feasible_speed()
        for move in fits:
            move["predicted_speed"] = self.predicted_speed(move)
        worth = [m for m in fits if m["predicted_speed"] > best]
        if worth:
            return max(worth, key=lambda m: (m["predicted_speed"] - best) / max(m["estimate"], 1e-9)), ""
        if fits:
            return None, "no move left is expected to serve faster than the fastest feasible candidate"
        return None, "no move left fits in the budget"

    def train_config(self, **values) -> TrainConfig:
        return TrainConfig(seed=self.config.seed, progress=self.config.progress, **values)

    def run_move(self, move: dict, name: str) -> dict:
        """Make the model of `move` in OUT/candidates/NAME (from scratch if a part is there)."""
        cfg = self.config
        parent = self.model(move["parent"])
        work = self.out / "candidates" / name
        shutil.rmtree(work, ignore_errors=True)  # what an interrupted step left
        made = {"name": name, "parent": parent["name"], "path": str(work), "root": parent["root"],
                "layers": parent["layers"], "heads": parent["heads"], "ffn": parent["ffn"], "selection": None,
                "recoveries": parent.get("recoveries", 0) + (move["kind"] == "recover")}
        if move["kind"] in ("layers", "recover"):
            student = f"bert:layers={move['layers']}" if move["kind"] == "layers" else parent["path"]
            spec = DistillConfig(teacher=self.base["path"], student=student, out=str(work), max_length=cfg.max_length,
                                 cache_dir=cfg.cache_dir)
            epochs = cfg.distill_epochs if move["kind"] == "layers" else cfg.recover_epochs
            lr = distill_defaults(spec)["lr"] if move["kind"] == "layers" else RECOVERY_LR
            distill(spec, self.data, self.train_config(epochs=epochs, lr=lr))
            if move["kind"] == "layers":
                made.update(root=name, layers=move["layers"], recoveries=0,
                            how=f"distilled from {self.base['name']} into bert:layers={move['layers']}, {epochs} epochs")
            else:
                made["how"] = f"{parent['name']} distilled from {self.base['name']} for {epochs} epoch(s)"
            return made
        kind = move["kind"]
        prune(PruneConfig(model=parent["path"], out=str(work), ffn_multiple=cfg.ffn_multiple,
                          importance_examples=IMPORTANCE_EXAMPLES, max_length=cfg.max_length,
                          **{kind: self.prune_share(parent, kind)}),
              self.data, self.train_config(epochs=1, lr=RECOVERY_LR))
        made.update({kind: parent[kind] + STEP}, recoverable=True,
                    how=f"{parent['name']} with another {round(100 * STEP)}% of {parent['root']}'s "
                        f"{'heads' if kind == 'heads' else 'feed-forward neurons'} pruned")
        return made

    def prune_share(self, parent: dict, kind: str) -> float:
        """The fraction of `parent`'s remaining heads or neurons that is a further STEP of its root's."""
        root, now = unit_count(self.model(parent["root"])["path"], kind), unit_count(parent["path"], kind)
        return min(0.99, STEP * root / now)

    # -------------------------------------------------------------- the loop

    def step(self, kind: str, what: str, action, estimate: float | None = None, **extra) -> object:
        start = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - start
        self.steps.append({"kind": kind, "what": what, "seconds": seconds, "estimate": estimate, **extra})
        self.save()
        return result

    def run(self) -> dict:
        cfg = self.config
        if not self.models:
            given = load_config(cfg.model)
            if not isinstance(given, BertConfig):
                raise ConfigError(f"{cfg.model}: optimize searches BERT models; this is a {given.MODEL_TYPE}")
            self.models.append({"name": "given", "path": str(resolve(cfg.model)), "parent": None, "root": "given",
                                "layers": given.num_hidden_layers, "heads": 0.0, "ffn": 0.0, "selection": None,
                                "how": "the model given"})
        base = self.base
        if base["selection"] is None:
            self.say(f"measuring {cfg.model} with {', '.join(self.backends)}")
            self.step("measure", f"serve {base['name']} with every backend", lambda: self.measure(base),
                      model=base["name"])
        self.say(f"{self.data.main_metric} on the selection split: {base['selection']:.2f}; feasible from "
                 f"{self.threshold():.2f}; budget {fmt_seconds(cfg.budget)}, {fmt_seconds(self.spent())} spent")
        while not self.finished:
            move, why = self.next_move()
            if move is None:
                self.say(f"stopping: {why} ({fmt_seconds(self.spent())} of {fmt_seconds(cfg.budget)} spent)")
                self.finished = True
                break
            name = self.new_name(move)
            self.say(f"{name}: {move['kind']} from {move['parent']} (about {fmt_seconds(move['estimate'])}; "
                     f"{fmt_seconds(cfg.budget - self.spent())} left)")

            def make_and_measure(move=move, name=name):
                made = self.run_move(move, name)
                self.measure(made)
                self.models.append(made)
                return made

            made = self.step(move["kind"], f"{move['kind']}: {name} from {move['parent']}", make_and_measure,
                             estimate=move["estimate"], parent=move["parent"], made=name)
            status = "feasible" if self.feasible(made) else "below the accuracy budget"
            self.say(f"{name}: {made['selection']:.2f} on selection ({status}); fastest candidate "
                     f"{self.best_speed(made, feasible_only=False):.2f}x")
        confirmed = self.confirm()
        self.save()
        return confirmed

    def confirm(self) -> dict | None:
        """Choose, and time again beside the given model in one run, the frontier and the choice: the
        fastest candidate feasible on the selection split whose held-out score is also within
        --max-drop. A candidate whose first timing flattered it can drop back and let others
        forward; those are timed again too, until the frontier and the choice all have been."""
        while True:
            front = pareto_frontier(self.candidates)
            chosen = choose(self.candidates, self.threshold(), self.heldout_threshold())
            unconfirmed = [c for c in front + ([chosen] if chosen else []) if not c.get("confirmed")]
            unconfirmed = list({id(c): c for c in unconfirmed}.values())
            if not unconfirmed:
                return chosen
            self.say(f"timing {len(unconfirmed)} candidate(s) of the frontier and the choice again in one run")
            self.step("confirm", f"time {len(unconfirmed)} candidate(s) again in one run",
                      lambda todo=unconfirmed: self.retime(todo))

    def retime(self, candidates: list[dict]) -> None:
        pairs = {id(c): self.served_pair(self.model(c["model"]), c["backend"]) for c in candidates}
        base_pair, by_pair, _ = self.time_pairs(list(pairs.values()))
        for c in candidates:
            row = by_pair.get(pairs[id(c)])
            c["confirmed"] = True
            if row is None:
                continue
            fresh = self._candidate(self.model(c["model"]), c["backend"], row, by_pair[base_pair])
            c.update({k: fresh[k] for k in ("speed", "throughput", "latency_ms", "base_throughput",
                                             "base_latency_ms")}, search_speed=c["speed"])


def unit_count(path: str | Path, kind: str) -> int:
    """Attention heads (`heads`) or feed-forward neurons (`ffn`) of a BERT checkpoint."""
    cfg = load_config(path)
    if kind == "heads":
        removed = sum(len(v) for v in (cfg.pruned_heads or {}).values())
        return cfg.num_hidden_layers * cfg.num_attention_heads - removed
    return sum(cfg.intermediate_sizes) if cfg.intermediate_sizes else cfg.num_hidden_layers * cfg.intermediate_size


def fmt_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# ------------------------------------------------------------------------- outputs


def serve_chosen(search: Search, chosen: dict) -> Path:
    """OUT/model: the chosen model as it is served: a checkpoint (int8 or bf16 when that is the
    backend), with model.onnx / model_int8.onnx beside it for ONNX Runtime."""
    out = search.out / "model"
    tmp = search.out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model = search.model(chosen["model"])
    backend = chosen["backend"]
    source = search.smoothquant(model) if backend == SMOOTHQUANT else Path(model["path"])
    net, tokenizer = load_model(source), load_tokenizer(source)
    if backend.startswith("torch") and backend != SMOOTHQUANT:  # the SmoothQuant checkpoint is served as it is
        net = converted(net, backend)
    save_checkpoint(net, tokenizer, tmp)
    if backend.startswith("onnxruntime"):
        build(source, backend, tmp, net)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def write_report(search: Search, chosen: dict | None) -> dict:
    """OUT/optimize.json (the state plus the frontier and the choice), optimize.md and optimize.png."""
    state = search.state()
    front = pareto_frontier(search.candidates)
    base = search.base
    base_heldout = search.base_heldout()
    state.update(frontier=[(c["model"], c["backend"]) for c in front], chosen=chosen,
                 threshold=search.threshold(), base_selection=base["selection"], base_heldout=base_heldout)
    if chosen is not None:
        state["chosen_heldout_drop"] = base_heldout - chosen["heldout"]
    # what picking on the selection split alone would have chosen: the held-out check's work
    alone = choose(search.candidates, search.threshold())
    state["selection_only"] = None if alone is None or alone is chosen else alone
    search.save(state)
    atomic_write_text(search.out / "optimize.md", markdown(state))
    plot(state, search.out / "optimize.png")
    return state


def markdown(state: dict) -> str:
    s = state["settings"]
    metric, chosen = state["metric"], state["chosen"]
    speed = "throughput" if s["target"] == "throughput" else "batch-1 latency"
    target = (f"Target: {speed}, within {s['max_drop']:g} points of {metric} on the selection split "
              f"({state['selection_examples']} dev examples; held out: {state['heldout']}, "
              f"{state['heldout_examples']} examples). Backends: {', '.join(state['backends'])}.")
    spent = f"Time: {fmt_seconds(state['elapsed_seconds'])} of a {fmt_seconds(state['budget_seconds'])} budget."
    lines = [f"# slimbert optimize: {Path(s['model']).name} on {state['task']}", "",
             f"Machine: {state['machine']['line']}; torch {state['torch']}.", target, spent, ""]
    if chosen is None:
        lines += ["No candidate is within the accuracy budget on both the selection and the held-out examples.", ""]
    else:
        lines += [(f"**Chosen: {chosen['model']} served with {chosen['backend']}**: {chosen['speed']:.2f}x the "
                   f"given model's {speed} (torch fp32, same run); {metric} {chosen['selection']:.2f} on selection "
                   f"({chosen['selection'] - state['base_selection']:+.2f}), {chosen['heldout']:.2f} held out "
                   f"({chosen['heldout'] - state['base_heldout']:+.2f})."), ""]
    alone = state.get("selection_only")
    if alone is not None:
        lines += [(f"Picked on the selection split alone, the choice would have been {alone['model']} served with "
                   f"{alone['backend']} ({alone['speed']:.2f}x, {alone['selection'] - state['base_selection']:+.2f} "
                   f"on selection), but it lost {state['base_heldout'] - alone['heldout']:.2f} points on the held-out "
                   f"examples, more than --max-drop {s['max_drop']:g}: the selection split favoured it by chance, "
                   "and the held-out check set it aside."), ""]
    head = ["model", "backend", "dtype", f"{metric} selection", f"{metric} held out", f"{speed} vs given",
            "seq/s", "p50 ms", "params (M)", "size (MB)", "frontier"]
    front = {tuple(f) for f in state["frontier"]}
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in sorted(state["candidates"], key=lambda c: -c["speed"]):
        mark = ("**chosen**" if chosen and (c["model"], c["backend"]) == (chosen["model"], chosen["backend"])
                else "yes" if (c["model"], c["backend"]) in front else "")
        lines.append("| " + " | ".join([
            c["model"], c["backend"], c["dtype"], f"{c['selection']:.2f}", f"{c['heldout']:.2f}",
            f"{c['speed']:.2f}x", f"{c['throughput']:.1f}", f"{c['latency_ms']:.1f}",
            f"{c['parameters'] / 1e6:.2f}", f"{c['file_mb']:.1f}", mark]) + " |")
    lines += ["", ("The frontier (on the selection split) and the choice were timed again beside the given model "
                   "at the end; the other rows keep the ratio measured beside it when they were made."), "",
              "| step | what | estimate | took |", "|---|---|---|---|"]
    for i, step in enumerate(state["steps"], 1):
        estimate = "" if step.get("estimate") is None else fmt_seconds(step["estimate"])
        lines.append(f"| {i} | {step['what']} | {estimate} | {fmt_seconds(step['seconds'])} |")
    lines += ["", "Models made:", ""]
    lines += [f"- {m['name']}: {m['how']} ({m['path']})" for m in state["models"]]
    return "\n".join(lines) + "\n"


def plot(state: dict, path: Path) -> None:
    """Accuracy against speed for every candidate, on the selection and the held-out examples;
    the frontier joined, the choice circled, the accuracy budget dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cands, chosen = state["candidates"], state["chosen"]
    front = [c for c in cands if [c["model"], c["backend"]] in [list(f) for f in state["frontier"]]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    for ax, split, base in ((axes[0], "selection", state["base_selection"]),
                            (axes[1], "heldout", state["base_heldout"])):
        ax.scatter([c["speed"] for c in cands], [c[split] for c in cands], s=25, color="tab:gray", alpha=0.6,
                   label="candidate")
        line = sorted(front, key=lambda c: c["speed"])
        ax.plot([c["speed"] for c in line], [c[split] for c in line], "o-", color="tab:blue", ms=5,
                label="frontier (on selection)")
        if chosen:
            ax.scatter([chosen["speed"]], [chosen[split]], s=160, facecolors="none", edgecolors="tab:red",
                       linewidths=2, label=f"chosen: {chosen['model']} / {chosen['backend']}")
        drop = state["settings"]["max_drop"]
        ax.axhline(base - drop, color="gray", ls=":", lw=1,
                   label=f"{drop:g} point{'' if drop == 1 else 's'} below the given model")
        ratio_axis(ax)
        ax.set_xlabel(f"{state['settings']['target']} relative to the given model (torch fp32)")
        ax.set_ylabel(f"{state['metric']} on the {'selection' if split == 'selection' else 'held-out'} examples")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"slimbert optimize on {state['task']}: {state['machine']['line']}", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def optimize(config: OptimizeConfig, data: TaskData, columns: FileColumns | None = None) -> dict:
    """Search, choose, and write OUT/model, optimize.json, optimize.md and optimize.png; returns
    the report (optimize.json's content)."""
    out = Path(config.out)
    if (out / STATE).exists() and not config.resume:
        raise ConfigError(f"{out / STATE}: a search is recorded there; add --resume to continue it, or give "
                          "another --out")
    selection, heldout = selection_and_heldout(config, data, columns)
    search = Search(config, selection, heldout, serving_backends(config))
    if not search.backends:
        raise SlimbertError("no serving backend is available to search")
    if config.resume:
        search.restore()
    if config.threads:
        torch.set_num_threads(config.threads)
    chosen = search.run()
    if chosen is not None:
        serve_chosen(search, chosen)
    return write_report(search, chosen)
