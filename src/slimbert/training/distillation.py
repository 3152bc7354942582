"""Knowledge distillation as one Objective: a frozen teacher, any student, a visible loss mix.

The student is trained on
    loss = w.hard * hard   (gold labels: cross-entropy, or MSE for regression)
         + w.soft * soft   (teacher's tempered class/token distribution, x T^2; Hinton et al.)
         + w.logit_mse * ||z_s - z_t||^2   (Tang et al. 2019)
         + w.hidden * mean over mapped layers of cosine or MSE (DistilBERT, TinyBERT)
         + w.attention * mean over mapped layers of KL(attention maps) (MiniLM)
         + w.mlm * masked-LM cross-entropy (DistilBERT's triple loss)
Terms with weight 0 are not computed. When the batch already carries the teacher's logits
(computed once for the whole transfer set, see slimbert.recipes.distill) and no inner layer is
matched, the teacher is not run at all.

A layer map pairs student layers with teacher layers (0-based Transformer blocks). The
default spreads the student's layers evenly over the teacher's and always pairs the last
with the last, for any two depths: 3 of 6 -> 0:1, 1:3, 2:5; 4 of 6 -> 0:1, 1:2, 2:4, 3:5.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import nn

from slimbert.data.batching import Batch, model_inputs
from slimbert.data.masking import MLMMasker
from slimbert.training.losses import (attention_kl, hard_cross_entropy, hidden_cosine, hidden_mse,
                                      logit_mse, regression_mse, soft_cross_entropy)


class LayerMapError(ValueError):
    """A layer map that does not fit the two models."""


def uniform_layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Student layer s -> teacher layer round((s + 1) * n_teacher / n_student) - 1."""
    if n_student < 1 or n_teacher < 1:
        raise LayerMapError(f"both models need layers to map (student {n_student}, teacher {n_teacher})")
    return [(s, int((s + 1) * n_teacher / n_student + 0.5) - 1) for s in range(n_student)]


@dataclass(frozen=True)
class LayerMap:
    """Which teacher layer each mapped student layer learns from: (student, teacher) pairs,
    0-based Transformer blocks. Written `0:1,1:3,2:5`; checked against two depths by `check`."""

    pairs: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, text: str) -> LayerMap:
        """'0:1,1:3,2:5' (student:teacher) -> LayerMap(((0, 1), (1, 3), (2, 5)))."""
        pairs = []
        for item in filter(None, (t.strip() for t in text.split(","))):
            s, colon, t = item.partition(":")
            try:
                if not colon:
                    raise ValueError
                pairs.append((int(s), int(t)))
            except ValueError:
                raise LayerMapError(f"layer map '{text}': '{item}' is not STUDENT:TEACHER, e.g. 0:1") from None
        if not pairs:
            raise LayerMapError(f"layer map '{text}' is empty; expected pairs like 0:1,1:3")
        return cls(tuple(pairs))

    def check(self, n_student: int, n_teacher: int) -> list[tuple[int, int]]:
        """The pairs, once every layer is known to exist in a student and teacher of these depths."""
        return check_layer_map(list(self.pairs), n_student, n_teacher)

    def __str__(self) -> str:
        return ",".join(f"{s}:{t}" for s, t in self.pairs)


def parse_layer_map(text: str, n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """'0:1,1:3,2:5' (student:teacher, 0-based) -> [(0, 1), (1, 3), (2, 5)], checked."""
    return LayerMap.parse(text).check(n_student, n_teacher)


def check_layer_map(pairs: list[tuple[int, int]], n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    if not pairs:
        raise LayerMapError("the layer map is empty")
    for s, t in pairs:
        if not 0 <= s < n_student:
            raise LayerMapError(f"layer map {s}:{t}: the student has layers 0..{n_student - 1}")
        if not 0 <= t < n_teacher:
            raise LayerMapError(f"layer map {s}:{t}: the teacher has layers 0..{n_teacher - 1}")
    students = [s for s, _ in pairs]
    if len(set(students)) != len(students):
        raise LayerMapError(f"layer map {pairs}: a student layer appears twice")
    return pairs


@dataclass
class LossWeights:
    hard: float = 0.0  # gold labels (examples without one, e.g. augmented, are left out)
    soft: float = 1.0  # soft-target cross-entropy with the teacher, at temperature T, x T^2
    logit_mse: float = 0.0  # squared distance between student and teacher logits
    hidden: float = 0.0  # hidden states of mapped layers
    attention: float = 0.0  # attention maps of mapped layers
    mlm: float = 0.0  # the student's own masked-LM loss (needs a masker and MLM heads)

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"loss weight {f.name} must be >= 0, got {getattr(self, f.name)}")
        if not any(getattr(self, f.name) for f in fields(self)):
            raise ValueError("every loss weight is 0: nothing to train on")

    def active(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) > 0}


