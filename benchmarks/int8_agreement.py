"""How much each group of Linear layers costs when quantized to int8 (dynamic, per-tensor activations).

For a fine-tuned classifier, quantize one group at a time (and the two `slimbert quantize` scopes,
uncalibrated and SmoothQuant-calibrated on 512 training examples at several alphas) and report
how often its predictions agree with fp32 on the task's dev split, and its accuracy.

    python benchmarks/int8_agreement.py --model runs/minilm-sst2-full --data-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import copy
import json
import re

import torch

from slimbert import load_model
from slimbert.checkpoint import load_tokenizer
from slimbert.compress.quantize import quantizable_linears, quantize_int8
from slimbert.models.int8 import dynamic_int8
from slimbert.data.batching import encode_examples
from slimbert.data.sources import load_task_data
from slimbert.inference import predict_logits
from slimbert.recipes.common import train_sample

GROUPS = {  # name -> which Linear layers (by name) are quantized
    "scope all (every Linear)": r".",
    "scope attention (default)": None,  # quantizable_linears(model, "attention")
    "Q, K, V only": r"\.attn\.(q|k|v)_proj$",
    "attention output only": r"\.attn\.out_proj$",
    "feed-forward input only": r"\.ffn\.fc_in$",
    "feed-forward output only": r"\.ffn\.fc_out$",
    "pooler + classifier only": r"(pooler\.dense|classifier)$",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    tokenizer = load_tokenizer(args.model)
    data = load_task_data(args.task, args.data_dir, splits=("train", "dev"))
    dev = encode_examples(data.dev.examples, tokenizer, 128)
    calibration = train_sample(data, tokenizer, 512)  # the sample `slimbert quantize --task` calibrates on
    reference = predict_logits(model, dev, 0).argmax(-1)
    every = quantizable_linears(model, "all")
    print(f"fp32 accuracy {(reference == dev.labels).float().mean():.4f} on {len(dev)} dev examples")
    results = {}
    for name, pattern in GROUPS.items():
        names = (quantizable_linears(model, "attention") if pattern is None
                 else [n for n in every if re.search(pattern, n)])
        predictions = predict_logits(dynamic_int8(copy.deepcopy(model), names), dev, 0).argmax(-1)
        results[name] = {"layers": len(names), "agreement": float((predictions == reference).float().mean()),
                         "accuracy": float((predictions == dev.labels).float().mean())}
        print(f"{name:28s} {len(names):3d} layers  agreement {results[name]['agreement']:.4f}  "
              f"accuracy {results[name]['accuracy']:.4f}")
    for scope in ("all", "attention"):
        for alpha in (0.5, 0.75, 0.9):
            name = f"scope {scope}, SmoothQuant alpha {alpha}"
            q = quantize_int8(model, scope, calibration, tokenizer.pad_id, alpha)
            predictions = predict_logits(q, dev, 0).argmax(-1)
            results[name] = {"layers": len(q.config.quantization["modules"]),
                             "agreement": float((predictions == reference).float().mean()),
                             "accuracy": float((predictions == dev.labels).float().mean())}
            print(f"{name:28s} {results[name]['layers']:3d} layers  agreement {results[name]['agreement']:.4f}  "
                  f"accuracy {results[name]['accuracy']:.4f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
