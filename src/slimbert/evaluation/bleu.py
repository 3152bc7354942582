"""BLEU, two ways, both through sacreBLEU (Post 2018, https://aclanthology.org/W18-6319).

BLEU scores are only comparable when they are computed the same way (fairseq #2850 is one
of many reports of the gap). So slimbert reports two, each with its sacreBLEU signature:

- `sacrebleu`: the standard. Cased, on detokenized output, tokenized by sacreBLEU's own 13a.
- `legacy`: what Multi30k tutorials and papers usually report: lowercased, same 13a
  tokenization (`sacrebleu -lc -tok 13a`). It is higher than the cased score, often by
  several points, and must not be compared with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from slimbert.errors import SlimbertError


@dataclass
class BleuScores:
    sacrebleu: float  # cased, detokenized, 13a
    signature: str  # sacreBLEU's signature of that score
    legacy: float  # lowercased, 13a (sacrebleu -lc -tok 13a)
    legacy_signature: str

    def to_dict(self) -> dict:
        return asdict(self)


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str]) -> BleuScores:
    """Corpus BLEU of detokenized `hypotheses` against one reference each."""
    try:
        from sacrebleu.metrics import BLEU
    except ImportError:
        raise SlimbertError("BLEU needs sacrebleu: pip install 'slimbert[seq2seq]' (or sacrebleu)") from None
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    cased = BLEU(tokenize="13a")
    lowercased = BLEU(tokenize="13a", lowercase=True)
    refs = [list(references)]
    cased_score = cased.corpus_score(list(hypotheses), refs).score
    legacy_score = lowercased.corpus_score(list(hypotheses), refs).score
    return BleuScores(cased_score, str(cased.get_signature()), legacy_score, str(lowercased.get_signature()))
