"""The linear DMM is a linear-Gaussian state-space model: its log-likelihood is known exactly.

* the Kalman filter equals the brute-force joint Gaussian density;
* with the exact posterior as guide every importance weight equals p(x): the model's
  Pyro density (site "z" + site "x") is exactly the state-space model's;
* every guide's ELBO lies below log p(x); the IWAE estimate rises towards it as K grows
  (1, 10, 100) and agrees with ``RenyiELBO(alpha=0)``.
"""
from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import MultivariateNormal, constraints

from conftest import make_spec
from pyro_srnn.data import chunk_sequences, collate
from pyro_srnn.infer import iwae_log_likelihood, log_weights
from pyro_srnn.models import build_guide, build_model
from pyro_srnn.models.linear_gaussian import joint_gaussian_log_likelihood, kalman_log_likelihood

L, D_Z, SIGMA_Z, SIGMA_X = 3, 2, 0.7, 0.4



def linear_dmm():
    model = build_model("dmm", make_spec("gaussian", L), "tiny", linear=True, z_dim=D_Z, sigma_z=SIGMA_Z,
                        sigma_x=SIGMA_X)
    with torch.no_grad():
        model.C.weight.normal_(0.0, 1.0)
        model.z_init.copy_(torch.tensor([0.5, -1.0]))
    return model


def data_from(model, lengths=(7, 5, 3)):
    """A ragged batch drawn from the model itself (so the posterior is informative)."""
    x = model.generate(len(lengths), max(lengths) + 1)
    seqs = [x[i, : n + 1].numpy() for i, n in enumerate(lengths)]
    return collate(chunk_sequences(seqs, None, step_dim=L))


