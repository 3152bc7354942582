"""Greedy and beam search over any decoder that steps with a cache.

A decoder is anything with the two calls of `Seq2SeqDecoder` (both slimbert translation models
have them): `start_decoding` encodes the sources once, `next_logits` scores the next token
from everything decoded so far, and the state it returns follows the beams with `reorder`.

Beam search (as fairseq's `SequenceGenerator`):
- A batch of B sentences keeps K beams each, laid out sentence-major: rows b*K .. b*K+K-1 are
  sentence b's, made with `repeat_interleave` (never `repeat`, which would interleave sentences).
- The first step runs once per sentence (all K beams would be identical), so cross-attention
  keys and values are computed once per source; the state is then expanded to the K beams.
- Every step takes the 2K best (beam, token) continuations of each sentence. A candidate ending
  in </s> among the K best is a finished hypothesis: it is copied out (never overwritten later),
  and a sentence is done when it has K of them. The K best candidates not ending in </s> are
  the next beams, and every cache is reordered with them.
- Hypotheses are ranked by log p / len^alpha, len counting the tokens generated with </s>
  (`length_penalty` = alpha; fairseq's `--lenpen` and Marian's `--normalize`; 0 ranks by log p,
  which favours short outputs). Google NMT's ((5 + len) / 6)^alpha is not used.
- </s> cannot end a hypothesis shorter than `min_length` tokens, and is forced when a
  hypothesis reaches its sentence's length limit, min(max_len_a * source length + max_len_b,
  max_length), </s> included; <pad> and <s> are never generated.
- Sentences that are done leave the batch, so the rest decode on smaller tensors.

Greedy search is the same with one beam (and `beam_search(..., beam_size=1)` gives exactly
greedy's tokens, which the tests check).

Notation: B = sentences, K = beams, N = rows decoding (live sentences x beams), V = vocabulary,
t = tokens decoded so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class DecoderState(Protocol):
    def reorder(self, index: torch.Tensor, sources: torch.Tensor | None) -> None:
        """Keep rows `index` (N',) of what each hypothesis carries, in that order (expansion to
        beams, surviving beams, live sentences); and rows `sources` of what depends only on the
        source (the memory, its mask, cross-attention K/V), or leave those as they are (None)."""
        ...


class Seq2SeqDecoder(Protocol):
    config: Any  # bos_token_id, eos_token_id, pad_token_id, max_target_length

    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       use_cache: bool) -> DecoderState:
        ...

    def next_logits(self, tokens: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """tokens (N, t) -> logits (N, V) of token t + 1."""
        ...


@dataclass
class SearchConfig:
    beam_size: int = 5  # hypotheses kept per sentence (1 = greedy)
    length_penalty: float = 1.0  # alpha: hypotheses ranked by log p / len^alpha (fairseq, Marian); 0 = log p
    min_length: int = 1  # fewest tokens before </s> may end a hypothesis
    max_length: int = 256  # most tokens generated per sentence, </s> included (also capped by the model's)
    # the limit is also max_len_a * source tokens + max_len_b (fairseq's --max-len-a/b)
    max_len_a: float = 0.0
    max_len_b: int = 256
    nbest: int = 1  # hypotheses returned per sentence, best first (at most beam_size)
    use_cache: bool = True  # reuse keys/values (or the LSTM state) across steps; False recomputes the prefix

    def __post_init__(self) -> None:
        for name in ("beam_size", "max_length", "nbest"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.nbest > self.beam_size:
            raise ValueError(f"nbest ({self.nbest}) cannot exceed beam_size ({self.beam_size})")
        if self.min_length < 0 or self.max_len_b < 1 or self.max_len_a < 0:
            raise ValueError("min_length and max_len_a must be 0 or more, max_len_b at least 1")
        if not math.isfinite(self.length_penalty):
            raise ValueError(f"length_penalty must be a finite number, got {self.length_penalty}")


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, without <s> and </s>
    score: float  # log_prob / len^alpha, what beams are ranked by
    log_prob: float  # sum of the tokens' log-probabilities, </s> included


def length_limits(source_lengths: torch.Tensor, config: SearchConfig, model_max: int) -> torch.Tensor:
    """(B,) the most tokens each sentence may generate, </s> included, from its source's length."""
    source = source_lengths.float()  # (B,)
    limit = (config.max_len_a * source).floor().long() + config.max_len_b
    return limit.clamp(1, min(config.max_length, model_max))


