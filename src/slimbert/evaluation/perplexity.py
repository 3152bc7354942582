"""Masked-LM pseudo-perplexity on held-out text: exp of the mean masked-LM cross-entropy.

The text is tokenized, its lines' tokens joined into one stream, cut into `seq_length` - 2
token pieces and wrapped as [CLS] piece [SEP], as pretraining packs its corpus. Each sequence
is masked once, with `SampleMasker` at a fixed seed (the mask of sequence i is a function of
(seed, i) only), so two models scored on the same file see exactly the same masked tokens
and their numbers compare. This is the perplexity of the MLM task itself (15% masked, 80/10/10),
not Salazar et al.'s one-token-at-a-time pseudo-log-likelihood.

WikiText's tokenized layout (`wiki.valid.tokens`: " @-@ ", " @,@ ", " @.@ ") is undone first,
so the text reads as the raw text the model was pretrained on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from slimbert.data.batching import IGNORE_INDEX
from slimbert.data.masking import SampleMasker
from slimbert.io import atomic_write
from slimbert.tokenizer import Tokenizer

WIKITEXT_JOINS = re.compile(r" @([-,.])@ ")


@dataclass
class PerplexityResult:
    loss: float  # mean cross-entropy over the masked tokens (nats)
    perplexity: float  # exp(loss)
    masked_tokens: int  # tokens predicted
    sequences: int  # sequences scored


def heldout_lines(path: str | Path, max_lines: int | None = None) -> Iterator[str]:
    """The non-blank lines of a text file, WikiText's " @-@ " joins undone."""
    with open(path, encoding="utf-8") as f:
        kept = 0
        for line in f:
            if max_lines is not None and kept >= max_lines:
                return
            line = WIKITEXT_JOINS.sub(r"\1", line.strip())
            if line:
                kept += 1
                yield line


def packed_sequences(lines: list[str], tokenizer: Tokenizer, seq_length: int) -> torch.Tensor:
    """(N, seq_length) ids: the lines' tokens as one stream, in [CLS] ... [SEP] pieces (the
    last, shorter piece is dropped, so every sequence has the same length and no padding)."""
    if seq_length < 3:
        raise ValueError(f"seq_length must be at least 3, got {seq_length}")
    stream = [i for ids in tokenizer.encode_ids(lines) for i in ids]
    body = seq_length - 2
    n = len(stream) // body
    pieces = torch.tensor(stream[:n * body], dtype=torch.long).view(n, body)  # (N, T - 2)
    cls = torch.full((n, 1), tokenizer.cls_id, dtype=torch.long)
    sep = torch.full((n, 1), tokenizer.sep_id, dtype=torch.long)
    return torch.cat([cls, pieces, sep], dim=1)  # (N, T)


class HeldoutMLM:
    """Held-out text tokenized, packed and masked once, to score many models, or one model
    again and again during pretraining: `HeldoutMLM(tokenizer, path)(model)`."""

    def __init__(self, tokenizer: Tokenizer, path: str | Path, seq_length: int = 128, mask_prob: float = 0.15,
                 seed: int = 0, batch_size: int = 32, max_lines: int | None = None):
        ids = packed_sequences(list(heldout_lines(path, max_lines)), tokenizer, seq_length)
        if len(ids) == 0:
            raise ValueError(f"{path}: not enough text for one sequence of {seq_length} tokens")
        masker = SampleMasker.for_tokenizer(tokenizer, probability=mask_prob, seed=seed)
        # The mask of sequence i depends on (seed, i) only, so batching cannot change it.
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []  # (masked ids (B, T), labels (B, T))
        for start in range(0, len(ids), batch_size):
            indices = list(range(start, min(start + batch_size, len(ids))))
            self.batches.append(masker(ids[indices], epoch=0, indices=indices))
        self.sequences = len(ids)

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> PerplexityResult:
        """exp(masked-LM loss) of a BertForMaskedLM on the held-out text; the model is put in eval mode."""
        if getattr(getattr(model, "config", None), "head", None) != "mlm":
            raise ValueError("perplexity needs a model with an MLM head (config.head == 'mlm')")
        model.eval()
        device = next(model.parameters()).device
        total, count = 0.0, 0
        for masked, labels in self.batches:
            chosen = labels != IGNORE_INDEX  # (B, T)
            if not chosen.any():
                continue
            out = model(masked.to(device), masked_positions=chosen.to(device))
            logits = out.logits.float()  # (M, V)
            total += F.cross_entropy(logits, labels[chosen].to(device), reduction="sum").item()
            count += int(chosen.sum())
        loss = total / max(count, 1)
        return PerplexityResult(loss=loss, perplexity=math.exp(loss), masked_tokens=count,
                                sequences=self.sequences)


def mlm_perplexity(model: nn.Module, tokenizer: Tokenizer, path: str | Path, seq_length: int = 128,
                   mask_prob: float = 0.15, seed: int = 0, batch_size: int = 32,
                   max_lines: int | None = None) -> PerplexityResult:
    """exp(masked-LM loss) of a BertForMaskedLM on the text file `path`, masked at a fixed
    `seed` (see the module docstring). The model is put in eval mode."""
    return HeldoutMLM(tokenizer, path, seq_length, mask_prob, seed, batch_size, max_lines)(model)


def plot_pretraining(history: list[dict], tokens_per_step: int, path: Path,
                     heldout: str | None = None) -> None:
    """A pretraining run's curves against the tokens seen: the train masked-LM loss (the mean of
    each period between records) and, when the run scored held-out text, its perplexity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [h["step"] * tokens_per_step / 1e6 for h in history]
    scored = [(t, h["eval_heldout_ppl"]) for t, h in zip(tokens, history) if "eval_heldout_ppl" in h]
    fig, axes = plt.subplots(1, 2 if scored else 1, figsize=(11 if scored else 6, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot(tokens, [h["train_loss"] for h in history], marker=".", color="tab:blue")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("train masked-LM loss (nats)")
    ax.set_title("training loss")
    ax.grid(True, alpha=0.3)
    if scored:
        ax = axes[0][1]
        ax.plot([t for t, _ in scored], [p for _, p in scored], marker=".", color="tab:orange")
        ax.set_yscale("log")
        ax.set_xlabel("tokens seen (millions)")
        ax.set_ylabel("masked-LM perplexity (log scale)")
        ax.set_title(f"held out: {heldout}" if heldout else "held out")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
