"""ELBO estimators and the importance-weighted bound.

* ``trace`` — ``Trace_ELBO``: single-sample Monte Carlo ELBO (the default).
* ``meanfield`` — ``TraceMeanField_ELBO``: the KL of each latent site in closed form
  (for :class:`~pyro_srnn.distributions.SequenceNormal`, the sum over steps of the
  Gaussian KL along the sampled path), the study's estimator.

Both are subclassed only to *record* the reconstruction term of the last particle
(the sum of the observed sites' log densities), so that the trainer can report the
KL = reconstruction − ELBO without tracing twice.
"""
from __future__ import annotations

import math

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

__all__ = ["RecordingTrace_ELBO", "RecordingTraceMeanField_ELBO", "make_elbo", "ESTIMATORS",
           "iwae_log_likelihood", "log_weights"]


class _RecordTerms:
    last_recon: torch.Tensor | None = None

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        recon = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample" and site["is_observed"]:
                recon = recon + site["log_prob_sum"].detach()
        self.last_recon = recon
        return loss, surrogate


class RecordingTrace_ELBO(_RecordTerms, Trace_ELBO):
    """``Trace_ELBO`` that keeps the last reconstruction term in ``last_recon``."""


class RecordingTraceMeanField_ELBO(_RecordTerms, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` that keeps the last reconstruction term in ``last_recon``."""


ESTIMATORS = {"trace": RecordingTrace_ELBO, "meanfield": RecordingTraceMeanField_ELBO}


def make_elbo(name: str = "trace", **kwargs):
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; known: {sorted(ESTIMATORS)}")
    return ESTIMATORS[name](**kwargs)


def _site_log_prob(site) -> torch.Tensor:
    """Per-batch-row log density of a site (its ``batch_shape`` is ``(rows,)``)."""
    lp = site["fn"].log_prob(site["value"])
    if site.get("mask") is not None and site["mask"] is not True:
        lp = lp * site["mask"]
    return lp


def log_weights(model, guide, batch, **kwargs) -> torch.Tensor:
    """``log p(x, z) − log q(z | x)`` per batch row, one ``z`` per row drawn from the guide.

    Scales (KL annealing) are ignored on purpose: this is the unannealed model.
    """
    guide_trace = poutine.trace(guide).get_trace(batch, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch, **kwargs)
    log_w = 0.0
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample":
            log_w = log_w + _site_log_prob(site)
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            log_w = log_w - _site_log_prob(site)
    if not torch.is_tensor(log_w):
        log_w = torch.zeros(batch.batch_size, device=batch.targets.device)
    return log_w


@torch.no_grad()
def iwae_log_likelihood(model, guide, batch, num_samples: int, max_rows: int = 4096) -> torch.Tensor:
    """Importance-weighted estimate of ``log p(x)`` per batch row with ``K = num_samples``.

    ``log (1/K) Σ_k p(x, z_k) / q(z_k | x)``, ``z_k ~ q``: a lower bound on ``log p(x)``
    that tightens as ``K`` grows (Burda et al. 2016; equal in expectation to
    ``-RenyiELBO(alpha=0, num_particles=K)`` per row). The batch is repeated ``K`` times
    along its rows (in slices of at most ``max_rows`` rows), so every model runs its
    usual batched code.
    """
    if num_samples < 1:
        raise ValueError("the IWAE estimate needs K ≥ 1 samples")
    per_slice = max(1, max_rows // max(batch.batch_size, 1))
    pieces = []
    done = 0
    while done < num_samples:
        k = min(per_slice, num_samples - done)
        log_w = log_weights(model, guide, batch.repeat(k))
        pieces.append(log_w.reshape(k, batch.batch_size))
        done += k
    log_w = torch.cat(pieces, dim=0)
    return torch.logsumexp(log_w, dim=0) - math.log(num_samples)
