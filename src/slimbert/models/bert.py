"""BERT, from scratch (Devlin et al. 2019, https://arxiv.org/abs/1810.04805).

Parameter names are exactly those of Hugging Face `transformers` (`attention.self.query`,
`LayerNorm`, ...), so checkpoints move between the two with no rename table beyond the
`bert.` prefix (see slimbert.checkpoint).

Notation: B = batch, T = sequence length, H = hidden size, N = attention heads in the layer,
D = head dim (H / heads before pruning), I = intermediate (feed-forward) size, V = vocabulary,
C = classes.
"""

from __future__ import annotations

import torch
from torch import nn

from slimbert.config import BertConfig
from slimbert.models.outputs import ModelOutput
from slimbert.modules import (FeedForward, GatedAttentionUnit, GAULayer, LearnedPositions, MultiHeadAttention,
                              RotaryEmbedding, SinusoidalPositions, TransformerLayer, TransformerStack,
                              activation, padding_mask)

# -------------------------------------------------------------------------- embeddings


class BertEmbeddings(nn.Module):
    """word + segment (token type) [+ absolute position] embeddings, then LayerNorm.

    Learned positions are BERT's; sinusoidal ones have no weights; with rotary positions the
    embeddings carry none, since every attention layer rotates q and k instead."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        kind = config.position_embedding_type
        self.position_embeddings = (
            LearnedPositions(config.max_position_embeddings, config.hidden_size) if kind == "absolute"
            else SinusoidalPositions(config.hidden_size) if kind == "sinusoidal" else None)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        # Named LayerNorm (not layer_norm) to keep the TF/HF checkpoint names.
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.max_length = config.max_position_embeddings

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        B, T = input_ids.shape
        if T > self.max_length:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings={self.max_length}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (B, T, H)
        if self.position_embeddings is not None:
            if position_ids is None:
                position_ids = torch.arange(T, device=input_ids.device)[None, :]  # (1, T)
            x = x + self.position_embeddings(position_ids).to(x.dtype)
        return self.dropout(self.LayerNorm(x))


# ------------------------------------------------------------------------------ blocks


def bert_layer(config: BertConfig, num_heads: int, ffn_size: int, rope: RotaryEmbedding | None) -> TransformerLayer:
    """One BERT block from the shared modules: `num_heads` heads and `ffn_size` neurons (fewer
    than the config's after pruning). Parts are created in Hugging Face's order (q, k, v, out,
    LN, in, out, LN), so the same seed gives the same fresh weights."""
    H, D, eps = config.hidden_size, config.head_dim, config.layer_norm_eps
    inner = num_heads * D
    attn = MultiHeadAttention(nn.Linear(H, inner), nn.Linear(H, inner), nn.Linear(H, inner), nn.Linear(inner, H),
                              num_heads=num_heads, head_dim=D, dropout=config.attention_probs_dropout_prob,
                              rope=rope, scale_kind=config.attention_scale)
    attn_norm = nn.LayerNorm(H, eps=eps)
    ffn = FeedForward(nn.Linear(H, ffn_size), nn.Linear(ffn_size, H), activation(config.hidden_act))
    ffn_norm = nn.LayerNorm(H, eps=eps)
    return TransformerLayer(attn, attn_norm, ffn, ffn_norm, dropout=config.hidden_dropout_prob,
                            pre_norm=config.norm_style == "pre")


def gau_layer(config: BertConfig, rope: RotaryEmbedding | None) -> GAULayer:
    """One gated attention unit (FLASH) in place of attention + feed-forward: expansion
    E = 2 H and query/key width `gau_key_size`, as in Hua et al. 2022."""
    H, E, S = config.hidden_size, 2 * config.hidden_size, config.gau_key_size
    gau = GatedAttentionUnit(nn.Linear(H, E), nn.Linear(H, E), nn.Linear(H, S), nn.Linear(E, H),
                             dropout=config.attention_probs_dropout_prob, rope=rope)
    return GAULayer(gau, nn.LayerNorm(H, eps=config.layer_norm_eps), dropout=config.hidden_dropout_prob,
                    pre_norm=config.norm_style == "pre")


def bert_stack(config: BertConfig) -> TransformerStack:
    """The encoder: one block per layer, with that layer's head and neuron counts (or one GAU
    per layer with `attention_type="gau"`)."""
    if config.attention_type == "gau":
        rope = RotaryEmbedding(config.gau_key_size) if config.position_embedding_type == "rope" else None
        layers = [gau_layer(config, rope) for _ in range(config.num_hidden_layers)]
    else:
        rope = RotaryEmbedding(config.head_dim) if config.position_embedding_type == "rope" else None
        layers = [bert_layer(config, config.heads_in_layer(i), config.ffn_size_in_layer(i), rope)
                  for i in range(config.num_hidden_layers)]
    final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.norm_style == "pre" else None
    return TransformerStack(layers, final_norm, layerdrop=config.layerdrop)


class BertPooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence vector BERT's classifier reads."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x[:, 0]))  # (B, H)


# ------------------------------------------------------------------------------ models


class BertPreTrainedBase(nn.Module):
    """Shared plumbing: weight init as in BERT, the layers, LayerDrop."""

    config: BertConfig

    @property
    def layers(self) -> nn.ModuleList:
        """The Transformer blocks, in order: what pruning, quantization and export reach into."""
        return encoder_of(self).encoder.layers

    def set_layerdrop(self, p: float) -> None:
        """Train with LayerDrop probability `p` from now on; the config records it."""
        config = self.config.replace(layerdrop=p)  # validated there
        for module in self.modules():
            if getattr(module, "config", None) is self.config and module is not self:
                module.config = config
        self.config = config
        encoder_of(self).encoder.layerdrop = p

    def init_weights(self, root: nn.Module | None = None) -> None:
        """BERT's init for every sub-module of `root` (default: the whole model)."""
        std = self.config.initializer_range
        for module in (root or self).modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
                if module.padding_idx is not None:
                    module.weight.data[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


class BertModel(BertPreTrainedBase):
    """The bare encoder (HF `BertModel`): embeddings -> L blocks -> optional pooler."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = bert_stack(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> ModelOutput:
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, H)
        # Rotary positions act inside attention; absolute ones were added to x above.
        rope_positions = position_ids if self.config.position_embedding_type == "rope" else None
        mask = padding_mask(attention_mask, drop_if_unpadded=not self.training)  # no sync in training
        out = self.encoder(x, mask, positions=rope_positions,
                           output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        x = out.last_hidden_state
        return ModelOutput(
            last_hidden_state=x,
            pooler_output=self.pooler(x) if self.pooler is not None else None,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            attention_mask=attention_mask,
        )


class BertForSequenceClassification(BertPreTrainedBase):
    """Pooler -> dropout -> linear. num_labels == 1 makes it a regressor (STS-B)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=True)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights(self.classifier)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> ModelOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_hidden_states, output_attentions)
        out.logits = self.classifier(self.dropout(out.pooler_output))  # (B, C)
        return out


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """transform -> decoder whose weight IS the word-embedding matrix (tied), plus a free bias."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: one tensor, updated by both uses
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x)) + self.bias  # (B, T, V)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)


class BertForMaskedLM(BertPreTrainedBase):
    """Encoder (no pooler, as in HF) -> masked-LM head over the vocabulary."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config, self.bert.embeddings.word_embeddings)
        # Only the transform: the decoder is the (already initialised) word-embedding matrix.
        self.init_weights(self.cls.predictions.transform)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                masked_positions: torch.Tensor | None = None) -> ModelOutput:
        """`masked_positions` (B, T) boolean: the logits only at those M positions, (M, V).
        Sparse prediction: the vocabulary projection is a small model's largest matmul, and
        MLM training needs it at the ~15% masked tokens only."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_hidden_states, output_attentions)
        hidden = out.last_hidden_state if masked_positions is None else out.last_hidden_state[masked_positions]
        out.logits = self.cls.predictions(hidden)  # (B, T, V), or (M, V)
        return out


MODEL_CLASSES = {
    "none": BertModel,
    "classification": BertForSequenceClassification,
    "mlm": BertForMaskedLM,
}


def build_model(config: BertConfig) -> nn.Module:
    """The model class for `config.head`, freshly initialised."""
    return MODEL_CLASSES[config.head](config)


def encoder_of(model: nn.Module) -> BertModel:
    """The BertModel inside any of the three classes."""
    return model if isinstance(model, BertModel) else model.bert