def step_log_probs(logits: torch.Tensor, step: int, limits: torch.Tensor, config: SearchConfig,
                   model_config: Any) -> torch.Tensor:
    """log-softmax (N, V) of the next token (the `step`-th, from 0), with the rules applied:
    no <pad> or <s>; no </s> before min_length; only </s> at a row's length limit. A forced </s>
    keeps its own log-probability (as fairseq's), so scores stay the model's log p."""
    logp = logits.float().log_softmax(-1)  # (N, V)
    eos = model_config.eos_token_id
    eos_logp = logp[:, eos].clone()  # (N,)
    logp[:, model_config.pad_token_id] = -math.inf
    logp[:, model_config.bos_token_id] = -math.inf
    if step < config.min_length:
        logp[:, eos] = -math.inf
    at_limit = limits.to(logp.device) <= step + 1  # (N,) this token is the last allowed
    if bool(at_limit.any()):
        logp[at_limit] = -math.inf
        logp[at_limit, eos] = eos_logp[at_limit]
    return logp


def row_argmax(scores: torch.Tensor) -> torch.Tensor:
    """(N,) the index of each row's largest value (the first, on ties), for (N, V) scores.

    On the CPU this goes through NumPy, whose argmax is vectorised: torch's argmax (or max) over
    the last dimension of a (32, 8000) float tensor took 6-10x as long (116-197 us against 20 us
    on a 2-core AVX-512 machine), about a tenth of a small decoder's step."""
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(scores.contiguous().numpy().argmax(-1))
    return scores.argmax(-1)


def normalised(log_prob: float, length: int, alpha: float) -> float:
    return log_prob / length ** alpha


