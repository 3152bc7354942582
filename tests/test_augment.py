"""Tang et al. augmentation: the three rules, determinism, deduplication, and the tagger."""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest

from slimbert.data.augment import (MASK_TOKEN, SPACY_MODELS, AugmentConfig, TagSampler, augment,
                                    spacy_tagger)
from slimbert.data.readers import Example

SENTENCES = ["the movie was good", "a film is great", "the plot was boring and awful",
             "the actors were fine", "it is the best story"]


def toy_tagger(texts):
    tags = {"the": "DT", "a": "DT", "movie": "NN", "film": "NN", "plot": "NN", "actors": "NNS",
            "story": "NN", "was": "VBD", "is": "VBZ", "were": "VBD", "good": "JJ", "great": "JJ",
            "boring": "JJ", "awful": "JJ", "fine": "JJ", "best": "JJS", "and": "CC", "it": "PRP"}
    return [[(w, tags.get(w, "X")) for w in t.split()] for t in texts]


def examples(pairs=False):
    return [Example(s, SENTENCES[-1 - i] if pairs else None, i % 2) for i, s in enumerate(SENTENCES)]


def test_tag_sampler_renormalises_unigrams_within_a_tag():
    sampler = TagSampler(toy_tagger(["good good great", "good boring the"]))
    assert sampler.probability("good", "JJ") == pytest.approx(3 / 5)
    assert sampler.probability("boring", "JJ") == pytest.approx(1 / 5)
    assert sampler.probability("the", "DT") == pytest.approx(1.0)
    draws = Counter(sampler.sample("JJ", u / 1000) for u in range(1000))
    assert draws["good"] == pytest.approx(600, abs=2) and set(draws) == {"good", "great", "boring"}


def test_each_rule_alone():
    ex = [Example("the movie was good")]
    masked = augment(ex, AugmentConfig(copies=5, p_mask=1.0, p_pos=0.0, p_ngram=0.0), toy_tagger, progress=False)
    assert [e.text for e in masked] == [" ".join([MASK_TOKEN] * 4)]  # one distinct result only
    pos = augment(examples(), AugmentConfig(copies=3, p_mask=0.0, p_pos=1.0, p_ngram=0.0), toy_tagger,
                  progress=False)
    tags = dict(w for s in toy_tagger(SENTENCES) for w in s)
    tag_sequences = {tuple(tags[w] for w in s.split()) for s in SENTENCES}
    assert len(pos) >= len(SENTENCES)
    for e in pos:  # every word replaced by one with the same tag: a tag sequence of the originals
        assert tuple(tags[w] for w in e.text.split()) in tag_sequences
    ngrams = augment(examples(), AugmentConfig(copies=3, p_mask=0.0, p_pos=0.0, p_ngram=1.0), toy_tagger,
                     progress=False)
    for e in ngrams:
        assert 1 <= len(e.text.split()) <= 5
        assert any(e.text in s for s in SENTENCES)


def test_augmentation_is_seeded_deduplicated_and_unlabelled():
    cfg = AugmentConfig(copies=4, seed=3)
    a = augment(examples(pairs=True), cfg, toy_tagger, progress=False)
    b = augment(examples(pairs=True), cfg, toy_tagger, progress=False)
    assert [(e.text, e.text_pair) for e in a] == [(e.text, e.text_pair) for e in b]
    assert len({(e.text, e.text_pair) for e in a}) == len(a)
    originals = {(e.text, e.text_pair) for e in examples(pairs=True)}
    assert not originals & {(e.text, e.text_pair) for e in a}
    assert all(e.label is None and e.text_pair for e in a)
    assert len(a) <= 4 * len(SENTENCES)
    c = augment(examples(pairs=True), AugmentConfig(copies=4, seed=4), toy_tagger, progress=False)
    assert [e.text for e in a] != [e.text for e in c]


def test_without_pos_replacement_no_tagger_is_needed():
    out = augment(examples(), AugmentConfig(copies=2, p_pos=0.0), progress=False)
    assert out and all(e.text for e in out)


def test_config_rejects_impossible_probabilities():
    with pytest.raises(ValueError, match="p_mask"):
        AugmentConfig(p_mask=1.5)
    with pytest.raises(ValueError, match="at most 1"):
        AugmentConfig(p_mask=0.6, p_pos=0.6)


def test_spacy_tagger_tags_english():
    pytest.importorskip("spacy")
    if not any(importlib.util.find_spec(name) for name in SPACY_MODELS):
        pytest.skip(f"no spaCy English pipeline installed (any of {SPACY_MODELS})")
    tag = spacy_tagger(progress=False)
    (tagged,) = tag(["the movie was surprisingly good"])
    assert [w for w, _ in tagged] == ["the", "movie", "was", "surprisingly", "good"]
    assert dict(tagged)["movie"] == "NN" and dict(tagged)["good"] == "JJ"
