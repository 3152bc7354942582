"""The one training loop. Every job (fine-tuning, MLM, distillation) is an Objective run here.

What it owns: a batch source (the length-bucketed in-memory batches by default, or any
`slimbert.data.batch_sources.BatchSource`, such as a packed or streamed corpus), gradient
accumulation, mixed precision, torch.compile, gradient clipping, the LR schedule,
DistributedDataParallel (under torchrun), evaluation at epoch ends and every N steps with the
best model kept, a progress bar, skipping of non-finite steps, and checkpoints that resume to
exactly the run that was not interrupted, without replaying any data.

The loop waits for the device once per optimizer step, to learn whether the step is finite
(see `_step`), and reads the losses back only at log intervals, evaluations and checkpoints.

Output directory layout:
    OUT/                  the best model so far (or the last one when there is no evaluation)
    OUT/last/             the latest checkpoint + training_state.pt, for --resume
    OUT/train_log.jsonl   one line per evaluation (epoch ends, every N steps, the end of the run)
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from slimbert.checkpoint import load_weights, read_state_dict, save_checkpoint
from slimbert.data.batch_sources import BatchSource, BucketedBatches, Step
from slimbert.data.batching import EncodedDataset
from slimbert.errors import CheckpointError, ConfigError, SlimbertError
from slimbert.hardware import autocast, resolve_device
from slimbert.io import atomic_write, atomic_write_text, existing_dir, replace_dir
from slimbert.tokenizer import Tokenizer
from slimbert.training.objectives import Objective
from slimbert.training.optim import build_optimizer, linear_warmup_decay

log = logging.getLogger(__name__)
STATE_NAME = "training_state.pt"

Precision = Literal["fp32", "bf16", "fp16"]
OptimizerName = Literal["adamw", "lamb"]


class TrainingError(SlimbertError):
    """Training cannot go on (e.g. the loss keeps being NaN)."""


@dataclass
class TrainConfig:
    epochs: int = 3  # passes over the training data (used when max_steps is 0)
    max_steps: int = 0  # stop after this many optimizer steps, whatever the epochs (0: run all epochs)
    batch_size: int = 32  # examples per micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step (batch = batch_size x grad_accum x processes)
    lr: float = 5e-5  # peak learning rate, reached at the end of warm-up
    weight_decay: float = 0.01  # decoupled weight decay of the weight matrices (not biases or LayerNorms)
    warmup_ratio: float = 0.1  # fraction of all optimizer steps spent warming up
    max_grad_norm: float = 1.0  # clip the global gradient norm; 0 disables
    optimizer: OptimizerName = "adamw"  # "adamw", or "lamb" for very large batches
    precision: Precision = "fp32"  # "fp32", "bf16" (CPU or GPU autocast) or "fp16" (CUDA, with loss scaling)
    compile: bool = False  # torch.compile the model's forward
    seed: int = 42  # seeds the data order, dropout and masking
    log_every_steps: int = 50  # read the loss back from the device for the progress bar every N steps
    eval_every_steps: int = 0  # also evaluate, and keep the best model, every N steps (0: at epoch ends only)
    save_every_steps: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    max_bad_steps: int = 10  # consecutive non-finite losses that stop the run
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", "mps"
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        def require(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"{name} must be {what}, got {getattr(self, name)!r}")

        require(self.epochs >= 0, "epochs", "0 or more")
        require(self.max_steps >= 0, "max_steps", "0 or more")
        require(self.epochs > 0 or self.max_steps > 0, "epochs", "at least 1 when max_steps is 0")
        require(self.batch_size >= 1, "batch_size", "at least 1")
        require(self.grad_accum >= 1, "grad_accum", "at least 1")
        require(math.isfinite(self.lr) and self.lr > 0, "lr", "a positive number")
        require(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "0 or more")
        require(0 <= self.warmup_ratio <= 1, "warmup_ratio", "between 0 and 1")
        require(math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0, "max_grad_norm",
                "0 (off) or more")
        require(self.optimizer in get_args(OptimizerName), "optimizer", f"one of {get_args(OptimizerName)}")
        require(self.precision in get_args(Precision), "precision", f"one of {get_args(Precision)}")
        require(self.log_every_steps >= 1, "log_every_steps", "at least 1")
        require(self.eval_every_steps >= 0, "eval_every_steps", "0 (off) or more")
        require(self.save_every_steps >= 0, "save_every_steps", "0 (off) or more")
        require(self.max_bad_steps >= 1, "max_bad_steps", "at least 1")


@dataclass
class TrainState:
    """Where a run stands; saved with every checkpoint so a run resumes where it stopped."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # optimizer steps completed in the current epoch
    global_step: int = 0
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradient
    best_metric: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None  # the global step of the best evaluation
    loss_sum: float = 0.0  # losses of the finite steps since the last history record, summed
    loss_steps: int = 0  # finite steps since the last history record
    history: list[dict] = field(default_factory=list)


