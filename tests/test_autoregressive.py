"""Within-step autoregressive models (LSTM and masked MLP), flattening, RNN-flat and RNN-hier."""
from __future__ import annotations

import itertools

import pytest
import torch

from pyro_srnn.heads import make_head
from pyro_srnn.models.lowlevel import (LSTMLowLevel, MADELowLevel, flatten_batch, flat_inputs,
                                       make_low_level)

from conftest import make_batch


def _low(form, family="bernoulli", L=4, C=3, hidden=8, num_layers=2, k=2):
    torch.manual_seed(1)
    head = make_head(family, None, L, k)
    if form == "lstm":
        return LSTMLowLevel(C, head, hidden, num_layers, embed=5)
    return MADELowLevel(C, head, hidden, num_layers)


def _all_binary(L):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=L)))


@pytest.mark.parametrize("form", ["lstm", "made"])
@pytest.mark.parametrize("C", [0, 3])
def test_binary_step_density_sums_to_one(form, C):
    L = 4
    low = _low(form, L=L, C=C)
    low.eval()
    x = _all_binary(L)  # (16, 4)
    ctx = torch.randn(2, 1, C)  # two different contexts, each must normalise
    xs = x.unsqueeze(0).expand(2, -1, -1)  # (2, 16, L): B=2 contexts, T=16 configurations
    context = ctx.expand(-1, 16, -1) if C else None
    d = low.distribution(context, xs)
    assert d.batch_shape == (2, 16) and d.event_shape == (L,)
    total = d.log_prob(xs).logsumexp(-1)
    assert torch.allclose(total, torch.zeros(2), atol=1e-5)


@pytest.mark.parametrize("form", ["lstm", "made"])
@pytest.mark.parametrize("family", ["bernoulli", "gaussian", "handwriting"])
def test_each_value_depends_only_on_earlier_values(form, family):
    L = 3 if family == "handwriting" else 5
    low = _low(form, family=family, L=L)
    low.eval()
    ctx = torch.randn(2, 4, 3)
    x = torch.randn(2, 4, L).round() if family == "bernoulli" else torch.randn(2, 4, L)
    base = low.params(ctx, x)
    for i in range(L):
        x2 = x.clone()
        x2[..., i:] = x2[..., i:] + 1.7  # change value i and everything after it
        p2 = low.params(ctx, x2)
        assert torch.allclose(base[..., : i + 1, :], p2[..., : i + 1, :], atol=1e-6), i
        if i + 1 < L:  # a later value does see the change (the dependence is real)
            assert not torch.allclose(base[..., i + 1:, :], p2[..., i + 1:, :])
    # and the first value sees the context (corrected ref code, SPEC §7)
    ctx2 = ctx + 1.0
    assert not torch.allclose(low.params(ctx2, x)[..., 0, :], base[..., 0, :])


@pytest.mark.parametrize("form", ["lstm", "made"])
def test_gaussian_step_density_integrates_to_one(form):
    """L = 2 real values: numerical double integral of the step density ≈ 1."""
    low = _low(form, family="gaussian", L=2, C=3, k=3)
    low.eval()
    with torch.no_grad():
        grid = torch.linspace(-12, 12, 801)
        dx = grid[1] - grid[0]
        x0, x1 = torch.meshgrid(grid, grid, indexing="ij")
        x = torch.stack([x0.reshape(-1), x1.reshape(-1)], -1).unsqueeze(0)
        ctx = torch.randn(1, 1, 3).expand(1, x.shape[1], 3)
        p = low.distribution(ctx, x).log_prob(x).exp().sum() * dx * dx
    assert abs(float(p) - 1.0) < 1e-3


@pytest.mark.parametrize("form", ["lstm", "made"])
@pytest.mark.parametrize("family", ["bernoulli", "gaussian", "handwriting"])
def test_sample_shapes_and_values(form, family):
    L = 3 if family == "handwriting" else 4
    low = _low(form, family=family, L=L)
    s = low.sample(torch.randn(6, 3))
    assert s.shape == (6, L)
    if family == "bernoulli":
        assert set(s.unique().tolist()) <= {0.0, 1.0}
    if family == "handwriting":
        assert set(s[:, 0].unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(s).all()
    assert _low(form, family=family, L=L, C=0).sample(None, num=5).shape == (5, L)


@pytest.mark.parametrize("form", ["lstm", "made"])
def test_sampling_matches_scored_density(form):
    """Ancestral samples of a context-free binary model follow the density it scores (L=3)."""
    torch.manual_seed(0)
    low = _low(form, L=3, C=0, hidden=6)
    low.eval()
    n = 20000
    s = low.sample(None, num=n)
    codes = (s * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(codes, minlength=8).float() / n
    x = _all_binary(3).unsqueeze(0)
    probs = low.distribution(None, x).log_prob(x).exp()[0]
    assert torch.allclose(freq, probs, atol=0.015)


@pytest.mark.parametrize("form", ["lstm", "made"])
def test_low_level_gradients_reach_every_parameter(form):
    low = _low(form, family="gaussian", L=4, k=2)
    ctx = torch.randn(2, 3, 3, requires_grad=True)
    x = torch.randn(2, 3, 4)
    low.distribution(ctx, x).log_prob(x).sum().backward()
    for name, p in low.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if not name.startswith("w0"):
            assert p.grad.abs().sum() > 0, name
    assert ctx.grad.abs().sum() > 0


def test_make_low_level_rejects_unknown_form():
    with pytest.raises(ValueError, match="low-level form"):
        make_low_level("gru", 3, make_head("bernoulli", None, 4), 8)


def test_context_size_is_checked():
    low = _low("made", C=3)
    with pytest.raises(ValueError, match="context has size 2"):
        low.params(torch.randn(1, 2, 2), torch.zeros(1, 2, 4))


def test_flatten_batch_reading_order_and_mask():
    batch = make_batch("gaussian", L=3, lengths=(5, 3))
    flat = flatten_batch(batch)
    B, T, L = batch.inputs.shape
    assert flat.inputs.shape == (B, T * L, 1) and flat.mask.shape == (B, T * L)
    # targets in reading order; every flat input is the previous flat target, the first is
    # the last value of the conditioning step inputs[:, 0]
    ft = flat.targets[..., 0]
    fi = flat.inputs[..., 0]
    assert torch.equal(ft, batch.targets.reshape(B, -1))
    valid = flat.mask[:, 1:]  # (padded steps have zero inputs)
    assert torch.equal(fi[:, 1:][valid], ft[:, :-1][valid])
    assert torch.equal(fi[:, 0], batch.inputs[:, 0, -1])
    assert torch.equal(flat.mask.reshape(B, T, L), batch.mask.unsqueeze(-1).expand(-1, -1, L))
    assert flat.num_scored_values == batch.num_scored_values
    assert torch.equal(flat_inputs(batch.inputs, batch.targets)[:, 1:, 0], batch.inputs[:, 1:, -1])
