"""Hand-written PyTorch losses: the negative ELBO of each model without Pyro.

Each function ``loss(model, guide, batch, kl_scale) -> scalar`` computes, from the
*same module instances* (same weights) that the Pyro model and guide use, the
summed loss that ``Trace_ELBO()(model, guide)(batch, kl_scale=kl_scale)`` returns:

    loss = −[ log p(x | z) + s · (log p(z) − log q(z | x)) ],   z ~ q(z | x)   (one sample)

(``s`` = KL-annealing scale; for deterministic models there is no ``z`` and the
loss is the exact negative log-likelihood). Densities are written out in plain
torch (``binary_cross_entropy_with_logits``, Gaussian log density, ``logsumexp``
for mixtures), not through ``pyro.distributions``. Random numbers are drawn in the
order the Pyro path draws them (guide first, then model), so with the same torch
seed both paths see the same noise and give the same loss; ``bench_step.py``
asserts that once per model before timing.

``TORCH_LOSSES[(model_name, guide_name)]`` is the registry the benchmark reads; a
registered model without an entry is reported as *missing*.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["TORCH_LOSSES", "head_params", "head_log_prob", "masked_sum", "normal_log_prob"]

LOG_2PI = math.log(2 * math.pi)

TORCH_LOSSES: dict[tuple[str, str], Callable] = {}


def register(model_name: str, guide_name: str = "none"):
    def deco(fn):
        TORCH_LOSSES[(model_name, guide_name)] = fn
        return fn
    return deco


# ---------------------------------------------------------------- building blocks

def normal_log_prob(x, loc, scale):
    """Elementwise log N(x; loc, scale)."""
    return -0.5 * ((x - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI


def _mixture_log_prob(params, x, log_std_min):
    """1-D Gaussian mixture per value: ``params (..., 3k)``, ``x (...)`` → ``(...)``."""
    logits, loc, log_std = params.chunk(3, dim=-1)
    log_std = log_std.clamp(min=log_std_min)
    if logits.shape[-1] == 1:
        return normal_log_prob(x, loc[..., 0], log_std[..., 0].exp())
    # with the log-std at hand, no log(exp(·)): what one writes in plain torch
    z = (x.unsqueeze(-1) - loc) * torch.exp(-log_std)
    return torch.logsumexp(torch.log_softmax(logits, dim=-1) - 0.5 * z * z - log_std - 0.5 * LOG_2PI, dim=-1)


def head_params(head, h):
    """``h (..., H)`` → raw parameters ``(..., L, P)`` through the head's own projection."""
    return head.proj(h).unflatten(-1, (head.step_dim, head.params_per_value))


def head_log_prob(head, params, x):
    """Log density of each step ``x (..., L)`` under the head's family with ``params (..., L, P)`` → ``(...)``."""
    kind = type(head).__name__
    if kind == "BernoulliHead":
        return -F.binary_cross_entropy_with_logits(params[..., 0], x, reduction="none").sum(-1)
    if kind == "GaussianMixtureHead":
        return _mixture_log_prob(params, x, head.log_std_min).sum(-1)
    if kind == "HandwritingHead":
        pen = -F.binary_cross_entropy_with_logits(params[..., 0, 0], x[..., 0], reduction="none")
        return pen + _mixture_log_prob(params[..., 1:, :], x[..., 1:], head.log_std_min).sum(-1)
    raise TypeError(f"no hand-written density for head {kind}")


def latent_mask(mask):
    """Steps whose latent terms count: up to each row's last scored step (holes inside a row count;
    as ``pyro_srnn.distributions.latent_mask``, written out so older package revisions can be timed)."""
    return mask.flip(-1).cumsum(-1).flip(-1) > 0


def masked_sum(step_values, mask):
    """Sum of per-step values ``(B, T)`` over scored steps (padded steps contribute exactly 0)."""
    return torch.where(mask, step_values, torch.zeros_like(step_values)).sum()


def gaussian_params(raw, clamp=8.0):
    loc, logvar = raw.chunk(2, dim=-1)
    return loc.clamp(-clamp, clamp), torch.exp(0.5 * logvar.clamp(-clamp, clamp))


# ---------------------------------------------------------------- models

@register("f-rnn")
def frnn_loss(model, guide, batch, kl_scale=1.0):
    d, _ = model.rnn(batch.inputs)
    lp = head_log_prob(model.head, head_params(model.head, d), batch.targets)
    return -masked_sum(lp, batch.mask)


