"""Base classes and registries of models and guides.

The contract every model of the zoo follows:

* A model is a :class:`SequenceModel` (a ``torch.nn.Module``) built from a
  :class:`~pyro_srnn.data.DataSpec` and keyword hyper-parameters. Its ``forward(batch,
  kl_scale=1.0)`` is the Pyro *model*: inside ``pyro.plate("sequences", B)``
  (:func:`sequences_plate`) it samples
  the latent path as **one** site ``"z"`` (``batch (B,)``, event ``(T, d_z)``), if it has
  one, under ``poutine.scale(scale=kl_scale)``, and observes the whole chunk as one
  site ``"x"`` (event ``(T, L)``, padded steps masked).
* A guide is a :class:`SequenceGuide` (a ``torch.nn.Module``) built from the model it
  serves; its ``forward(batch, kl_scale=1.0)`` samples ``"z"`` under the same scale.
  Deterministic models use :class:`EmptyGuide`, so ``-Trace_ELBO`` is their exact
  negative log-likelihood.
* Deterministic features that both model and guide need (e.g. the forward RNN over
  the inputs) are computed once per batch through :meth:`SequenceModel.shared`.

Models and guides are plain ``nn.Module`` s whose ``forward`` is the Pyro program: every
weight is an ordinary torch parameter driven by a torch optimiser through
``Trace_ELBO()(model, guide)``. (A ``PyroModule`` would turn every attribute access inside a
trace into a ``pyro.module`` statement that also registers the weights in Pyro's global
parameter store: a fixed cost per step, measured as up to ~2 % on the fastest models, and a
global side effect when several models live in one process. Nothing here uses
``PyroParam``/``PyroSample``.)

Register a model with :func:`register_model` and a guide with :func:`register_guide`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import pyro
import torch

from ..data.core import DataSpec
from ..distributions import masked_sequence

__all__ = [
    "SequenceModel", "SequenceGuide", "EmptyGuide", "MODELS", "GUIDES", "register_model",
    "register_guide", "build_model", "build_guide", "GuideMismatch", "model_names", "guide_names",
    "WIDTH_KEYS", "scale_widths", "sequences_plate",
]


def sequences_plate(batch) -> pyro.plate:
    """``pyro.plate("sequences", B)`` over the rows of ``batch``, the one plate of every model and guide.

    The plate's index tensor (``arange(B)``) is made once per size and device and passed in, as is
    the device: a plain ``pyro.plate`` makes both anew every time it is entered (a kernel launch on a
    GPU, and about 10 µs of Python on a CPU per plate and step). Same plate otherwise: full batch,
    no subsampling, scale 1.
    """
    device = batch.inputs.device
    return pyro.plate("sequences", batch.batch_size, subsample=_row_indices(batch.batch_size, device),
                      device=device)


@functools.lru_cache(maxsize=64)
def _row_indices(size: int, device: torch.device) -> torch.Tensor:
    return torch.arange(size, device=device)


#: hyper-parameters that are layer widths (sizes of hidden, embedding, MLP and latent layers).
#: Depths, mixture sizes, dropout and counts of values (``d_leak``) are not widths.
WIDTH_KEYS = ("hidden", "embed", "mlp", "latent", "z_dim", "emission_dim", "transition_dim", "low_hidden",
              "low_embed")


def scale_widths(hparams: dict, factor: float) -> dict:
    """``hparams`` with every width (:data:`WIDTH_KEYS`) times ``factor``, rounded, at least 1.

    Used for sizes between the presets, e.g. the study's speech models at half width
    (``size="study@0.5"``, about a quarter of the parameters) for benchmarks on small machines.
    """
    return {k: max(1, round(v * factor)) if k in WIDTH_KEYS and isinstance(v, int) else v
            for k, v in hparams.items()}


class GuideMismatch(ValueError):
    """A guide that does not fit a model (latent size or structure)."""


class SequenceModel(torch.nn.Module):
    """Base class of every model of the zoo. Subclasses set ``name`` and implement ``forward``."""

    name: str = ""
    has_latent: bool = False
    default_guide: str = "none"
    #: preset hyper-parameters per size name: ``tiny`` (tests), ``small`` (CPU runs), and
    #: the study's per-domain configurations ``speech``, ``midi``, ``handwriting``
    PRESETS: dict[str, dict] = {}

    def __init__(self, spec: DataSpec, **hparams):
        super().__init__()
        self.spec = spec
        self.hparams = dict(hparams)

    # ---------------------------------------------------------------- shapes
    @property
    def step_dim(self) -> int:
        return self.spec.step_dim

    @property
    def latent_dim(self) -> int | None:
        return None

    def check_batch(self, batch) -> None:
        if batch.step_dim != self.spec.step_dim:
            raise ValueError(
                f"data step size L={batch.step_dim} does not match the model's L={self.spec.step_dim} "
                f"(model {self.name!r} was built for {self.spec.name!r})"
            )

    def feature_state(self) -> tuple:
        """What a cached feature depends on besides the batch: modes and the weights' versions."""
        # the parameter list is built once: ``Module.parameters()`` walks and de-duplicates every
        # submodule (≈ 0.1 ms a call, twice per step); the Parameter objects of a built model stay
        # the same (``.to()`` and ``load_state_dict`` change their data in place)
        params = self.__dict__.get("_feature_params")
        if params is None:
            params = self.__dict__["_feature_params"] = tuple(self.parameters())
        return self.training, torch.is_grad_enabled(), tuple(p._version for p in params)

    def shared(self, batch, key: str, fn: Callable[[], object], refresh: bool = False):
        """Compute ``fn()`` once per batch and share it between model and guide.

        The cached value is recomputed when the weights changed in place (an optimiser
        step), the train/eval or grad mode differs, or a backward pass has gone through
        it (its graph is freed: the batch is being scored again, e.g. twice with no
        optimiser step in between), so a reused batch never sees a stale feature or a
        freed graph; ``refresh`` forces it.
        """
        slot, state = (id(self), key), self.feature_state()
        hit = batch.cache.get(slot)
        if refresh or hit is None or hit[0] != state or not hit[2][0]:
            value, alive = fn(), [True]
            if isinstance(value, torch.Tensor) and value.requires_grad:
                # the hook holds only the flag, not the value: no reference cycle keeps graphs alive
                value.register_hook(lambda grad, alive=alive: alive.__setitem__(0, False))
            hit = batch.cache[slot] = (state, value, alive)
        return hit[1]

    # ---------------------------------------------------------------- config
    def config(self) -> dict:
        """Everything needed to rebuild this model (stored in checkpoints)."""
        return {"name": self.name, "spec": self.spec.to_dict(), "hparams": self.hparams}

    @classmethod
    def preset(cls, size: str, spec: DataSpec) -> dict:
        """Hyper-parameters of a named size; ``study`` picks the study's config of the data's domain.

        ``NAME@F`` (e.g. ``study@0.5``) is the preset ``NAME`` with every layer width times ``F``
        (:func:`scale_widths`): the same architecture, narrower or wider.
        """
        name, factor = size, None
        if "@" in size:
            name, _, text = size.partition("@")
            try:
                factor = float(text)
            except ValueError:
                factor = math.nan
            if not (math.isfinite(factor) and factor > 0):
                raise ValueError(f"size {size!r}: the width factor after '@' must be a positive number")
        if name == "study":
            name = spec.domain
        if name not in cls.PRESETS:
            raise ValueError(f"model {cls.name!r} has no size {name!r}; sizes: {sorted(cls.PRESETS)} or 'study' "
                             "(NAME@F scales the widths by F)")
        hparams = dict(cls.PRESETS[name])
        return scale_widths(hparams, factor) if factor is not None else hparams

    def observe_chunk(self, batch, step_dist) -> None:
        """The observed chunk as one site ``"x"``: ``step_dist`` has batch ``(B, T)``, event ``(L,)``."""
        with sequences_plate(batch):
            pyro.sample("x", masked_sequence(step_dist, batch.mask), obs=batch.targets)

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate_by_steps(self, rnn, sample_step, num_sequences: int, num_steps: int,
                          first_step: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral sampling when the step state is a forward RNN over past steps:
        ``d_t = rnn(x_{t-1}, state)``, ``x_t = sample_step(d_t)``."""
        x = self._first_step(num_sequences, first_step)
        state, out = None, [x]
        for _ in range(num_steps - 1):
            d, state = rnn(x.unsqueeze(1), state)
            x = sample_step(d[:, 0])
            out.append(x)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def generate(self, num_sequences: int, num_steps: int, first_step: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral samples ``(num_sequences, num_steps, L)`` (the first step is ``first_step`` or zeros)."""
        raise NotImplementedError(f"model {self.name!r} does not implement generate()")

    def _first_step(self, num_sequences, first_step):
        device = next(self.parameters()).device
        if first_step is None:
            return torch.zeros(num_sequences, self.step_dim, device=device)
        return first_step.to(device).expand(num_sequences, self.step_dim)


class SequenceGuide(torch.nn.Module):
    """Base class of guides. ``fits(model)`` says why a model is not served (or None)."""

    name: str = ""
    #: whether training anneals the latent sites' weight (SPEC §5). False for a guide whose ELBO is an
    #: exact log-likelihood (the delta guide: its "KL" term is −log p(x^a_t | x_<t), data, not a KL)
    anneals: bool = True

    def __init__(self, model: SequenceModel, **hparams):
        super().__init__()
        problem = self.fits(model)
        if problem:
            raise GuideMismatch(f"guide {self.name!r} does not fit model {model.name!r}: {problem}")
        self.hparams = dict(hparams)
        # not a submodule: the guide must not own (or save) the model's parameters
        object.__setattr__(self, "_model_ref", model)

    @property
    def model(self) -> SequenceModel:
        return self._model_ref

    @classmethod
    def fits(cls, model: SequenceModel) -> str | None:
        if not model.has_latent:
            return "the model has no latent variables"
        return None

    def config(self) -> dict:
        return {"name": self.name, "hparams": self.hparams}


class EmptyGuide(SequenceGuide):
    """The guide of a deterministic model: no latent sites, so the ELBO is the log-likelihood."""

    name = "none"

    @classmethod
    def fits(cls, model):
        if model.has_latent:
            return "the model has latent variables; choose a guide that samples them"
        return None

    def forward(self, batch, kl_scale: float = 1.0):
        return None


# -------------------------------------------------------------------- registries

@dataclass
class Entry:
    name: str
    cls: type
    description: str


MODELS: dict[str, Entry] = {}
GUIDES: dict[str, Entry] = {}


def register_model(name: str, description: str):
    def deco(cls):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        cls.name = name
        MODELS[name] = Entry(name, cls, description)
        return cls
    return deco


def register_guide(name: str, description: str):
    def deco(cls):
        if name in GUIDES:
            raise ValueError(f"guide {name!r} registered twice")
        cls.name = name
        GUIDES[name] = Entry(name, cls, description)
        return cls
    return deco


register_guide("none", "no latent variables (deterministic models): the ELBO is the exact log-likelihood")(EmptyGuide)


def _ensure_models():
    from . import registry  # noqa: F401  (imports every model module)


def model_names() -> list[str]:
    _ensure_models()
    return sorted(MODELS)


def guide_names() -> list[str]:
    _ensure_models()
    return sorted(GUIDES)


def build_model(name: str, spec: DataSpec, size: str = "small", **overrides) -> SequenceModel:
    """Build a registered model at a preset size, with keyword overrides."""
    _ensure_models()
    if name not in MODELS:
        raise KeyError(name)
    cls = MODELS[name].cls
    hparams = cls.preset(size, spec)
    hparams.update(overrides)
    return cls(spec, **hparams)


def build_guide(name: str | None, model: SequenceModel, **hparams) -> SequenceGuide:
    """Build a registered guide for ``model`` (``None``: the model's default guide)."""
    _ensure_models()
    name = name or model.default_guide
    if name not in GUIDES:
        raise KeyError(name)
    return GUIDES[name].cls(model, **hparams)


def model_from_config(config: dict) -> SequenceModel:
    _ensure_models()
    spec = DataSpec(**config["spec"])
    return MODELS[config["name"]].cls(spec, **config["hparams"])
