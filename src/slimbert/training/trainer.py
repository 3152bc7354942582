"""The one training loop. Every job (fine-tuning, MLM, distillation) is an Objective run here.

What it owns: length-bucketed batches, gradient accumulation, mixed precision, torch.compile,
gradient clipping, the LR schedule, DistributedDataParallel (under torchrun), evaluation after
every epoch with the best model kept, a progress bar, skipping of non-finite steps, and
checkpoints that resume to exactly the run that was not interrupted.

Output directory layout:
    OUT/                  the best model so far (or the last one when there is no evaluation)
    OUT/last/             the latest checkpoint + training_state.pt, for --resume
    OUT/train_log.jsonl   one line per epoch: train loss, eval metrics, time
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

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from slimbert.checkpoint import load_weights, read_state_dict, save_checkpoint
from slimbert.data.batching import EncodedDataset, collate, length_bucketed_batches
from slimbert.errors import CheckpointError, SlimbertError
from slimbert.inference import autocast, resolve_device
from slimbert.io import atomic_write, existing_dir, replace_dir
from slimbert.tokenizer import Tokenizer
from slimbert.training.objectives import Objective
from slimbert.training.optim import build_optimizer, linear_warmup_decay

log = logging.getLogger(__name__)
STATE_NAME = "training_state.pt"


class TrainingError(SlimbertError):
    """Training cannot go on (e.g. the loss keeps being NaN)."""


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32  # examples per micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step: effective batch = batch_size * grad_accum * processes
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # fraction of all optimizer steps spent warming up
    max_grad_norm: float = 1.0  # clip the global gradient norm; 0 disables
    optimizer: str = "adamw"
    precision: str = "fp32"  # "fp32", "bf16" (CPU or GPU autocast) or "fp16" (CUDA, with loss scaling)
    compile: bool = False  # torch.compile the model's forward
    seed: int = 42
    save_every_steps: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    max_bad_steps: int = 10  # consecutive non-finite losses that stop the run
    device: str = "auto"
    progress: bool = True


@dataclass
class TrainState:
    """Where a run stands; saved with every checkpoint so a run resumes where it stopped."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # optimizer steps completed in the current epoch
    global_step: int = 0
    skipped_steps: int = 0  # steps skipped for a non-finite loss
    best_metric: float | None = None
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)


