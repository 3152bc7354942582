"""Inference throughput of slimbert's BERT against Hugging Face `transformers` on the same weights.

Both models run the same SST-2 dev batches (batch 32, length-bucketed, padded per batch) with the
same thread count, alternating model by model within each round so that machine noise hits both;
the ratio is computed within this one run. fp32, and bf16 weights (where the CPU has bf16 units).

    python benchmarks/inference_throughput.py --model bundled:minilm-l6 --data-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from slimbert import load_model, load_tokenizer
from slimbert.checkpoint import resolve
from slimbert.data.batching import collate, encode_examples, length_bucketed_batches
from slimbert.data.tasks import load_task


def run_all(model, batches) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  token_type_ids=batch["token_type_ids"])
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="bundled:minilm-l6")
    p.add_argument("--data-dir", default="../shared/data/glue")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--out", default="benchmarks/results/inference_throughput.json")
    args = p.parse_args()

    import transformers

    torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.model)
    examples = load_task("sst2", "dev", args.data_dir).examples
    data = encode_examples(examples, tok, 128)
    order = length_bucketed_batches(data.lengths, args.batch_size, seed=0, epoch=0, shuffle=False)
    batches = [collate(data, idx, tok.pad_id) for idx in order]
    n = len(examples)

    results = {"model": args.model, "sentences": n, "batch_size": args.batch_size, "threads": args.threads,
               "rounds": args.rounds, "torch": torch.__version__, "transformers": transformers.__version__,
               "cpu": platform.processor() or platform.machine(), "date": date.today().isoformat(), "runs": {}}
    for dtype_name in args.dtypes.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
        models = {
            "slimbert": load_model(args.model).to(dtype),
            "transformers (sdpa)": transformers.BertModel.from_pretrained(
                resolve(args.model), attn_implementation="sdpa").eval().to(dtype),
        }
        for m in models.values():  # warm-up: one full pass each
            run_all(m, batches)
        times: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(args.rounds):
            for name, m in models.items():
                times[name].append(run_all(m, batches))
        for name, ts in times.items():
            med = statistics.median(ts)
            results["runs"][f"{name} {dtype_name}"] = {
                "median_s": med, "min_s": min(ts), "max_s": max(ts), "seq_per_s": n / med}
    ref = results["runs"]["transformers (sdpa) fp32"]["seq_per_s"]
    print(f"SST-2 dev, {n} sentences, batch {args.batch_size}, {args.threads} threads, "
          f"{args.rounds} rounds (median)")
    print(f"{'model':32} {'seq/s':>9} {'spread %':>9} {'vs transformers fp32':>21}")
    for name, r in results["runs"].items():
        r["ratio_vs_transformers_fp32"] = r["seq_per_s"] / ref
        spread = 100 * (r["max_s"] - r["min_s"]) / r["median_s"]
        print(f"{name:32} {r['seq_per_s']:9.1f} {spread:9.1f} {r['ratio_vs_transformers_fp32']:20.2f}x")
    for dtype_name in args.dtypes.split(","):
        ours = results["runs"][f"slimbert {dtype_name}"]["seq_per_s"]
        theirs = results["runs"][f"transformers (sdpa) {dtype_name}"]["seq_per_s"]
        print(f"slimbert / transformers, both {dtype_name}: {ours / theirs:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
