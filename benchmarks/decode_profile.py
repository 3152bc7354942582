"""Where the time of greedy (or beam) decoding goes: torch.profiler over a translation run.

Prints the operators that took the most time, and the share of the matrix products (the
Linear layers and the vocabulary projection), which bounds what any decoding loop around the
same weights can gain: with N% of the time in GEMMs, removing everything else is at most
100/N times faster.

    python benchmarks/decode_profile.py --model runs/m30k/de-en-s1 \
        --src ../shared/data/multi30k/test_2016_flickr.de --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile
from translation_models import served_model, sorted_sources

from slimbert.generation import SearchConfig, translate
from slimbert.hardware import detect_machine

GEMMS = ("aten::addmm", "aten::mm", "aten::bmm", "quantized::linear_dynamic", "mkldnn::_linear_pointwise")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a translation checkpoint")
    p.add_argument("--int8", action="store_true", help="serve with int8 weights (all scope)")
    p.add_argument("--packed", action="store_true",
                   help="the vocabulary projection prepacked by oneDNN, as `slimbert translate` serves it")
    p.add_argument("--src", required=True, help="source sentences, one per line")
    p.add_argument("--lines", type=int, default=320, help="decode the first N sentences")
    p.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=15, help="operators shown")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(detect_machine().line())

    model, tokenizer = served_model(args.model, args.int8, args.packed)
    lines = sorted_sources(args.src, args.lines)
    config = SearchConfig(beam_size=args.beam)
    translate(model, tokenizer, lines[:64], config, args.batch_size)  # warm-up
    t0 = time.perf_counter()
    out = translate(model, tokenizer, lines, config, args.batch_size)
    seconds = time.perf_counter() - t0
    print(f"{len(lines)} sentences, batch {args.batch_size}, beam {args.beam}: "
          f"{out.generated_tokens / seconds:.0f} tokens/s without the profiler")

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        translate(model, tokenizer, lines, config, args.batch_size)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMMS)
    print(f"matrix products ({', '.join(GEMMS)}): {100 * gemm / total:.1f}% of the operators' time; "
          f"without everything else, at most {total / gemm:.2f}x faster")


if __name__ == "__main__":
    main()
