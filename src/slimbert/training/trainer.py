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
import pickle
import shutil
import time
import warnings
import zipfile
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from slimbert.checkpoint import load_weights, read_state_dict, save_checkpoint
from slimbert.config import check_field_types
from slimbert.data.batch_sources import BatchSource, BucketedBatches, Step
from slimbert.data.batching import IGNORE_INDEX, EncodedDataset
from slimbert.errors import CheckpointError, ConfigError, SlimbertError
from slimbert.hardware import autocast, check_bf16, check_device, resolve_device
from slimbert.io import atomic_write, atomic_write_text, existing_dir, replace_dir
from slimbert.tokenizer import Tokenizer
from slimbert.training.objectives import Objective
from slimbert.training.optim import build_optimizer, linear_warmup_decay
from slimbert.training.sharding import Sharding, local_tensor

log = logging.getLogger(__name__)
STATE_NAME = "training_state.pt"
# What training_state.pt holds: each field and its type. --resume checks all of them before it
# restores anything.
STATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "state": dict,  # TrainState
    "config": dict,  # TrainConfig
    "source": dict,  # the batch source's position
    "optimizer": dict, "scheduler": dict, "scaler": dict,
    "objective": dict,  # an objective's own weights (a distillation objective's projections)
    "torch_rng": torch.Tensor, "cuda_rng": list,
    "data_fingerprint": (str, type(None)),  # the source's fingerprint of its data and labels
}

Precision = Literal["fp32", "bf16", "fp16"]
OptimizerName = Literal["adamw", "lamb"]
ReportTo = Literal["none", "tensorboard"]


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
    keep_epochs: int = 0  # also keep the model of each of the last N epochs in OUT/epochs/ (for averaging)
    max_bad_steps: int = 10  # consecutive non-finite losses that stop the run
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", "mps"
    progress: bool = True  # show a progress bar
    # also send the curves to "tensorboard" (OUT/runs; needs the tensorboard package); the
    # train_log.jsonl is always written
    report_to: ReportTo = "none"
    force: bool = False  # run bf16 even on a CPU that only emulates it (tens of times slower than fp32)

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
        # Adam's first step is lr / (1 - beta1) = 10 x lr, taken in float32.
        require(self.lr * 10 <= torch.finfo(torch.float32).max, "lr",
                "small enough for float32 steps (at most 3.4e+37)")
        require(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "0 or more")
        require(0 <= self.warmup_ratio <= 1, "warmup_ratio", "between 0 and 1")
        require(math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0, "max_grad_norm",
                "0 (off) or more")
        require(self.optimizer in get_args(OptimizerName), "optimizer", f"one of {get_args(OptimizerName)}")
        require(self.precision in get_args(Precision), "precision", f"one of {get_args(Precision)}")
        require(self.log_every_steps >= 1, "log_every_steps", "at least 1")
        require(self.eval_every_steps >= 0, "eval_every_steps", "0 (off) or more")
        require(self.save_every_steps >= 0, "save_every_steps", "0 (off) or more")
        require(self.keep_epochs >= 0, "keep_epochs", "0 (off) or more")
        require(self.max_bad_steps >= 1, "max_bad_steps", "at least 1")
        require(self.report_to in get_args(ReportTo), "report_to", f"one of {get_args(ReportTo)}")
        check_device(self.device, self.precision)  # a device this machine has, before any work
        if self.precision == "bf16":
            check_bf16(self.device, "precision bf16", force=self.force)


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


def init_distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def data_parallel(model: nn.Module, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """`model` wrapped in DDP, as the Trainer trains it on several processes."""
    # LayerDrop leaves the skipped layers without gradients on a step; DDP must be told to expect
    # that (every rank draws the same layers: they share the seed).
    layerdrop = getattr(getattr(model, "config", None), "layerdrop", 0.0) > 0
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=layerdrop)


