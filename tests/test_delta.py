"""Proposition 1: the delta-posterior ELBO of δ-SRNN equals the δ-RNN log-likelihood; other guides bound it."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_srnn.infer import iwae_log_likelihood, log_weights
from pyro_srnn.models import build_guide, build_model, guide_names
from pyro_srnn.models.base import EmptyGuide, GuideMismatch
from pyro_srnn.models.delta import DeltaGaussianGuide, DeltaGuide, DeltaSplit

from conftest import make_batch, make_spec

SPLITS = [dict(split="random", d_leak=2, split_seed=3), dict(split="interleave", stride=3)]


def _pair(family="gaussian", L=6, **split):
    spec = make_spec(family, L)
    k = dict(num_components=2) if family == "gaussian" else {}
    rnn = build_model("delta-rnn", spec, "tiny", **split, **k)
    srnn = build_model("delta-srnn", spec, "tiny", **split, **k)
    srnn.load_state_dict(rnn.state_dict())  # same names: the same weights
    return spec, rnn, srnn


def _loss_and_grads(model, guide, batch, **kw):
    params = [p for p in model.parameters()]
    loss = Trace_ELBO().differentiable_loss(model, guide, batch, **kw)
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), dict(zip([n for n, _ in model.named_parameters()], grads))


@pytest.mark.parametrize("split", SPLITS, ids=["random", "interleave"])
@pytest.mark.parametrize("family", ["gaussian", "bernoulli"])
def test_proposition1_delta_elbo_equals_delta_rnn_likelihood(family, split):
    spec, rnn, srnn = _pair(family, **split)
    batch = make_batch(family, L=6, lengths=(9, 6, 3))  # ragged: padded steps must contribute 0
    nll, g_rnn = _loss_and_grads(rnn, EmptyGuide(rnn), batch)
    neg_elbo, g_srnn = _loss_and_grads(srnn, DeltaGuide(srnn), make_batch(family, L=6, lengths=(9, 6, 3)))
    assert torch.isfinite(nll)
    assert abs(float(neg_elbo) - float(nll)) <= 1e-5 * abs(float(nll))
    assert g_rnn.keys() == g_srnn.keys()
    for name in g_rnn:
        assert torch.allclose(g_rnn[name], g_srnn[name], rtol=1e-4, atol=1e-6), name
    assert any(g.abs().sum() > 0 for g in g_rnn.values())

    # both equal the two-factor likelihood written out by hand, padded steps dropped
    with torch.no_grad():
        d = rnn.rnn(batch.inputs)[0]
        xa, xb = rnn.delta_split.leak(batch.targets), rnn.delta_split.rest(batch.targets)
        by_hand = rnn.leak_distribution(d).log_prob(xa) + rnn.rest_distribution(d, xa).log_prob(xb)
        by_hand = (by_hand * batch.mask).sum()
    assert torch.allclose(-nll.detach(), by_hand, rtol=1e-6)
    # the analytic-KL estimator agrees: KL(δ ‖ p) = −log p(x^a)
    mf = TraceMeanField_ELBO().differentiable_loss(srnn, DeltaGuide(srnn), batch).detach()
    assert abs(float(mf) - float(nll)) <= 1e-5 * abs(float(nll))


def test_kl_scale_weights_only_the_prior_term():
    spec, rnn, srnn = _pair("gaussian", **SPLITS[0])
    batch = make_batch("gaussian", L=6)
    with torch.no_grad():
        d = rnn.rnn(batch.inputs)[0]
        xa, xb = rnn.delta_split.leak(batch.targets), rnn.delta_split.rest(batch.targets)
        prior = (rnn.leak_distribution(d).log_prob(xa) * batch.mask).sum()
        emission = (rnn.rest_distribution(d, xa).log_prob(xb) * batch.mask).sum()
        loss = Trace_ELBO().loss(srnn, DeltaGuide(srnn), batch, kl_scale=0.3)
    assert math.isclose(-loss, float(emission + 0.3 * prior), rel_tol=1e-5)


def test_delta_rnn_step_density_normalises_over_all_binary_steps():
    spec, rnn, _ = _pair("bernoulli", L=4, split="random", d_leak=1)
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))  # (16, 4)
    with torch.no_grad():
        d = torch.randn(2, 1, 16).expand(2, 16, 16)
        from pyro_srnn.models.delta import TwoGroupStep
        step = TwoGroupStep(rnn.leak_distribution(d), lambda xa: rnn.rest_distribution(d, xa), rnn.delta_split)
        total = step.log_prob(x.expand(2, 16, 4)).logsumexp(-1)
    assert torch.allclose(total, torch.zeros(2), atol=1e-5)


def test_split_is_seeded_stored_and_checked():
    a = DeltaSplit(10, "random", d_leak=3, seed=7)
    b = DeltaSplit(10, "random", d_leak=3, seed=7)
    assert torch.equal(a.leak_index, b.leak_index)
    subsets = {tuple(DeltaSplit(10, "random", d_leak=3, seed=s).leak_index.tolist()) for s in range(6)}
    assert len(subsets) > 1  # the seed picks the subset
    assert sorted(a.leak_index.tolist() + a.rest_index.tolist()) == list(range(10))
    assert "leak_index" in a.state_dict() and "rest_index" in a.state_dict()
    assert DeltaSplit(7, "interleave", stride=3).leak_index.tolist() == [0, 3, 6]
    x = torch.randn(2, 10)
    assert torch.equal(a.join(a.leak(x), a.rest(x)), x)
    for bad in (0, -1, 10, 11):
        with pytest.raises(ValueError, match="0 < d_leak < L=10"):
            DeltaSplit(10, "random", d_leak=bad)
    with pytest.raises(ValueError, match="stride"):
        DeltaSplit(10, "interleave", stride=1)
    with pytest.raises(ValueError, match="unknown split"):
        DeltaSplit(10, "blocks")


def test_split_survives_a_checkpoint_round_trip():
    spec = make_spec("gaussian", 8)
    m = build_model("delta-rnn", spec, "tiny", d_leak=3, split_seed=5)
    other = build_model("delta-rnn", spec, "tiny", d_leak=3, split_seed=6)
    other.load_state_dict(m.state_dict())
    assert torch.equal(other.delta_split.leak_index, m.delta_split.leak_index)


def test_delta_guide_fits_only_models_with_a_split():
    spec = make_spec("gaussian", 6)
    with pytest.raises(GuideMismatch, match="no δ split"):
        DeltaGuide(build_model("f-srnn", spec, "tiny"))
    with pytest.raises(GuideMismatch, match="no latent"):
        DeltaGuide(build_model("delta-rnn", spec, "tiny"))
    assert build_guide(None, build_model("delta-srnn", spec, "tiny")).name == "delta"
    with pytest.raises(GuideMismatch, match="discrete"):
        DeltaGaussianGuide(build_model("delta-srnn", make_spec("bernoulli", 6), "tiny"))


GAUSSIAN_GUIDES = [g for g in ("delta-gaussian", "mean-field") if g in guide_names()]


@pytest.mark.parametrize("guide_name", GAUSSIAN_GUIDES)
def test_gaussian_guide_gives_a_bound_on_the_marginal_of_xb(guide_name):
    """With q Gaussian, E_q[log p(z, x^b) − log q] ≤ Σ_t log ∫ p(z_t|x_<t) p(x^b_t|z_t, x_<t) dz_t.

    d_leak = 1, so each step's marginal is a 1-D integral, computed by quadrature.
    The Monte Carlo ELBO (Pyro traces) must lie below the exact marginal (and, for
    ``delta-gaussian`` whose q we can evaluate on the grid, agree with the quadrature
    ELBO), and the importance-weighted bound must close most of the gap.
    """
    torch.manual_seed(0)
    spec = make_spec("gaussian", 3)
    model = build_model("delta-srnn", spec, "tiny", d_leak=1, num_components=2)
    guide = build_guide(guide_name, model)
    batch = make_batch("gaussian", L=3, lengths=(6, 4))
    B = batch.batch_size
    with torch.no_grad():
        d = model.features(batch)
        xb = model.delta_split.rest(batch.targets)
        grid = torch.linspace(-20.0, 20.0, 8001)
        dz = 40.0 / 8000
        z = grid.view(-1, 1, 1, 1).expand(-1, B, batch.num_steps, 1)
        log_prior = model.leak_distribution(d).log_prob(z)  # (G, B, T)
        assert torch.allclose(log_prior.logsumexp(0) + math.log(dz), torch.zeros(()), atol=1e-4)  # grid covers p
        log_joint = log_prior + model.rest_distribution(d, z).log_prob(xb)
        exact = ((log_joint.logsumexp(0) + math.log(dz)) * batch.mask).sum(-1)  # (B,)

        K = 4000
        lw = log_weights(model, guide, batch.repeat(K)).reshape(K, B)
        mean, se = lw.mean(0), lw.std(0) / math.sqrt(K)
        iwae = iwae_log_likelihood(model, guide, batch, 4000)
        if guide_name == "delta-gaussian":
            loc, scale = guide.net(torch.cat([d, batch.targets], -1))
            q = torch.distributions.Normal(loc[..., 0], scale[..., 0])
            log_q = q.log_prob(z[..., 0])
            elbo_quad = ((log_q.exp() * (log_joint - log_q)).sum(0) * dz * batch.mask).sum(-1)
            assert torch.all(elbo_quad < exact)
            assert torch.all((mean - elbo_quad).abs() < 4 * se + 1e-3), (mean, elbo_quad, se)
    assert torch.all(mean + 3 * se < exact)
    gap = exact - mean
    assert torch.all(gap > 0.1)  # a real gap: the bound is not the marginal
    assert torch.all((exact - iwae) < 0.5 * gap) and torch.all(iwae < exact + 0.05)


def test_delta_gaussian_guide_trains_a_step():
    spec = make_spec("gaussian", 4)
    model = build_model("delta-srnn", spec, "tiny", d_leak=1)
    guide = build_guide("delta-gaussian", model)
    batch = make_batch("gaussian", L=4)
    loss = Trace_ELBO().differentiable_loss(model, guide, batch)
    loss.backward()
    assert all(p.grad is not None for p in guide.parameters())


def test_binary_latent_accepts_only_binary_proposals():
    import pyro
    import pyro.distributions as dist
    from pyro_srnn.models.base import GUIDES

    model = build_model("delta-srnn", make_spec("bernoulli", 6), "tiny")
    assert model.latent_dim is None  # generic Gaussian guides refuse it
    if "mean-field" in GUIDES:
        with pytest.raises(GuideMismatch):
            build_guide("mean-field", model)
    batch = make_batch("bernoulli", L=6)

    def gaussian_guide(batch, kl_scale=1.0):
        with pyro.plate("sequences", batch.batch_size):
            pyro.sample("z", dist.Normal(torch.zeros(batch.batch_size, batch.num_steps, model.d_leak), 1.0)
                        .to_event(2))

    with pytest.raises(ValueError, match="binary values"):
        Trace_ELBO().loss(model, gaussian_guide, batch)
    assert math.isfinite(Trace_ELBO().loss(model, DeltaGuide(model), batch))
    with pyro.validation_enabled(False):  # a validation check, off with Pyro's (no host sync per step)
        Trace_ELBO().loss(model, gaussian_guide, batch)