# ---------------------------------------------------------------- latent models
# Trace_ELBO's single-sample loss, written out:
#   −Σ_scored [ log p(x_t | ·) + s · (log p(z_t | ·) − log q(z_t | ·)) ]   (+ Z-forcing's α·aux)

def _elbo_loss(step_log_px, z, q_loc, q_scale, p_loc, p_scale, mask, kl_scale, extra=0.0):
    log_q = normal_log_prob(z, q_loc, q_scale).sum(-1)
    log_p = normal_log_prob(z, p_loc, p_scale).sum(-1)
    return -(masked_sum(step_log_px, mask) + kl_scale * masked_sum(log_p - log_q, latent_mask(mask)) + extra)


def _reparam(loc, scale):
    return loc + scale * torch.randn_like(loc)


def _srnn_loss(model, guide, batch, kl_scale=1.0):
    """Simplified SRNN (f-srnn, srnn-flat, srnn-hier): all z_t at once; the model's own output density."""
    view = model.latent_view(batch)
    d = model.forward_features(view.inputs) if hasattr(model, "forward_features") else model.forward_rnn(view.inputs)[0]
    q_loc, q_scale = guide.posterior(view, d)
    z = _reparam(q_loc, q_scale)
    p_loc, p_scale = model.prior_net(d)
    o = model.emission(d, z)
    o = o[0] if isinstance(o, tuple) else o
    if hasattr(model, "head") and not hasattr(model, "low_level"):
        step_log_px = head_log_prob(model.head, head_params(model.head, o), view.targets)
    else:  # within-step autoregressive output: the low-level model's density (plain torch.distributions)
        step_log_px = model.output_distribution(o, view).log_prob(view.targets)
    return _elbo_loss(step_log_px, z, q_loc, q_scale, p_loc, p_scale, view.mask, kl_scale)


for _name in ("f-srnn", "srnn-flat", "srnn-hier"):
    register(_name, "srnn-posterior")(_srnn_loss)


@register("storn", "filtering")
def storn_loss(model, guide, batch, kl_scale=1.0):
    f, _ = guide.rnn(batch.targets)
    q_loc, q_scale = guide.net(f)
    z = _reparam(q_loc, q_scale)
    ex = model.phi_x(batch.inputs)
    h, _ = model.rnn(torch.cat([ex, z], -1))
    feats = model.decoder(h)
    step_log_px = head_log_prob(model.head, head_params(model.head, feats), batch.targets)
    zeros = torch.zeros_like(z)
    return _elbo_loss(step_log_px, z, q_loc, q_scale, zeros, torch.ones_like(z), batch.mask, kl_scale)


def _recurrent_latent_loss(model, guide, batch, kl_scale=1.0):
    """VRNN / Z-forcing: z drawn step by step through the model's recurrence v."""
    side = guide.side(batch)
    ex = model.core.phi_x(batch.inputs)
    B, T, _ = ex.shape
    z_prev, state = ex.new_zeros(B, model.z_dim), None
    zs, q_locs, q_scales, vs = [], [], [], []
    for t in range(T):
        v_t, state = model.core.step(ex[:, t], z_prev, state)
        loc, scale = guide.net(torch.cat([v_t, side[:, t]], -1))
        z_prev = _reparam(loc, scale)
        zs.append(z_prev)
        q_locs.append(loc)
        q_scales.append(scale)
        vs.append(v_t)
    z, q_loc, q_scale, v = (torch.stack(a, 1) for a in (zs, q_locs, q_scales, vs))
    p_loc, p_scale = model.prior_net(v)
    feats = model.decoder(torch.cat([v, z], -1))
    step_log_px = head_log_prob(model.head, head_params(model.head, feats), batch.targets)
    extra = 0.0
    if getattr(model, "aux_weight", 0.0) > 0 and model.training:  # Z-forcing's auxiliary cost
        b = model.backward_rnn(batch.targets, batch.mask).detach()
        a_loc, a_scale = model.aux_net(z)
        extra = model.aux_weight * masked_sum(normal_log_prob(b, a_loc, a_scale).sum(-1), batch.mask)
    return _elbo_loss(step_log_px, z, q_loc, q_scale, p_loc, p_scale, batch.mask, kl_scale, extra)


register("vrnn", "vrnn-posterior")(_recurrent_latent_loss)
register("zforcing", "zforcing-posterior")(_recurrent_latent_loss)