def gradient_sync(model: nn.Module, forward_model: nn.Module, sharding: Sharding | None, ddp: bool,
                  last: bool):
    """The context of one micro-batch's forward and backward: gradients are reduced over the
    processes only on the last micro-batch of a step (the sharding's switch, or DDP's `no_sync`
    on the others). `forward_model` is the DDP wrapper when `ddp`."""
    if sharding is not None:
        return sharding.sync(model, last)
    return forward_model.no_sync() if ddp and not last else nullcontext()


class Trainer:
    """Runs `objective` over the steps of `train` with `model`, saving into `out_dir`.

    `train` is a BatchSource, or an EncodedDataset that is served as BucketedBatches of
    `config.batch_size` x `config.grad_accum` (a source given directly does its own batching).
    `evaluate(model) -> metrics` is called (on rank 0) at every epoch end, every
    `config.eval_every_steps` steps and at the end of the run; `main_metric` of its result
    (higher is better, or lower with `minimize`, as for a held-out loss) decides which model is
    kept as the best.
    """

    def __init__(self, model: nn.Module, objective: Objective, train: BatchSource | EncodedDataset,
                 config: TrainConfig, out_dir: str | Path, tokenizer: Tokenizer | None = None,
                 evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                 main_metric: str | None = None, pad_id: int = 0, sharding: Sharding | None = None,
                 minimize: bool = False):
        self.model = model
        self.objective = objective
        self.cfg = config
        self.out = Path(out_dir)
        self.tokenizer = tokenizer
        self.evaluate = evaluate
        self.main_metric = main_metric
        self.minimize = minimize
        self.pad_id = tokenizer.pad_id if tokenizer is not None else pad_id
        # An objective may hold weights of its own (a distillation objective's projections):
        # they are optimised with the model, and checkpointed in the training state.
        self.objective_module = objective if isinstance(objective, nn.Module) else None
        self.trainable = nn.ModuleList([model] + ([objective] if self.objective_module is not None else []))
        self.rank, self.world = init_distributed()
        # FSDP or tensor parallelism (slimbert.training.sharding) instead of DDP; `replicas` is
        # the number of processes that read different data.
        self.sharding = sharding
        self.replicas = self.world if sharding is None else sharding.data_parallel_size
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
        if self.sharding is not None:  # before the optimizer: the parameters become shards
            self.sharding.apply(self.model, self.device)
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
        self._tokens = 0  # input tokens (padding excluded) since the last record, all processes
        self._writer = self._summary_writer()
        forward_model = self.model
        if self.world > 1 and self.sharding is None:
            forward_model = data_parallel(self.model, self.device)
        if cfg.compile:
            forward_model = torch.compile(forward_model)

        bar = tqdm(total=total, initial=st.global_step, disable=not cfg.progress or self.rank != 0,
                   desc="train", unit="step", dynamic_ncols=True)
        bad_in_a_row = 0
        self._last_step_finite = True
        while not self._finished():
            epoch, produced, epoch_done = st.epoch, 0, True
            self.model.train()
            for micro_batches in self.source.epoch_batches(epoch):
                produced += 1
                finite = self._step(forward_model, micro_batches)
                self._last_step_finite = finite
                st.global_step += 1
                st.step_in_epoch += 1
                self._seen += sum(len(b["input_ids"]) for b in micro_batches) * self.replicas
                self._tokens += sum(int(b["attention_mask"].sum()) if "attention_mask" in b
                                    else b["input_ids"].numel() for b in micro_batches) * self.replicas
                if finite:
                    bad_in_a_row = 0
                else:
                    bad_in_a_row += 1
                    st.skipped_steps += 1
                    self._stop_unless_weights_finite()
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
            if epoch_done and cfg.keep_epochs:
                self._keep_epoch()
            self._save_last()
        bar.close()
        if self._writer is not None:
            self._writer.close()
        return st

    def _step(self, forward_model: nn.Module, micro_batches: Step) -> bool:
        """One optimizer step over its micro-batches. Returns whether it was taken (not skipped)."""
        cfg = self.cfg
        weights = self._micro_batch_weights(micro_batches)
        step_loss = torch.zeros((), device=self.device)
        metrics: dict[str, torch.Tensor] = {}
        for j, batch in enumerate(micro_batches):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            last = j == len(micro_batches) - 1
            sync = gradient_sync(self.model, forward_model, self.sharding, self.world > 1, last)
            weight = weights[j]
            with sync:
                with autocast(self.device, cfg.precision):
                    loss, batch_metrics = self.objective(forward_model, batch)
                self.scaler.scale(loss * weight).backward()
            step_loss += loss.detach().float() * weight
            for k, v in batch_metrics.items():
                metrics[k] = metrics.get(k, 0.0) + v.detach().float() * weight
        bad = ~torch.isfinite(step_loss)
        if self.world > 1:
            # One all-reduce: every process must agree to skip, and the loss and metrics shown
            # are the means over the processes (rank 0's own would be a sample of the batch).
            names = list(metrics)
            shared = torch.stack([bad.float(), step_loss.float(), *(metrics[k].float() for k in names)])
            dist.all_reduce(shared)
            bad = shared[0] > 0
            # the weights sum to `replicas` over the processes, so this is the step's mean
            step_loss = shared[1] / self.world
            metrics = {k: shared[2 + i] / self.world for i, k in enumerate(names)}
            self._average_objective_grads()
        if cfg.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            clip = torch.nn.utils.clip_grad_norm_ if self.sharding is None else self.sharding.clip_grad_norm_
            norm = clip(self.trainable.parameters(), cfg.max_grad_norm)
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

    def _micro_batch_weights(self, micro_batches: Step) -> list[float] | list[torch.Tensor]:
        """The factor of each micro-batch's loss, so that the accumulated gradient is exactly the
        gradient of the step's mean loss, as one full batch would give: each micro-batch's share of
        the step's loss terms. A term is an example, or, for an objective whose loss is a mean
        over its labelled tokens (`mean_over_labels`: masked LM, translation), a labelled token,
        whose count varies between micro-batches. With several replicas, DDP averages their
        gradients: the counts are summed over the processes (one scalar all-reduce), so that the
        mean is the global one even when replicas hold different numbers of terms. The counts
        are read off the batches before they move to the device; the sum stays on the device,
        so this adds no host-device sync."""
        if getattr(self.objective, "mean_over_labels", False):
            counts = [int((b["labels"] != IGNORE_INDEX).sum()) for b in micro_batches]
        else:
            counts = [len(b["input_ids"]) for b in micro_batches]
        if self.replicas == 1:
            return [c / max(sum(counts), 1) for c in counts]
        total = torch.tensor(float(sum(counts)), dtype=torch.float64, device=self.device)
        dist.all_reduce(total)  # every process; the processes of one data-parallel replica count alike
        total = (total * self.replicas / self.world).clamp_min(1)
        return [(self.replicas * c / total).float() for c in counts]

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
        seconds = max(time.perf_counter() - self._period_start, 1e-9)
        seq_s, tok_s = self._seen / seconds, self._tokens / seconds
        if self._writer is not None:
            for k, v in means.items():
                self._writer.add_scalar(f"train/{k}", v, self.state.global_step)
            self._writer.add_scalar("train/lr", lr, self.state.global_step)
            self._writer.add_scalar("train/tokens_per_s", tok_s, self.state.global_step)
        if bar.disable:
            log.info("step %d: %s, lr=%.2e, %.0f tokens/s", self.state.global_step, self._fmt(means), lr,
                     tok_s)
        else:
            bar.set_postfix(epoch=epoch + 1, **{k: f"{v:.4f}" for k, v in means.items()}, lr=f"{lr:.2e}",
                            seq_s=f"{seq_s:.0f}", tok_s=f"{tok_s:.0f}")

    def _record(self) -> None:
        """Close a period of training (an epoch, N steps, the run): its mean train loss and the
        evaluation go into the history, and the model is kept when it is the best so far."""
        st = self.state
        self._stop_unless_weights_finite()  # a model of NaN weights is never kept as the best
        seconds = time.perf_counter() - self._period_start
        train_loss = float(self._loss_sum) / st.loss_steps if st.loss_steps else math.nan
        record = {"epoch": st.epoch + (1 if st.step_in_epoch else 0), "step": st.global_step,
                  "train_loss": train_loss, "train_seq_per_s": self._seen / seconds if seconds else math.nan,
                  "train_tokens_per_s": self._tokens / seconds if seconds else math.nan, "seconds": seconds}
        model = self._whole_model()
        if self.rank == 0:
            where = f"epoch {record['epoch']}" + (f", step {st.global_step}" if st.step_in_epoch else "")
            if self.evaluate is not None:
                metrics = self.evaluate(model)
                model.train()
                record.update({f"eval_{k}": v for k, v in metrics.items()})
                score = metrics[self.main_metric] if self.main_metric else -train_loss
                lower = self.minimize and self.main_metric is not None
                # Weights whose last step gave a NaN/inf loss are not promoted (they may have
                # diverged: finite, but too large to compute with); a NaN best is beaten by any score.
                better = (st.best_metric is None or math.isnan(st.best_metric)
                          or (score < st.best_metric if lower else score > st.best_metric))
                if better and not self._last_step_finite:
                    log.warning("%s: %s (not kept as the best: the last step's loss was NaN/inf)", where,
                                self._fmt(metrics))
                elif better:
                    st.best_metric, st.best_epoch, st.best_step = score, record["epoch"], st.global_step
                    save_checkpoint(model, self.tokenizer, self.out)
                    tqdm.write(f"{where}: {self._fmt(metrics)} (best so far, saved to {self.out})")
                else:
                    tqdm.write(f"{where}: {self._fmt(metrics)} (best: step {st.best_step})")
            else:
                save_checkpoint(model, self.tokenizer, self.out)
            st.history.append(record)
            with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if self._writer is not None:
                for k, v in record.items():
                    if k.startswith(("train_", "eval_")) and isinstance(v, (int, float)) and math.isfinite(v):
                        self._writer.add_scalar(f"record/{k}", v, st.global_step)
                self._writer.flush()
        self._loss_sum.zero_()
        st.loss_steps = 0
        self._period_start, self._seen, self._tokens = time.perf_counter(), 0, 0

    def _summary_writer(self):
        """A TensorBoard writer into OUT/runs (rank 0, with report_to="tensorboard"), as the
        Hugging Face Trainer's `report_to` does; None otherwise."""
        if self.cfg.report_to != "tensorboard" or self.rank != 0:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("report_to tensorboard needs the tensorboard package (pip install "
                              "tensorboard), or leave it at none: OUT/train_log.jsonl is always written"
                              ) from None
        return SummaryWriter(log_dir=str(self.out / "runs"))

    @staticmethod
    def _fmt(metrics: dict[str, float]) -> str:
        return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())

    # ------------------------------------------------------------- checkpoints
    def _stop_unless_weights_finite(self) -> None:
        """Stop the run when a weight has become NaN or inf (a step too large, e.g. a huge
        learning rate): nothing from here on is saved, so OUT and OUT/last keep the models
        from before. Checked where the run saves and after a skipped step, not every step."""
        finite = torch.stack([torch.isfinite(local_tensor(p)).all()
                              for p in self.trainable.parameters()]).all()
        if self.sharding is not None:  # every process checks its shards; all must agree
            finite = finite.float()
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite):
            raise TrainingError(
                f"step {self.state.global_step}: the weights are no longer finite (NaN/inf); lower the "
                f"learning rate (--lr {self.cfg.lr:g}) or check the data. Nothing was saved from this point: "
                f"{self.out} keeps the best model before it and {self.out / 'last'} the last good checkpoint")

    def _whole_model(self) -> nn.Module | None:
        """The model to evaluate and save on rank 0: the model itself, or under sharding a full
        copy gathered from the shards (every process must call this then)."""
        return self.model if self.sharding is None else self.sharding.gathered_model(self.model)

    def _data_fingerprint(self) -> str | None:
        """The source's fingerprint of its data and labels, when it has one (recorded in the
        training state, so that --resume refuses other data)."""
        fingerprint = getattr(self.source, "fingerprint", None)
        return fingerprint() if callable(fingerprint) else None

    def _save_last(self) -> None:
        """Write OUT/last (model + training state) into a staging dir, then swap it in."""
        self._stop_unless_weights_finite()
        self.state.loss_sum = float(self._loss_sum)  # exact: a float64 (or float32) read back
        model = self._whole_model()
        optimizer = (self.optimizer.state_dict() if self.sharding is None
                     else self.sharding.optimizer_state(self.model, self.optimizer))
        if self.rank == 0:
            final = self.out / "last"
            staged = self.out / ".last.staging"
            shutil.rmtree(staged, ignore_errors=True)  # left over from a crash mid-save
            save_checkpoint(model, self.tokenizer, staged)
            state = {
                "state": asdict(self.state),
                "config": asdict(self.cfg),
                "source": self.source.state_dict(),
                "optimizer": optimizer,
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "objective": self.objective_module.state_dict() if self.objective_module is not None else {},
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "data_fingerprint": self._data_fingerprint(),
            }
            atomic_write(staged / STATE_NAME, lambda p: torch.save(state, p))
            replace_dir(staged, final)
        if self.world > 1:
            dist.barrier()

    def _keep_epoch(self) -> None:
        """Save the model as OUT/epochs/epoch-NNN (a checkpoint directory, swapped in whole) and
        remove the epochs older than the last `keep_epochs`."""
        model = self._whole_model()
        if self.rank == 0:
            epochs = self.out / "epochs"
            staged = epochs / ".staging"
            shutil.rmtree(staged, ignore_errors=True)
            save_checkpoint(model, self.tokenizer, staged)
            replace_dir(staged, epochs / f"epoch-{self.state.epoch:03d}")
            for old in epoch_checkpoints(self.out)[:-self.cfg.keep_epochs]:
                shutil.rmtree(old)

    def _load_last(self) -> None:
        last = existing_dir(self.out / "last")
        if last is None or not (last / STATE_NAME).exists():
            raise CheckpointError(f"{self.out / 'last'}: no checkpoint to resume from")
        path = last / STATE_NAME
        state = read_training_state(path)
        saved_cfg = state["config"]
        # An elastic source (one whose position is a global sample) checks the global batch
        # itself, so a run may resume on another number of processes.
        split = () if getattr(self.source, "elastic", False) else ("batch_size", "grad_accum")
        for key in (*split, "epochs", "max_steps", "seed"):
            if saved_cfg.get(key) != getattr(self.cfg, key):
                raise CheckpointError(f"{last}: cannot resume with {key}={getattr(self.cfg, key)}; "
                                      f"the run was started with {key}={saved_cfg.get(key)}")
        saved, now = state["data_fingerprint"], self._data_fingerprint()
        if saved is not None and now is not None and saved != now:
            raise CheckpointError(f"{last}: the run was trained on other data or labels (fingerprint "
                                  f"{saved}); this data's is {now}: resume with the same data, labels and "
                                  "task, or start a new run in another --out")
        if self.sharding is None:
            load_weights(self.model, read_state_dict(last), source=str(last))
        else:
            self.sharding.load_model_state(self.model, read_state_dict(last), source=str(last))
        self.model.to(self.device)
        objective = self.objective_module
        with _restoring(path, "objective"):
            if objective is not None:
                objective.load_state_dict(state["objective"])
            elif state["objective"]:
                raise ValueError("the run had an objective with weights, this one has none")
        with _restoring(path, "source"):
            self.source.load_state_dict(state["source"])
        with _restoring(path, "optimizer"):
            if self.sharding is None:
                self.optimizer.load_state_dict(state["optimizer"])
            else:
                self.sharding.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        with _restoring(path, "scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        with _restoring(path, "scaler"):
            self.scaler.load_state_dict(state["scaler"])
        with _restoring(path, "torch_rng"):
            torch.set_rng_state(state["torch_rng"])
        with _restoring(path, "cuda_rng"):
            if torch.cuda.is_available() and state["cuda_rng"]:
                torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.state = TrainState(**state["state"])
        if self.rank == 0:  # drop the records written after the checkpoint: they are made again
            lines = "".join(json.dumps(record) + "\n" for record in self.state.history)
            atomic_write_text(self.out / "train_log.jsonl", lines)
        log.info("resumed from %s at epoch %d, step %d", last, self.state.epoch, self.state.global_step)



def epoch_checkpoints(out: str | Path) -> list[Path]:
    """The epoch models a run kept (`keep_epochs`), oldest first."""
    epochs = Path(out) / "epochs"
    return sorted(epochs.glob("epoch-[0-9][0-9][0-9]")) if epochs.is_dir() else []


def read_training_state(path: Path) -> dict:
    """A `training_state.pt`, read as tensors and plain data only (`weights_only`: a pickle of
    anything else is refused, never executed), with every field of STATE_FIELDS present, of its
    type, and no other. What is wrong is a CheckpointError naming the file and the field."""
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: empty file (0 bytes), not a training state; resume is "
                                  "impossible: start the run again in another --out")
        if not zipfile.is_zipfile(path):  # what torch.save writes; zeroed or cut files are not
            raise CheckpointError(f"{path}: not a readable training state (not a PyTorch file: truncated, "
                                  "zeroed or corrupt); start the run again in another --out")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused: it holds objects other than tensors and plain data (or "
                              "is corrupt); a training state is read with weights_only, never unpickled"
                              ) from None
    except Exception as e:
        text = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointError(f"{path}: not a readable training state (truncated or corrupt?): {text}"
                              ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a mapping of fields, found {type(state).__name__}")
    if "source" not in state and "state" in state:
        raise CheckpointError(f"{path}: written by an older version that did not save the data position; "
                              "start the run again")
    missing, extra = sorted(set(STATE_FIELDS) - set(state)), sorted(set(state) - set(STATE_FIELDS), key=str)
    if missing or extra:
        problems = ([f"missing field(s) {', '.join(missing)}"] if missing else []) + (
            [f"unknown field(s) {', '.join(map(str, extra))}"] if extra else [])
        raise CheckpointError(f"{path}: not a training state of this version: " + "; ".join(problems))
    for name, kind in STATE_FIELDS.items():
        if not isinstance(state[name], kind):
            kinds = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise CheckpointError(f"{path}: field '{name}': expected {kinds}, got "
                                  f"{type(state[name]).__name__}")
    run = state["state"]
    names = {f.name for f in fields(TrainState)}
    missing, extra = sorted(names - set(run)), sorted(set(run) - names, key=str)
    if missing or extra:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(map(str, extra))}"] if extra else [])
        raise CheckpointError(f"{path}: field 'state': " + "; ".join(problems))
    try:
        check_field_types(TrainState, run, what="field 'state' entry", finite=False)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return state


@contextmanager
def _restoring(path: Path, name: str):
    """Restoring field `name` of training state `path`: what does not fit is a CheckpointError."""
    try:
        yield
    except CheckpointError as e:
        raise CheckpointError(f"{path}: field '{name}': {e}") from None
    except Exception as e:
        text = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointError(f"{path}: field '{name}' does not fit this run: {text}") from None
