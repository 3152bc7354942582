"""The shared Transformer modules, each on its own: positions, masks, attention, the KV cache,
the block and the stack. Invariances where no reference exists (cached = uncached decoding,
relative positions under RoPE), hand computations where the maths is short."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from torch import nn

from slimbert import build_model, load_model, save_checkpoint
from slimbert.modules import (FeedForward, GatedAttentionUnit, GAULayer, KVCache, LearnedPositions, MultiHeadAttention,
                              PackedLSTM, RotaryEmbedding, SinusoidalPositions, StackCache, TransformerLayer,
                              TransformerStack, activation, causal_mask, combine_masks, merge_directions, padding_mask)

H, N = 32, 4
D = H // N


def attention(causal: bool = False, rope: RotaryEmbedding | None = None, heads: int = N) -> MultiHeadAttention:
    inner = heads * D
    return MultiHeadAttention(nn.Linear(H, inner), nn.Linear(H, inner), nn.Linear(H, inner), nn.Linear(inner, H),
                              num_heads=heads, head_dim=D, causal=causal, rope=rope)


def decoder_stack(layers: int = 2, pre_norm: bool = False, rope: bool = True) -> TransformerStack:
    """A decoder: causal rotary self-attention, cross-attention to a memory, feed-forward."""
    rotary = RotaryEmbedding(D) if rope else None
    blocks = [TransformerLayer(attention(causal=True, rope=rotary), nn.LayerNorm(H),
                               FeedForward(nn.Linear(H, 64), nn.Linear(64, H), activation("gelu")), nn.LayerNorm(H),
                               pre_norm=pre_norm, cross_attn=attention(), cross_norm=nn.LayerNorm(H))
              for _ in range(layers)]
    return TransformerStack(blocks, nn.LayerNorm(H) if pre_norm else None).eval()


# ----------------------------------------------------------------------------- positions


def test_sinusoidal_positions_are_vaswani_et_al():
    pe = SinusoidalPositions(H)(torch.arange(50)[None])[0]  # (50, H)
    p, i = 37, 5
    assert pe[p, 2 * i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / H)), abs=1e-5)
    assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(p / 10000 ** (2 * i / H)), abs=1e-5)


def test_position_spans_are_the_positions_of_that_range():
    sinusoid = SinusoidalPositions(H)
    with torch.inference_mode():  # a table first made while decoding still serves training
        first = sinusoid.span(7, 1)
    full = sinusoid(torch.arange(400)[None])  # (1, 400, H)
    assert torch.equal(first, full[:, 7:8])
    for offset, length in [(0, 20), (126, 5), (300, 100)]:  # the last two grow the table
        assert torch.equal(sinusoid.span(offset, length), full[:, offset:offset + length])
    x = torch.randn(1, 3, H, requires_grad=True)
    (x + sinusoid.span(0, 3)).sum().backward()
    assert x.grad is not None
    learned = LearnedPositions(16, H)
    assert torch.equal(learned.span(4, 3), learned(torch.arange(4, 7)[None]))
    with pytest.raises(IndexError, match="past the 16"):
        learned.span(10, 7)


def test_rope_is_a_rotation_by_position_times_frequency():
    """Each pair (x_j, x_{j+D/2}) as a complex number, multiplied by exp(i p theta_j)."""
    rope = RotaryEmbedding(D)
    x = torch.randn(1, 1, 6, D)
    positions = torch.tensor([[0, 1, 2, 7, 30, 100]])
    out = rope(x, positions)
    theta = 10000 ** (-torch.arange(0, D, 2).float() / D)
    z = torch.complex(x[..., :D // 2], x[..., D // 2:]) * torch.polar(
        torch.ones(6, D // 2), positions[0, :, None].float() * theta)
    torch.testing.assert_close(out, torch.cat([z.real, z.imag], -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))  # a rotation keeps lengths


@pytest.mark.parametrize("shift", [1, 5, 200])
def test_rope_scores_depend_only_on_relative_position(shift):
    torch.manual_seed(0)
    rope = RotaryEmbedding(D)
    q, k = torch.randn(2, N, 1, D), torch.randn(2, N, 1, D)

    def score(p: int, r: int) -> torch.Tensor:
        return (rope(q, torch.tensor([[p]])) * rope(k, torch.tensor([[r]]))).sum(-1)

    for p, r in [(0, 0), (3, 1), (1, 9), (40, 12)]:
        torch.testing.assert_close(score(p, r), score(p + shift, r + shift), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(3, 1), score(1, 3), atol=1e-3)  # but the order matters


# --------------------------------------------------------------------------------- masks


def test_masks_causal_padding_and_combined():
    assert padding_mask(torch.ones(2, 3, dtype=torch.long)) is None  # nothing padded: SDPA's fast path
    pad = padding_mask(torch.tensor([[1, 1, 0]]))
    assert pad.shape == (1, 1, 1, 3) and pad.tolist() == [[[[True, True, False]]]]
    full = causal_mask(3, 3)[0, 0]
    assert full.tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    step = causal_mask(1, 4)[0, 0]  # the 4th token, 3 in the cache: sees everything
    assert step.tolist() == [[True, True, True, True]]
    both = combine_masks(causal_mask(3, 3), pad)[0, 0]
    assert both.tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    assert combine_masks(None, None) is None


# ----------------------------------------------------------------------------- attention


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_path_equals_the_explicit_path_that_returns_maps(causal):
    torch.manual_seed(0)
    attn = attention(causal=causal, rope=RotaryEmbedding(D)).eval()
    x = torch.randn(2, 5, H)
    mask = padding_mask(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))
    fast, none = attn(x, mask=mask)
    slow, probs = attn(x, mask=mask, output_attentions=True)
    assert none is None and probs.shape == (2, N, 5, 5)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert probs[1, :, :, 3:].abs().max() == 0  # padding gets no attention
    if causal:
        assert probs[0].triu(1).abs().max() == 0  # nor do later tokens


def test_causal_attention_is_not_changed_by_later_tokens():
    torch.manual_seed(0)
    attn = attention(causal=True, rope=RotaryEmbedding(D)).eval()
    x = torch.randn(1, 6, H)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, H)
    torch.testing.assert_close(attn(x)[0][:, :4], attn(y)[0][:, :4])


def test_self_attention_decoded_step_by_step_with_a_cache_equals_the_full_sequence():
    torch.manual_seed(0)
    attn = attention(causal=True, rope=RotaryEmbedding(D)).eval()
    x = torch.randn(2, 7, H)
    full, _ = attn(x)
    cache = KVCache()
    steps = [attn(x[:, t:t + 1], cache=cache)[0] for t in range(7)]
    assert cache.length == 7
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_cross_attention_with_a_cache_equals_without_and_computes_kv_once():
    torch.manual_seed(0)
    attn = attention().eval()
    memory = torch.randn(2, 9, H)
    memory_mask = padding_mask(torch.tensor([[1] * 9, [1] * 6 + [0] * 3]))
    queries = torch.randn(2, 4, H)
    cache = KVCache(static=True)
    calls = []
    handle = attn.k_proj.register_forward_hook(lambda *args: calls.append(1))
    cached = [attn(queries[:, t:t + 1], kv=memory, mask=memory_mask, cache=cache)[0] for t in range(4)]
    handle.remove()
    uncached, _ = attn(queries, kv=memory, mask=memory_mask)
    assert len(calls) == 1  # the memory's keys were projected at the first step only
    torch.testing.assert_close(torch.cat(cached, 1), uncached, atol=1e-5, rtol=1e-5)


def test_cache_reorder_follows_the_beams():
    cache = KVCache()
    k = torch.arange(3.0)[:, None, None, None].expand(3, N, 2, D)
    cache.update(k, k + 10)
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.k[:, 0, 0, 0].tolist() == [2, 2, 0] and cache.v[:, 0, 0, 0].tolist() == [12, 12, 10]
    cache.reset()
    assert cache.length == 0 and not cache.is_set


# ------------------------------------------------------------------------- block and stack


@pytest.mark.parametrize("pre_norm", [False, True])
def test_a_causal_stack_decoded_token_by_token_equals_the_full_forward(pre_norm):
    torch.manual_seed(0)
    stack = decoder_stack(pre_norm=pre_norm)
    tgt, memory = torch.randn(3, 8, H), torch.randn(3, 5, H)
    memory_mask = padding_mask(torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1] * 4 + [0]]))
    full = stack(tgt, memory=memory, memory_mask=memory_mask).last_hidden_state
    cache = StackCache.empty(len(stack.layers))
    steps = []
    for t in range(8):
        # After the first step the memory is in the cross-attention caches: it need not be passed.
        out = stack(tgt[:, t:t + 1], memory=memory if t == 0 else None, memory_mask=memory_mask, cache=cache)
        steps.append(out.last_hidden_state)
    assert cache.length == 8
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_reordered_stack_cache_decodes_as_if_the_beams_had_been_computed_in_that_order():
    torch.manual_seed(0)
    stack = decoder_stack()
    tgt, memory = torch.randn(3, 4, H), torch.randn(3, 5, H)
    order = torch.tensor([2, 0, 0])
    cache = StackCache.empty(2)
    for t in range(3):
        stack(tgt[:, t:t + 1], memory=memory, cache=cache)
    cache.reorder(order, order)
    after = stack(tgt[order, 3:4], cache=cache).last_hidden_state
    expected = stack(tgt[order], memory=memory[order]).last_hidden_state[:, 3:4]
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)


def test_beams_of_one_source_reorder_without_touching_the_cross_attention_cache():
    """Rows 0-1 and 2-3 are two sentences' beams (same memory each): moving beams within their
    sentence needs no cross-attention reorder (sources=None), and dropping a sentence selects
    its rows of it (sources=rows)."""
    torch.manual_seed(0)
    stack = decoder_stack()
    memory = torch.randn(2, 5, H).repeat_interleave(2, dim=0)  # (4, 5, H)
    tgt = torch.randn(4, 4, H)
    cache = StackCache.empty(2)
    for t in range(3):
        stack(tgt[:, t:t + 1], memory=memory, cache=cache)
    cross = [layer.cross_attn.k for layer in cache.layers]
    order = torch.tensor([1, 1, 3, 2])
    cache.reorder(order, None)
    assert all(layer.cross_attn.k is k for layer, k in zip(cache.layers, cross))  # untouched
    after = stack(tgt[order, 3:4], cache=cache).last_hidden_state
    expected = stack(tgt[order], memory=memory[order]).last_hidden_state[:, 3:4]
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)

    cache.reorder(torch.tensor([3, 2]), torch.tensor([2, 3]))  # sentence 0 done: sentence 1's rows
    assert cache.layers[0].cross_attn.k.shape[0] == 2 and cache.length == 4


def test_pre_and_post_norm_blocks_compute_their_formulas():
    torch.manual_seed(0)
    ffn = FeedForward(nn.Linear(H, 64), nn.Linear(64, H), activation("relu"))
    attn, ln1, ln2 = attention().eval(), nn.LayerNorm(H), nn.LayerNorm(H)
    x = torch.randn(2, 3, H)
    post = TransformerLayer(attn, ln1, ffn, ln2, pre_norm=False).eval()(x)[0]
    h = ln1(x + attn(x)[0])
    torch.testing.assert_close(post, ln2(h + ffn(h)))
    pre = TransformerLayer(attn, ln1, ffn, ln2, pre_norm=True).eval()(x)[0]
    h = x + attn(ln1(x))[0]
    torch.testing.assert_close(pre, h + ffn(ln2(h)))


def test_layerdrop_skips_whole_layers_while_training_only():
    torch.manual_seed(0)
    stack = decoder_stack(layers=4)
    stack.layerdrop = 0.5
    tgt, memory = torch.randn(1, 3, H), torch.randn(1, 2, H)
    stack.train()
    for layer in stack.layers:
        layer.dropout.p = 0.0
    skipped = 0
    for _ in range(25):
        out = stack(tgt, memory=memory, output_hidden_states=True)
        skipped += sum(torch.equal(a, b) for a, b in zip(out.hidden_states, out.hidden_states[1:]))
    assert 25 <= skipped <= 75  # of 100 layer-steps, about half are skipped (p = 0.5)
    stack.eval()
    out = stack(tgt, memory=memory, output_hidden_states=True)
    assert not any(torch.equal(a, b) for a, b in zip(out.hidden_states, out.hidden_states[1:]))


# ------------------------------------------------------------------------------ recurrent


def test_packed_lstm_reads_each_padded_sentence_as_if_it_were_alone():
    torch.manual_seed(0)
    lstm = PackedLSTM(8, 6, num_layers=2, bidirectional=True).eval()
    lengths = [5, 2, 4]
    x = torch.randn(3, 5, 8)
    mask = (torch.arange(5)[None] < torch.tensor(lengths)[:, None]).long()
    out, (h, c) = lstm(x, mask)
    assert out.shape == (3, 5, 12) and h.shape == (4, 3, 6)
    for i, n in enumerate(lengths):
        alone, (h_i, _) = lstm(x[i:i + 1, :n])
        torch.testing.assert_close(out[i:i + 1, :n], alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h[:, i:i + 1], h_i, atol=1e-5, rtol=1e-5)
        assert out[i, n:].abs().max() == 0 if n < 5 else True
    merged, _ = merge_directions((h, c), num_layers=2)  # (L, B, 2H): [forward, backward]
    torch.testing.assert_close(merged[1, :, :6], h[2])
    torch.testing.assert_close(merged[1, :, 6:], h[3])


def test_lstm_state_carried_step_by_step_equals_the_full_sequence():
    torch.manual_seed(0)
    lstm = PackedLSTM(8, 6, num_layers=2).eval()
    x = torch.randn(2, 6, 8)
    full, _ = lstm(x)
    state, steps = None, []
    for t in range(6):
        out, state = lstm(x[:, t:t + 1], state=state)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_lstm_cell_steps_equal_the_fused_lstm_outputs_state_and_gradients():
    torch.manual_seed(0)
    lstm = PackedLSTM(8, 6, num_layers=2).eval()
    x = torch.randn(3, 5, 8, requires_grad=True)
    full, (h_full, c_full) = lstm(x)
    state = (torch.zeros(2, 3, 6), torch.zeros(2, 3, 6))
    steps = []
    for t in range(5):
        out, state = lstm.step(x[:, t:t + 1], state)
        steps.append(out)
    stepped = torch.cat(steps, 1)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[0], h_full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[1], c_full, atol=1e-5, rtol=1e-5)
    (g_full,) = torch.autograd.grad(full.square().sum(), x)
    (g_step,) = torch.autograd.grad(stepped.square().sum(), x)
    torch.testing.assert_close(g_step, g_full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="bidirectional"):
        PackedLSTM(8, 6, bidirectional=True).step(x[:, :1], state)


# ----------------------------------------------------------------- BERT over the modules


@pytest.mark.parametrize("positions", ["sinusoidal", "rope"])
def test_bert_with_other_positions_trains_saves_and_reloads(tmp_path, tiny_tokenizer, positions):
    torch.manual_seed(0)
    model = build_model(tiny_config(position_embedding_type=positions, head="classification"))
    assert not model.config.is_hf_compatible
    ids = torch.randint(5, model.config.vocab_size, (2, 9))
    loss = model(ids).logits.logsumexp(-1).sum()
    loss.backward()
    assert model.layers[0].attn.q_proj.weight.grad.abs().sum() > 0
    save_checkpoint(model, tiny_tokenizer, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    if positions == "rope":  # no position table: only relative positions, through attention, matter
        assert model.bert.embeddings.position_embeddings is None
        with torch.no_grad():
            for layer in model.layers:  # sharpen the near-uniform attention of a fresh model
                layer.attn.q_proj.weight.mul_(30)
                layer.attn.k_proj.weight.mul_(30)
            plain = model(ids).last_hidden_state
            shifted = model(ids, position_ids=torch.arange(3, 12)[None]).last_hidden_state
            reversed_ = model(ids, position_ids=torch.arange(8, -1, -1)[None]).last_hidden_state
        torch.testing.assert_close(shifted, plain, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(reversed_, plain, atol=1e-3)


# ------------------------------------------- entropy-invariant scale, gated attention unit


def hand_attention(attn: MultiHeadAttention, x: torch.Tensor, allowed: torch.Tensor,
                   factor: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) * factor, masked) v, then the output projection, written out."""
    B, T, _ = x.shape
    q, k, v = (p(x).view(B, T, N, D).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    scores = q @ k.transpose(-1, -2) / math.sqrt(D) * factor  # (B, N, T, T)
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return attn.out_proj((probs @ v).transpose(1, 2).reshape(B, T, H))


@pytest.mark.parametrize("causal", [False, True])
def test_log_n_scale_equals_the_formula_by_hand(causal):
    torch.manual_seed(0)
    attn = attention(causal=causal).eval()
    attn.scale_kind = "log_n"
    x = torch.randn(2, 6, H)
    lengths = torch.tensor([6, 4])  # row 2 is padded after 4 tokens
    key_ok = torch.arange(6)[None, :] < lengths[:, None]  # (B, S)
    allowed = key_ok[:, None, None, :].expand(2, 1, 6, 6)  # (B, 1, T, S)
    if causal:
        allowed = allowed & torch.ones(6, 6, dtype=torch.bool).tril()
    n = allowed.sum(-1, keepdim=True).float()  # keys each query row sees
    expected = hand_attention(attn, x, allowed, torch.log(n) / math.log(512))
    mask = padding_mask(key_ok.long())
    for maps in (False, True):  # the SDPA path and the explicit one
        out, _ = attn(x, mask=mask, output_attentions=maps)
        torch.testing.assert_close(out[0], expected[0])
        torch.testing.assert_close(out[1, :4], expected[1, :4])  # real positions of the padded row
    attn.scale_kind = "sqrt"  # the default is 1/sqrt(D), unchanged
    torch.testing.assert_close(attn(x, mask=mask)[0][0], hand_attention(attn, x, allowed, torch.ones(1))[0])
    with pytest.raises(ValueError, match="scale_kind"):
        MultiHeadAttention(nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H), N, D,
                           scale_kind="log")


