"""ELBO estimators and the importance-weighted bound.

* ``trace`` — ``Trace_ELBO``: single-sample Monte Carlo ELBO (the default).
* ``meanfield`` — ``TraceMeanField_ELBO``: the KL of each latent site in closed form
  (for :class:`~pyro_srnn.distributions.SequenceNormal`, the sum over steps of the
  Gaussian KL along the sampled path), the study's estimator.

Both are subclassed to *record* the reconstruction term of the last particle (the sum of
the observed sites' log densities), so that the trainer can report the KL = reconstruction −
ELBO without tracing twice. Both also keep the loss on the device: Pyro's
``Trace_ELBO.differentiable_loss`` adds up the ELBO's value as Python floats (one ``.item()``
per sample site, one more for the loss; ``TraceMeanField_ELBO`` one per particle and one for
the loss), and on a GPU each ``.item()`` is a host–device synchronisation; here the value is a
detached tensor with the same terms, the gradient comes from the same surrogate, and Pyro's
NaN check of the loss runs only while Pyro's validation is on.
"""
from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import check_fully_reparametrized
from pyro.poutine.util import is_validation_enabled
from pyro.util import warn_if_nan
from torch.distributions import kl_divergence

__all__ = ["RecordingTrace_ELBO", "RecordingTraceMeanField_ELBO", "make_elbo", "ESTIMATORS",
           "iwae_log_likelihood", "log_weights"]


class _RecordTerms:
    last_recon: torch.Tensor | None = None

    def _loss_terms(self, model_trace, guide_trace):
        loss, surrogate = super()._loss_terms(model_trace, guide_trace)
        recon = None
        for site in model_trace.nodes.values():
            if site["type"] == "sample" and site["is_observed"]:
                term = site["log_prob_sum"].detach()
                recon = term if recon is None else recon + term
        self.last_recon = 0.0 if recon is None else recon
        return loss, surrogate


class _DeviceLoss:
    """``differentiable_loss`` of Pyro's ``Trace_ELBO`` with the value kept as a tensor (no ``.item()``).

    ``_loss_terms`` of a particle returns ``(value, surrogate)``; ``value`` is ``None`` when the
    surrogate's value *is* the loss (every guide site reparameterised, the common case here): then
    the surrogate is the loss, and the few tensor operations that would add an equal value back are
    skipped (each is ~5 µs of Python per step, for nothing). ``_differentiable_loss_particle`` keeps
    Pyro's contract, so Pyro's own ``loss`` and ``loss_and_grads`` work unchanged.
    """

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        value, surrogate = self._loss_terms(model_trace, guide_trace)
        return (surrogate.detach() if value is None else value), surrogate

    def differentiable_loss(self, model, guide, *args, **kwargs):
        values, surrogates = [], []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            value, surrogate = self._loss_terms(model_trace, guide_trace)
            values.append(value)
            surrogates.append(surrogate)
        surrogate_loss = _mean(surrogates)
        if is_validation_enabled():
            warn_if_nan(surrogate_loss, "loss")
        if all(v is None for v in values):
            return surrogate_loss
        # the value of the loss, the gradient of the surrogate (as Pyro's Trace_ELBO)
        loss = _mean([s.detach() if v is None else v for v, s in zip(values, surrogates)])
        return loss + (surrogate_loss - surrogate_loss.detach())


def _mean(terms):
    total = _total(terms)
    return total / len(terms) if len(terms) > 1 else total


def _total(terms):
    """The sum of ``terms`` (0.0 when there are none), one addition fewer than starting from 0.0."""
    total = 0.0
    for i, term in enumerate(terms):
        total = term if i == 0 else total + term
    return total


def _as_tensor(total, like_trace):
    """A sum that stayed the number 0 (no sample site) as a tensor on the program's device."""
    if torch.is_tensor(total):
        return total
    for site in like_trace.nodes.values():
        if site["type"] == "sample" and torch.is_tensor(site.get("log_prob_sum")):
            return site["log_prob_sum"].new_tensor(float(total))
    return torch.tensor(float(total))


