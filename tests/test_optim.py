"""LAMB against its definition (You et al. 2019, Algorithm 2), computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from slimbert.training.optim import Lamb, build_optimizer, parameter_groups


def reference_lamb(w: torch.Tensor, grads: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps=1e-6,
                   weight_decay=0.0, trust_ratio=True) -> torch.Tensor:
    """Algorithm 2 in float64, one tensor: Adam's bias-corrected ratio plus decoupled decay,
    r = m_hat / (sqrt(v_hat) + eps) + wd * w, scaled by the trust ratio ||w|| / ||r||
    (1 when either norm is 0, and for a tensor excluded from layer adaptation)."""
    beta1, beta2 = betas
    w = w.double().clone()
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g.double()
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        r = m_hat / (v_hat.sqrt() + eps) + weight_decay * w
        w_norm, r_norm = float(w.norm()), float(r.norm())
        trust = w_norm / r_norm if trust_ratio and w_norm > 0 and r_norm > 0 else 1.0
        w = w - lr * trust * r
    return w


def lamb_steps(w0: torch.Tensor, grads: list[torch.Tensor], **hyper) -> torch.Tensor:
    w = nn.Parameter(w0.clone())
    opt = Lamb([w], **hyper)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    return w.detach()


def test_first_step_by_hand_with_weight_decay():
    w0, g = torch.tensor([3.0, 4.0]), torch.tensor([1.0, -2.0])  # ||w|| = 5
    got = lamb_steps(w0, [g], lr=0.1, eps=1e-6, weight_decay=0.1)
    # Step 1 with bias correction: m_hat = g and v_hat = g^2, so Adam's ratio is g / (|g| + eps),
    # about sign(g) = [1, -1]. Without bias correction it would be 0.1 g / (0.0316 |g|) = 3.16 sign(g).
    adam = g / (g.abs() + 1e-6)
    r = adam + 0.1 * w0  # decoupled decay: [1.3, -0.6], ||r|| = sqrt(2.05)
    want = w0 - 0.1 * (5.0 / r.norm()) * r
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(want, torch.tensor([3.0, 4.0]) - 0.1 * 5 / math.sqrt(2.05) * torch.tensor(
        [1.3, -0.6]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01, 0.3])
def test_several_steps_match_the_reference(weight_decay):
    g = torch.Generator().manual_seed(0)
    w0 = 5 * torch.randn(3, 5, generator=g)  # ||w|| ~ 5 ||r||: a trust ratio far from 1
    grads = [torch.randn(3, 5, generator=g) * 10 ** -k for k in range(6)]  # shrinking gradients
    hyper = dict(lr=0.05, betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay)
    got = lamb_steps(w0, grads, **hyper)
    torch.testing.assert_close(got.double(), reference_lamb(w0, grads, **hyper), atol=1e-5, rtol=1e-5)


def test_a_zero_weight_takes_the_plain_step():
    """A fresh bias (||w|| = 0): the trust ratio is 1, not 0, or the tensor would never move."""
    g = torch.tensor([0.5, -0.25, 2.0])
    got = lamb_steps(torch.zeros(3), [g], lr=0.1, weight_decay=0.01)
    torch.testing.assert_close(got, -0.1 * g / (g.abs() + 1e-6))
    torch.testing.assert_close(got.double(), reference_lamb(torch.zeros(3), [g], lr=0.1, weight_decay=0.01))


@pytest.mark.parametrize("w0", [torch.tensor([3.0, 4.0]), torch.zeros(2)], ids=["weight", "zero-weight"])
def test_a_zero_update_leaves_the_weight_unchanged_and_finite(w0):
    """A zero gradient and no decay: ||update|| = 0, where ||w|| / ||update|| would be inf or NaN."""
    got = lamb_steps(w0, [torch.zeros(2), torch.zeros(2)], lr=0.1, weight_decay=0.0)
    assert torch.equal(got, w0)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(4, 3)
        self.LayerNorm = nn.LayerNorm(3)


def test_builder_excludes_biases_and_norms_from_decay_and_from_the_trust_ratio():
    torch.manual_seed(0)
    model = Block()
    with torch.no_grad():  # LayerNorm off its init (ones, zeros), so both of its norms are non-zero
        model.LayerNorm.weight.add_(0.1 * torch.randn(3))
        model.LayerNorm.bias.add_(0.1 * torch.randn(3))
    decay, no_decay = parameter_groups(model, 0.2)
    assert [p is model.dense.weight for p in decay["params"]] == [True]
    assert {id(p) for p in no_decay["params"]} == {id(model.dense.bias), id(model.LayerNorm.weight),
                                                   id(model.LayerNorm.bias)}
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, "lamb", lr=0.05, weight_decay=0.2)
    assert isinstance(opt, Lamb)
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    opt.step()
    for n, p in model.named_parameters():
        # As the LAMB authors' release does, biases and LayerNorm take neither the decay nor the
        # layer adaptation: their step is Adam's, lr x m_hat / (sqrt(v_hat) + eps).
        matrix = n == "dense.weight"
        want = reference_lamb(before[n], [grads[n]], lr=0.05, eps=1e-6, weight_decay=0.2 if matrix else 0.0,
                              trust_ratio=matrix)
        torch.testing.assert_close(p.detach().double(), want, atol=1e-6, rtol=1e-5, msg=n)
        if not matrix:  # step 1 by hand: m_hat = g, v_hat = g^2
            g = grads[n].double()
            torch.testing.assert_close(p.detach().double(), before[n].double() - 0.05 * g / (g.abs() + 1e-6),
                                       atol=1e-6, rtol=1e-5, msg=n)
            with_trust = reference_lamb(before[n], [grads[n]], lr=0.05, eps=1e-6, trust_ratio=True)
            assert not torch.allclose(p.detach().double(), with_trust, atol=1e-4), f"{n}: trust ratio applied"


def test_bad_hyper_parameters_are_refused():
    w = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="invalid LAMB"):
        Lamb([w], lr=0.0)
    with pytest.raises(ValueError, match="invalid LAMB"):
        Lamb([w], betas=(0.9, 1.0))
