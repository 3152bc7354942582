"""Generating sequences with a decoder: greedy and beam search over any model with a cache
(`search`), and translating lines of text (`translation`)."""

from slimbert.generation.search import (Hypothesis, SearchConfig, Seq2SeqDecoder, beam_search, generate,
                                        greedy_search)
from slimbert.generation.translation import Translations, target_vocabulary, translate

__all__ = ["Hypothesis", "SearchConfig", "Seq2SeqDecoder", "Translations", "beam_search", "generate",
           "greedy_search", "target_vocabulary", "translate"]