class ExactPosteriorPath(TorchDistribution):
    """p(z | x) of the linear model as a distribution over the path ``(B, T, d)``.

    Brute force from the joint Gaussian, row by row over the row's steps up to its last scored one;
    an unscored step inside them (a hole, as stream batching makes) is an unobserved ``x_t`` whose
    ``z_t`` is still a latent; the trailing padding is 0 (not scored by model or guide).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, model, batch):
        A = model.A.weight.detach().double()
        C = model.C.weight.detach().double()
        z0 = model.z_init.detach().double()
        self.rows: list[tuple[int, MultivariateNormal]] = []
        for b in range(batch.batch_size):
            observed = batch.mask[b]
            n = int(observed.nonzero().max()) + 1
            powers = [torch.eye(D_Z, dtype=torch.float64)]
            for _ in range(n):
                powers.append(A @ powers[-1])
            mean_z = torch.cat([powers[t + 1] @ z0 for t in range(n)])
            G = torch.zeros(n * D_Z, n * D_Z, dtype=torch.float64)
            for t in range(n):
                for s in range(t + 1):
                    G[t * D_Z:(t + 1) * D_Z, s * D_Z:(s + 1) * D_Z] = powers[t - s]
            prior_prec = torch.linalg.inv(SIGMA_Z ** 2 * G @ G.T)
            CC = torch.block_diag(*[C if observed[t] else torch.zeros_like(C) for t in range(n)])
            cov = torch.linalg.inv(prior_prec + CC.T @ CC / SIGMA_X ** 2)
            x = batch.targets[b, :n].double().reshape(-1)
            # posterior mean Σ (Σ_z⁻¹ μ_z + Cᵀ x / σ_x²)
            mean = (prior_prec @ mean_z + x @ CC / SIGMA_X ** 2) @ cov
            self.rows.append((n, MultivariateNormal(mean, covariance_matrix=cov)))
        self.T = batch.num_steps
        super().__init__(batch_shape=torch.Size([batch.batch_size]), event_shape=torch.Size([self.T, D_Z]),
                         validate_args=False)

    def rsample(self, sample_shape=torch.Size()):
        z = torch.zeros(self.batch_shape[0], self.T, D_Z)
        for b, (n, mvn) in enumerate(self.rows):
            z[b, :n] = mvn.rsample().reshape(n, D_Z).float()
        return z

    def log_prob(self, value):
        lp = torch.zeros(self.batch_shape[0], dtype=torch.float64)
        for b, (n, mvn) in enumerate(self.rows):
            lp[b] = mvn.log_prob(value[b, :n].double().reshape(-1))
        return lp.float()


def exact_posterior_guide(model):
    def guide(batch, kl_scale=1.0):
        with pyro.plate("sequences", batch.batch_size), pyro.poutine.scale(scale=kl_scale):
            pyro.sample("z", ExactPosteriorPath(model, batch))
    return guide


def test_kalman_filter_equals_the_joint_gaussian_density():
    torch.manual_seed(1)
    A = 0.8 * torch.linalg.qr(torch.randn(D_Z, D_Z, dtype=torch.float64))[0]
    C = torch.randn(L, D_Z, dtype=torch.float64)
    z0 = torch.randn(D_Z, dtype=torch.float64)
    x = torch.randn(3, 5, L, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    kalman = kalman_log_likelihood(A, C, SIGMA_Z, SIGMA_X, z0, x, mask)
    for b, n in enumerate(mask.sum(1).tolist()):
        brute = joint_gaussian_log_likelihood(A, C, SIGMA_Z, SIGMA_X, z0, x[b, :n])
        assert torch.allclose(kalman[b], brute, atol=1e-9, rtol=0), (b, kalman[b], brute)
    # a different model gives a different value (the comparison can fail)
    other = joint_gaussian_log_likelihood(A, C, SIGMA_Z, 2 * SIGMA_X, z0, x[0])
    assert abs(float(other - kalman[0])) > 1e-3


def test_model_density_with_the_exact_posterior_gives_exact_weights():
    model = linear_dmm()
    batch = data_from(model)
    exact = model.exact_log_likelihood(batch).detach()
    guide = exact_posterior_guide(model)
    for _ in range(3):  # log p(x, z) - log p(z | x) = log p(x) for every z
        assert torch.allclose(log_weights(model, guide, batch), exact, atol=2e-3, rtol=0)
    assert torch.allclose(iwae_log_likelihood(model, guide, batch, 10), exact, atol=2e-3, rtol=0)
    renyi = -RenyiELBO(alpha=0, num_particles=4).loss(model, guide, batch)
    assert math.isclose(renyi, float(exact.sum()), abs_tol=5e-3)
    trace = -Trace_ELBO().loss(model, guide, batch)
    assert math.isclose(trace, float(exact.sum()), abs_tol=5e-3)


def test_a_hole_in_the_mask_keeps_its_latent_in_the_density():
    """Stream batching leaves the first target of each joined sequence unscored: a hole inside a row.
    Its ``x_t`` is unobserved but its ``z_t`` still links the steps around it, so the model's and the
    guide's density of the path keep it: with the exact posterior (the hole's observation missing)
    every importance weight is the Kalman log-likelihood with that observation missing."""
    model = linear_dmm()
    batch = data_from(model, lengths=(7, 6, 4))
    batch.mask[0, 2] = batch.mask[1, 0] = batch.mask[2, 1] = False  # holes (row 2's also before its padding)
    exact = model.exact_log_likelihood(batch).detach()
    guide = exact_posterior_guide(model)
    for _ in range(3):
        assert torch.allclose(log_weights(model, guide, batch), exact, atol=2e-3, rtol=0)
    trace = -Trace_ELBO().loss(model, guide, batch)
    assert math.isclose(trace, float(exact.sum()), abs_tol=5e-3)


@pytest.mark.parametrize("guide_name", ["smoothing", "filtering", "mean-field"])
def test_every_guide_elbo_lies_below_the_exact_log_likelihood(guide_name):
    model = linear_dmm()
    batch = data_from(model)
    exact = model.exact_log_likelihood(batch).detach()
    guide = build_guide(guide_name, model)
    n = 200
    with torch.no_grad():
        lw = log_weights(model, guide, batch.repeat(n)).reshape(n, batch.batch_size)
    mean, se = lw.mean(0), lw.std(0) / math.sqrt(n)
    assert torch.all(mean <= exact + 3 * se), (mean, se, exact)
    # Trace_ELBO and TraceMeanField_ELBO estimate the same ELBO (sum over rows)
    reps = 40
    trace = np.mean([-Trace_ELBO().loss(model, guide, batch) for _ in range(reps)])
    meanfield = [-TraceMeanField_ELBO().loss(model, guide, batch) for _ in range(reps)]
    total, total_se = float(mean.sum()), float(lw.sum(1).std() / math.sqrt(n))
    assert float(np.mean(meanfield)) <= float(exact.sum()) + 3 * np.std(meanfield) / math.sqrt(reps)
    assert abs(trace - total) < 4 * (total_se + float(lw.sum(1).std()) / math.sqrt(reps))
    assert abs(np.mean(meanfield) - total) < 4 * (total_se + np.std(meanfield) / math.sqrt(reps))


def test_iwae_rises_towards_the_exact_log_likelihood_and_matches_renyi():
    model = linear_dmm()
    batch = data_from(model, lengths=(5, 4, 3))
    exact = model.exact_log_likelihood(batch).detach()
    # a briefly trained smoothing guide (model fixed), so K = 100 gets close
    guide = build_guide("smoothing", model)
    optim = torch.optim.Adam(guide.parameters(), lr=5e-2)
    loss_fn = Trace_ELBO()(model, guide)
    for _ in range(150):
        optim.zero_grad()
        loss_fn(batch).backward()
        optim.step()
    reps = 10
    with torch.no_grad():
        est = {k: torch.stack([iwae_log_likelihood(model, guide, batch, k) for _ in range(reps)]) for k in (1, 10, 100)}
    means = {k: float(v.sum(1).mean()) for k, v in est.items()}
    ses = {k: float(v.sum(1).std()) / math.sqrt(reps) for k, v in est.items()}
    total = float(exact.sum())
    assert means[1] < means[10] < means[100] <= total + 3 * ses[100], (means, total)
    assert total - means[100] < 0.25 * (total - means[1]), (means, total)
    assert total - means[100] < 1.0
    renyi = [-RenyiELBO(alpha=0, num_particles=10).loss(model, guide, batch) for _ in range(reps)]
    spread = 4 * (ses[10] + np.std(renyi) / math.sqrt(reps))
    assert abs(np.mean(renyi) - means[10]) < spread, (np.mean(renyi), means[10])
