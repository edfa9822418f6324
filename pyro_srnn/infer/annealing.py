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
    """A smooth ramp from ``start`` to 1, centred at ``midpoint`` steps, ``width`` steps wide."""

    start: float = 0.01
    midpoint: int = 2000
    width: int = 500

    def __post_init__(self):
        _check(self.start)

    def __call__(self, step: int) -> float:
        s = 1.0 / (1.0 + math.exp(-(step - self.midpoint) / max(self.width, 1)))
        return self.start + (1.0 - self.start) * s


SCHEDULES = {"linear": LinearAnnealing, "none": ConstantScale, "sigmoid": SigmoidAnnealing}


def make_schedule(name: str, **kwargs):
    if name not in SCHEDULES:
        raise ValueError(f"unknown KL schedule {name!r}; known: {sorted(SCHEDULES)}")
    return SCHEDULES[name](**kwargs)
