"""Losses against hand computations, with their gradients."""

from __future__ import annotations

import math

import pytest
import torch

from slimbert.training.losses import (IGNORE_INDEX, attention_kl, hard_cross_entropy, hidden_cosine,
                                      hidden_mse, logit_mse, regression_mse, soft_cross_entropy)


def softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_soft_cross_entropy_by_hand_with_t_squared(T):
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    expected = 0.0
    for srow, trow in zip(s, t):
        p = softmax([x / T for x in trow])
        q = softmax([x / T for x in srow])
        expected += -sum(pi * math.log(qi) for pi, qi in zip(p, q))
    expected = expected / 2 * T * T
    student = torch.tensor(s, requires_grad=True)
    loss = soft_cross_entropy(student, torch.tensor(t), T)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # dL/ds = T * (softmax(s/T) - softmax(t/T)) / B: the T^2 factor keeps it O(1/T), not O(1/T^2)
    loss.backward()
    want = T * (torch.softmax(torch.tensor(s) / T, -1) - torch.softmax(torch.tensor(t) / T, -1)) / 2
    torch.testing.assert_close(student.grad, want)


def test_soft_cross_entropy_is_minimal_at_the_teacher():
    t = torch.tensor([[3.0, -1.0, 0.5]])
    at_teacher = soft_cross_entropy(t.clone(), t, 2.0)
    elsewhere = soft_cross_entropy(torch.tensor([[0.0, 0.0, 0.0]]), t, 2.0)
    assert at_teacher < elsewhere


def test_soft_cross_entropy_over_tokens_ignores_padding():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    per_token = [soft_cross_entropy(s[b, i:i + 1], t[b, i:i + 1], 2.0) for b, i in [(0, 0), (0, 1), (1, 0)]]
    torch.testing.assert_close(soft_cross_entropy(s, t, 2.0, mask), torch.stack(per_token).mean())
    s2 = s.clone()
    s2[0, 2] = 100.0  # a padded position changes nothing
    torch.testing.assert_close(soft_cross_entropy(s2, t, 2.0, mask), soft_cross_entropy(s, t, 2.0, mask))


def test_soft_cross_entropy_gives_no_gradient_to_the_teacher():
    t = torch.randn(2, 3, requires_grad=True)
    soft_cross_entropy(torch.randn(2, 3, requires_grad=True), t, 2.0).backward()
    assert t.grad is None


def test_logit_mse_by_hand():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    loss = logit_mse(s, t)
    assert loss.item() == pytest.approx(((1 + 4) + (1 + 1)) / 2)
    loss.backward()
    torch.testing.assert_close(s.grad, 2 * (s.detach() - t) / 2)


def test_hidden_cosine_by_hand():
    a = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    b = torch.tensor([[[0.0, 1.0], [-2.0, -2.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # orthogonal -> 1 - 0; opposite -> 1 - (-1); the padded third token is left out
    assert hidden_cosine(a, b, mask).item() == pytest.approx((1.0 + 2.0) / 2)
    assert hidden_cosine(a, 3 * a).item() == pytest.approx(0.0, abs=1e-6)


def test_hidden_mse_by_hand_and_gradient():
    s = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]], requires_grad=True)
    t = torch.tensor([[[0.0, 1.0], [9.0, 9.0]]])
    loss = hidden_mse(s, t, torch.tensor([[1, 0]]))
    assert loss.item() == pytest.approx((1 + 4) / 2)
    loss.backward()
    torch.testing.assert_close(s.grad, torch.tensor([[[1.0, 2.0], [0.0, 0.0]]]))


def test_attention_kl_by_hand_with_padded_key():
    # one head, two real queries, a padded third key (probability 0 for both models)
    t = torch.tensor([[[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.3, 0.7, 0.0]]]])
    s = torch.tensor([[[[0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [0.9, 0.1, 0.0]]]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    kl_row0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl_row1 = 1.0 * math.log(1.0 / 0.5)
    loss = attention_kl(s, t, mask)
    assert loss.item() == pytest.approx((kl_row0 + kl_row1) / 2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert attention_kl(t, t, mask).item() == pytest.approx(0.0, abs=1e-7)


def test_attention_kl_averages_heads():
    torch.manual_seed(0)
    s = torch.randn(1, 2, 3, 3).softmax(-1)
    t = torch.randn(1, 2, 3, 3).softmax(-1)
    per_head = [attention_kl(s[:, h:h + 1], t[:, h:h + 1]) for h in range(2)]
    torch.testing.assert_close(attention_kl(s, t), torch.stack(per_head).mean())


def test_hard_cross_entropy_skips_unlabelled_examples():
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, IGNORE_INDEX, 1])
    want = (-math.log(softmax([2.0, 0.0])[0]) - math.log(0.5)) / 2
    assert hard_cross_entropy(logits, labels).item() == pytest.approx(want, rel=1e-6)
    none = hard_cross_entropy(logits, torch.full((3,), IGNORE_INDEX))
    assert none.item() == 0.0
    none.backward()  # a batch of augmented examples only: zero gradient, not NaN
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_regression_mse_skips_nan_targets():
    p = torch.tensor([[1.0], [2.0], [3.0]])
    assert regression_mse(p, torch.tensor([0.0, float("nan"), 1.0])).item() == pytest.approx((1 + 4) / 2)


def test_losses_compute_in_float32_under_bf16_inputs():
    s = torch.randn(4, 3).to(torch.bfloat16)
    t = torch.randn(4, 3).to(torch.bfloat16)
    assert soft_cross_entropy(s, t, 4.0).dtype == torch.float32
    assert logit_mse(s, t).dtype == torch.float32
