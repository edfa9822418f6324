r"""Proposition 1 of Dai et al. (2019) made explicit: δ-RNN, and the same model as an SRNN.

Split every step into two fixed groups of values, ``x_t = (x^a_t, x^b_t)``: ``x^a_t`` a
fixed random subset of ``d_leak`` values (``split="random"``, drawn once from
``split_seed`` and stored as a buffer, so it travels in the checkpoint) or every
``stride``-th value (``split="interleave"``, ``x^a_t = x_{t,0}, x_{t,k}, x_{t,2k}, …``).

**δ-RNN** (deterministic, exact likelihood; ``rnn_random.py`` / ``rnn_interleave.py`` of the ref code):

    d_t = LSTM(e(x_{t-1}), d_{t-1})
    p(x_t | x_<t) = p(x^a_t | d_t) · p(x^b_t | g([d_t, x^a_t]))

with ``g`` a two-layer MLP (no bias, LayerNorm, ReLU) and fully factorised heads on both
groups.

**δ-SRNN** is the same joint written as an SRNN whose latent is ``z_t = x^a_t``:

    prior      p(z_t | x_<t)        = p(x^a_t = z_t | d_t)              site "z", (B, T, d_leak)
    emission   p(x^b_t | z_t, x_<t) = p(x^b_t | g([d_t, z_t]))          site "x", over x^b only

With the delta posterior ``q(z_t | x) = δ(z_t − x^a_t)`` (:class:`DeltaGuide`, guide
``"delta"``), ``log q = 0`` and the single-sample ELBO is, term by term,

    Σ_t log p(x^a_t | x_<t) + log p(x^b_t | x^a_t, x_<t)  =  log p_δ-RNN(x)

exactly (no expectation left: the Delta has one value). ``tests/test_delta.py`` checks
this equality to 1e-5 relative, and the equality of the gradients, for both splits.

With any other posterior (e.g. the Gaussian guide ``"delta-gaussian"``), ``x^a`` is no
longer read from the data by the guide: the model is a latent-variable model over
``x^b`` alone and ``ELBO ≤ Σ_t log ∫ p(z_t | x_<t) p(x^b_t | z_t, x_<t) dz_t`` (Jensen),
the log-likelihood of ``x^b`` with ``x^a_t`` marginalised (the step-``t`` integrals
factorise because ``z_t`` only enters step ``t``; ``d_t`` reads the observed steps
``x_<t``). The test computes that marginal by quadrature for ``d_leak = 1`` and checks
the bound, and that the importance-weighted bound closes the gap.

The Gaussian guide needs real-valued steps (``family="gaussian"``): for MIDI the latent
``z_t = x^a_t`` is binary and only the delta guide applies.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import is_validation_enabled
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn
from torch.distributions import constraints

from ..distributions import masked_sequence
from ..heads import make_subset_head
from ..nn import ForwardRNN, GaussianLayer
from .base import SequenceGuide, SequenceModel, register_guide, register_model, sequences_plate

__all__ = ["DeltaSplit", "DeltaRNN", "DeltaSRNN", "DeltaGuide", "DeltaGaussianGuide", "TwoGroupStep"]

SPLITS = ("random", "interleave")


class DeltaSplit(nn.Module):
    """The fixed partition of a step's ``L`` positions into ``x^a`` (leak) and ``x^b`` (rest).

    Indices are buffers (saved in checkpoints); ``random`` draws ``d_leak`` positions from
    a generator seeded by ``seed`` (sorted), ``interleave`` takes positions ``0, k, 2k, …``.
    """

    def __init__(self, step_dim: int, split: str = "random", d_leak: int | None = None, stride: int = 2,
                 seed: int = 0):
        super().__init__()
        L = step_dim
        if split == "random":
            d_leak = L // 4 if d_leak is None else int(d_leak)
            if not 0 < d_leak < L:
                raise ValueError(f"δ split: d_leak must satisfy 0 < d_leak < L={L} (both groups non-empty), "
                                 f"got d_leak={d_leak}")
            perm = torch.randperm(L, generator=torch.Generator().manual_seed(int(seed)))
            leak = perm[:d_leak].sort().values
        elif split == "interleave":
            stride = int(stride)
            if not 2 <= stride <= L:
                raise ValueError(f"δ split: interleave stride must satisfy 2 ≤ stride ≤ L={L}, got {stride}")
            leak = torch.arange(0, L, stride)
        else:
            raise ValueError(f"δ split: unknown split {split!r}; choose one of {SPLITS}")
        is_leak = torch.zeros(L, dtype=torch.bool)
        is_leak[leak] = True
        self.register_buffer("leak_index", leak.long())
        self.register_buffer("rest_index", torch.arange(L)[~is_leak])
        self.split = split
        self.step_dim = L

    @property
    def d_leak(self) -> int:
        return self.leak_index.numel()

    def leak(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.leak_index)

    def rest(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.rest_index)

    def join(self, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        x = xa.new_empty(*xa.shape[:-1], self.step_dim)
        x[..., self.leak_index] = xa
        x[..., self.rest_index] = xb
        return x


class TwoGroupStep(TorchDistribution):
    """``p(x_t) = p(x^a_t) p(x^b_t | x^a_t)``: batch ``(B, T)``, event ``(L,)``.

    ``rest_fn(xa)`` returns the distribution of ``x^b`` given the ``x^a`` it is passed
    (teacher-forced when scoring, ancestral when sampling).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 1)

    def __init__(self, leak_dist, rest_fn, split: DeltaSplit):
        self.leak_dist, self.rest_fn, self.split = leak_dist, rest_fn, split
        super().__init__(batch_shape=leak_dist.batch_shape, event_shape=torch.Size([split.step_dim]),
                         validate_args=False)

    def log_prob(self, value):
        xa = self.split.leak(value)
        return self.leak_dist.log_prob(xa) + self.rest_fn(xa).log_prob(self.split.rest(value))

    def sample(self, sample_shape=torch.Size()):
        if sample_shape != torch.Size():
            raise NotImplementedError("TwoGroupStep samples one step per batch element")
        xa = self.leak_dist.sample()
        return self.split.join(xa, self.rest_fn(xa).sample())


