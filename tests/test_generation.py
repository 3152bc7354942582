"""Greedy and beam search (slimbert.generation): invariances on tiny random models (cached =
uncached, alone = in a padded batch, beam 1 = greedy), the batched beam search against a plain
one-sentence reference written here, and a scripted decoder whose probabilities are known, to
check finished beams, the length penalty and the beam layout by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from slimbert.config import Seq2SeqLSTMConfig, Seq2SeqTransformerConfig
from slimbert.generation import SearchConfig, beam_search, generate, greedy_search
from slimbert.models import build_model

V, PAD, BOS, EOS = 24, 0, 2, 3


# Tiny models: many small ops that a second thread does not speed up (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_transformer(**overrides) -> Seq2SeqTransformerConfig:
    base = dict(vocab_size=V, hidden_size=32, encoder_layers=2, decoder_layers=2, num_attention_heads=4,
                intermediate_size=64, dropout=0.0, max_source_length=32, max_target_length=16,
                max_position_embeddings=64)
    return Seq2SeqTransformerConfig(**{**base, **overrides})


def tiny_lstm(**overrides) -> Seq2SeqLSTMConfig:
    base = dict(vocab_size=V, embedding_dim=16, hidden_size=16, num_layers=2, dropout=0.0, max_target_length=16)
    return Seq2SeqLSTMConfig(**{**base, **overrides})


CONFIGS = {
    "transformer-post-sinusoidal": lambda: tiny_transformer(norm_style="post"),
    "transformer-pre-learned": lambda: tiny_transformer(norm_style="pre", position_embedding_type="absolute"),
    "transformer-pre-rope-untied": lambda: tiny_transformer(norm_style="pre", position_embedding_type="rope",
                                                            tie_embeddings=False),
    "lstm-luong-general": lambda: tiny_lstm(attention="general"),
    "lstm-luong-dot-no-feeding": lambda: tiny_lstm(attention="dot", input_feeding=False),
    "lstm-bahdanau": lambda: tiny_lstm(attention="additive"),
}


def tiny_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(CONFIGS[name]()).eval()
    with torch.no_grad():  # sharper next-token distributions than a fresh model's near-uniform ones
        model.embeddings.tokens.weight.mul_(3)
    return model


def sources(seed: int = 1, lengths=(7, 3, 5, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded batch of random sources, each ending in </s>."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(4, V, (n,), generator=g).tolist() + [EOS] for n in lengths]
    T = max(map(len, rows))
    ids = torch.tensor([r + [PAD] * (T - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    return ids, mask


def tokens_of(results):
    return [[h.tokens for h in hyps] for hyps in results]


def assert_same(a, b, atol=1e-4):
    assert tokens_of(a) == tokens_of(b)
    for hyps_a, hyps_b in zip(a, b):
        for x, y in zip(hyps_a, hyps_b):
            assert x.score == pytest.approx(y.score, abs=atol) and x.log_prob == pytest.approx(y.log_prob, abs=atol)


# ------------------------------------------------------------------------ invariances


@pytest.mark.parametrize("name", CONFIGS)
def test_cached_and_uncached_decoding_give_the_same_outputs(name):
    """HF #18104 / #20203: a cache (and positions under it) must not change what is decoded."""
    model = tiny_model(name)
    ids, mask = sources()
    for beam in (1, 4):
        cached = generate(model, ids, mask, SearchConfig(beam_size=beam, nbest=beam, max_length=12))
        uncached = generate(model, ids, mask, SearchConfig(beam_size=beam, nbest=beam, max_length=12,
                                                           use_cache=False))
        assert_same(cached, uncached)
        assert all(len(h) == beam for h in cached)


@pytest.mark.parametrize("name", CONFIGS)
def test_a_sentence_decodes_alone_as_inside_a_padded_batch(name):
    model = tiny_model(name)
    ids, mask = sources()
    for beam in (1, 3):
        config = SearchConfig(beam_size=beam, nbest=beam, max_length=12)
        batched = generate(model, ids, mask, config)
        for i in range(len(ids)):
            n = int(mask[i].sum())
            alone = generate(model, ids[i:i + 1, :n], None, config)
            assert_same(batched[i:i + 1], alone)


