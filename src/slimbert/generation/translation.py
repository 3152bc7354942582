"""Text in, text out: encode the sources, decode them in length-sorted batches, detokenize,
and give the results back in the input's order."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from slimbert.data.batching import length_bucketed_batches
from slimbert.data.parallel import encode_sources, pad_ids
from slimbert.generation.search import Hypothesis, SearchConfig, generate
from slimbert.subword import SubwordTokenizer


@dataclass
class Translations:
    hypotheses: list[list[Hypothesis]]  # per input line: the n-best, best first ([] for an empty line)
    texts: list[list[str]]  # the same, detokenized
    truncated: int  # sources longer than the model's max_source_length, cut
    seconds: float  # wall time of encoding and decoding

    @property
    def best(self) -> list[str]:
        """One line of output per line of input (empty for an empty line)."""
        return [texts[0] if texts else "" for texts in self.texts]

    @property
    def generated_tokens(self) -> int:
        """Tokens of the best hypotheses, </s> included."""
        return sum(len(h[0].tokens) + 1 for h in self.hypotheses if h)


def translate_ids(decode: Callable[[list[list[int]]], list[list[Hypothesis]]], tokenizer: SubwordTokenizer,
                  lines: Sequence[str], max_source_length: int, batch_size: int = 32,
                  progress: str | None = None) -> Translations:
    """Translate every line with `decode`, which turns a batch of sources (ids ending in </s>,
    unpadded) into their n-best lists: the text-in, text-out loop of every backend.

    Empty lines give empty translations, so that output line i always answers input line i.
    `progress`: a description to show a progress bar under (None: no bar).
    """
    t0 = time.perf_counter()
    wanted = [i for i, line in enumerate(lines) if line.strip()]
    ids, truncated = encode_sources(tokenizer, [lines[i].strip() for i in wanted], max_source_length)
    hypotheses: list[list[Hypothesis]] = [[] for _ in lines]
    batches = length_bucketed_batches([len(x) for x in ids], batch_size, seed=0, epoch=0, shuffle=False)
    for batch in tqdm(batches, desc=progress, disable=progress is None, unit="batch"):
        for i, hyps in zip(batch, decode([ids[i] for i in batch])):
            hypotheses[wanted[i]] = hyps
    texts = [tokenizer.decode_batch([h.tokens for h in hyps]) if hyps else [] for hyps in hypotheses]
    return Translations(hypotheses, texts, truncated, time.perf_counter() - t0)


def translate(model: nn.Module, tokenizer: SubwordTokenizer, lines: Sequence[str], search: SearchConfig,
              batch_size: int = 32, progress: str | None = None) -> Translations:
    """Translate every line with `model` (a slimbert translation model) on its own device
    (see `translate_ids`)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()

    def decode(batch: list[list[int]]) -> list[list[Hypothesis]]:
        input_ids, attention_mask = pad_ids(batch, tokenizer.pad_id)
        with torch.inference_mode():
            return generate(model, input_ids.to(device), attention_mask.to(device), search)

    try:
        return translate_ids(decode, tokenizer, lines, model.config.max_source_length, batch_size, progress)
    finally:
        model.train(was_training)


def target_vocabulary(tokenizer: SubwordTokenizer, lines: Sequence[str]) -> list[int]:
    """The pieces `lines` of target-language text use (e.g. the training targets), with </s> and
    <unk>: the output vocabulary for `SharedEmbeddings.restrict_output`. A joint vocabulary
    learned on both languages holds many pieces only the source language uses."""
    ids = {i for row in tokenizer.encode([line for line in lines if line.strip()]) for i in row}
    return sorted(ids | {tokenizer.eos_id, tokenizer.unk_id})
