"""`slimbert vocab`: a WordPiece vocabulary trained on your corpus."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from slimbert.data.readers import read_lines, read_table
from slimbert.errors import ConfigError
from slimbert.recipes.common import positive
from slimbert.tokenizer import Tokenizer

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json")


@dataclass
class VocabConfig:
    corpus: list[str]  # text files, one document per line (or .tsv/.csv/.jsonl with --text-col)
    size: int  # vocabulary size
    out: str  # directory to write vocab.txt into
    text_col: str | None = None  # column to read from .tsv/.csv/.jsonl corpus files
    cased: bool = False  # keep case (default: lower-case)
    min_frequency: int = 2  # how often a pair must occur to be merged

    def __post_init__(self) -> None:
        positive(self, "size", "min_frequency")
        if not self.corpus:
            raise ConfigError("corpus: give at least one file")


def read_corpus(config: VocabConfig) -> list[str]:
    texts: list[str] = []
    for path in config.corpus:
        if Path(path).suffix.lower() in TABLE_SUFFIXES and config.text_col:
            texts += [e.text for e in read_table(path, config.text_col).examples]
        else:
            texts += read_lines(path)
    return texts


def train_vocab(config: VocabConfig, texts: list[str] | None = None) -> tuple[Tokenizer, float]:
    """Train a WordPiece vocabulary on `texts` (default: the corpus files) and write it to
    OUT/vocab.txt; returns it and the seconds training took."""
    texts = read_corpus(config) if texts is None else texts
    t0 = time.perf_counter()
    tok = Tokenizer.train(texts, config.size, lowercase=not config.cased, min_frequency=config.min_frequency)
    seconds = time.perf_counter() - t0
    tok.save(config.out)
    return tok, seconds
