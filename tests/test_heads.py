"""Output heads: normalised densities, the mixture formula, shapes, gradients, per-value factors."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from pyro_srnn.heads import (BernoulliHead, GaussianMixtureHead, HandwritingHead, NormalMixture, SubsetHead,
                             make_head, make_subset_head)


def _params(head, *batch):
    torch.manual_seed(0)
    return torch.randn(*batch, head.step_dim, head.params_per_value)


def test_bernoulli_head_sums_to_one_over_all_binary_steps():
    head = make_head("bernoulli", 5, 4)
    h = torch.randn(3, 5)
    d = head(h.unsqueeze(1).expand(3, 16, 5))  # 3 feature vectors × all 16 steps
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).expand(3, 16, 4)
    assert d.batch_shape == (3, 16) and d.event_shape == (4,)
    assert torch.allclose(d.log_prob(x).logsumexp(-1), torch.zeros(3), atol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_gaussian_mixture_integrates_to_one_per_value(k):
    head = GaussianMixtureHead(None, 3, num_components=k)
    params = _params(head, 2)
    grid = torch.linspace(-30, 30, 60001)
    dx = 60.0 / 60000
    for i in range(3):
        d = head.value_distribution(params[:, i], i)
        mass = d.log_prob(grid[:, None]).exp().sum(0) * dx
        assert torch.allclose(mass, torch.ones(2), atol=1e-4)


def test_gaussian_step_density_integrates_to_one_over_two_values():
    head = GaussianMixtureHead(None, 2, num_components=2)
    params = _params(head)
    g = torch.linspace(-25, 25, 1001)
    dx = 50.0 / 1000
    x = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    mass = head.distribution(params).log_prob(x).exp().sum() * dx * dx
    assert abs(float(mass) - 1.0) < 1e-3


def test_mixture_matches_the_log_sum_exp_formula():
    k = 4
    head = GaussianMixtureHead(None, 2, num_components=k)
    params = _params(head, 5)
    x = torch.randn(5, 2)
    logits, loc, log_std = params.chunk(3, -1)
    log_std = log_std.clamp(min=head.log_std_min)
    comp = -0.5 * math.log(2 * math.pi) - log_std - 0.5 * ((x[..., None] - loc) / log_std.exp()) ** 2
    expected = (torch.log_softmax(logits, -1) + comp).logsumexp(-1).sum(-1)
    assert torch.allclose(head.distribution(params).log_prob(x), expected, atol=1e-5)


def test_normal_mixture_equals_torchs_mixture_in_value_gradient_moments_and_expansion():
    torch.manual_seed(1)
    logits, loc, log_scale = (torch.randn(3, 4, 5, requires_grad=True) for _ in range(3))
    x = torch.randn(3, 4)
    ours = NormalMixture(logits, loc, log_scale)
    ref = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logits),
                                                torch.distributions.Normal(loc, log_scale.exp()))
    lp, lp_ref = ours.log_prob(x), ref.log_prob(x)
    assert torch.allclose(lp, lp_ref, atol=1e-5)
    grads = torch.autograd.grad(lp.sum(), (logits, loc, log_scale))
    grads_ref = torch.autograd.grad(lp_ref.sum(), (logits, loc, log_scale))
    assert all(torch.allclose(g, r, atol=1e-5) for g, r in zip(grads, grads_ref))
    assert torch.allclose(ours.mean, ref.mean) and torch.allclose(ours.variance, ref.variance)
    assert ours.batch_shape == (3, 4) and ours.sample((2,)).shape == (2, 3, 4)
    wide = ours.expand((6, 3, 4))
    assert wide.batch_shape == (6, 3, 4) and torch.allclose(wide.log_prob(x), lp.expand(6, 3, 4))


def test_log_std_floor():
    head = GaussianMixtureHead(None, 1, num_components=1, log_std_min=-7.0)
    params = torch.tensor([[[0.0, 0.0, -50.0]]])  # logit, loc, log_std far below the floor
    lp = head.distribution(params).log_prob(torch.zeros(1, 1))
    assert torch.allclose(lp, torch.tensor([-0.5 * math.log(2 * math.pi) + 7.0]))


def test_handwriting_head_normalises_over_pen_and_offsets():
    head = HandwritingHead(None, 3, num_components=2)
    params = _params(head)
    g = torch.linspace(-25, 25, 801)
    dx = 50.0 / 800
    off = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    total = 0.0
    for pen in (0.0, 1.0):
        x = torch.cat([torch.full((off.shape[0], 1), pen), off], -1)
        total += float(head.distribution(params).log_prob(x).exp().sum()) * dx * dx
    assert abs(total - 1.0) < 1e-3
    with pytest.raises(ValueError, match="L must be 3"):
        HandwritingHead(4, 5)


@pytest.mark.parametrize("family,L", [("bernoulli", 4), ("gaussian", 4), ("handwriting", 3)])
def test_shapes_gradients_and_per_value_factors(family, L):
    head = make_head(family, 7, L, 2 if family != "bernoulli" else None)
    h = torch.randn(2, 5, 7)
    d = head(h)
    assert d.batch_shape == (2, 5) and d.event_shape == (L,)
    x = d.sample()
    assert x.shape == (2, 5, L)
    lp = d.log_prob(x)
    assert lp.shape == (2, 5) and torch.isfinite(lp).all()
    lp.sum().backward()
    assert head.proj.weight.grad.abs().sum() > 0 and torch.isfinite(head.proj.weight.grad).all()
    # the step density is the product of the per-value densities the low-level models use
    raw = head.raw(h).detach()
    per_value = sum(head.value_distribution(raw[..., i, :], i).log_prob(x[..., i]) for i in range(L))
    assert torch.allclose(head.distribution(raw).log_prob(x), per_value, atol=1e-5)


def test_subset_head_of_handwriting_values():
    step = HandwritingHead(None, 3, num_components=2)
    sub = SubsetHead(6, step, [0, 2])  # pen and dy
    h = torch.randn(4, 6)
    x = torch.tensor([[1.0, 0.3]]).expand(4, 2)
    raw = sub.raw(h)
    expected = (step.value_distribution(raw[:, 0], 0).log_prob(x[:, 0])
                + step.value_distribution(raw[:, 1], 2).log_prob(x[:, 1]))
    assert torch.allclose(sub(h).log_prob(x), expected)
    s = sub(h).sample()
    assert s.shape == (4, 2) and set(s[:, 0].tolist()) <= {0.0, 1.0}
    assert isinstance(make_subset_head("gaussian", 6, 5, [1, 3], 2), GaussianMixtureHead)
    assert isinstance(make_subset_head("bernoulli", 6, 5, [1, 3]), BernoulliHead)


def test_mixture_samples_follow_the_mixture():
    torch.manual_seed(0)
    head = GaussianMixtureHead(None, 1, num_components=2)
    params = torch.tensor([[[0.0, math.log(3.0), -2.0, 2.0, 0.0, -1.0]]])  # weights 1/4, 3/4; means -2, 2
    s = head.distribution(params.expand(20000, 1, 6)).sample()
    assert abs(float(s.mean()) - (0.25 * -2 + 0.75 * 2)) < 0.05
    assert abs(float((s > 0).float().mean()) - 0.75) < 0.02


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown output family"):
        make_head("poisson", 4, 3)