@pytest.mark.parametrize("name", ["transformer-post-sinusoidal", "lstm-luong-general"])
def test_beam_size_one_is_greedy(name):
    model = tiny_model(name)
    ids, mask = sources(seed=3)
    for min_length in (0, 4):
        config = SearchConfig(beam_size=1, max_length=12, min_length=min_length, length_penalty=0.6)
        assert_same(beam_search(model, ids, mask, config), greedy_search(model, ids, mask, config), atol=1e-6)


def reference_beam_search(model, src: list[int], K: int, alpha: float, min_length: int, limit: int):
    """fairseq's rules, for one sentence, in plain Python: every step recomputed from the start
    (no cache, no batch, no beam layout), candidates sorted in a list."""
    state = model.start_decoding(torch.tensor([src]), None, use_cache=False)
    beams, finished = [([], 0.0)], []
    for step in range(limit):
        candidates = []
        for prefix, score in beams:
            with torch.no_grad():
                logp = model.next_logits(torch.tensor([[BOS] + prefix]), state)[0].float().log_softmax(-1)
            for token in range(V):
                if token in (PAD, BOS) or (token == EOS and step < min_length) or (token != EOS and step + 1 >= limit):
                    continue
                candidates.append((score + float(logp[token]), prefix, token))
        candidates.sort(key=lambda c: -c[0])
        top = candidates[:2 * K]
        for score, prefix, token in top[:K]:
            if token == EOS and len(finished) < K:
                finished.append((prefix, score / (step + 1) ** alpha, score))
        if len(finished) >= K or step + 1 >= limit:
            break
        beams = [(prefix + [token], score) for score, prefix, token in top if token != EOS][:K]
    return sorted(finished, key=lambda f: -f[1])


@pytest.mark.parametrize("name", ["transformer-pre-learned", "lstm-bahdanau"])
def test_batched_beam_search_equals_a_plain_one_sentence_reference(name):
    """The sentence-major beam layout (repeat_interleave), the cache reordering and the
    finished-hypothesis bookkeeping of the batched search change nothing."""
    model = tiny_model(name, seed=2)
    ids, mask = sources(seed=4, lengths=(6, 2, 4))
    K, alpha = 3, 1.0
    results = beam_search(model, ids, mask, SearchConfig(beam_size=K, nbest=K, length_penalty=alpha,
                                                         min_length=2, max_length=7))
    for i, hyps in enumerate(results):
        n = int(mask[i].sum())
        expected = reference_beam_search(model, ids[i, :n].tolist(), K, alpha, min_length=2, limit=7)
        assert [h.tokens for h in hyps] == [e[0] for e in expected]
        for h, (_, score, log_prob) in zip(hyps, expected):
            assert h.score == pytest.approx(score, abs=1e-4) and h.log_prob == pytest.approx(log_prob, abs=1e-4)


def test_cross_attention_keys_and_values_are_computed_once_per_source():
    """whisper #1483: computed once, on the B sources, then expanded to the beams with the cache."""
    model = tiny_model("transformer-pre-learned")
    ids, mask = sources()
    rows = []
    handles = [layer.cross_attn.k_proj.register_forward_hook(lambda m, inp, out: rows.append(inp[0].shape[0]))
               for layer in model.decoder.layers]
    beam_search(model, ids, mask, SearchConfig(beam_size=4, max_length=10))
    for h in handles:
        h.remove()
    assert rows == [len(ids)] * len(model.decoder.layers)


def test_lstm_attention_keys_of_the_memory_are_computed_once_per_source():
    model = tiny_model("lstm-bahdanau")
    ids, mask = sources()
    rows = []
    handle = model.attention.key_proj.register_forward_hook(lambda m, inp, out: rows.append(inp[0].shape[0]))
    beam_search(model, ids, mask, SearchConfig(beam_size=4, max_length=10))
    handle.remove()
    assert rows == [len(ids)]