def _distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """Runs `objective` over the steps of `train` with `model`, saving into `out_dir`.

    `train` is a BatchSource, or an EncodedDataset that is served as BucketedBatches of
    `config.batch_size` x `config.grad_accum` (a source given directly does its own batching).
    `evaluate(model) -> metrics` is called (on rank 0) at every epoch end, every
    `config.eval_every_steps` steps and at the end of the run; `main_metric` of its result
    (higher is better) decides which model is kept as the best.
    """

    def __init__(self, model: nn.Module, objective: Objective, train: BatchSource | EncodedDataset,
                 config: TrainConfig, out_dir: str | Path, tokenizer: Tokenizer | None = None,
                 evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                 main_metric: str | None = None, pad_id: int = 0):
        self.model = model
        self.objective = objective
        self.cfg = config
        self.out = Path(out_dir)
        self.tokenizer = tokenizer
        self.evaluate = evaluate
        self.main_metric = main_metric
        self.pad_id = tokenizer.pad_id if tokenizer is not None else pad_id
        # An objective may hold weights of its own (a distillation objective's projections):
        # they are optimised with the model, and checkpointed in the training state.
        self.objective_module = objective if isinstance(objective, nn.Module) else None
        self.trainable = nn.ModuleList([model] + ([objective] if self.objective_module is not None else []))
        self.rank, self.world = _distributed()
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if isinstance(train, EncodedDataset):
            train = BucketedBatches(train, config.batch_size, config.grad_accum, config.seed, self.pad_id,
                                    self.rank, self.world)
        self.source: BatchSource = train
        if self.source.steps_per_epoch == 0:
            raise TrainingError("the training data gives no optimizer step (fewer batches than processes?)")
        if self.source.steps_per_epoch is None and not config.max_steps:
            raise ConfigError("max_steps must be set for a batch source without epochs (a stream), got 0")
        self.state = TrainState()

    def total_steps(self) -> int:
        return self.cfg.max_steps or self.cfg.epochs * self.source.steps_per_epoch

    def _finished(self) -> bool:
        if self.cfg.max_steps:
            return self.state.global_step >= self.cfg.max_steps
        return self.state.epoch >= self.cfg.epochs

    # ---------------------------------------------------------------- main loop
    def fit(self, resume: bool = False) -> TrainState:
        cfg, st = self.cfg, self.state
        self.model.to(self.device)
        if self.objective_module is not None:
            self.objective_module.to(self.device)
        self.optimizer = build_optimizer(self.trainable, cfg.optimizer, cfg.lr, cfg.weight_decay)
        total = self.total_steps()
        self.scheduler = linear_warmup_decay(self.optimizer, int(cfg.warmup_ratio * total), total)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
        if resume:
            self._load_last()
            st = self.state
        else:
            torch.manual_seed(cfg.seed)
        # The running sums live on the device and are read back only when logged or recorded.
        # float64 keeps a long epoch's sum exact enough (MPS has no float64).
        sum_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self._loss_sum = torch.tensor(st.loss_sum, dtype=sum_dtype, device=self.device)
        self._window: dict[str, torch.Tensor] = {}  # per-step values since the last log, summed
        self._window_steps = 0
        self._period_start, self._seen = time.perf_counter(), 0  # for the throughput of a record
        forward_model = self.model
        if self.world > 1:
            # LayerDrop leaves the skipped layers without gradients on a step; DDP must be told
            # to expect that (every rank draws the same layers: they share the seed).
            layerdrop = getattr(self.model.config, "layerdrop", 0.0) > 0
            forward_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=layerdrop)
        if cfg.compile:
            forward_model = torch.compile(forward_model)

        bar = tqdm(total=total, initial=st.global_step, disable=not cfg.progress or self.rank != 0,
                   desc="train", unit="step", dynamic_ncols=True)
        bad_in_a_row = 0
        while not self._finished():
            epoch, produced, epoch_done = st.epoch, 0, True
            self.model.train()
            for micro_batches in self.source.epoch_batches(epoch):
                produced += 1
                finite = self._step(forward_model, micro_batches)
                st.global_step += 1
                st.step_in_epoch += 1
                self._seen += sum(len(b["input_ids"]) for b in micro_batches) * self.world
                if finite:
                    bad_in_a_row = 0
                else:
                    bad_in_a_row += 1
                    st.skipped_steps += 1
                    log.warning("step %d: non-finite loss, step skipped (%d in a row)",
                                st.global_step, bad_in_a_row)
                    if bad_in_a_row >= cfg.max_bad_steps:
                        raise TrainingError(f"the loss was NaN/inf for {bad_in_a_row} steps in a row "
                                            f"(step {st.global_step}); lower the learning rate "
                                            "or check the data. The last good checkpoint is in "
                                            f"{self.out / 'last'}")
                bar.update(1)
                if st.global_step % cfg.log_every_steps == 0:
                    self._log(bar, epoch)
                if st.step_in_epoch == self.source.steps_per_epoch:
                    break  # the epoch's last step: evaluated and saved below
                if self._finished():
                    epoch_done = False
                    break
                if cfg.eval_every_steps and st.global_step % cfg.eval_every_steps == 0:
                    self._record()
                if cfg.save_every_steps and st.global_step % cfg.save_every_steps == 0:
                    self._save_last()
            if not produced:
                raise TrainingError(f"epoch {epoch + 1}: the batch source produced no step")
            if epoch_done:
                st.epoch, st.step_in_epoch = epoch + 1, 0
            self._record()
            self._save_last()
        bar.close()
        return st

    def _step(self, forward_model: nn.Module, micro_batches: Step) -> bool:
        """One optimizer step over its micro-batches. Returns whether it was taken (not skipped)."""
        cfg = self.cfg
        n_examples = sum(len(b["input_ids"]) for b in micro_batches)
        step_loss = torch.zeros((), device=self.device)
        metrics: dict[str, torch.Tensor] = {}
        for j, batch in enumerate(micro_batches):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            last = j == len(micro_batches) - 1
            # Under DDP, gradients are all-reduced only on the last micro-batch of a step.
            sync = nullcontext() if last or self.world == 1 else forward_model.no_sync()
            # Weight each micro-batch by its size: the accumulated gradient is then exactly
            # the gradient of the mean loss over the whole step's examples.
            weight = len(batch["input_ids"]) / n_examples
            with sync:
                with autocast(self.device, cfg.precision):
                    loss, batch_metrics = self.objective(forward_model, batch)
                self.scaler.scale(loss * weight).backward()
            step_loss += loss.detach().float() * weight
            for k, v in batch_metrics.items():
                metrics[k] = metrics.get(k, 0.0) + v.detach().float() * weight
        bad = ~torch.isfinite(step_loss)
        if self.world > 1:  # every process must agree to skip
            bad = bad.float()
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
            bad = bad > 0
            self._average_objective_grads()
        if cfg.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), cfg.max_grad_norm)
            if not self.scaler.is_enabled():  # fp16 overflows are the scaler's to skip (and to scale down)
                bad |= ~torch.isfinite(norm)
        # The one host-device sync of a step. Skipping needs the host: a step taken with zeroed
        # gradients is no skip (Adam's moments decay, weight decay still applies), and only the
        # fused CUDA optimizers can take a device-side "found inf" flag. Everything else (the
        # loss, the metrics) stays on the device until a log interval.
        finite = not bool(bad)
        if finite:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._loss_sum += step_loss
            self.state.loss_steps += 1
            metrics["loss"] = step_loss
            for k, v in metrics.items():
                self._window[k] = self._window.get(k, 0.0) + v
            self._window_steps += 1
        elif cfg.max_grad_norm > 0:
            self.scaler.update()  # clears the unscale_ of this step (and lowers an fp16 scale)
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped first step makes torch warn about the order
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()  # the schedule follows the data position, skipped steps included
        return finite

    def _average_objective_grads(self) -> None:
        """DDP all-reduces the model's gradients; the objective's few own weights (outside the
        DDP module) get the same averaging here."""
        if self.objective_module is None:
            return
        for p in self.objective_module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def _log(self, bar: tqdm, epoch: int) -> None:
        """Show the mean loss and metrics of the finite steps since the last log (one read-back)."""
        window, n = self._window, self._window_steps
        self._window, self._window_steps = {}, 0
        if self.rank != 0 or not n:
            return
        means = dict(zip(window, (torch.stack(list(window.values())) / n).tolist()))
        lr = self.scheduler.get_last_lr()[0]
        seq_s = self._seen / max(time.perf_counter() - self._period_start, 1e-9)
        if bar.disable:
            log.info("step %d: %s, lr=%.2e", self.state.global_step, self._fmt(means), lr)
        else:
            bar.set_postfix(epoch=epoch + 1, **{k: f"{v:.4f}" for k, v in means.items()}, lr=f"{lr:.2e}",
                            seq_s=f"{seq_s:.0f}")

    def _record(self) -> None:
        """Close a period of training (an epoch, N steps, the run): its mean train loss and the
        evaluation go into the history, and the model is kept when it is the best so far."""
        st = self.state
        seconds = time.perf_counter() - self._period_start
        train_loss = float(self._loss_sum) / st.loss_steps if st.loss_steps else math.nan
        record = {"epoch": st.epoch + (1 if st.step_in_epoch else 0), "step": st.global_step,
                  "train_loss": train_loss, "train_seq_per_s": self._seen / seconds if seconds else math.nan,
                  "seconds": seconds}
        if self.rank == 0:
            where = f"epoch {record['epoch']}" + (f", step {st.global_step}" if st.step_in_epoch else "")
            if self.evaluate is not None:
                metrics = self.evaluate(self.model)
                self.model.train()
                record.update({f"eval_{k}": v for k, v in metrics.items()})
                score = metrics[self.main_metric] if self.main_metric else -train_loss
                if st.best_metric is None or score > st.best_metric:
                    st.best_metric, st.best_epoch, st.best_step = score, record["epoch"], st.global_step
                    save_checkpoint(self.model, self.tokenizer, self.out)
                    tqdm.write(f"{where}: {self._fmt(metrics)} (best so far, saved to {self.out})")
                else:
                    tqdm.write(f"{where}: {self._fmt(metrics)} (best: step {st.best_step})")
            else:
                save_checkpoint(self.model, self.tokenizer, self.out)
            st.history.append(record)
            with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self._loss_sum.zero_()
        st.loss_steps = 0
        self._period_start, self._seen = time.perf_counter(), 0

    @staticmethod
    def _fmt(metrics: dict[str, float]) -> str:
        return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())

    # ------------------------------------------------------------- checkpoints
    def _save_last(self) -> None:
        """Write OUT/last (model + training state) into a staging dir, then swap it in."""
        self.state.loss_sum = float(self._loss_sum)  # exact: a float64 (or float32) read back
        if self.rank == 0:
            final = self.out / "last"
            staged = self.out / ".last.staging"
            shutil.rmtree(staged, ignore_errors=True)  # left over from a crash mid-save
            save_checkpoint(self.model, self.tokenizer, staged)
            state = {
                "state": asdict(self.state),
                "config": asdict(self.cfg),
                "source": self.source.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "objective": self.objective_module.state_dict() if self.objective_module is not None else {},
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            }
            atomic_write(staged / STATE_NAME, lambda p: torch.save(state, p))
            replace_dir(staged, final)
        if self.world > 1:
            dist.barrier()

    def _load_last(self) -> None:
        last = existing_dir(self.out / "last")
        if last is None or not (last / STATE_NAME).exists():
            raise CheckpointError(f"{self.out / 'last'}: no checkpoint to resume from")
        try:
            state = torch.load(last / STATE_NAME, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{last / STATE_NAME}: unreadable ({e})") from None
        if "source" not in state:
            raise CheckpointError(f"{last}: written by an older version that did not save the data position; "
                                  "start the run again")
        saved_cfg = state["config"]
        for key in ("batch_size", "grad_accum", "epochs", "max_steps", "seed"):
            if saved_cfg.get(key) != getattr(self.cfg, key):
                raise CheckpointError(f"{last}: cannot resume with {key}={getattr(self.cfg, key)}; "
                                      f"the run was started with {key}={saved_cfg.get(key)}")
        load_weights(self.model, read_state_dict(last), source=str(last))
        self.model.to(self.device)
        if self.objective_module is not None:
            self.objective_module.load_state_dict(state["objective"])
        self.source.load_state_dict(state["source"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.state = TrainState(**state["state"])
        if self.rank == 0:  # drop the records written after the checkpoint: they are made again
            lines = "".join(json.dumps(record) + "\n" for record in self.state.history)
            atomic_write_text(self.out / "train_log.jsonl", lines)
        log.info("resumed from %s at epoch %d, step %d", last, self.state.epoch, self.state.global_step)
