"""The vocabulary projection with its weight prepacked by oneDNN against plain `F.linear`, in one process.

`slimbert translate` serves a translation model's projection onto the vocabulary through
`PackedLinear` (`SharedEmbeddings.pack_output`). This measures, for each model:
- the bare projection of 1, 32 and 160 rows (greedy at batch 1 and 32, beam 5 at batch 32);
- whole decodings of a test set, plain and packed in alternating rounds (length-sorted
  batches, the same sentences; the median round), greedy at batch 32 and 1 and beam 5 at batch
  32, and whether the translations are the same.

    python benchmarks/packed_projection.py --model runs/m30k/de-en-s1 runs/m30k/kd-dec1-s1 \
        --src ../shared/data/multi30k/test_2016_flickr.de --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from translation_models import served_model, sorted_sources

from slimbert.generation import SearchConfig, translate
from slimbert.hardware import detect_machine
from slimbert.modules import PackedLinear


def microseconds(fn, repeats: int = 200) -> float:
    for _ in range(20):
        fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", required=True, help="translation checkpoints (fp32)")
    p.add_argument("--src", required=True, help="source sentences, one per line")
    p.add_argument("--lines", type=int, default=480, help="decode the first N sentences")
    p.add_argument("--latency-lines", type=int, default=60, help="of those, decode N one at a time")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(detect_machine().line())
    if not PackedLinear.available():
        raise SystemExit("this torch build lacks oneDNN's packed linear operators: nothing to compare")
    lines = sorted_sources(args.src, args.lines)
    one_by_one = lines[::max(1, len(lines) // args.latency_lines)]
    settings = [("greedy, batch 32", SearchConfig(beam_size=1), 32, lines),
                ("beam 5, batch 32", SearchConfig(beam_size=5), 32, lines),
                ("greedy, batch 1", SearchConfig(beam_size=1), 1, one_by_one)]

    for path in args.model:
        plain, tokenizer = served_model(path)
        packed, _ = served_model(path, packed=True)
        layer = packed.embeddings.serving[1]  # the PackedLinear that decoding uses
        weight = layer.source_weight
        with torch.inference_mode():
            for rows in (1, 32, 160):
                x = torch.randn(rows, weight.shape[1])
                a, b = microseconds(lambda: F.linear(x, weight)), microseconds(lambda: layer(x))
                print(f"{path}: projection {tuple(weight.shape)} of {rows} rows: F.linear {a:.0f} us, "
                      f"packed {b:.0f} us: {a / b:.2f}x")
        for name, search, batch, sentences in settings:
            for model in (plain, packed):
                translate(model, tokenizer, sentences[:64], search, batch)  # warm-up
            speeds: dict[str, list[float]] = {"plain": [], "packed": []}
            outputs = {}
            for _ in range(args.rounds):
                for key, model in (("plain", plain), ("packed", packed)):
                    t0 = time.perf_counter()
                    out = translate(model, tokenizer, sentences, search, batch)
                    speeds[key].append(out.generated_tokens / (time.perf_counter() - t0))
                    outputs[key] = out.best
            a, b = statistics.median(speeds["plain"]), statistics.median(speeds["packed"])
            same = sum(x == y for x, y in zip(outputs["plain"], outputs["packed"]))
            print(f"{path}: {name}, {len(sentences)} sentences: plain {a:.0f}, packed {b:.0f} tokens/s: "
                  f"{b / a:.3f}x; same translations: {same} of {len(sentences)}", flush=True)


if __name__ == "__main__":
    main()