@pytest.mark.parametrize("name", ["transformer-post-sinusoidal", "lstm-luong-general"])
def test_length_limits_and_min_length_hold(name):
    model = tiny_model(name)
    ids, mask = sources(seed=5)
    config = SearchConfig(beam_size=3, nbest=3, min_length=4, max_length=6)
    for hyps in beam_search(model, ids, mask, config) + greedy_search(model, ids, mask, config):
        for h in hyps:
            assert 4 <= len(h.tokens) <= 5 and EOS not in h.tokens and PAD not in h.tokens
    ratio = SearchConfig(beam_size=2, max_len_a=1.0, max_len_b=1)  # at most source length + 1 tokens, </s> included
    for i, hyps in enumerate(beam_search(model, ids, mask, ratio)):
        assert len(hyps[0].tokens) + 1 <= int(mask[i].sum()) + 1


def test_search_options_are_checked():
    with pytest.raises(ValueError, match="nbest"):
        SearchConfig(beam_size=2, nbest=3)
    with pytest.raises(ValueError, match="beam_size"):
        SearchConfig(beam_size=0)


# ----------------------------------------------------------------- a scripted decoder

A, B = 4, 5
# Next-token probabilities after each prefix, for source 0; source 1 swaps a and b.
SCRIPT = {
    (): {A: 0.6, B: 0.4},
    (A,): {EOS: 0.613, A: 0.2, B: 0.187},
    (B,): {B: 0.9, EOS: 0.1},
    (B, B): {EOS: 0.837, A: 0.1, B: 0.063},
}


class ScriptedState:
    """Holds, per row, the source and the tokens the decoder has seen: `next_logits` checks
    that they are the rows the search hands it, so a cache reordered wrongly fails."""

    def __init__(self, source: torch.Tensor):
        self.source, self.seen = source, None

    def reorder(self, index: torch.Tensor, sources: torch.Tensor | None) -> None:
        if sources is not None:  # None: every row keeps its source (beams moved within a sentence)
            self.source = self.source[sources]
        self.seen = None if self.seen is None else self.seen[index]


class ScriptedDecoder:
    config = SimpleNamespace(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, max_target_length=8)

    def start_decoding(self, input_ids, attention_mask, use_cache):
        return ScriptedState(input_ids[:, 0].clone())

    def next_logits(self, tokens, state):
        if state.seen is not None:
            assert torch.equal(state.seen, tokens[:, :-1]), "the state was not reordered with the beams"
        state.seen = tokens.clone()
        logits = torch.full((len(tokens), 6), -1e9)
        for row, prefix in enumerate(tokens[:, 1:].tolist()):
            swap = int(state.source[row]) == 1
            prefix = tuple({A: B, B: A}.get(t, t) if swap else t for t in prefix)
            probs = SCRIPT.get(prefix, {A: 0.3, B: 0.3, EOS: 0.4})
            for token, p in probs.items():
                token = {A: B, B: A}.get(token, token) if swap else token
                logits[row, token] = math.log(p)
        return logits


def test_finished_beams_are_kept_and_the_length_penalty_ranks_them():
    """OpenNMT-py #137: the hypothesis "a" ends at step 2 while its row goes on as "a a";
    it must come back whole, with its own score. Two sentences (the second swaps a and b)
    check that beams stay with their sentence."""
    ids = torch.tensor([[0, EOS], [1, EOS]])
    p_a = 0.6 * 0.613  # a </s>
    p_bb = 0.4 * 0.9 * 0.837  # b b </s>
    plain = beam_search(ScriptedDecoder(), ids, None, SearchConfig(beam_size=2, nbest=2, length_penalty=0.0))
    assert tokens_of(plain) == [[[A], [B, B]], [[B], [A, A]]]
    assert [h.log_prob for h in plain[0]] == pytest.approx([math.log(p_a), math.log(p_bb)], abs=1e-6)
    normalised = beam_search(ScriptedDecoder(), ids, None, SearchConfig(beam_size=2, nbest=2, length_penalty=1.0))
    assert tokens_of(normalised) == [[[B, B], [A]], [[A, A], [B]]]  # log p / len prefers the longer one
    assert [h.score for h in normalised[0]] == pytest.approx([math.log(p_bb) / 3, math.log(p_a) / 2], abs=1e-6)
    greedy = greedy_search(ScriptedDecoder(), ids, None, SearchConfig(beam_size=1))
    assert tokens_of(greedy) == [[[A]], [[B]]]
