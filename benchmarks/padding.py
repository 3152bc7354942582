"""Padding tokens carried by length-bucketed vs random batches on SST-2 train.

    python benchmarks/padding.py --data-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse

from slimbert import load_tokenizer
from slimbert.data.batching import encode_examples, length_bucketed_batches, padding_tokens, random_batches
from slimbert.data.tasks import load_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data/glue")
    p.add_argument("--model", default="bundled:minilm-l6")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    examples = load_task("sst2", "train", args.data_dir).examples
    lengths = encode_examples(examples, load_tokenizer(args.model), 128).lengths
    bucketed = padding_tokens(lengths, length_bucketed_batches(lengths, args.batch_size, seed=0, epoch=0))
    shuffled = padding_tokens(lengths, random_batches(len(lengths), args.batch_size, seed=0))
    print(f"{len(lengths)} sentences, mean length {sum(lengths) / len(lengths):.1f} tokens, batch {args.batch_size}")
    print(f"padding tokens: random {shuffled:,}  bucketed {bucketed:,}  ({shuffled / bucketed:.0f}x fewer)")


if __name__ == "__main__":
    main()
