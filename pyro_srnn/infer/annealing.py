"""KL annealing schedules: step → scale applied with ``poutine.scale`` to the latent sites.

The study raises the weight of the KL term from 0.2 by a fixed increment per update
(5e-5; MIDI 1e-4) up to 1 (Goyal et al. 2017). Pyro's ``poutine.scale`` refuses a scale
≤ 0, so every schedule starts above 0. Any callable ``step -> float`` in (0, 1] works.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LinearAnnealing", "ConstantScale", "SigmoidAnnealing", "make_schedule", "SCHEDULES"]


def _check(value: float) -> float:
    if not value > 0:
        raise ValueError(f"a KL scale must be > 0 (poutine.scale refuses {value})")
    return value


@dataclass(frozen=True)
class LinearAnnealing:
    """``min(cap, start + increment * step)``: the study's schedule."""

    start: float = 0.2
    increment: float = 5e-5
    cap: float = 1.0

    def __post_init__(self):
        _check(self.start)

    def __call__(self, step: int) -> float:
        return min(self.cap, self.start + self.increment * step)


@dataclass(frozen=True)
class ConstantScale:
    """No annealing: the full ELBO from the first step (``value = 1``)."""

    value: float = 1.0

    def __post_init__(self):
        _check(self.value)

    def __call__(self, step: int) -> float:
        return self.value


@dataclass(frozen=True)
class SigmoidAnnealing:
    """A smooth ramp from ``start`` to 1: ``start + (1 − start) · σ((step − midpoint) / width)``.
    :meth:`like_linear` gives the one that replaces a linear ramp."""

    start: float = 0.01
    midpoint: float = 2000
    width: float = 500

    def __post_init__(self):
        _check(self.start)
        if not self.width > 0:
            raise ValueError(f"the width of a sigmoid ramp must be > 0, got {self.width}")

    @classmethod
    def like_linear(cls, start: float = 0.2, increment: float = 5e-5):
        """The smooth counterpart of ``LinearAnnealing(start, increment)``: centred where the linear ramp
        is half-way, at 0.7 % / 99.3 % of the way where the linear one starts / reaches 1. Where the
        linear one is constant (no increment, or a start at 1), so is this: a :class:`ConstantScale`."""
        if increment <= 0 or start >= 1:
            return ConstantScale(min(start, 1.0))
        ramp = (1.0 - start) / increment  # updates the linear ramp takes to reach 1
        return cls(start=start, midpoint=ramp / 2, width=ramp / 10)

    def __call__(self, step: int) -> float:
        u = (step - self.midpoint) / self.width
        s = 1.0 / (1.0 + math.exp(-u)) if u >= 0 else math.exp(u) / (1.0 + math.exp(u))  # no overflow
        return self.start + (1.0 - self.start) * s


SCHEDULES = {"linear": LinearAnnealing, "none": ConstantScale, "sigmoid": SigmoidAnnealing}


def make_schedule(name: str, **kwargs):
    if name not in SCHEDULES:
        raise ValueError(f"unknown KL schedule {name!r}; known: {sorted(SCHEDULES)}")
    return SCHEDULES[name](**kwargs)