def start(model: Seq2SeqDecoder, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
          config: SearchConfig):
    """Each sentence's length limit (B,), on the CPU, and the decoding state of the encoded sources
    (no mask: every token is real)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    limits = length_limits(attention_mask.sum(1), config, model.config.max_target_length).cpu()
    return limits, model.start_decoding(input_ids, attention_mask, config.use_cache)


@torch.inference_mode()
def greedy_search(model: Seq2SeqDecoder, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  config: SearchConfig) -> list[list[Hypothesis]]:
    """The most likely next token at every step. Returns one hypothesis per sentence."""
    cfg = model.config
    B = input_ids.shape[0]
    limits, state = start(model, input_ids, attention_mask, config)
    tokens = input_ids.new_full((B, 1), cfg.bos_token_id)  # (N, t)
    scores = torch.zeros(B, device=input_ids.device)  # (N,) summed log-probs
    live = torch.arange(B)  # the sentence of each row
    results: list[list[Hypothesis]] = [[] for _ in range(B)]
    for step in range(int(limits.max())):
        logp = step_log_probs(model.next_logits(tokens, state), step, limits[live], config, cfg)
        token = row_argmax(logp).to(logp.device)  # (N,)
        scores = scores + logp.gather(1, token[:, None]).squeeze(1)
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        ended = (token == cfg.eos_token_id).cpu()
        if not bool(ended.any()):
            continue
        for row in ended.nonzero().view(-1).tolist():
            log_prob = float(scores[row])
            score = normalised(log_prob, step + 1, config.length_penalty)
            results[int(live[row])] = [Hypothesis(tokens[row, 1:-1].tolist(), score, log_prob)]
        keep = (~ended).nonzero().view(-1)
        if not len(keep):
            break
        live = live[keep]
        keep = keep.to(tokens.device)
        tokens, scores = tokens[keep], scores[keep]
        state.reorder(keep, keep)
    return results


@torch.inference_mode()
def beam_search(model: Seq2SeqDecoder, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                config: SearchConfig) -> list[list[Hypothesis]]:
    """The `config.nbest` best hypotheses of each sentence, best first (see the module's notes)."""
    cfg = model.config
    B, K, eos = input_ids.shape[0], config.beam_size, cfg.eos_token_id
    device = input_ids.device
    limits, state = start(model, input_ids, attention_mask, config)

    # Step 0 once per sentence, then K copies of each: rows b*K .. b*K+K-1 belong to sentence b.
    tokens = input_ids.new_full((B, 1), cfg.bos_token_id)
    logp = step_log_probs(model.next_logits(tokens, state), 0, limits, config, cfg)  # (B, V)
    expand = torch.arange(B, device=device).repeat_interleave(K)  # (B*K,)
    state.reorder(expand, expand)
    tokens, logp = tokens[expand], logp[expand]  # (N, 1), (N, V)
    # Only the first copy is live, so the K first beams are K different tokens.
    beam_scores = torch.full((B, K), -math.inf, device=device)
    beam_scores[:, 0] = 0
    beam_scores = beam_scores.view(-1)  # (N,)
    live = torch.arange(B)  # the sentence of each live group of K rows
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]

    for step in range(int(limits.max())):
        n, V = len(live), logp.shape[-1]
        candidates = (beam_scores[:, None] + logp).view(n, K * V)  # (n, K*V)
        top_scores, top_index = candidates.topk(min(2 * K, K * V), dim=1)  # (n, 2K)
        top_beam, top_token = top_index // V, top_index % V  # (n, 2K)
        is_eos = top_token == eos

        # Finished hypotheses: </s> among a sentence's K best candidates, copied out for good.
        for i, j in (is_eos[:, :K] & torch.isfinite(top_scores[:, :K])).nonzero().tolist():
            sentence = int(live[i])
            if len(finished[sentence]) < K:
                row = i * K + int(top_beam[i, j])
                log_prob = float(top_scores[i, j])
                finished[sentence].append(Hypothesis(tokens[row, 1:].tolist(),
                                                     normalised(log_prob, step + 1, config.length_penalty),
                                                     log_prob))
        done = torch.tensor([len(finished[int(s)]) >= K for s in live]) | (limits[live] <= step + 1)

        # The next beams: the K best candidates that do not end (there are at least K of the 2K,
        # since each beam adds at most one </s>).
        width = top_index.shape[1]  # 2K
        rank = torch.arange(width, device=device).expand_as(top_index) + is_eos * width
        chosen = rank.topk(K, dim=1, largest=False).indices  # (n, K) positions among the 2K
        rows = torch.arange(n, device=device)[:, None] * K + top_beam.gather(1, chosen)  # (n, K)
        next_token, next_score = top_token.gather(1, chosen), top_scores.gather(1, chosen)  # (n, K)
        if bool(done.all()):
            break
        # A beam moves only within its sentence, whose K rows hold the same source: what
        # depends on the source alone needs no reordering, only the done sentences' rows dropped.
        sources = None
        if bool(done.any()):  # drop the sentences that are done
            keep = (~done).nonzero().view(-1)
            live = live[keep]
            keep = keep.to(device)
            rows, next_token, next_score = rows[keep], next_token[keep], next_score[keep]
            sources = (keep[:, None] * K + torch.arange(K, device=device)).view(-1)  # their rows
        rows = rows.view(-1)
        tokens = torch.cat([tokens[rows], next_token.view(-1, 1)], dim=1)  # (N', t + 1)
        beam_scores = next_score.view(-1)
        state.reorder(rows, sources)
        logp = step_log_probs(model.next_logits(tokens, state), step + 1, limits[live].repeat_interleave(K),
                              config, cfg)

    return [sorted(hyps, key=lambda h: -h.score)[:config.nbest] for hyps in finished]


def generate(model: Seq2SeqDecoder, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
             config: SearchConfig) -> list[list[Hypothesis]]:
    """Greedy search for beam size 1, beam search otherwise."""
    search = greedy_search if config.beam_size == 1 else beam_search
    return search(model, input_ids, attention_mask, config)
