"""Output heads: one module per distribution family, shared by every model and domain.

A head maps features to a distribution over one step ``x_t`` of ``L`` values,
``batch_shape == features.shape[:-1]`` and ``event_shape == (L,)``. Each value
``i`` has ``params_per_value`` raw parameters, so a head is used two ways:

* **fully factorised**: ``head(h)`` projects ``h (..., H)`` to ``(..., L, P)`` with
  one linear layer and returns the product of the per-value densities;
* **autoregressive within the step**: a low-level model (RNN-hier, SRNN-hier)
  computes the raw parameters of value ``i`` from ``x_{t,<i}`` itself and calls
  ``head.distribution(params)`` with ``params (..., L, P)``; the head only turns
  parameters into a density.

Families (SPEC §3):

* :class:`BernoulliHead` — binary values (MIDI keys), logits;
* :class:`GaussianMixtureHead` — independent 1-D Gaussian mixture per value with
  ``k`` components (``k = 1``: diagonal Gaussian). Mixture weights by log-softmax,
  the density scored by :class:`NormalMixture` (sampling through torch's
  ``MixtureSameFamily``). The log-std is floored at ``log_std_min``
  (default −7, i.e. σ ≥ 9e-4; the ref code has no floor), documented here because
  a floor changes the model slightly and avoids infinite densities on silence;
* :class:`HandwritingHead` — ``(pen, dx, dy)``: Bernoulli pen bit and one 1-D
  ``k``-component mixture each for dx and dy. Each value has ``P = 3k`` slots;
  the pen bit reads only the first (the other ``3k − 1`` are ignored), so the
  head is usable by the same low-level models as the others.

``head.value_distribution(params (..., P), i)`` is the 1-D density of value ``i`` alone
(the step density is their product); low-level models sample one value at a time with
it. :class:`SubsetHead` models a fixed subset of a step's positions (the two groups of
the δ-RNN), each value with the family of its position (:func:`make_subset_head`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

import pyro.distributions as dist
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints

__all__ = ["OutputHead", "BernoulliHead", "GaussianMixtureHead", "HandwritingHead", "make_head", "NormalMixture",
           "StepMixture", "SubsetHead", "ProductOfValues", "make_subset_head"]


class OutputHead(nn.Module):
    """Base class: ``L`` values per step, ``params_per_value`` raw parameters each."""

    params_per_value: int = 1

    def __init__(self, in_dim: int | None, step_dim: int):
        super().__init__()
        self.step_dim = step_dim
        self.in_dim = in_dim
        # in_dim None: used only through ``distribution`` (low-level models project themselves)
        self.proj = nn.Linear(in_dim, step_dim * self.params_per_value) if in_dim else None

    def raw(self, h: torch.Tensor) -> torch.Tensor:
        """Features ``(..., H)`` → raw parameters ``(..., L, P)``."""
        return self.proj(h).unflatten(-1, (self.step_dim, self.params_per_value))

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        return self.distribution(self.raw(h))

    def distribution(self, params: torch.Tensor) -> dist.TorchDistribution:  # pragma: no cover
        raise NotImplementedError

    def value_distribution(self, params: torch.Tensor, index: int) -> dist.TorchDistribution:
        """The 1-D density of value ``index`` alone from its raw parameters ``(..., P)``.

        Used by autoregressive low-level models to sample one value at a time;
        ``distribution(params).log_prob(x) == Σ_i value_distribution(params[..., i, :], i).log_prob(x_i)``.
        """
        raise NotImplementedError  # pragma: no cover


class BernoulliHead(OutputHead):
    params_per_value = 1

    def distribution(self, params):
        return dist.Bernoulli(logits=params[..., 0], validate_args=False).to_event(1)

    def value_distribution(self, params, index):
        return dist.Bernoulli(logits=params[..., 0], validate_args=False)


class NormalMixture(TorchDistribution):
    """1-D mixture of ``k`` Normals per position: ``logits``, ``loc``, ``log_scale`` of shape ``(..., k)``.

    The density is ``logsumexp_j [log_softmax(logits)_j + log N(x; loc_j, exp(log_scale_j))]``,
    written with the log-scale (no ``log(exp(·))``) and the weights normalised once. Sampling,
    mean and variance are torch's ``MixtureSameFamily`` (built only when asked for). Scoring
    through ``MixtureSameFamily`` itself takes 1.4× (5 components) to 1.7× (20) as long, forward
    and backward (its ``Categorical`` normalises the logits in two passes, ``log_prob``
    normalises them again, ``Normal`` takes the log of the scale; ``benchmarks/bench_mixture.py``):
    5 % of an F-RNN step with 20 components at 200 values per step.
    """

    arg_constraints = {}
    support = constraints.real
    _HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

    def __init__(self, logits, loc, log_scale, validate_args=False):
        self.log_weights = torch.log_softmax(logits, dim=-1)
        self.loc, self.log_scale = loc, log_scale
        super().__init__(batch_shape=loc.shape[:-1], validate_args=validate_args)

    @classmethod
    def _normalised(cls, log_weights, loc, log_scale):
        new = cls.__new__(cls)
        new.log_weights, new.loc, new.log_scale = log_weights, loc, log_scale
        TorchDistribution.__init__(new, batch_shape=loc.shape[:-1], validate_args=False)
        return new

    def log_prob(self, value):
        z = (value.unsqueeze(-1) - self.loc) * torch.exp(-self.log_scale)
        return torch.logsumexp(self.log_weights - 0.5 * z * z - self.log_scale - self._HALF_LOG_2PI, dim=-1)

    def torch_mixture(self) -> torch.distributions.MixtureSameFamily:
        return torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=self.log_weights, validate_args=False),
            torch.distributions.Normal(self.loc, self.log_scale.exp(), validate_args=False), validate_args=False)

    def sample(self, sample_shape=torch.Size()):
        return self.torch_mixture().sample(sample_shape)

    @property
    def mean(self):
        return self.torch_mixture().mean

    @property
    def variance(self):
        return self.torch_mixture().variance

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.loc.shape[-1:]
        return NormalMixture._normalised(self.log_weights.expand(shape), self.loc.expand(shape),
                                         self.log_scale.expand(shape))


def _mixture(params: torch.Tensor, log_std_min: float) -> dist.TorchDistribution:
    """``params (..., 3k)`` → 1-D Gaussian mixture per position (``batch_shape = params.shape[:-1]``)."""
    logits, loc, log_std = params.chunk(3, dim=-1)
    log_std = log_std.clamp(min=log_std_min)
    if logits.shape[-1] == 1:
        return dist.Normal(loc[..., 0], log_std[..., 0].exp(), validate_args=False)
    return NormalMixture(logits, loc, log_std)


class GaussianMixtureHead(OutputHead):
    def __init__(self, in_dim, step_dim, num_components: int = 1, log_std_min: float = -7.0):
        self.params_per_value = 3 * num_components
        self.num_components = num_components
        self.log_std_min = log_std_min
        super().__init__(in_dim, step_dim)

    def distribution(self, params):
        return _mixture(params, self.log_std_min).to_event(1)

    def value_distribution(self, params, index):
        return _mixture(params, self.log_std_min)


class StepMixture(TorchDistribution):
    """``(pen, dx, dy)`` step density: Bernoulli pen bit × mixture(dx) × mixture(dy)."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 1)

    def __init__(self, pen: dist.TorchDistribution, offsets: dist.TorchDistribution):
        self.pen, self.offsets = pen, offsets  # pen batch (...), offsets batch (..., 2)
        super().__init__(batch_shape=pen.batch_shape, event_shape=torch.Size([3]), validate_args=False)

    def log_prob(self, value):
        return self.pen.log_prob(value[..., 0]) + self.offsets.log_prob(value[..., 1:]).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        pen = self.pen.sample(sample_shape)
        return torch.cat([pen.unsqueeze(-1), self.offsets.sample(sample_shape)], dim=-1)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return StepMixture(self.pen.expand(batch_shape), self.offsets.expand(batch_shape + (2,)))


