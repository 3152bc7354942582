"""Sequence to sequence: an encoder-decoder Transformer and an LSTM with attention.

Both read a source (right-padded ids ending in </s>) into a memory, and predict the target
one token at a time from the tokens before it. Training feeds the gold target shifted right
behind <s> (teacher forcing): the Transformer does every position at once under a causal
mask; the LSTM steps through time. Generation (slimbert.generation) drives either model
through the same two calls:

    state = model.start_decoding(input_ids, attention_mask, use_cache)   # encode once
    logits = model.next_logits(tokens, state)                             # (N, V) for the next token
    state.reorder(index, sources)                                         # follow the beams

With the cache the decoder reads only the newest token: the Transformer keeps every layer's
self-attention K/V (appended per step) and the cross-attention K/V (computed from the memory
at the first step, never again); the LSTM keeps its recurrent state. Without it every step
recomputes the whole prefix, which is what the tests compare the cache against.

Notation: B = batch, N = batch x beams, S = source tokens, T = target tokens, H = model width,
V = vocabulary, E = embedding width, L = layers, K = 2 x LSTM units per direction (the
decoder's width), A = attention width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slimbert.config import Seq2SeqConfig, Seq2SeqLSTMConfig, Seq2SeqTransformerConfig
from slimbert.models.int8 import int8_rows
from slimbert.models.outputs import ModelOutput
from slimbert.modules import (FeedForward, LearnedPositions, MultiHeadAttention, PackedLinear, PackedLSTM,
                              RotaryEmbedding, SinusoidalPositions, StackCache, TransformerLayer,
                              TransformerStack, activation, merge_directions, padding_mask)

# ---------------------------------------------------------------------------- embeddings


OUTPUT_PROJECTION = "embeddings.output"  # the module name of a translation model's vocabulary projection


class SharedEmbeddings(nn.Module):
    """The token embeddings of source and target, and the output projection to the vocabulary.

    With a joint vocabulary the three are one matrix (Press & Wolf 2017,
    https://arxiv.org/abs/1608.05859; Vaswani et al. 2017, section 3.4): `tokens` serves the
    encoder, the decoder and, transposed, the output. Untied, each has its own."""

    def __init__(self, config: Seq2SeqConfig, dim: int):
        super().__init__()
        V, pad = config.vocab_size, config.pad_token_id
        self.tokens = nn.Embedding(V, dim, padding_idx=pad)
        self.target_tokens = None if config.tie_embeddings else nn.Embedding(V, dim, padding_idx=pad)
        # An int8 model projects to the vocabulary with its own int8 copy of the tied matrix.
        int8_output = OUTPUT_PROJECTION in ((config.quantization or {}).get("modules") or ())
        self.output = None if config.tie_embeddings and not int8_output else nn.Linear(dim, V, bias=False)
        for embedding in (self.tokens, self.target_tokens):
            # fairseq's init: N(0, dim^-1/2), so sqrt(dim)-scaled inputs have unit size
            if embedding is not None:
                nn.init.normal_(embedding.weight, std=dim ** -0.5)
                embedding.weight.data[pad].zero_()

    def source(self, ids: torch.Tensor) -> torch.Tensor:  # (B, S) -> (B, S, dim)
        return self.tokens(ids)

    def target(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, dim)
        return (self.target_tokens or self.tokens)(ids)

    def logits(self, h: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., V)
        if self.serving is not None:
            ids, projection = self.serving
            if ids is None:
                return projection(h)
            logits = h.new_full((*h.shape[:-1], self.tokens.num_embeddings), -math.inf)
            logits[..., ids] = projection(h)
            return logits
        return self.output(h) if self.output is not None else F.linear(h, self.tokens.weight)

    # What serving put in place of the stored projection (restrict_output, pack_output): the ids
    # of the pieces kept (None: all) and their projection. A tuple, not a sub-module, so that it
    # stays out of state_dict() and the checkpoint.
    serving: tuple[torch.Tensor | None, nn.Module] | None = None

    def restrict_output(self, ids: torch.Tensor | list[int] | None) -> None:
        """Project onto the pieces `ids` only, e.g. those the target language uses (vocabulary
        selection, as CTranslate2's vocabulary map): the projection, a large part of a decoding
        step, shrinks to len(ids) rows, and every other piece gets logit -inf, so that no search
        picks it. Kept pieces get the logits of the full projection. For serving: call it on the
        model in its final form (device, int8); None restores the full vocabulary. The weights
        and the checkpoint are unchanged. A packed projection (pack_output) stays packed."""
        if ids is not None:
            ids = torch.as_tensor(sorted(set(int(i) for i in ids)), dtype=torch.long)
        self._serve(ids, self.packed)

    def pack_output(self, packed: bool = True) -> bool:
        """Serve the projection through oneDNN with its weight prepacked once
        (`modules.PackedLinear`): the same logits up to float rounding, faster on the CPU,
        where it is fp32 and oneDNN is present. Returns whether the projection is now packed
        (never for an int8 one, whose kernel is faster still). For serving only, like
        restrict_output: call it on the model in its final form; `packed=False` undoes it."""
        self._serve(None if self.serving is None else self.serving[0], packed)
        return self.packed

    @property
    def packed(self) -> bool:
        return self.serving is not None and isinstance(self.serving[1], PackedLinear)

    def _serve(self, ids: torch.Tensor | None, packed: bool) -> None:
        """Build the serving projection of the pieces `ids` (None: all), packed if asked and possible."""
        full = self.output
        if full is not None and not isinstance(full, nn.Linear):  # a dynamic int8 Linear: never packed
            projection = None if ids is None else int8_rows(full, ids)
        else:
            weight = (full or self.tokens).weight.detach()
            if ids is not None:
                weight = weight[ids.to(weight.device)]
            if packed and PackedLinear.supports(weight):
                projection = PackedLinear(weight)
            elif ids is not None:
                projection = nn.Linear(weight.shape[1], len(ids), bias=False, device=weight.device,
                                       dtype=weight.dtype)
                with torch.no_grad():
                    projection.weight.copy_(weight)
            else:
                projection = None
        self.serving = None if projection is None else (
            None if ids is None else ids.to(self.tokens.weight.device), projection.eval())

    def untie_output(self) -> None:
        """Give the output projection its own Linear, a copy of the tied matrix (the same
        function), so that int8 quantization can cover it while the embeddings stay fp32."""
        if self.output is None:
            V, dim = self.tokens.weight.shape
            self.output = nn.Linear(dim, V, bias=False).to(self.tokens.weight.device)
            with torch.no_grad():
                self.output.weight.copy_(self.tokens.weight)


def xavier_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every Linear of `module` (fairseq's choice)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- Transformer


def transformer_layer(config: Seq2SeqTransformerConfig, decoder: bool,
                      rope: RotaryEmbedding | None) -> TransformerLayer:
    """One block from the shared modules. A decoder block is the encoder block with a causal
    self-attention and a cross-attention sub-layer over the encoder's output."""
    H, N, D = config.hidden_size, config.num_attention_heads, config.head_dim

    def attention(causal: bool, rotary: RotaryEmbedding | None) -> MultiHeadAttention:
        return MultiHeadAttention(nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H),
                                  num_heads=N, head_dim=D, dropout=config.attention_dropout, causal=causal,
                                  rope=rotary)

    def norm() -> nn.LayerNorm:
        return nn.LayerNorm(H, eps=config.layer_norm_eps)

    attn, attn_norm = attention(causal=decoder, rotary=rope), norm()
    cross_attn, cross_norm = (attention(causal=False, rotary=None), norm()) if decoder else (None, None)
    ffn = FeedForward(nn.Linear(H, config.intermediate_size), nn.Linear(config.intermediate_size, H),
                      activation(config.hidden_act))
    return TransformerLayer(attn, attn_norm, ffn, norm(), dropout=config.dropout,
                            pre_norm=config.norm_style == "pre", cross_attn=cross_attn, cross_norm=cross_norm)


def transformer_stack(config: Seq2SeqTransformerConfig, decoder: bool) -> TransformerStack:
    rope = RotaryEmbedding(config.head_dim) if config.position_embedding_type == "rope" else None
    n = config.decoder_layers if decoder else config.encoder_layers
    layers = [transformer_layer(config, decoder, rope) for _ in range(n)]
    pre = config.norm_style == "pre"
    final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if pre else None
    return TransformerStack(layers, final_norm)


def absolute_positions(config: Seq2SeqTransformerConfig) -> nn.Module | None:
    """Learned or sinusoidal positions added at the embeddings; None for rotary positions,
    which act inside self-attention."""
    kind = config.position_embedding_type
    if kind == "absolute":
        return LearnedPositions(config.max_position_embeddings, config.hidden_size)
    return SinusoidalPositions(config.hidden_size) if kind == "sinusoidal" else None


@dataclass
class TransformerDecoderState:
    """What the Transformer decoder keeps between steps, for N hypotheses."""

    memory: torch.Tensor | None  # (N, S, H) the encoder's output; dropped once the cross caches hold its K/V
    memory_mask: torch.Tensor  # (N, S) 1 = real source token
    cache: StackCache | None  # per layer: self-attention K/V so far, cross-attention K/V; None = recompute

    def reorder(self, index: torch.Tensor, sources: torch.Tensor | None) -> None:
        """Keep rows `index` (N',) of the self-attention caches, in that order (expand sources to
        beams, follow surviving beams); rows `sources` of the memory, its mask and the
        cross-attention K/V, which depend on the source alone (None: they stay as they are)."""
        if sources is not None:
            if self.memory is not None:
                self.memory = self.memory.index_select(0, sources)
            self.memory_mask = self.memory_mask.index_select(0, sources)
        if self.cache is not None:
            self.cache.reorder(index, sources)


class Seq2SeqTransformer(nn.Module):
    """embed -> encoder stack -> memory; embed(shifted target) -> decoder stack (causal
    self-attention, cross-attention to the memory) -> logits over the joint vocabulary."""

    def __init__(self, config: Seq2SeqTransformerConfig):
        super().__init__()
        self.config = config
        H = config.hidden_size
        self.embeddings = SharedEmbeddings(config, H)
        self.source_positions = absolute_positions(config)
        self.target_positions = absolute_positions(config)
        self.embed_scale = math.sqrt(H) if config.scale_embeddings else 1.0
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = transformer_stack(config, decoder=False)
        self.decoder = transformer_stack(config, decoder=True)
        xavier_init(self.encoder)
        xavier_init(self.decoder)
        if self.embeddings.output is not None:
            nn.init.normal_(self.embeddings.output.weight, std=H ** -0.5)

    def _embed(self, x: torch.Tensor, positions: nn.Module | None, offset: int) -> torch.Tensor:
        """(B, T, H) token vectors at positions offset..offset+T-1 (absolute ones added here)."""
        x = x * self.embed_scale
        if positions is not None:
            x = x + positions.span(offset, x.shape[1]).to(x.dtype)  # (1, T, H)
        return self.dropout(x)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src (B, S) ids, src_mask (B, S) 1 = real -> memory (B, S, H)."""
        x = self._embed(self.embeddings.source(src), self.source_positions, 0)
        return self.encoder(x, padding_mask(src_mask)).last_hidden_state

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor | None, memory_mask: torch.Tensor | None,
               cache: StackCache | None = None, last_only: bool = False) -> torch.Tensor:
        """tgt_in (B, T): the target so far, or with a cache only its newest tokens -> logits (B, T, V),
        or with `last_only` (B, 1, V) for the last position alone.

        With a cache, the new tokens sit after the `cache.length` tokens already decoded, and
        their positions (absolute or rotary) say so. `memory` may be None once the cache's
        cross-attention K/V are set; `memory_mask` is always needed."""
        offset = cache.length if cache is not None else 0
        x = self._embed(self.embeddings.target(tgt_in), self.target_positions, offset)
        out = self.decoder(x, memory=memory, memory_mask=padding_mask(memory_mask), cache=cache)
        h = out.last_hidden_state[:, -1:] if last_only else out.last_hidden_state  # (B, 1|T, H)
        return self.embeddings.logits(h)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, teacher_forcing: float = 1.0) -> ModelOutput:
        """Teacher forcing: every target position at once. Returns logits (B, T, V)."""
        if teacher_forcing != 1.0:
            raise ValueError("the Transformer trains with full teacher forcing only (teacher_forcing=1)")
        memory = self.encode(input_ids, attention_mask)
        logits = self.decode(decoder_input_ids, memory, attention_mask)
        return ModelOutput(logits=logits, attention_mask=attention_mask)

    # ------------------------------------------------------------------ generation
    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       use_cache: bool = True) -> TransformerDecoderState:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        cache = StackCache.empty(len(self.decoder.layers)) if use_cache else None
        return TransformerDecoderState(self.encode(input_ids, attention_mask), attention_mask, cache)

    def next_logits(self, tokens: torch.Tensor, state: TransformerDecoderState) -> torch.Tensor:
        """tokens (N, t): everything decoded so far, <s> first -> logits (N, V) of token t + 1."""
        if state.cache is None:  # recompute the whole prefix (but project only its last position)
            return self.decode(tokens, state.memory, state.memory_mask, last_only=True)[:, -1]
        if state.cache.length != tokens.shape[1] - 1:
            raise ValueError(f"the cache holds {state.cache.length} tokens but {tokens.shape[1]} were "
                             "decoded")
        logits = self.decode(tokens[:, -1:], state.memory, state.memory_mask, state.cache)[:, -1]
        state.memory = None  # its K/V are in the cross-attention caches now
        return logits


# ----------------------------------------------------------------------- LSTM + attention


class Attention(nn.Module):
    """Scores of a decoder state against every source position, and the context they weigh.

    "dot" (Luong): q . m;  "general" (Luong): q . W m;  "additive" (Bahdanau): v . tanh(W_q q + W_m m).
    The memory's part (W m) is computed once per source (`keys`), not at every step.
    """

    def __init__(self, kind: str, query_size: int, memory_size: int):
        super().__init__()
        self.kind = kind
        if kind == "dot" and query_size != memory_size:
            raise ValueError(f"dot attention needs equal widths, got {query_size} and {memory_size}")
        self.key_proj = None if kind == "dot" else nn.Linear(memory_size, query_size, bias=kind == "additive")
        self.query_proj = nn.Linear(query_size, query_size, bias=False) if kind == "additive" else None
        self.v = nn.Linear(query_size, 1, bias=False) if kind == "additive" else None

    def keys(self, memory: torch.Tensor) -> torch.Tensor:  # (N, S, K) -> (N, S, A)
        return memory if self.key_proj is None else self.key_proj(memory)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor,
                memory_mask: torch.Tensor) -> torch.Tensor:
        """query (N, T, A) -> context (N, T, K): the memory averaged by softmax(scores) over real tokens."""
        if self.kind == "additive":
            q = self.query_proj(query)[:, :, None, :]  # (N, T, 1, A)
            scores = self.v(torch.tanh(q + keys[:, None, :, :])).squeeze(-1)  # (N, T, S)
        else:
            scores = query @ keys.transpose(1, 2)  # (N, T, S)
        scores = scores.masked_fill(~memory_mask.bool()[:, None, :], torch.finfo(scores.dtype).min)
        return scores.softmax(-1) @ memory  # (N, T, K)


@dataclass
class LSTMDecoderState:
    """The LSTM decoder's cache: its recurrent state and last attentional vector, the memory
    and its attention keys (computed once per source). The start values are kept so that a
    decoder without cache can recompute the whole prefix."""

    memory: torch.Tensor  # (N, S, K) encoder outputs
    keys: torch.Tensor  # (N, S, A) the memory's side of the attention scores
    memory_mask: torch.Tensor  # (N, S) 1 = real
    hidden: tuple[torch.Tensor, torch.Tensor]  # (h, c), each (L, N, K)
    feed: torch.Tensor  # (N, E) the previous attentional vector (input feeding; zeros at the start)
    start_hidden: tuple[torch.Tensor, torch.Tensor]  # the encoder's final state, merged
    use_cache: bool = True  # False: every step re-runs the decoder over the whole prefix

    def reorder(self, index: torch.Tensor, sources: torch.Tensor | None) -> None:
        """Rows `index` of the recurrent state; rows `sources` of the memory, its keys and mask
        (None: they stay as they are)."""
        if sources is not None:
            self.memory, self.keys, self.memory_mask = (
                t.index_select(0, sources) for t in (self.memory, self.keys, self.memory_mask))
        self.feed = self.feed.index_select(0, index)
        self.hidden = tuple(t.index_select(1, index) for t in self.hidden)
        self.start_hidden = tuple(t.index_select(1, index) for t in self.start_hidden)


class Seq2SeqLSTM(nn.Module):
    """A bidirectional LSTM encoder and an attentional LSTM decoder twice as wide, started from
    the encoder's final forward and backward states side by side (`merge_directions`).

    One decoder step reads the previous target token y and returns logits:
        Luong:    h = LSTM([emb(y); feed], h);   c = attend(h);       out = tanh(W [h; c])
        Bahdanau: c = attend(h_prev);            h = LSTM([emb(y); c], h_prev);   out = tanh(W [h; c])
    `feed` (input feeding) is the previous step's `out`. Logits = out . E^T with the tied embeddings.

    Teacher forcing with ratio r < 1 (Bengio et al. 2015, https://arxiv.org/abs/1506.03099):
    at every step each sentence reads the gold previous token with probability r, otherwise the
    model's own prediction. With r = 1, Luong attention and no input feeding, the decoder runs
    over all positions at once.
    """

    def __init__(self, config: Seq2SeqLSTMConfig):
        super().__init__()
        self.config = config
        E, K, L = config.embedding_dim, 2 * config.hidden_size, config.num_layers
        self.luong = config.attention in ("general", "dot")
        self.feeding = self.luong and config.input_feeding
        self.embeddings = SharedEmbeddings(config, E)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = PackedLSTM(E, config.hidden_size, L, bidirectional=True, dropout=config.dropout)
        decoder_input = E + (E if self.feeding else 0) + (0 if self.luong else K)
        self.decoder = PackedLSTM(decoder_input, K, L, dropout=config.dropout)
        self.attention = Attention(config.attention, K, K)
        self.combine = nn.Linear(2 * K, E)  # [h; c] -> the attentional vector, in the embedding space
        xavier_init(self.attention)
        xavier_init(self.combine)

    # ------------------------------------------------------------------ parts
    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       use_cache: bool = True) -> LSTMDecoderState:
        """Encode the source: outputs (the memory), its attention keys, the decoder's start state."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.dropout(self.embeddings.source(input_ids))  # (N, S, E)
        memory, final = self.encoder(x, attention_mask)  # (N, S, K); (h, c) each (L*2, N, K/2)
        hidden = merge_directions(final, self.config.num_layers)  # (L, N, K)
        feed = memory.new_zeros(memory.shape[0], self.config.embedding_dim)  # (N, E)
        return LSTMDecoderState(memory, self.attention.keys(memory), attention_mask, hidden, feed, hidden,
                                use_cache)

    def _output(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """h, context (N, T, K) -> the attentional vector (N, T, E)."""
        return torch.tanh(self.combine(torch.cat([h, context], dim=-1)))

    def decode_step(self, prev_token: torch.Tensor, state: LSTMDecoderState) -> torch.Tensor:
        """One step: prev_token (N,) -> logits (N, V); `state` moves on by one token."""
        emb = self.dropout(self.embeddings.target(prev_token))[:, None, :]  # (N, 1, E)
        if self.luong:
            x = torch.cat([emb, state.feed[:, None, :]], dim=-1) if self.feeding else emb
            h, state.hidden = self.decoder.step(x, state.hidden)  # (N, 1, K)
            context = self.attention(h, state.keys, state.memory, state.memory_mask)  # (N, 1, K)
        else:
            previous = state.hidden[0][-1][:, None, :]  # (N, 1, K): the top layer's last state
            context = self.attention(previous, state.keys, state.memory, state.memory_mask)
            h, state.hidden = self.decoder.step(torch.cat([emb, context], dim=-1), state.hidden)
        out = self._output(h, context)  # (N, 1, E)
        state.feed = out[:, 0]
        return self.embeddings.logits(self.dropout(out))[:, 0]  # (N, V)

    def _decode_parallel(self, tgt_in: torch.Tensor, state: LSTMDecoderState) -> torch.Tensor:
        """Luong attention without input feeding, gold inputs: all T steps in one LSTM call."""
        emb = self.dropout(self.embeddings.target(tgt_in))  # (N, T, E)
        h, _ = self.decoder(emb, state=state.hidden)  # (N, T, K); right padding never reaches real steps
        context = self.attention(h, state.keys, state.memory, state.memory_mask)  # (N, T, K)
        return self.embeddings.logits(self.dropout(self._output(h, context)))  # (N, T, V)

    # ------------------------------------------------------------------ training
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, teacher_forcing: float = 1.0) -> ModelOutput:
        """Logits (B, T, V) for every target position; see the class for `teacher_forcing`."""
        if not 0 <= teacher_forcing <= 1:
            raise ValueError(f"teacher_forcing must be in [0, 1], got {teacher_forcing}")
        state = self.start_decoding(input_ids, attention_mask)
        if teacher_forcing == 1 and self.luong and not self.feeding:
            logits = self._decode_parallel(decoder_input_ids, state)
            return ModelOutput(logits=logits, attention_mask=attention_mask)
        steps, prev = [], decoder_input_ids[:, 0]
        T = decoder_input_ids.shape[1]
        for t in range(T):
            logits = self.decode_step(prev, state)  # (B, V)
            steps.append(logits)
            if t + 1 < T:
                prev = decoder_input_ids[:, t + 1]
                if teacher_forcing < 1:
                    gold = torch.rand(prev.shape, device=prev.device) < teacher_forcing  # (B,)
                    prev = torch.where(gold, prev, logits.detach().argmax(-1))
        return ModelOutput(logits=torch.stack(steps, dim=1), attention_mask=attention_mask)

    # ------------------------------------------------------------------ generation
    def next_logits(self, tokens: torch.Tensor, state: LSTMDecoderState) -> torch.Tensor:
        """tokens (N, t): everything decoded so far, <s> first -> logits (N, V) of token t + 1."""
        if state.use_cache:
            return self.decode_step(tokens[:, -1], state)
        fresh = LSTMDecoderState(state.memory, state.keys, state.memory_mask, state.start_hidden,
                                 torch.zeros_like(state.feed), state.start_hidden, use_cache=False)
        for t in range(tokens.shape[1]):
            logits = self.decode_step(tokens[:, t], fresh)
        return logits


SEQ2SEQ_CLASSES: dict[type[Seq2SeqConfig], type[nn.Module]] = {
    Seq2SeqTransformerConfig: Seq2SeqTransformer,
    Seq2SeqLSTMConfig: Seq2SeqLSTM,
}
