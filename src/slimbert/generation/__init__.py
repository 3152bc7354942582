"""Generating sequences with a decoder: greedy and beam search over any model with a cache
(`search`), and translating lines of text (`translation`)."""

from slimbert.generation.search import (Hypothesis, SearchConfig, Seq2SeqDecoder, beam_search, generate,
                                        greedy_search)
from slimbert.generation.translation import Translations, translate

__all__ = ["Hypothesis", "SearchConfig", "Seq2SeqDecoder", "Translations", "beam_search", "generate",
           "greedy_search", "translate"]
