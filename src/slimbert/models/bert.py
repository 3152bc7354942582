"""BERT, from scratch (Devlin et al. 2019, https://arxiv.org/abs/1810.04805).

Parameter names are exactly those of Hugging Face `transformers` (`attention.self.query`,
`LayerNorm`, ...), so checkpoints move between the two with no rename table beyond the
`bert.` prefix (see slimbert.checkpoint).

Notation: B = batch, T = sequence length, H = hidden size, N = attention heads in the layer,
D = head dim (H / heads before pruning), I = intermediate (feed-forward) size, V = vocabulary,
C = classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from slimbert.config import BertConfig
from slimbert.models.outputs import ModelOutput

# ----------------------------------------------------------------------------- helpers

ACT_FNS = {
    "gelu": nn.GELU(),  # exact erf GELU, as in the original BERT
    "gelu_new": nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": nn.GELU(approximate="tanh"),
    "relu": nn.ReLU(),
    "silu": nn.SiLU(),
}


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) 1/0 mask -> (B, 1, 1, T) boolean mask for attention (True = may attend).

    Returns None when nothing is padded, which lets SDPA take its fastest kernel. Under
    torch.compile/torch.export the mask is always kept: the check would depend on the data.
    """
    if attention_mask is None or (not torch.compiler.is_compiling() and bool(attention_mask.all())):
        return None
    return attention_mask.bool()[:, None, None, :]


# -------------------------------------------------------------------------- embeddings


class BertEmbeddings(nn.Module):
    """word + segment (token type) + learned absolute position embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        # Named LayerNorm (not layer_norm) to keep the TF/HF checkpoint names.
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        B, T = input_ids.shape
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings="
                             f"{self.position_embeddings.num_embeddings}")
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)[None, :]  # (1, T)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (self.word_embeddings(input_ids)
             + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(position_ids))  # (B, T, H)
        return self.dropout(self.LayerNorm(x))


# --------------------------------------------------------------------------- attention


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention.

    Runs through `F.scaled_dot_product_attention` (fused kernels on CPU and CUDA). SDPA does not
    return the attention map, so when it is asked for (distillation, analysis) the same
    maths runs explicitly.
    """

    def __init__(self, config: BertConfig, num_heads: int):
        super().__init__()
        self.num_heads = num_heads  # may be fewer than config.num_attention_heads after pruning
        self.head_dim = config.head_dim
        inner = num_heads * self.head_dim
        self.query = nn.Linear(config.hidden_size, inner)
        self.key = nn.Linear(config.hidden_size, inner)
        self.value = nn.Linear(config.hidden_size, inner)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, _ = x.shape

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, N, T, D)

        q, k, v = split_heads(self.query(x)), split_heads(self.key(x)), split_heads(self.value(x))
        dropout_p = self.dropout_p if self.training else 0.0
        if not output_attentions:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
            probs = None
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, N, T, T)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            context = F.dropout(probs, dropout_p, self.training) @ v  # (B, N, T, D)
        context = context.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)  # (B, T, N*D)
        return context, probs


class BertSelfOutput(nn.Module):
    """Projects the heads back to H; owns the attention sub-layer's LayerNorm."""

    def __init__(self, config: BertConfig, num_heads: int):
        super().__init__()
        self.dense = nn.Linear(num_heads * config.head_dim, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)


class BertAttention(nn.Module):
    """Groups self-attention and its output projection, under HF's names."""

    def __init__(self, config: BertConfig, num_heads: int):
        super().__init__()
        self.self = BertSelfAttention(config, num_heads)
        self.output = BertSelfOutput(config, num_heads)


# ------------------------------------------------------------------------ feed-forward


class BertIntermediate(nn.Module):
    """H -> I with the activation (I is this layer's width, smaller after neuron pruning)."""

    def __init__(self, config: BertConfig, ffn_size: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, ffn_size)
        self.intermediate_act_fn = ACT_FNS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))  # (B, T, I)


class BertOutput(nn.Module):
    """I -> H; owns the feed-forward sub-layer's LayerNorm."""

    def __init__(self, config: BertConfig, ffn_size: int):
        super().__init__()
        self.dense = nn.Linear(ffn_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)


