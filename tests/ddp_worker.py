"""Launched by test_trainer's DDP tests: `torchrun --nproc_per_node=2 ddp_worker.py OUT`, or
`python ddp_worker.py OUT --single` for the one-process run it is compared with.
`--layerdrop P` trains with LayerDrop; each rank then writes its own weights to OUT/rankN.safetensors."""

import os
import sys

import torch
from conftest import synthetic_data, tiny_config
from safetensors.torch import save_file

from slimbert import build_model
from slimbert.training.objectives import ClassificationObjective
from slimbert.training.trainer import TrainConfig, Trainer

out, single = sys.argv[1], "--single" in sys.argv
layerdrop = float(sys.argv[sys.argv.index("--layerdrop") + 1]) if "--layerdrop" in sys.argv else 0.0
torch.manual_seed(0)
model = build_model(tiny_config(head="classification", layerdrop=layerdrop, num_hidden_layers=4))
data = synthetic_data(n=64, length=9)  # equal lengths: every batch holds 4 examples
# Two processes x 4 examples per step == one process x 2 micro-batches of 4.
config = TrainConfig(epochs=2, batch_size=4, grad_accum=2 if single else 1, lr=1e-3, warmup_ratio=0.0,
                     progress=False, seed=7)
Trainer(model, ClassificationObjective(), data, config, out).fit()
if layerdrop:
    rank = int(os.environ.get("RANK", 0))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