class _DeltaBase(SequenceModel):
    """Modules shared by δ-RNN and δ-SRNN (same parameter names, so weights transfer)."""

    PRESETS = {
        "tiny": dict(hidden=16, num_layers=1, embed=16, dropout=0.0),
        "small": dict(hidden=256, num_layers=1, embed=128, dropout=0.0),
        # study (SPEC §6, ref code rnn_random): the F-RNN trunk + δ split, d_leak = L/4.
        # speech 2-layer LSTM 750, embedding 512, 20 components, d_leak 50 (18.57M);
        # MIDI LSTM 256, embedding 256, d_leak 11 (0.71M); no handwriting δ-RNN in the study:
        # the F-RNN trunk of handwriting with the pen bit as x^a (interleave, stride 3)
        "speech": dict(hidden=750, num_layers=2, embed=512, dropout=0.0, num_components=20, d_leak=50),
        "midi": dict(hidden=256, num_layers=1, embed=256, dropout=0.5, d_leak=11),
        "handwriting": dict(hidden=256, num_layers=2, embed=128, dropout=0.5, num_components=5,
                            split="interleave", stride=3),
    }

    def __init__(self, spec, hidden=256, num_layers=1, embed=None, dropout=0.0, num_components=None,
                 split="random", d_leak=None, stride=2, split_seed=0):
        super().__init__(spec, hidden=hidden, num_layers=num_layers, embed=embed, dropout=dropout,
                         num_components=num_components, split=split, d_leak=d_leak, stride=stride,
                         split_seed=split_seed)
        self.delta_split = DeltaSplit(spec.step_dim, split, d_leak, stride, split_seed)
        da = self.delta_split.d_leak
        self.rnn = ForwardRNN(spec.step_dim, hidden, num_layers, embed=embed, dropout=dropout)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        L = spec.step_dim
        self.leak_head = make_subset_head(spec.family, hidden, L, self.delta_split.leak_index.tolist(),
                                          num_components)
        self.rest_net = nn.Sequential(
            nn.Linear(hidden + da, hidden, bias=False), nn.LayerNorm(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden, bias=False), nn.LayerNorm(hidden), nn.ReLU(),
        )
        self.rest_head = make_subset_head(spec.family, hidden, L, self.delta_split.rest_index.tolist(),
                                          num_components)

    @property
    def d_leak(self) -> int:
        return self.delta_split.d_leak

    # ------------------------------------------------------------------ the two factors
    def features(self, batch) -> torch.Tensor:
        """``d_t`` for every step, ``(B, T, H)`` (computed once per batch)."""
        return self.shared(batch, "d", lambda: self.rnn(batch.inputs)[0])

    def leak_distribution(self, d: torch.Tensor):
        """``p(x^a_t | x_<t)``: batch ``d.shape[:-1]``, event ``(d_leak,)``."""
        return self.leak_head(self.drop(d))

    def rest_distribution(self, d: torch.Tensor, xa: torch.Tensor):
        """``p(x^b_t | x^a_t, x_<t)``: batch ``broadcast(d, xa).shape[:-1]``, event ``(L − d_leak,)``."""
        shape = torch.broadcast_shapes(d.shape[:-1], xa.shape[:-1])  # e.g. a grid of x^a values
        d, xa = d.expand(*shape, d.shape[-1]), xa.expand(*shape, xa.shape[-1])
        return self.rest_head(self.drop(self.rest_net(torch.cat([d, xa], dim=-1))))

    def sample_step(self, d: torch.Tensor) -> torch.Tensor:
        """``x_t`` from ``d_t``: ``x^a_t ~ p(x^a | d_t)``, then ``x^b_t ~ p(x^b | x^a_t, d_t)``."""
        xa = self.leak_distribution(d).sample()
        return self.delta_split.join(xa, self.rest_distribution(d, xa).sample())

    def generate(self, num_sequences, num_steps, first_step=None):
        return self.generate_by_steps(self.rnn, self.sample_step, num_sequences, num_steps, first_step)