class DistillationObjective(nn.Module):
    """`(student, batch) -> (loss, metrics)` against a frozen teacher.

    It is an nn.Module only for the learned projections that map a narrower student's hidden
    states to the teacher's width; the Trainer trains and checkpoints them with the student.
    The teacher is held outside the module tree, so it is neither trained nor saved.
    """

    def __init__(self, teacher: nn.Module | None, weights: LossWeights, temperature: float = 1.0,
                 layer_map: list[tuple[int, int]] | None = None, student_hidden: int | None = None,
                 teacher_hidden: int | None = None, hidden_loss: Literal["cosine", "mse"] = "cosine",
                 regression: bool = False, masker: MLMMasker | None = None):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if hidden_loss not in ("cosine", "mse"):
            raise ValueError(f"hidden_loss must be cosine or mse, got '{hidden_loss}'")
        if regression and weights.soft:
            raise ValueError("soft-target cross-entropy needs class logits; a regression task "
                             "distils with logit_mse")
        if weights.mlm and masker is None:
            raise ValueError("an MLM loss needs a masker")
        if (weights.hidden or weights.attention) and not layer_map:
            raise ValueError("matching hidden states or attention needs a layer map")
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        # Stored in __dict__ to keep it out of parameters(), state_dict() and the optimizer.
        self.__dict__["teacher"] = teacher
        self.weights = weights
        self.temperature = temperature
        self.layer_map = list(layer_map or [])
        self.hidden_loss = hidden_loss
        self.regression = regression
        self.masker = masker
        project = weights.hidden > 0 and student_hidden != teacher_hidden
        if project and (student_hidden is None or teacher_hidden is None):
            raise ValueError("give student_hidden and teacher_hidden to match hidden states")
        # One learned linear map per matched layer (TinyBERT's W_h), when the widths differ.
        self.projections = nn.ModuleList(
            nn.Linear(student_hidden, teacher_hidden) for _ in self.layer_map) if project else None

    def to(self, *args, **kwargs):
        if self.teacher is not None:
            self.teacher.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def forward(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = self.weights
        inputs = model_inputs(batch)
        mask = inputs.get("attention_mask")
        mlm_labels = None
        if self.masker is not None:  # both models see the same freshly masked tokens
            inputs["input_ids"], mlm_labels = self.masker(inputs["input_ids"], mask)
        inner = {k: True for k, on in (("output_hidden_states", w.hidden > 0),
                                       ("output_attentions", w.attention > 0)) if on}
        student = model(**inputs, **inner)
        teacher_logits = batch.get("teacher_logits")
        teacher = None
        if inner or (teacher_logits is None and (w.soft or w.logit_mse)):
            if self.teacher is None:
                raise ValueError("this loss mix needs the teacher, and none was given")
            with torch.no_grad():
                teacher = self.teacher(**inputs, **inner)
            teacher_logits = teacher.logits
        token_mask = mask if student.logits is not None and student.logits.dim() == 3 else None

        terms: dict[str, torch.Tensor] = {}
        if w.hard:
            labels = batch["labels"]
            terms["hard"] = (regression_mse(student.logits, labels) if self.regression
                             else hard_cross_entropy(student.logits, labels))
        if w.soft:
            terms["soft"] = soft_cross_entropy(student.logits, teacher_logits, self.temperature, token_mask)
        if w.logit_mse:
            terms["logit_mse"] = logit_mse(student.logits, teacher_logits)
        if w.hidden:
            terms["hidden"] = self._hidden_term(student.hidden_states, teacher.hidden_states, mask)
        if w.attention:
            # A layer LayerDrop skipped this step has no attention map to match.
            kls = [attention_kl(_heads_like(student.attentions[s], teacher.attentions[t]),
                                _heads_like(teacher.attentions[t], student.attentions[s]), mask)
                   for s, t in self.layer_map if student.attentions[s] is not None]
            terms["attention"] = torch.stack(kls).mean() if kls else student.logits.new_zeros(())
        if w.mlm:
            terms["mlm"] = hard_cross_entropy(student.logits, mlm_labels)
        loss = sum(getattr(w, name) * value for name, value in terms.items())

        metrics = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
        if student.logits is not None and student.logits.dim() == 2 and not self.regression:
            if teacher_logits is not None:
                agree = student.logits.detach().argmax(-1) == teacher_logits.argmax(-1)
                metrics["agree"] = agree.float().mean()
        return loss, metrics

    def _hidden_term(self, student_states, teacher_states, mask) -> torch.Tensor:
        """Mean hidden-state loss over mapped layers. hidden_states[0] is the embedding output,
        so Transformer block i is hidden_states[i + 1]."""
        losses = []
        for k, (s, t) in enumerate(self.layer_map):
            hs = student_states[s + 1]
            if self.projections is not None:
                hs = self.projections[k](hs)
            ht = teacher_states[t + 1]
            losses.append(hidden_cosine(hs, ht, mask) if self.hidden_loss == "cosine" else hidden_mse(hs, ht, mask))
        return torch.stack(losses).mean()


def _heads_like(probs: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Attention maps (B, N, T, T), averaged over heads when the other model has a different
    number of heads (a narrower student), so the two can be compared."""
    return probs if probs.shape[1] == other.shape[1] else probs.mean(1, keepdim=True)