def gau_unit(causal: bool = False, rope: bool = False, e: int = 48, s: int = 16) -> GatedAttentionUnit:
    return GatedAttentionUnit(nn.Linear(H, e), nn.Linear(H, e), nn.Linear(H, s), nn.Linear(e, H), causal=causal,
                              rope=RotaryEmbedding(s) if rope else None).eval()


def test_gau_computes_its_formula_with_the_shapes_of_the_paper():
    torch.manual_seed(0)
    gau = gau_unit()
    with torch.no_grad():
        gau.gamma.normal_()  # away from the tiny initial scale, so A is far from zero
        gau.beta.normal_(std=0.1)
    x = torch.randn(2, 5, H)
    out, a = gau(x, output_attentions=True)
    assert out.shape == (2, 5, H) and a.shape == (2, 1, 5, 5)
    u, v, z = (F.silu(p(x)) for p in (gau.u_proj, gau.v_proj, gau.z_proj))  # (B, T, E), (B, T, E), (B, T, s)
    q, k = z * gau.gamma[0] + gau.beta[0], z * gau.gamma[1] + gau.beta[1]
    expected_a = torch.relu(q @ k.transpose(-1, -2) / math.sqrt(16)) ** 2 / 5
    torch.testing.assert_close(a[:, 0], expected_a)
    torch.testing.assert_close(out, gau.out_proj(u * (expected_a @ v)))
    assert expected_a.abs().sum() > 0


