"""Deep Markov Model (Krishnan, Shalit, Sontag 2017; Pyro's DMM example), and its linear-Gaussian case.

The generative model and its guide::

    z_{-1} = z_init (learned)
    p(z_t | z_{t-1}) = N(μ(z_{t-1}), σ(z_{t-1}))     gated transition
        g = sigmoid(W₂ relu(W₁ z_{t-1})),  h = W₄ relu(W₃ z_{t-1})
        μ = (1 − g) ⊙ (W z_{t-1} + b) + g ⊙ h,   σ = softplus(W_σ relu(h))
    p(x_t | z_t)                                     emitter MLP (two hidden layers) → output head
    q(z_t | z_{t-1}, a_t), a_t backward RNN over x_≥t   the ``smoothing`` guide (Krishnan's combiner)

Unlike the stochastic recurrent networks, the emission sees ``z_t`` only: ``x_<t`` reaches
``x_t`` through the latent chain alone.

``linear=True`` (Gaussian data only) turns it into a linear-Gaussian state-space model
with fixed variances, whose exact log-likelihood is known (Kalman filter,
:meth:`DMM.exact_log_likelihood`)::

    z_t = A z_{t-1} + N(0, σ_z² I),    x_t = C z_t + N(0, σ_x² I)

The latent path is one site ``"z"`` (a path-dependent
:class:`~pyro_srnn.distributions.SequenceNormal`: scored teacher-forced, sampled by a loop)
under ``poutine.scale(kl_scale)``; the chunk is one site ``"x"``.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from ..distributions import SequenceNormal, masked_sequence
from ..heads import make_head
from .base import SequenceModel, register_model, sequences_plate
from .linear_gaussian import kalman_log_likelihood

__all__ = ["DMM", "GatedTransition"]


class GatedTransition(nn.Module):
    """Krishnan et al.'s gated transition ``z_{t-1} → (μ, σ)`` (as in Pyro's DMM example)."""

    def __init__(self, z_dim: int, transition_dim: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(z_dim, transition_dim), nn.ReLU(), nn.Linear(transition_dim, z_dim),
                                  nn.Sigmoid())
        self.proposed_mean = nn.Sequential(nn.Linear(z_dim, transition_dim), nn.ReLU(),
                                           nn.Linear(transition_dim, z_dim))
        self.z_to_loc = nn.Linear(z_dim, z_dim)
        self.sig = nn.Linear(z_dim, z_dim)
        # start as the identity map: the chain initially carries z_{t-1} forward
        nn.init.eye_(self.z_to_loc.weight)
        nn.init.zeros_(self.z_to_loc.bias)

    def forward(self, z_prev):
        gate = self.gate(z_prev)
        proposed = self.proposed_mean(z_prev)
        loc = (1 - gate) * self.z_to_loc(z_prev) + gate * proposed
        scale = F.softplus(self.sig(F.relu(proposed)))
        return loc, scale


@register_model("dmm", "deep Markov model: p(z_t|z_t-1) gated, p(x_t|z_t); linear=True: linear-Gaussian SSM")
class DMM(SequenceModel):
    has_latent = True
    default_guide = "smoothing"
    PRESETS = {
        "tiny": dict(z_dim=4, emission_dim=16, transition_dim=16, hidden=16),
        "small": dict(z_dim=32, emission_dim=64, transition_dim=128, hidden=128),
        # Pyro's DMM example (JSB chorales) for MIDI; the same scale elsewhere
        "midi": dict(z_dim=100, emission_dim=100, transition_dim=200, hidden=600),
        "speech": dict(z_dim=256, emission_dim=512, transition_dim=512, hidden=1024, num_components=1),
        "handwriting": dict(z_dim=32, emission_dim=128, transition_dim=128, hidden=400, num_components=5),
    }

    def __init__(self, spec, z_dim=32, emission_dim=64, transition_dim=128, hidden=128, num_components=None,
                 linear=False, sigma_z=0.5, sigma_x=0.5):
        super().__init__(spec, z_dim=z_dim, emission_dim=emission_dim, transition_dim=transition_dim,
                         hidden=hidden, num_components=num_components, linear=linear, sigma_z=sigma_z,
                         sigma_x=sigma_x)
        self.z_dim, self.linear = z_dim, bool(linear)
        self.z_init = nn.Parameter(torch.zeros(z_dim))
        if self.linear:
            if spec.family != "gaussian":
                raise ValueError(f"dmm: linear=True is a linear-Gaussian model; data {spec.name!r} is "
                                 f"{spec.family!r}, not 'gaussian'")
            if not (sigma_z > 0 and sigma_x > 0):
                raise ValueError("dmm: sigma_z and sigma_x must be > 0")
            self.sigma_z, self.sigma_x = float(sigma_z), float(sigma_x)
            self.A = nn.Linear(z_dim, z_dim, bias=False)
            self.C = nn.Linear(z_dim, spec.step_dim, bias=False)
            nn.init.orthogonal_(self.A.weight, gain=0.9)  # a stable chain to start with
        else:
            self.transition = GatedTransition(z_dim, transition_dim)
            self.emitter = nn.Sequential(nn.Linear(z_dim, emission_dim), nn.ReLU(),
                                         nn.Linear(emission_dim, emission_dim), nn.ReLU())
            self.head = make_head(spec.family, emission_dim, spec.step_dim, num_components)

    @property
    def latent_dim(self) -> int:
        return self.z_dim

    # ---------------------------------------------------------------------- the two factors
    def transition_params(self, z_prev):
        return self.transition_fn()(z_prev)

    def transition_fn(self):
        """``z_{t-1} → (loc, scale)`` with the modules looked up once, outside the time loop."""
        if self.linear:
            A, sigma_z = self.A, self.sigma_z

            def linear(z_prev):
                loc = A(z_prev)
                return loc, torch.full_like(loc, sigma_z)
            return linear
        return self.transition

    def emission(self, z) -> dist.TorchDistribution:
        if self.linear:
            loc = self.C(z)
            return dist.Normal(loc, torch.full_like(loc, self.sigma_x)).to_event(1)
        return self.head(self.emitter(z))

    def prior(self, batch) -> SequenceNormal:
        B, T = batch.batch_size, batch.num_steps
        transition, z_init = self.transition_fn(), self.z_init

        def params_fn(z):
            return transition(torch.cat([z_init.expand(B, 1, self.z_dim), z[:, :-1]], 1))

        def sampler():
            z_prev = z_init.expand(B, self.z_dim)
            zs, locs, scales = [], [], []
            for _ in range(T):
                loc, scale = transition(z_prev)
                z_prev = loc + scale * torch.randn_like(loc)
                zs.append(z_prev)
                locs.append(loc)
                scales.append(scale)
            return torch.stack(zs, 1), torch.stack(locs, 1), torch.stack(scales, 1)

        return SequenceNormal(params_fn=params_fn, sampler=sampler, shape=(B, T, self.z_dim), mask=batch.mask)

    def forward(self, batch, kl_scale: float = 1.0):
        self.check_batch(batch)
        with sequences_plate(batch):
            with poutine.scale(scale=kl_scale):
                z = pyro.sample("z", self.prior(batch))
            pyro.sample("x", masked_sequence(self.emission(z), batch.mask), obs=batch.targets)

    # ---------------------------------------------------------------------- exact, linear only
    def exact_log_likelihood(self, batch) -> torch.Tensor:
        """``log p(x)`` per row by the Kalman filter (``linear=True`` only; masked steps unobserved)."""
        if not self.linear:
            raise ValueError("dmm: the exact log-likelihood is known for linear=True only")
        return kalman_log_likelihood(self.A.weight, self.C.weight, self.sigma_z, self.sigma_x, self.z_init,
                                     batch.targets, batch.mask)

    @torch.no_grad()
    def generate(self, num_sequences, num_steps, first_step=None):
        x = self._first_step(num_sequences, first_step)
        out = [x]
        z = self.z_init.expand(num_sequences, self.z_dim)
        transition = self.transition_fn()
        for _ in range(num_steps - 1):
            loc, scale = transition(z)
            z = loc + scale * torch.randn_like(loc)
            out.append(self.emission(z).sample())
        return torch.stack(out, 1)