@register_model("delta-rnn", "Proposition 1 as an RNN: p(x_t|x_<t) = p(x^a_t|x_<t) p(x^b_t|x^a_t, x_<t), "
                             "x^a a fixed random subset (or every k-th value)")
class DeltaRNN(_DeltaBase):
    def step_distribution(self, batch) -> TwoGroupStep:
        """``p(x_t | x_<t)`` of every step of the batch: batch ``(B, T)``, event ``(L,)``."""
        d = self.features(batch)
        return TwoGroupStep(self.leak_distribution(d), lambda xa: self.rest_distribution(d, xa), self.delta_split)

    def forward(self, batch, kl_scale: float = 1.0):
        self.check_batch(batch)
        self.observe_chunk(batch, self.step_distribution(batch))


@register_model("delta-srnn", "the δ-RNN written as an SRNN with latent z_t = x^a_t: prior p(z_t|x_<t), "
                              "emission p(x^b_t|z_t, x_<t); exact with the delta guide")
class DeltaSRNN(_DeltaBase):
    has_latent = True
    default_guide = "delta"

    @property
    def latent_dim(self) -> int | None:
        """``d_leak`` for real-valued steps. ``None`` when ``z = x^a`` has binary values (MIDI, pen bit):
        generic Gaussian guides then refuse the model, and only the delta guide serves it."""
        if self.spec.family != "gaussian":
            return None
        return self.d_leak

    def forward(self, batch, kl_scale: float = 1.0):
        self.check_batch(batch)
        d = self.features(batch)
        with sequences_plate(batch):
            with poutine.scale(scale=kl_scale):
                z = pyro.sample("z", masked_sequence(self.leak_distribution(d), batch.mask))
            self._check_binary_latent(z)
            pyro.sample("x", masked_sequence(self.rest_distribution(d, z), batch.mask),
                        obs=self.delta_split.rest(batch.targets))

    def _check_binary_latent(self, z: torch.Tensor) -> None:
        """Binary positions of ``z`` must hold 0/1 (a Gaussian guide on binary data is a modelling error).

        A validation check like Pyro's own (it reads a tensor back: on a GPU a synchronisation), so
        it runs only while Pyro's validation is on (by default the trainer's first step and first
        validation pass: ``--pyro-validation first``).
        """
        if self.spec.family == "gaussian" or not is_validation_enabled():
            return
        binary = z if self.spec.family == "bernoulli" else z[..., self.delta_split.leak_index == 0]
        if not bool(((binary == 0) | (binary == 1)).all()):
            raise ValueError(f"{self.name}: the latent z = x^a of {self.spec.family!r} data has binary values, "
                             "but the guide proposed others; use the delta guide")