@pytest.mark.parametrize("rope", [False, True])
def test_gau_padded_sequence_equals_the_sequence_alone(rope):
    torch.manual_seed(0)
    gau = gau_unit(rope=rope)
    with torch.no_grad():
        gau.gamma.normal_()
    x = torch.randn(1, 7, H)
    alone, _ = gau(x[:, :4])
    padded, _ = gau(x, mask=padding_mask(torch.tensor([[1, 1, 1, 1, 0, 0, 0]])))
    torch.testing.assert_close(padded[:, :4], alone)


def test_causal_gau_is_not_changed_by_later_tokens():
    torch.manual_seed(0)
    gau = gau_unit(causal=True, rope=True)
    with torch.no_grad():
        gau.gamma.normal_()
    x = torch.randn(1, 6, H)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, H)
    torch.testing.assert_close(gau(x)[0][:, :4], gau(y)[0][:, :4])
    assert not torch.allclose(gau(x)[0][:, 4:], gau(y)[0][:, 4:])


@pytest.mark.parametrize("pre_norm", [False, True])
def test_gau_layer_computes_post_and_pre_norm(pre_norm):
    torch.manual_seed(0)
    layer = GAULayer(gau_unit(), nn.LayerNorm(H), pre_norm=pre_norm).eval()
    x = torch.randn(2, 5, H)
    expected = (x + layer.gau(layer.norm(x))[0] if pre_norm else layer.norm(x + layer.gau(x)[0]))
    torch.testing.assert_close(layer(x)[0], expected)


