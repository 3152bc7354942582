"""Losses as small pure functions. Each documents its shapes and the paper it comes from.

Shapes: B = batch, T = tokens, C = classes (or vocabulary, for MLM logits), H = hidden size,
N = attention heads. A `mask` is (B, T) with 1 at real tokens and 0 at padding; every
token-level loss averages over the real tokens only.

Everything is computed in float32, whatever the autocast dtype of the inputs: soft targets
at a high temperature are small differences of large numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slimbert.data.batching import IGNORE_INDEX


def hard_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against gold class indices. logits (B, C) or (B, T, C), labels (B,) / (B, T).

    Positions labelled IGNORE_INDEX do not count; when none is labelled the loss is 0 (with a
    gradient path), not NaN, so a batch of purely augmented examples is harmless. The sum is
    divided on the device, so the loss never waits for the host to look at the labels.
    """
    logits = logits.float().reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1)
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp_min(1)


def regression_mse(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a 1-output regressor. predictions (B, 1) or (B,), targets (B,).

    Targets that are NaN (augmented examples without a gold score) do not count.
    """
    predictions, targets = predictions.float().view(-1), targets.float().view(-1)
    keep = ~torch.isnan(targets)
    # Masked on the device (no boolean indexing, which would wait for the host to count).
    squared = torch.where(keep, predictions - targets.nan_to_num(), 0.0).pow(2)
    return squared.sum() / keep.sum().clamp_min(1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values` (B, T) over positions where `mask` (B, T) is 1; plain mean without a mask."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the student's tempered distribution against the teacher's, times T^2.

    Hinton et al. 2015 (https://arxiv.org/abs/1503.02531): soften both distributions with
    temperature T, and multiply by T^2 so the gradient keeps the same scale as T changes (its
    magnitude falls as 1/T^2 otherwise; some toolkits leave this out). The value is
    -sum_c p_teacher(c) log p_student(c), averaged over examples (or over real tokens for
    (B, T, C) logits with a (B, T) mask). It differs from the KL divergence by the teacher's
    entropy, a constant, so the gradients are the same.

    student_logits, teacher_logits: (B, C) or (B, T, C).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    t = teacher_logits.detach().float() / temperature
    s = student_logits.float() / temperature
    per_item = -(t.softmax(-1) * s.log_softmax(-1)).sum(-1)  # (B,) or (B, T)
    return _masked_mean(per_item, mask) * temperature ** 2


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Squared L2 distance between logit vectors, summed over classes, averaged over examples.

    Tang et al. 2019 (https://arxiv.org/abs/1903.12136), eq. 2: ||z_teacher - z_student||^2.
    Matching logits rather than probabilities keeps the information a softmax would squash.
    student_logits, teacher_logits: (B, C).
    """
    diff = student_logits.float() - teacher_logits.detach().float()
    return diff.pow(2).sum(-1).mean()


def hidden_cosine(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """1 - cosine similarity of each token's hidden vector, averaged over real tokens.

    DistilBERT (Sanh et al. 2019, https://arxiv.org/abs/1910.01108) aligns the directions of
    student and teacher hidden states this way. (B, T, H) each; the widths must agree (project
    the student first when they do not).
    """
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.detach().float(), dim=-1)  # (B, T)
    return _masked_mean(1.0 - cos, mask)


def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of hidden states over real tokens and hidden units.

    TinyBERT (Jiao et al. 2020, https://arxiv.org/abs/1909.10351), eq. 8. (B, T, H) each.
    """
    per_token = (student_hidden.float() - teacher_hidden.detach().float()).pow(2).mean(-1)  # (B, T)
    return _masked_mean(per_token, mask)


def attention_kl(student_probs: torch.Tensor, teacher_probs: torch.Tensor,
                 mask: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """KL(teacher || student) of self-attention distributions, averaged over heads and real queries.

    MiniLM (Wang et al. 2020, https://arxiv.org/abs/2002.10957) transfers the teacher's last
    attention maps this way. (B, N, T, T) each: softmax probabilities over the last axis (keys).
    Padded keys carry zero teacher probability and so contribute nothing.
    """
    t = teacher_probs.detach().float()
    s = student_probs.float()
    # t log t - t log s, with 0 log 0 = 0 at padded keys
    kl = (torch.xlogy(t, t) - t * s.clamp_min(eps).log()).sum(-1)  # (B, N, T)
    kl = kl.mean(1)  # (B, T): averaged over heads
    return _masked_mean(kl, mask)


def label_smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.1
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-smoothed cross-entropy and plain NLL, averaged over the labelled tokens.

    Szegedy et al. 2016 (https://arxiv.org/abs/1512.00567), as Vaswani et al. train translation
    models: the target distribution is (1 - eps) on the gold token plus eps spread uniformly
    over all C classes, so loss = (1 - eps) * nll + eps * mean_c(-log p_c). This is PyTorch's
    `cross_entropy(label_smoothing=eps)`; fairseq spreads eps over the C - 1 other classes
    instead, a difference of order eps / C. Positions labelled IGNORE_INDEX (padding) count in
    neither the sum nor the mean. The NLL is returned too: exp(nll) is the perplexity.

    logits (B, T, C) or (N, C); labels (B, T) or (N,). Returns (loss, nll), scalars.
    """
    if not 0 <= smoothing < 1:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    logp = logits.float().reshape(-1, logits.shape[-1]).log_softmax(-1)  # (N, C)
    labels = labels.reshape(-1)
    keep = labels != IGNORE_INDEX  # (N,)
    count = keep.sum().clamp_min(1)
    gold = logp.gather(1, labels.clamp_min(0)[:, None]).squeeze(1)  # (N,); ignored rows read class 0
    nll = -(gold * keep).sum() / count
    uniform = -(logp.mean(-1) * keep).sum() / count
    return (1 - smoothing) * nll + smoothing * uniform, nll


def word_level_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                  temperature: float = 1.0) -> torch.Tensor:
    """Word-level knowledge distillation of a translation model, averaged over real target tokens.

    Kim & Rush 2016 (https://arxiv.org/abs/1606.07947), section 3.1: with both models teacher-forced
    on the same target prefix, the student's next-token distribution p learns the teacher's q
    at every position, at temperature T and times T^2 (Hinton et al.):

        T^2 * mean over real positions of  -sum_v q_T(v) log p_T(v)
        = T^2 * (KL(q_T || p_T) + H(q_T)),    q_T = softmax(z_teacher / T), p_T = softmax(z_student / T)

    The teacher's entropy H(q_T) does not depend on the student, so the gradient is the KL's:
    T * (p_T - q_T) per logit, zero where the student equals the teacher. Positions labelled
    IGNORE_INDEX (padding) count nowhere. This is `soft_cross_entropy` over the target tokens.

    student_logits, teacher_logits (B, T, V); labels (B, T). Returns a scalar.
    """
    return soft_cross_entropy(student_logits, teacher_logits, temperature, mask=labels != IGNORE_INDEX)