def _entropy_term_is_log_prob(fn) -> bool:
    """True when the site's entropy term equals its log density: Pyro's default ``score_parts`` of
    a reparameterised distribution, seen through wrappers that transform both terms alike (mask,
    reinterpreted or expanded batch dimensions). Scaled sites (KL annealing) get two equal tensors
    from ``scale_and_mask``, so identity alone would miss them."""
    while isinstance(fn, (dist.Independent, dist.MaskedDistribution, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn.has_rsample and type(fn).score_parts is dist.Distribution.score_parts


class _DeviceTrace_ELBO(_DeviceLoss, Trace_ELBO):
    """``Trace_ELBO`` with the loss's value kept as a tensor (no ``.item()``): the same terms and
    surrogate as Pyro's ``_differentiable_loss_particle``, so the same value and gradients."""

    def _loss_terms(self, model_trace, guide_trace):
        elbo_particle = None  # the ELBO's value, kept apart only once it differs from the surrogate's
        log_r = None
        surrogate_elbo_particle = _total(site["log_prob_sum"] for site in model_trace.nodes.values()
                                         if site["type"] == "sample")
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                log_prob, score_function_term, entropy_term = site["score_parts"]
                if is_identically_zero(score_function_term) and (entropy_term is log_prob
                                                                 or _entropy_term_is_log_prob(site["fn"])):
                    # reparameterised: the surrogate's term has the ELBO's value (Pyro's surrogate term,
                    # not ``log_prob_sum``, whose validation hooks would add two NaN/inf reads)
                    surrogate_elbo_particle = surrogate_elbo_particle - entropy_term.sum()
                    if elbo_particle is not None:
                        elbo_particle = elbo_particle - site["log_prob_sum"].detach()
                    continue
                if elbo_particle is None:
                    elbo_particle = _as_tensor(surrogate_elbo_particle, model_trace).detach()
                elbo_particle = elbo_particle - site["log_prob_sum"].detach()
                if not is_identically_zero(entropy_term):
                    surrogate_elbo_particle = surrogate_elbo_particle - entropy_term.sum()
                if not is_identically_zero(score_function_term):  # not reparameterised: REINFORCE term
                    if log_r is None:
                        log_r = _compute_log_r(model_trace, guide_trace)
                    term = log_r.sum_to(site["cond_indep_stack"])
                    surrogate_elbo_particle = surrogate_elbo_particle + (term * score_function_term).sum()
        surrogate_elbo_particle = _as_tensor(surrogate_elbo_particle, model_trace)
        return (None if elbo_particle is None else -elbo_particle), -surrogate_elbo_particle


class _DeviceTraceMeanField_ELBO(_DeviceLoss, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` with the loss's value kept as a tensor: the same terms as Pyro's
    ``_differentiable_loss_particle`` (the KL in closed form where registered, else the sampled
    log-ratio), so the same value and gradients."""

    def _loss_terms(self, model_trace, guide_trace):
        elbo_particle = 0.0
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample":
                continue
            if model_site["is_observed"]:
                elbo_particle = elbo_particle + model_site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            if is_validation_enabled():
                check_fully_reparametrized(guide_site)
            try:
                kl_qp = kl_divergence(guide_site["fn"], model_site["fn"])
                kl_qp = scale_and_mask(kl_qp, scale=guide_site["scale"], mask=guide_site["mask"])
                if torch.is_tensor(kl_qp):
                    kl_qp_sum = kl_qp.sum()
                else:  # a number: the same KL for every batch element
                    kl_qp_sum = kl_qp * torch.Size(guide_site["fn"].batch_shape).numel()
                elbo_particle = elbo_particle - kl_qp_sum
            except NotImplementedError:
                entropy_term = guide_site["score_parts"].entropy_term
                elbo_particle = elbo_particle + model_site["log_prob_sum"] - entropy_term.sum()
        for name, guide_site in guide_trace.nodes.items():  # auxiliary guide sites
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                assert guide_site["infer"].get("is_auxiliary")
                if is_validation_enabled():
                    check_fully_reparametrized(guide_site)
                elbo_particle = elbo_particle - guide_site["score_parts"].entropy_term.sum()
        return None, -_as_tensor(elbo_particle, model_trace)  # the surrogate's value is the loss


class RecordingTrace_ELBO(_RecordTerms, _DeviceTrace_ELBO):
    """``Trace_ELBO`` that keeps the last reconstruction term in ``last_recon`` and its loss on the device."""


class RecordingTraceMeanField_ELBO(_RecordTerms, _DeviceTraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` that keeps the last reconstruction term in ``last_recon`` and its loss on
    the device."""


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
def iwae_log_likelihood(model, guide, batch, num_samples: int, max_values: int = 2 ** 21) -> torch.Tensor:
    """Importance-weighted estimate of ``log p(x)`` per batch row with ``K = num_samples``.

    ``log (1/K) Σ_k p(x, z_k) / q(z_k | x)``, ``z_k ~ q``: a lower bound on ``log p(x)``
    that tightens as ``K`` grows (Burda et al. 2016; equal in expectation to
    ``-RenyiELBO(alpha=0, num_particles=K)`` per row). The batch is repeated ``K`` times
    along its rows, so every model runs its usual batched code, in slices of at most
    ``max_values`` values (rows × steps × values per step; at least one copy of the batch).
    The budget is in values, not rows, because memory grows with every value: an SRNN-hier
    with 128 units holds about 1 KiB per value, so 4096 rows of 100 × 88 keys would need 36 GiB.
    """
    if num_samples < 1:
        raise ValueError("the IWAE estimate needs K ≥ 1 samples")
    per_slice = max(1, max_values // max(batch.inputs.numel(), 1))
    pieces = []
    done = 0
    while done < num_samples:
        k = min(per_slice, num_samples - done)
        log_w = log_weights(model, guide, batch.repeat(k))
        pieces.append(log_w.reshape(k, batch.batch_size))
        done += k
    log_w = torch.cat(pieces, dim=0)
    return torch.logsumexp(log_w, dim=0) - math.log(num_samples)
