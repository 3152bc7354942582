"""Greedy decoding with each step's argmax taken by NumPy against torch's argmax, in one process.

`slimbert.generation.search.row_argmax` takes the argmax of every row of the (N, V) log-probs
through NumPy on the CPU, because torch's argmax over the last dimension was several times
slower there. This measures both the bare operation on (32, V) scores and whole greedy
decodings of a test set (length-sorted batches of 32, the same sentences, alternating rounds;
the median round), and checks that the translations are the same.

    python benchmarks/greedy_argmax.py --model runs/m30k/de-en-s1 runs/m30k/kd-enc2-dec1-s1 \
        --int8 runs/m30k/kd-enc2-dec1-s1 --src ../shared/data/multi30k/test_2016_flickr.de --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from translation_models import served_model, sorted_sources

from slimbert.generation import SearchConfig, search, translate
from slimbert.hardware import detect_machine

NUMPY = search.row_argmax


def torch_argmax(scores: torch.Tensor) -> torch.Tensor:
    return scores.argmax(-1)


def microseconds(fn, x: torch.Tensor, repeats: int = 300) -> float:
    for _ in range(20):
        fn(x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - t0) / repeats * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", required=True, help="translation checkpoints")
    p.add_argument("--int8", nargs="*", default=[], help="of those, the ones served with int8 weights (all)")
    p.add_argument("--src", required=True, help="source sentences, one per line")
    p.add_argument("--lines", type=int, default=480, help="decode the first N sentences")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(detect_machine().line())

    x = torch.randn(32, 8000)
    print(f"argmax of (32, 8000) scores: torch {microseconds(torch_argmax, x):.0f} us, "
          f"NumPy {microseconds(NUMPY, x):.0f} us")

    lines = sorted_sources(args.src, args.lines)
    config = SearchConfig(beam_size=1)
    for path in args.model:
        model, tokenizer = served_model(path, path in args.int8)
        translate(model, tokenizer, lines[:64], config, 32)  # warm-up
        speeds: dict[str, list[float]] = {"torch": [], "numpy": []}
        outputs = {}
        for _ in range(args.rounds):
            for name, fn in (("torch", torch_argmax), ("numpy", NUMPY)):
                search.row_argmax = fn
                t0 = time.perf_counter()
                out = translate(model, tokenizer, lines, config, 32)
                speeds[name].append(out.generated_tokens / (time.perf_counter() - t0))
                outputs[name] = out.best
        search.row_argmax = NUMPY
        torch_speed, numpy_speed = (statistics.median(speeds[k]) for k in ("torch", "numpy"))
        same = sum(a == b for a, b in zip(outputs["torch"], outputs["numpy"]))
        served = " (int8)" if path in args.int8 else ""
        print(f"{path}{served}: greedy, batch 32: torch argmax {torch_speed:.0f}, "
              f"NumPy {numpy_speed:.0f} tokens/s: {numpy_speed / torch_speed:.3f}x; "
              f"same translation for {same} of {len(lines)} sentences")


if __name__ == "__main__":
    main()
