"""Small non-Transformer students: a BiLSTM (Tang et al. 2019) and a CNN (Kim 2014).

Both read the same batches as BERT (WordPiece ids of the teacher's vocabulary, a padding mask,
segment ids) and return the same `ModelOutput`, so every job (distill, evaluate, predict,
bench) treats them like any other model. A sentence pair arrives as one sequence
[CLS] a [SEP] b [SEP] with segment ids 0 / 1; the students cut it at the segment boundary,
encode each sentence alone with shared weights, and compare the two sentence vectors as
[h1, h2, h1 * h2, |h1 - h2|] (Tang et al. 2019, section 3.1).

Notation: B = batch, T = tokens, E = embedding width, H = LSTM units per direction,
F = feature maps per kernel width, S = sentence-vector width, C = classes.
"""

from __future__ import annotations

import torch
from torch import nn

from slimbert.config import BiLSTMConfig, CNNConfig, WordStudentConfig
from slimbert.models.outputs import ModelOutput
from slimbert.modules.recurrent import PackedLSTM

# ----------------------------------------------------------------------------- helpers


def split_segments(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   token_type_ids: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                                           tuple[torch.Tensor, torch.Tensor]]:
    """Cut packed pairs [CLS] a [SEP] b [SEP] into two left-aligned padded batches.

    Returns ((ids_a, mask_a), (ids_b, mask_b)), each (B, T_a) / (B, T_b). Segment b starts where
    segment a ends, so it is gathered with a per-row offset; positions past its end are masked.
    """
    real = attention_mask.bool()
    in_a = real & (token_type_ids == 0)
    len_a = in_a.sum(1)  # (B,)
    len_b = (real & (token_type_ids == 1)).sum(1)  # (B,)
    T_a, T_b = int(len_a.max()), max(int(len_b.max()), 1)
    pos_a = torch.arange(T_a, device=input_ids.device)[None, :]  # (1, T_a)
    mask_a = pos_a < len_a[:, None]  # (B, T_a)
    ids_a = torch.where(mask_a, input_ids[:, :T_a], torch.zeros_like(input_ids[:, :T_a]))
    pos_b = len_a[:, None] + torch.arange(T_b, device=input_ids.device)[None, :]  # (B, T_b)
    pos_b = pos_b.clamp_max(input_ids.shape[1] - 1)
    mask_b = torch.arange(T_b, device=input_ids.device)[None, :] < len_b[:, None]  # (B, T_b)
    ids_b = torch.where(mask_b, input_ids.gather(1, pos_b), torch.zeros_like(pos_b))
    return (ids_a, mask_a.long()), (ids_b, mask_b.long())


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over time of (B, T, S) at real positions of mask (B, T) -> (B, S)."""
    return x.masked_fill(~mask.bool()[:, :, None], torch.finfo(x.dtype).min).amax(1)


def pair_features(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    """[h1, h2, h1 * h2, |h1 - h2|]: (B, S) twice -> (B, 4S)."""
    return torch.cat([h1, h2, h1 * h2, (h1 - h2).abs()], dim=-1)


class WordStudent(nn.Module):
    """Shared plumbing: embeddings, single-sentence vs pair encoding, the output dataclass.

    Subclasses define `encode(ids, mask) -> (B, S)` and `classify(features) -> (B, C)`.
    """

    config: WordStudentConfig

    def __init__(self, config: WordStudentConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim,
                                       padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> ModelOutput:
        if output_hidden_states or output_attentions:
            raise ValueError(f"a {self.config.MODEL_TYPE} student has no Transformer layers: it "
                             "cannot return hidden states or attention maps to distil")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.config.pairs:
            if token_type_ids is None:
                raise ValueError("this student was built for sentence pairs; pass token_type_ids")
            (ids_a, mask_a), (ids_b, mask_b) = split_segments(input_ids, attention_mask, token_type_ids)
            features = pair_features(self.encode(ids_a, mask_a), self.encode(ids_b, mask_b))
        else:
            features = self.encode(input_ids, attention_mask)
        return ModelOutput(logits=self.classify(features), pooler_output=features,
                           attention_mask=attention_mask)


# ----------------------------------------------------------------------------- BiLSTM


class BiLSTMStudent(WordStudent):
    """embeddings -> BiLSTM -> max over time -> [pair features] -> ReLU MLP -> classifier."""

    def __init__(self, config: BiLSTMConfig):
        super().__init__(config)
        self.lstm = PackedLSTM(config.embedding_dim, config.hidden_size, bidirectional=True)
        sentence = 2 * config.hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(4 * sentence if config.pairs else sentence, config.mlp_size), nn.ReLU(),
            nn.Dropout(config.dropout))
        self.classifier = nn.Linear(config.mlp_size, config.num_labels)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.embeddings(input_ids))  # (B, T, E)
        out, _ = self.lstm(x, attention_mask)  # (B, T, 2H); padding kept out of the recurrence
        return masked_max(out, attention_mask)  # (B, 2H)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.mlp(features))  # (B, C)


# -------------------------------------------------------------------------------- CNN


class CNNStudent(WordStudent):
    """embeddings -> conv1d of each width -> ReLU -> max over time -> concat -> classifier."""

    def __init__(self, config: CNNConfig):
        super().__init__(config)
        self.convs = nn.ModuleList(
            nn.Conv1d(config.embedding_dim, config.num_filters, k, padding=k - 1) for k in config.kernel_sizes)
        sentence = config.num_filters * len(config.kernel_sizes)
        self.classifier = nn.Linear(4 * sentence if config.pairs else sentence, config.num_labels)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids) * attention_mask[:, :, None]  # (B, T, E), pads zeroed
        x = self.dropout(x).transpose(1, 2)  # (B, E, T)
        T = input_ids.shape[1]
        pooled = []
        for conv in self.convs:
            # With k - 1 zeros of padding on both sides, output t covers tokens t-k+1 .. t: it
            # holds a real token when t < length + k - 1 (so short sentences still get a window).
            k = conv.kernel_size[0]
            maps = torch.relu(conv(x))[:, :, :T + k - 1]  # (B, F, T + k - 1)
            valid = torch.arange(T + k - 1, device=x.device)[None, :] < (attention_mask.sum(1)[:, None] + k - 1)
            pooled.append(masked_max(maps.transpose(1, 2), valid))  # (B, F)
        return torch.cat(pooled, dim=-1)  # (B, F * widths)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features))  # (B, C)


STUDENT_CLASSES: dict[type[WordStudentConfig], type[WordStudent]] = {
    BiLSTMConfig: BiLSTMStudent,
    CNNConfig: CNNStudent,
}
