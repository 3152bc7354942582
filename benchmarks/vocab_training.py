"""Speed of `slimbert vocab` (WordPiece training) on the raw text in ../shared/data.

Reference, in the same run: what a `transformers` user does, `BertTokenizerFast.train_new_from_iterator`
from the bundled MiniLM tokenizer, on the same texts and vocabulary size.

    python benchmarks/vocab_training.py --data ../shared/data --size 30522
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date
from pathlib import Path

from slimbert.checkpoint import resolve
from slimbert.data.readers import read_lines
from slimbert.data.tasks import load_task
from slimbert.tokenizer import Tokenizer


def corpus(data: Path) -> list[str]:
    texts = []
    for name in ("wikitext-2/wiki.valid.tokens", "wikitext-2/wiki.test.tokens",
                 "multi30k/train.en", "multi30k/train.de"):
        texts += read_lines(data / name)
    texts += [e.text for e in load_task("sst2", "train", data / "glue").examples]
    return texts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--size", type=int, default=30522)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/vocab_training.json")
    args = p.parse_args()
    import transformers

    texts = corpus(Path(args.data))
    mb = sum(len(t.encode()) for t in texts) / 1e6
    base = transformers.BertTokenizerFast.from_pretrained(resolve("bundled:minilm-l6"))
    timings: dict[str, list[float]] = {"slimbert vocab": [], "transformers train_new_from_iterator": []}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        ours = Tokenizer.train(texts, args.size, show_progress=False)
        timings["slimbert vocab"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs = base.train_new_from_iterator(texts, args.size)
        timings["transformers train_new_from_iterator"].append(time.perf_counter() - t0)
    ref = statistics.median(timings["transformers train_new_from_iterator"])
    result = {"lines": len(texts), "megabytes": mb, "vocab_size": args.size, "date": date.today().isoformat(),
              "vocab_sizes": {"slimbert": len(ours), "transformers": len(theirs)}, "runs": {}}
    print(f"{len(texts)} lines, {mb:.1f} MB of text, vocabulary {args.size}, {args.rounds} rounds (median)")
    for name, ts in timings.items():
        med = statistics.median(ts)
        result["runs"][name] = {"median_s": med, "min_s": min(ts), "max_s": max(ts), "mb_per_s": mb / med,
                                "speed_vs_transformers": ref / med}
        print(f"{name:40} {med:6.2f} s  {mb / med:6.1f} MB/s  {ref / med:5.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
