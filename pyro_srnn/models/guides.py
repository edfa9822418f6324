"""Generic guides: swappable posteriors for any latent model whose site ``"z"`` is ``(B, T, d_z)``.

Built from ``model.latent_dim`` and the model's step size only, so one guide serves every
latent model of the zoo (``--guide NAME``)::

    filtering   q(z_t | x_≤t)           f_t = LSTM→(x_t, f_{t-1});  N(μ(f_t), σ(f_t))
    smoothing   q(z_t | z_{t-1}, x_≥t)  a_t = LSTM←(x_t, a_{t+1});
                                        g_t = ½ (tanh(W z_{t-1} + c) + a_t);  N(μ(g_t), σ(g_t))
    mean-field  q(z_t | x)              [f_t, a_t] (bidirectional);  N(μ, σ) independent per step

``filtering`` and ``mean-field`` draw the whole path at once (an eager
:class:`~pyro_srnn.distributions.SequenceNormal`); ``smoothing`` is the structured
"combiner" of Krishnan et al. (2017), path-dependent, sampled by a loop and scored
teacher-forced. ``z_{-1}`` of the smoothing guide is a learned vector (Pyro's DMM example).

Models whose latent path is aligned with another view of the batch (e.g. one latent per
value, ``srnn-flat``) expose ``latent_view(batch)`` and ``view_step_dim``; the guides then
read that view, so they still match the site's shape.

References: Krishnan, Shalit, Sontag, "Structured Inference Networks for Nonlinear State
Space Models", AAAI 2017; Fraccaro et al. 2016; Bayer & Osendorfer 2014 (filtering).
"""
from __future__ import annotations

import pyro
import torch
from pyro import poutine
from torch import nn

from ..distributions import SequenceNormal
from ..nn import BackwardRNN, GaussianLayer
from .base import SequenceGuide, register_guide, sequences_plate

__all__ = ["GenericGuide", "FilteringGuide", "SmoothingGuide", "MeanFieldGuide"]


class GenericGuide(SequenceGuide):
    """Common part: sizes from the model, the view of the batch the latent path follows."""

    def __init__(self, model, hidden: int | None = None, mlp: int | None = None):
        hidden = int(hidden or model.hparams.get("hidden") or 64)
        mlp = int(mlp or model.hparams.get("mlp") or hidden)
        super().__init__(model, hidden=hidden, mlp=mlp)
        self.z_dim = int(model.latent_dim)
        self.view_dim = int(getattr(model, "view_step_dim", model.step_dim))

    @classmethod
    def fits(cls, model):
        problem = super().fits(model)
        if problem:
            return problem
        if not isinstance(getattr(model, "latent_dim", None), int):
            return "the model does not declare an integer latent_dim for its site 'z'"
        return None

    def view(self, batch):
        latent_view = getattr(self.model, "latent_view", None)
        return latent_view(batch) if latent_view is not None else batch

    def sample(self, view, q: SequenceNormal, kl_scale: float) -> None:
        with sequences_plate(view), poutine.scale(scale=kl_scale):
            pyro.sample("z", q)


@register_guide("filtering", "q(z_t|x_≤t): forward LSTM over x_≤t (past and present only), eager")
class FilteringGuide(GenericGuide):
    def __init__(self, model, hidden=None, mlp=None):
        super().__init__(model, hidden, mlp)
        self.rnn = nn.LSTM(self.view_dim, self.hparams["hidden"], batch_first=True)
        self.net = GaussianLayer(self.hparams["hidden"], self.z_dim, self.hparams["mlp"])

    def forward(self, batch, kl_scale: float = 1.0):
        view = self.view(batch)
        f, _ = self.rnn(view.targets)
        loc, scale = self.net(f)
        self.sample(view, SequenceNormal(loc, scale, mask=view.mask), kl_scale)


@register_guide("smoothing", "q(z_t|z_t-1,a_t): backward LSTM over x_≥t, Krishnan's combiner, sequential")
class SmoothingGuide(GenericGuide):
    def __init__(self, model, hidden=None, mlp=None):
        super().__init__(model, hidden, mlp)
        hidden = self.hparams["hidden"]
        self.rnn = BackwardRNN(self.view_dim, hidden)
        self.z_to_hidden = nn.Linear(self.z_dim, hidden)
        self.net = GaussianLayer(hidden, self.z_dim, self.hparams["mlp"])
        self.z_init = nn.Parameter(torch.zeros(self.z_dim))

    def step(self, a_t, z_prev):
        """``(loc, scale)`` of ``z_t`` from ``a_t`` and ``z_{t-1}`` (Krishnan's combiner)."""
        return self.net(0.5 * (torch.tanh(self.z_to_hidden(z_prev)) + a_t))

    def forward(self, batch, kl_scale: float = 1.0):
        view = self.view(batch)
        a = self.rnn(view.targets, view.mask)
        B, T = view.batch_size, view.num_steps
        # modules looked up once, outside the time loop
        z_to_hidden, net, z_init = self.z_to_hidden, self.net, self.z_init

        def step(a_t, z_prev):
            return net(0.5 * (torch.tanh(z_to_hidden(z_prev)) + a_t))

        def sampler():
            z_prev = z_init.expand(B, self.z_dim)
            zs, locs, scales = [], [], []
            for t in range(T):
                loc, scale = step(a[:, t], z_prev)
                z_prev = loc + scale * torch.randn_like(loc)
                zs.append(z_prev)
                locs.append(loc)
                scales.append(scale)
            return torch.stack(zs, 1), torch.stack(locs, 1), torch.stack(scales, 1)

        def params_fn(z):
            return step(a, torch.cat([z_init.expand(B, 1, self.z_dim), z[:, :-1]], 1))

        q = SequenceNormal(params_fn=params_fn, sampler=sampler, shape=(B, T, self.z_dim), mask=view.mask)
        self.sample(view, q, kl_scale)


@register_guide("mean-field", "q(z_t|x): independent per step from a bidirectional LSTM over the chunk")
class MeanFieldGuide(GenericGuide):
    def __init__(self, model, hidden=None, mlp=None):
        super().__init__(model, hidden, mlp)
        hidden = self.hparams["hidden"]
        self.forward_rnn = nn.LSTM(self.view_dim, hidden, batch_first=True)
        self.backward_rnn = BackwardRNN(self.view_dim, hidden)
        self.net = GaussianLayer(2 * hidden, self.z_dim, self.hparams["mlp"])

    def forward(self, batch, kl_scale: float = 1.0):
        view = self.view(batch)
        f, _ = self.forward_rnn(view.targets)
        a = self.backward_rnn(view.targets, view.mask)
        loc, scale = self.net(torch.cat([f, a], -1))
        self.sample(view, SequenceNormal(loc, scale, mask=view.mask), kl_scale)