def _distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """Runs `objective` over `train_data` with `model`, saving into `out_dir`.

    `evaluate(model) -> metrics` is called after every epoch (on rank 0); `main_metric` of its
    result (higher is better) decides which model is kept as the best.
    """

    def __init__(self, model: nn.Module, objective: Objective, train_data: EncodedDataset,
                 config: TrainConfig, out_dir: str | Path, tokenizer: Tokenizer | None = None,
                 evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                 main_metric: str | None = None, pad_id: int = 0):
        self.model = model
        self.objective = objective
        self.data = train_data
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
        if config.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got '{config.precision}'")
        self.state = TrainState()

    # ------------------------------------------------------------------ schedule
    def epoch_steps(self, epoch: int) -> list[list[list[int]]]:
        """The optimizer steps of an epoch, each a list of micro-batches of example indices."""
        batches = length_bucketed_batches(self.data.lengths, self.cfg.batch_size, self.cfg.seed, epoch,
                                          num_replicas=self.world, rank=self.rank)
        k = self.cfg.grad_accum
        return [batches[i:i + k] for i in range(0, len(batches), k)]

    def total_steps(self) -> int:
        # Windows and batches are cut at the same boundaries every epoch, only their contents
        # change, so every epoch has as many steps as the first.
        return self.cfg.epochs * len(self.epoch_steps(0))

    # ---------------------------------------------------------------- main loop
    def fit(self, resume: bool = False) -> TrainState:
        cfg = self.cfg
        self.model.to(self.device)
        if self.objective_module is not None:
            self.objective_module.to(self.device)
        self.optimizer = build_optimizer(self.trainable, cfg.optimizer, cfg.lr, cfg.weight_decay)
        total = self.total_steps()
        self.scheduler = linear_warmup_decay(self.optimizer, int(cfg.warmup_ratio * total), total)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
        if resume:
            self._load_last()
        else:
            torch.manual_seed(cfg.seed)
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

        bar = tqdm(total=total, initial=self.state.global_step, disable=not cfg.progress or self.rank != 0,
                   desc="train", unit="step", dynamic_ncols=True)
        bad_in_a_row = 0
        for epoch in range(self.state.epoch, cfg.epochs):
            self.model.train()
            steps = self.epoch_steps(epoch)
            t0, seen, loss_sum, loss_n = time.perf_counter(), 0, 0.0, 0
            for step_idx in range(self.state.step_in_epoch, len(steps)):
                micro_batches = steps[step_idx]
                loss, metrics, finite = self._step(forward_model, micro_batches)
                self.state.global_step += 1
                self.state.step_in_epoch = step_idx + 1
                if finite:
                    bad_in_a_row = 0
                    loss_sum, loss_n = loss_sum + loss, loss_n + 1
                else:
                    bad_in_a_row += 1
                    self.state.skipped_steps += 1
                    log.warning("step %d: non-finite loss, step skipped (%d in a row)",
                                self.state.global_step, bad_in_a_row)
                    if bad_in_a_row >= cfg.max_bad_steps:
                        raise TrainingError(f"the loss was NaN/inf for {bad_in_a_row} steps in a row "
                                            f"(step {self.state.global_step}); lower the learning rate "
                                            "or check the data. The last good checkpoint is in "
                                            f"{self.out / 'last'}")
                seen += sum(len(b) for b in micro_batches) * self.world
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, **{k: f"{v:.4f}" for k, v in metrics.items()},
                                lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                                seq_s=f"{seen / (time.perf_counter() - t0):.0f}")
                if cfg.save_every_steps and self.state.global_step % cfg.save_every_steps == 0:
                    self._save_last()
            self.state.epoch, self.state.step_in_epoch = epoch + 1, 0
            self._end_epoch(epoch, loss_sum / max(loss_n, 1), seen, time.perf_counter() - t0)
        bar.close()
        return self.state

    def _step(self, forward_model: nn.Module, micro_batches: list[list[int]]):
        """One optimizer step over its micro-batches. Returns (loss, metrics, finite)."""
        cfg = self.cfg
        n_examples = sum(len(b) for b in micro_batches)
        total_loss = 0.0
        finite = True
        metrics: dict[str, float] = {}
        for j, indices in enumerate(micro_batches):
            batch = {k: v.to(self.device, non_blocking=True)
                     for k, v in collate(self.data, indices, self.pad_id).items()}
            last = j == len(micro_batches) - 1
            # Under DDP, gradients are all-reduced only on the last micro-batch of a step.
            sync = nullcontext() if last or self.world == 1 else forward_model.no_sync()
            with sync:
                with autocast(self.device, cfg.precision):
                    loss, batch_metrics = self.objective(forward_model, batch)
                # Weight each micro-batch by its size: the accumulated gradient is then exactly
                # the gradient of the mean loss over the whole step's examples.
                weight = len(indices) / n_examples
                self.scaler.scale(loss * weight).backward()
            finite &= bool(torch.isfinite(loss.detach()))
            total_loss += float(loss.detach()) * weight
            for k, v in batch_metrics.items():
                metrics[k] = metrics.get(k, 0.0) + float(v) * weight
        if self.world > 1:  # every process must agree to skip
            flag = torch.tensor([0.0 if finite else 1.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            finite = bool(flag.item() == 0)
            self._average_objective_grads()
        if finite:
            if cfg.max_grad_norm > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), cfg.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped first step makes torch warn about the order
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()  # the schedule follows the data position, skipped steps included
        return total_loss, metrics, finite

    def _average_objective_grads(self) -> None:
        """DDP all-reduces the model's gradients; the objective's few own weights (outside the
        DDP module) get the same averaging here."""
        if self.objective_module is None:
            return
        for p in self.objective_module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def _end_epoch(self, epoch: int, train_loss: float, seen: int, seconds: float) -> None:
        record = {"epoch": epoch + 1, "step": self.state.global_step, "train_loss": train_loss,
                  "train_seq_per_s": seen / seconds if seconds else math.nan, "seconds": seconds}
        if self.rank == 0:
            if self.evaluate is not None:
                metrics = self.evaluate(self.model)
                record.update({f"eval_{k}": v for k, v in metrics.items()})
                score = metrics[self.main_metric] if self.main_metric else -train_loss
                if self.state.best_metric is None or score > self.state.best_metric:
                    self.state.best_metric, self.state.best_epoch = score, epoch + 1
                    save_checkpoint(self.model, self.tokenizer, self.out)
                    tqdm.write(f"epoch {epoch + 1}: {self._fmt(metrics)} (best so far, saved to {self.out})")
                else:
                    tqdm.write(f"epoch {epoch + 1}: {self._fmt(metrics)} (best: epoch {self.state.best_epoch})")
            else:
                save_checkpoint(self.model, self.tokenizer, self.out)
            self.state.history.append(record)
            with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self._save_last()

    @staticmethod
    def _fmt(metrics: dict[str, float]) -> str:
        return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())

    # ------------------------------------------------------------- checkpoints
    def _save_last(self) -> None:
        """Write OUT/last (model + training state) into a staging dir, then swap it in."""
        if self.rank == 0:
            final = self.out / "last"
            staged = self.out / ".last.staging"
            shutil.rmtree(staged, ignore_errors=True)  # left over from a crash mid-save
            save_checkpoint(self.model, self.tokenizer, staged)
            state = {
                "state": asdict(self.state),
                "config": asdict(self.cfg),
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
        saved_cfg = state["config"]
        for key in ("batch_size", "grad_accum", "epochs", "seed"):
            if saved_cfg.get(key) != getattr(self.cfg, key):
                raise CheckpointError(f"{last}: cannot resume with {key}={getattr(self.cfg, key)}; "
                                      f"the run was started with {key}={saved_cfg.get(key)}")
        load_weights(self.model, read_state_dict(last), source=str(last))
        self.model.to(self.device)
        if self.objective_module is not None:
            self.objective_module.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.state = TrainState(**state["state"])
        log.info("resumed from %s at epoch %d, step %d", last, self.state.epoch, self.state.global_step)
