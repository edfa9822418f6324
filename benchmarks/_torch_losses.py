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
    scale = log_std.clamp(min=log_std_min).exp()
    if logits.shape[-1] == 1:
        return normal_log_prob(x, loc[..., 0], scale[..., 0])
    comp = normal_log_prob(x.unsqueeze(-1), loc, scale)
    return torch.logsumexp(torch.log_softmax(logits, dim=-1) + comp, dim=-1)


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
