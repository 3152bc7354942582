"""Fine-tuning throughput: bf16 autocast against fp32, in one run, on the same SST-2 batches.

Each round fine-tunes a fresh copy of the model for one pass over the same slice of SST-2
train with the Trainer (AdamW, batch 32), once per precision, alternating so that machine noise
hits both. Reported: median sequences/s and the bf16 / fp32 ratio.

    python benchmarks/train_throughput.py --model bundled:minilm-l6 --data-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from slimbert import load_model, load_tokenizer
from slimbert.data.batching import encode_examples
from slimbert.data.tasks import load_task
from slimbert.training.objectives import ClassificationObjective
from slimbert.training.trainer import TrainConfig, Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="bundled:minilm-l6")
    p.add_argument("--data-dir", default="../shared/data/glue")
    p.add_argument("--examples", type=int, default=640)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = p.parse_args()

    tok = load_tokenizer(args.model)
    data = encode_examples(load_task("sst2", "train", args.data_dir, max_examples=args.examples).examples,
                           tok, 128)
    seq_per_s: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for precision in seq_per_s:
            torch.manual_seed(0)
            model = load_model(args.model, head="classification", num_labels=2)
            config = TrainConfig(epochs=1, batch_size=32, lr=1e-4, precision=precision, progress=False)
            with tempfile.TemporaryDirectory() as out:
                trainer = Trainer(model, ClassificationObjective(), data, config, out, tokenizer=tok)
                t0 = time.perf_counter()
                trainer.fit()
                seq_per_s[precision].append(len(data) / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in seq_per_s.items()}
    result = {"model": args.model, "examples": len(data), "batch_size": 32, "rounds": args.rounds,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "date": date.today().isoformat(),
              "seq_per_s": seq_per_s, "median_seq_per_s": med, "bf16_over_fp32": med["bf16"] / med["fp32"]}
    print(f"{len(data)} SST-2 sentences, batch 32, {args.rounds} alternating rounds (median; includes "
          "the per-epoch checkpoint write)")
    for k, v in seq_per_s.items():
        print(f"{k}: {med[k]:6.1f} seq/s  (rounds: {', '.join(f'{x:.1f}' for x in v)})")
    print(f"bf16 / fp32: {result['bf16_over_fp32']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