VARIANTS = [dict(attention_type="gau", gau_key_size=16),
            dict(attention_type="gau", gau_key_size=16, position_embedding_type="rope", norm_style="pre"),
            dict(attention_scale="log_n")]


@pytest.mark.parametrize("variant", VARIANTS, ids=["gau", "gau-rope-pre", "log_n"])
def test_bert_variant_pads_trains_saves_and_reloads(tmp_path, tiny_tokenizer, variant):
    torch.manual_seed(0)
    model = build_model(tiny_config(head="mlm", **variant))
    assert not model.config.is_hf_compatible
    # A padded sequence gives, at its real positions, what it gives alone.
    model.eval()
    ids = torch.randint(5, model.config.vocab_size, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        both = model(ids, mask).logits
        alone = model(ids[1:, :6]).logits
    torch.testing.assert_close(both[1, :6], alone[0], atol=1e-5, rtol=1e-4)
    # A few steps on one batch: the masked-LM loss goes down.
    model.train()
    chosen = torch.rand(2, 9) < 0.3
    chosen[:, 0] = True
    inputs = ids.masked_fill(chosen, tiny_tokenizer.mask_id)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        logits = model(inputs, masked_positions=chosen).logits  # (M, V)
        loss = F.cross_entropy(logits, ids[chosen])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    save_checkpoint(model, tiny_tokenizer, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config.attention_type == model.config.attention_type
    assert loaded.config.attention_scale == model.config.attention_scale
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask).logits, model(ids, mask).logits)


def test_pruning_refuses_a_gau_model():
    from slimbert.compress.prune import PruneError, prune_heads
    model = build_model(tiny_config(attention_type="gau", gau_key_size=16))
    with pytest.raises(PruneError, match="GAU"):
        prune_heads(model, {0: [1]})


def test_config_names_a_bad_attention_option_and_marks_the_variants_not_hf_compatible():
    from slimbert.errors import CheckpointError
    for field_name, value in (("attention_scale", "log"), ("attention_type", "flash"), ("gau_key_size", 0)):
        with pytest.raises(CheckpointError, match=field_name):
            tiny_config(**{field_name: value})
    assert tiny_config().to_dict()["model_type"] == "bert"
    for variant in VARIANTS:
        assert tiny_config(**variant).to_dict()["model_type"] == "slimbert_bert"
