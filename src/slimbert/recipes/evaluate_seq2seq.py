"""`slimbert evaluate-seq2seq`: BLEU of a translation model on a test set, two ways.

Prints sacreBLEU (cased, detokenized, with its signature) and, labelled as such, the
lowercased 13a BLEU that Multi30k tutorials report (slimbert.evaluation.bleu explains why both).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from slimbert.data.parallel import read_parallel
from slimbert.errors import DataError
from slimbert.evaluation.bleu import bleu_scores
from slimbert.io import atomic_write_text
from slimbert.recipes.translate import TranslateConfig, translate_lines

log = logging.getLogger(__name__)


@dataclass
class EvaluateSeq2SeqConfig(TranslateConfig):
    src: str = field(kw_only=True)  # test sources, one sentence per line
    ref: str = field(kw_only=True)  # reference translations, aligned with --src line by line
    output: str | None = None  # also write the translations here, one per line
    progress: bool = True  # show a progress bar


def evaluate_seq2seq(config: EvaluateSeq2SeqConfig) -> dict:
    """Translate --src and score it against --ref. Pairs with an empty side are skipped (counted)."""
    pairs = read_parallel(config.src, config.ref)
    if not len(pairs):
        raise DataError(f"{config.src} / {config.ref}: no sentence pairs")
    if pairs.skipped_empty:
        log.warning("%s / %s: %s", config.src, config.ref, pairs.summary())
    model, tokenizer = config.load()
    result = translate_lines(config, pairs.sources, model, tokenizer,
                             progress="translate" if config.progress else None)
    hypotheses = result.best
    if config.output:
        atomic_write_text(Path(config.output), "".join(h + "\n" for h in hypotheses))
    scores = bleu_scores(hypotheses, pairs.targets)
    return {**scores.to_dict(), "pairs": len(pairs), "skipped_empty": len(pairs.skipped_empty),
            "truncated": result.truncated, "beam": config.beam, "seconds": result.seconds,
            "tokens_per_second": result.generated_tokens / result.seconds if result.seconds else None}
