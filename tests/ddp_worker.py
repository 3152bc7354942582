"""Launched by test_trainer's DDP test: `torchrun --nproc_per_node=2 ddp_worker.py OUT`, or
`python ddp_worker.py OUT --single` for the one-process run it is compared with."""

import sys

import torch
from conftest import synthetic_data, tiny_config

from slimbert import build_model
from slimbert.training.objectives import ClassificationObjective
from slimbert.training.trainer import TrainConfig, Trainer

out, single = sys.argv[1], "--single" in sys.argv
torch.manual_seed(0)
model = build_model(tiny_config(head="classification"))
data = synthetic_data(n=64, length=9)  # equal lengths: every batch holds 4 examples
# Two processes x 4 examples per step == one process x 2 micro-batches of 4.
config = TrainConfig(epochs=2, batch_size=4, grad_accum=2 if single else 1, lr=1e-3, warmup_ratio=0.0,
                     progress=False, seed=7)
Trainer(model, ClassificationObjective(), data, config, out).fit()