# ------------------------------------------------------------------------------- layer


class BertLayer(nn.Module):
    """One transformer block: attention sub-layer, then feed-forward sub-layer.

    post-norm (BERT):  x = LN(x + Drop(Attn(x)));      x = LN(x + Drop(FFN(x)))
    pre-norm:          x = x + Drop(Attn(LN(x)));      x = x + Drop(FFN(LN(x)))
    Pre-norm trains more stably without warm-up (Xiong et al. 2020) but is not what
    Hugging Face BERT computes, so such models export to slimbert checkpoints only.
    """

    def __init__(self, config: BertConfig, num_heads: int, ffn_size: int):
        super().__init__()
        self.pre_norm = config.norm_style == "pre"
        self.attention = BertAttention(config, num_heads)
        self.intermediate = BertIntermediate(config, ffn_size)
        self.output = BertOutput(config, ffn_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, ffn_out = self.attention.output, self.output
        if self.pre_norm:
            context, probs = self.attention.self(attn_out.LayerNorm(x), mask, output_attentions)
            x = x + attn_out.dropout(attn_out.dense(context))
            x = x + ffn_out.dropout(ffn_out.dense(self.intermediate(ffn_out.LayerNorm(x))))
        else:
            context, probs = self.attention.self(x, mask, output_attentions)
            x = attn_out.LayerNorm(x + attn_out.dropout(attn_out.dense(context)))
            x = ffn_out.LayerNorm(x + ffn_out.dropout(ffn_out.dense(self.intermediate(x))))
        return x, probs


# ----------------------------------------------------------------------------- encoder


class BertEncoder(nn.Module):
    """The stack of blocks. With LayerDrop (Fan et al. 2019, https://arxiv.org/abs/1909.11556)
    each block is skipped with probability `config.layerdrop` at every training step, so that
    the model learns to work without any of them and layers can be removed for inference
    (slimbert.compress.prune.drop_layers) at a small cost in accuracy."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config  # read at every step: set_config (e.g. prune.set_layerdrop) changes it
        self.layer = nn.ModuleList(
            BertLayer(config, config.heads_in_layer(i), config.ffn_size_in_layer(i))
            for i in range(config.num_hidden_layers)
        )
        # Pre-norm stacks end un-normalised; one final LayerNorm fixes the output scale.
        self.final_layer_norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                                 if config.norm_style == "pre" else None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, output_hidden_states: bool = False,
                output_attentions: bool = False):
        hidden_states, attentions = [x], []
        p = self.config.layerdrop
        skip = (torch.rand(len(self.layer)) < p).tolist() if self.training and p > 0 else [False] * len(self.layer)
        for layer, skipped in zip(self.layer, skip):
            if skipped:  # the block is the identity this step; its outputs repeat its input
                hidden_states.append(x)
                attentions.append(None)
                continue
            x, probs = layer(x, mask, output_attentions)
            hidden_states.append(x)
            attentions.append(probs)
        if self.final_layer_norm is not None:
            x = self.final_layer_norm(x)
        return (x,
                tuple(hidden_states) if output_hidden_states else None,
                tuple(attentions) if output_attentions else None)


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
    """Shared plumbing: weight init as in BERT, parameter counting."""

    config: BertConfig

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

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class BertModel(BertPreTrainedBase):
    """The bare encoder (HF `BertModel`): embeddings -> L blocks -> optional pooler."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> ModelOutput:
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, H)
        x, hidden_states, attentions = self.encoder(x, padding_mask(attention_mask),
                                                    output_hidden_states, output_attentions)
        return ModelOutput(
            last_hidden_state=x,
            pooler_output=self.pooler(x) if self.pooler is not None else None,
            hidden_states=hidden_states,
            attentions=attentions,
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
        self.transform_act_fn = ACT_FNS[config.hidden_act]
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
                output_hidden_states: bool = False, output_attentions: bool = False) -> ModelOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_hidden_states, output_attentions)
        out.logits = self.cls.predictions(out.last_hidden_state)  # (B, T, V)
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
