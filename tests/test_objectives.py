"""Training objectives: the masked-LM loss against cross-entropy computed by hand."""

from __future__ import annotations

import torch
from conftest import padded_batch, tiny_config

from slimbert import build_model
from slimbert.training.objectives import MaskedLMObjective

MASK_ID = 4  # [MASK] in the tiny vocabulary


class FixedMasker:
    """Masks the given (row, column) positions with [MASK]; labels hold their original ids."""

    def __init__(self, positions):
        self.positions, self.attention_masks = positions, []

    def __call__(self, input_ids, attention_mask=None):
        self.attention_masks.append(attention_mask)
        masked, labels = input_ids.clone(), torch.full_like(input_ids, -100)
        for b, t in self.positions:
            labels[b, t], masked[b, t] = input_ids[b, t], MASK_ID
        return masked, labels


def mlm_batch():
    ids, mask = padded_batch([[2, 10, 11, 12, 13, 14, 3], [2, 15, 16, 17, 3], [2, 18, 3]])
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def mlm_model():
    torch.manual_seed(0)
    model = build_model(tiny_config(head="mlm")).eval()
    with torch.no_grad():  # away from the near-uniform predictions of a fresh init
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return model


def test_masked_lm_loss_is_cross_entropy_at_the_masked_positions():
    model, batch = mlm_model(), mlm_batch()
    positions = [(0, 2), (0, 5), (1, 1)]
    masker = FixedMasker(positions)
    loss, metrics = MaskedLMObjective(masker)(model, batch)
    assert torch.equal(masker.attention_masks[0], batch["attention_mask"])  # padding is never chosen

    masked, _ = masker(batch["input_ids"])
    with torch.no_grad():
        logits = model(masked, batch["attention_mask"], batch["token_type_ids"]).logits  # (B, T, V)
    log_probs = logits.log_softmax(-1)
    by_hand = -sum(log_probs[b, t, batch["input_ids"][b, t]] for b, t in positions) / len(positions)
    torch.testing.assert_close(loss, by_hand)
    assert metrics["loss"] == loss.detach()

    # Unmasked positions contribute nothing: the mean over all real tokens is a different number.
    real = batch["attention_mask"].bool()
    everywhere = -log_probs.gather(-1, batch["input_ids"][..., None])[..., 0][real].mean()
    assert abs(float(everywhere - by_hand)) > 0.01


def test_masked_lm_loss_is_zero_with_a_gradient_path_when_nothing_is_masked():
    """Unmasked positions contribute nothing: with none masked, no loss and no gradient."""
    model, batch = mlm_model(), mlm_batch()
    loss, _ = MaskedLMObjective(FixedMasker([]))(model, batch)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())