def _split_of(model):
    return getattr(model, "delta_split", None)


@register_guide("delta", "q(z_t|x) = δ(z_t − x^a_t): copies the leak group of the current step (Proposition 1)")
class DeltaGuide(SequenceGuide):
    """The delta posterior of Proposition 1. ``log q = 0``, so the ELBO is the δ-RNN likelihood; training
    does not anneal it (scaling the ``z`` site would down-weight ``log p(x^a_t | x_<t)``, part of the
    likelihood, and train another objective than the δ-RNN's)."""

    anneals = False

    @classmethod
    def fits(cls, model):
        problem = super().fits(model)
        if problem:
            return problem
        if not isinstance(_split_of(model), DeltaSplit):
            return "the delta guide copies x^a_t into z_t; the model has no δ split (delta_split buffer)"
        return None

    def forward(self, batch, kl_scale: float = 1.0):
        xa = self.model.delta_split.leak(batch.targets)
        xa = xa * batch.mask.unsqueeze(-1)  # padded steps: a fixed value (their prior term is masked)
        with sequences_plate(batch):
            with poutine.scale(scale=kl_scale):
                pyro.sample("z", dist.Delta(xa, event_dim=2))


@register_guide("delta-gaussian", "q(z_t|x) = N(μ, σ)([d_t, x_t]) for the δ-SRNN: a proper posterior, "
                                  "so the ELBO only bounds log p(x^b) with x^a marginalised")
class DeltaGaussianGuide(SequenceGuide):
    """A diagonal Gaussian posterior for δ-SRNN: ``q(z_t | x) = N(μ_t, σ_t)``, ``(μ_t, σ_t) = f([d_t, x_t])``.

    Steps are independent given the data (mean-field over time), ``f`` is an MLP.
    """

    def __init__(self, model, hidden: int | None = None):
        super().__init__(model, hidden=hidden)
        H = model.hparams["hidden"]
        self.net = GaussianLayer(H + model.step_dim, model.latent_dim, hidden or H)

    @classmethod
    def fits(cls, model):
        problem = super().fits(model)
        if problem:
            return problem
        if not isinstance(_split_of(model), DeltaSplit):
            return "it is written for the δ-SRNN (a model with a delta_split)"
        if model.spec.family != "gaussian":
            return f"a Gaussian posterior needs real-valued steps; the latent of {model.spec.family!r} data is discrete"
        return None

    def forward(self, batch, kl_scale: float = 1.0):
        d = self.model.features(batch)
        loc, scale = self.net(torch.cat([d, batch.targets], dim=-1))
        with sequences_plate(batch):
            with poutine.scale(scale=kl_scale):
                pyro.sample("z", masked_sequence(dist.Normal(loc, scale).to_event(1), batch.mask))
