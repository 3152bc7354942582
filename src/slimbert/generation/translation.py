"""Text in, text out: encode the sources, decode them in length-sorted batches, detokenize,
and give the results back in the input's order."""

from __future__ import annotations

import time
from collections.abc import Sequence
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


def translate(model: nn.Module, tokenizer: SubwordTokenizer, lines: Sequence[str], search: SearchConfig,
              batch_size: int = 32, progress: str | None = None) -> Translations:
    """Translate every line with `model` (a slimbert translation model) on its own device.

    Empty lines give empty translations, so that output line i always answers input line i.
    `progress`: a description to show a progress bar under (None: no bar).
    """
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    wanted = [i for i, line in enumerate(lines) if line.strip()]
    texts = [lines[i].strip() for i in wanted]
    ids, truncated = encode_sources(tokenizer, texts, model.config.max_source_length)
    hypotheses: list[list[Hypothesis]] = [[] for _ in lines]
    batches = length_bucketed_batches([len(x) for x in ids], batch_size, seed=0, epoch=0, shuffle=False)
    for batch in tqdm(batches, desc=progress, disable=progress is None, unit="batch"):
        input_ids, attention_mask = pad_ids([ids[i] for i in batch], tokenizer.pad_id)
        with torch.inference_mode():
            results = generate(model, input_ids.to(device), attention_mask.to(device), search)
        for i, hyps in zip(batch, results):
            hypotheses[wanted[i]] = hyps
    model.train(was_training)
    texts = [tokenizer.decode_batch([h.tokens for h in hyps]) if hyps else [] for hyps in hypotheses]
    return Translations(hypotheses, texts, truncated, time.perf_counter() - t0)