class HandwritingHead(OutputHead):
    def __init__(self, in_dim, step_dim: int = 3, num_components: int = 5, log_std_min: float = -7.0):
        if step_dim != 3:
            raise ValueError("handwriting steps are (pen, dx, dy): L must be 3")
        self.params_per_value = 3 * num_components
        self.num_components = num_components
        self.log_std_min = log_std_min
        super().__init__(in_dim, step_dim)

    def distribution(self, params):
        pen = dist.Bernoulli(logits=params[..., 0, 0], validate_args=False)
        return StepMixture(pen, _mixture(params[..., 1:, :], self.log_std_min))

    def value_distribution(self, params, index):
        if index == 0:
            return dist.Bernoulli(logits=params[..., 0], validate_args=False)
        return _mixture(params, self.log_std_min)


class ProductOfValues(TorchDistribution):
    """Independent 1-D densities, one per value: batch ``(...)``, event ``(n,)``."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 1)

    def __init__(self, values: list):
        self.values = list(values)
        super().__init__(batch_shape=self.values[0].batch_shape, event_shape=torch.Size([len(self.values)]),
                         validate_args=False)

    def log_prob(self, value):
        return sum(d.log_prob(value[..., j]) for j, d in enumerate(self.values))

    def sample(self, sample_shape=torch.Size()):
        return torch.stack([d.sample(sample_shape) for d in self.values], dim=-1)

    def expand(self, batch_shape, _instance=None):
        return ProductOfValues([d.expand(batch_shape) for d in self.values])


class SubsetHead(OutputHead):
    """The values of a fixed subset ``positions`` of a step, each with its own family.

    For steps whose values differ in type (handwriting: pen bit, dx, dy), a model that
    splits a step into groups (δ-RNN) needs a head over each group; value ``j`` of the
    group is value ``positions[j]`` of the step and uses the step head's
    ``value_distribution`` for that position.
    """

    def __init__(self, in_dim, step_head: OutputHead, positions):
        self.params_per_value = step_head.params_per_value
        super().__init__(in_dim, len(positions))
        self.step_head = step_head
        self.positions = [int(i) for i in positions]

    def distribution(self, params):
        return ProductOfValues([self.step_head.value_distribution(params[..., j, :], i)
                                for j, i in enumerate(self.positions)])

    def value_distribution(self, params, index):
        return self.step_head.value_distribution(params, self.positions[index])


def make_subset_head(family: str, in_dim: int | None, step_dim: int, positions, num_components: int | None = None
                     ) -> OutputHead:
    """A head over the values ``positions`` of an ``L = step_dim`` step (same family per value unless handwriting)."""
    if family != "handwriting":  # every value has the same density family: a plain head of that size
        return make_head(family, in_dim, len(positions), num_components)
    return SubsetHead(in_dim, make_head(family, None, step_dim, num_components), positions)


def make_head(family: str, in_dim: int | None, step_dim: int, num_components: int | None = None) -> OutputHead:
    """The head for a data family (``DataSpec.family``)."""
    if family == "bernoulli":
        return BernoulliHead(in_dim, step_dim)
    if family == "gaussian":
        return GaussianMixtureHead(in_dim, step_dim, num_components or 1)
    if family == "handwriting":
        return HandwritingHead(in_dim, step_dim, num_components or 5)
    raise ValueError(f"unknown output family {family!r}")
