"""Runs `slimbert pretrain` for test_pretrain's multi-process tests, recording what it trains on:

    torchrun --nproc_per_node=N pretrain_worker.py SEEN pretrain OPTIONS...

Every micro-batch the objective is given (masked ids and labels) is kept and written to
SEEN.rank<R>.pt at the end. With CRASH_AFTER=K in the environment, the K+1-th micro-batch
raises, as a killed job stops."""

import os
import sys

import torch

from slimbert import cli
from slimbert.recipes import pretrain as recipe
from slimbert.training.objectives import MaskedLMObjective

seen_path, args = sys.argv[1], sys.argv[2:]
seen: list[dict[str, torch.Tensor]] = []
crash_after = int(os.environ.get("CRASH_AFTER", -1))


class Killed(Exception):
    pass


class Recording(MaskedLMObjective):
    def __call__(self, model, batch):
        if len(seen) == crash_after:
            raise Killed
        seen.append({k: v.detach().cpu().clone() for k, v in batch.items()})
        return super().__call__(model, batch)


recipe.MaskedLMObjective = Recording
try:
    code = cli.main(args)
finally:
    torch.save(seen, f"{seen_path}.rank{os.environ.get('RANK', 0)}.pt")
sys.exit(code)
