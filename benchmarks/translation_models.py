"""What the decoding benchmarks share: a translation model loaded as it will be served, and test
sentences sorted by length (as `slimbert translate` batches them)."""

from __future__ import annotations

from slimbert.checkpoint import load_model, load_tokenizer
from slimbert.compress.quantize import quantize_int8


def served_model(path, int8: bool = False, packed: bool = False):
    """(model, tokenizer) of the checkpoint `path`, in eval mode; `int8`: every Linear dynamic int8;
    `packed`: the vocabulary projection prepacked by oneDNN, as `slimbert translate` serves it."""
    model, tokenizer = load_model(path).eval(), load_tokenizer(path)
    if int8:
        model = quantize_int8(model, "all")
    if packed:
        model.embeddings.pack_output()
    return model, tokenizer


def sorted_sources(path, lines: int) -> list[str]:
    """The first `lines` lines of `path`, shortest first."""
    with open(path, encoding="utf-8") as f:
        return sorted((line.rstrip("\n") for line in list(f)[:lines]), key=len)