@register("srnn-fraccaro", "srnn-fraccaro-posterior")
def fraccaro_loss(model, guide, batch, kl_scale=1.0):
    d = model.forward_rnn(batch.inputs)[0]
    a = guide.backward_rnn(torch.cat([batch.targets, d], -1), batch.mask)
    B, T = batch.batch_size, batch.num_steps
    z_prev = d.new_zeros(B, model.z_dim)
    zs, q_locs, q_scales, p_locs, p_scales = [], [], [], [], []
    for t in range(T):
        p_loc, p_scale = model.prior_net(torch.cat([d[:, t], z_prev], -1))
        loc, scale = guide.net(torch.cat([a[:, t], z_prev], -1))
        loc = p_loc + loc  # posterior mean = prior mean + correction
        z_prev = _reparam(loc, scale)
        zs.append(z_prev)
        q_locs.append(loc)
        q_scales.append(scale)
        p_locs.append(p_loc)
        p_scales.append(p_scale)
    z, q_loc, q_scale, p_loc, p_scale = (torch.stack(x, 1) for x in (zs, q_locs, q_scales, p_locs, p_scales))
    feats = model.decoder(torch.cat([d, z], -1))
    step_log_px = head_log_prob(model.head, head_params(model.head, feats), batch.targets)
    return _elbo_loss(step_log_px, z, q_loc, q_scale, p_loc, p_scale, batch.mask, kl_scale)


@register("dmm", "smoothing")
def dmm_loss(model, guide, batch, kl_scale=1.0):
    a = guide.rnn(batch.targets, batch.mask)
    B, T = batch.batch_size, batch.num_steps
    z_prev = guide.z_init.expand(B, guide.z_dim)
    zs, q_locs, q_scales = [], [], []
    for t in range(T):
        loc, scale = guide.step(a[:, t], z_prev)
        z_prev = _reparam(loc, scale)
        zs.append(z_prev)
        q_locs.append(loc)
        q_scales.append(scale)
    z, q_loc, q_scale = (torch.stack(x, 1) for x in (zs, q_locs, q_scales))
    p_loc, p_scale = model.transition_params(torch.cat([model.z_init.expand(B, 1, model.z_dim), z[:, :-1]], 1))
    if model.linear:
        step_log_px = normal_log_prob(batch.targets, model.C(z), torch.tensor(model.sigma_x)).sum(-1)
    else:
        feats = model.emitter(z)
        step_log_px = head_log_prob(model.head, head_params(model.head, feats), batch.targets)
    return _elbo_loss(step_log_px, z, q_loc, q_scale, p_loc, p_scale, batch.mask, kl_scale)


# ---------------------------------------------------------------- autoregressive baselines

@register("rnn-flat")
def rnn_flat_loss(model, guide, batch, kl_scale=1.0):
    from pyro_srnn.models.lowlevel import flat_inputs

    B, T, L = batch.targets.shape
    prev = flat_inputs(batch.inputs, batch.targets).reshape(B, T * L)
    h = model._run(model._flat_rnn_inputs(prev))
    step_log_px = head_log_prob(model.head, model._params(h, B, T), batch.targets)
    return -masked_sum(step_log_px, batch.mask)


@register("rnn-hier")
def rnn_hier_loss(model, guide, batch, kl_scale=1.0):
    d = model.rnn(batch.inputs)[0]
    step_log_px = head_log_prob(model.low_level.head, model.low_level.params(d, batch.targets), batch.targets)
    return -masked_sum(step_log_px, batch.mask)


def _delta_terms(model, batch):
    """``(log p(x^a_t | x_<t), log p(x^b_t | x^a_t, x_<t))`` per step, from the model's two heads."""
    d = model.rnn(batch.inputs)[0]
    xa, xb = model.delta_split.leak(batch.targets), model.delta_split.rest(batch.targets)
    leak = model.leak_distribution(d).log_prob(xa)
    rest = model.rest_distribution(d, xa).log_prob(xb)
    return leak, rest


@register("delta-rnn")
def delta_rnn_loss(model, guide, batch, kl_scale=1.0):
    leak, rest = _delta_terms(model, batch)
    return -masked_sum(leak + rest, batch.mask)


@register("delta-srnn", "delta")
def delta_srnn_loss(model, guide, batch, kl_scale=1.0):
    """δ guide: z = x^a, log q = 0, so the ELBO is s·log p(x^a | ·) + log p(x^b | x^a, ·) (Proposition 1)."""
    leak, rest = _delta_terms(model, batch)
    return -(kl_scale * masked_sum(leak, batch.mask) + masked_sum(rest, batch.mask))
