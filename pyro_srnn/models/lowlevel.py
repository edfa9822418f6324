"""Within-step autoregressive ("low-level") models and the flattening of steps into values.

The hierarchical models of the study (RNN-hier, SRNN-hier; Dai et al. 2019, §5 and
appendix D) keep a step-level recurrent network that summarises the past into a
*step context* ``c_t`` and model the ``L`` values of a step autoregressively:

    p(x_t | c_t) = Π_{i=0}^{L-1} p(x_{t,i} | x_{t,<i}, c_t)

Two forms of the factor ``p(x_{t,i} | x_{t,<i}, c_t)``:

* :class:`LSTMLowLevel` ("inp" in the ref code): an LSTM over the ``L`` positions of a
  step. Position ``i`` is fed ``[e(x_{t,i-1}), c_t]`` with ``x_{t,-1} = 0``, so its
  output ``g_{t,i}`` summarises ``x_{t,<i}`` *and* the context, and the raw parameters
  of value ``i`` are ``W_i g_{t,i} + b_i`` (per-position output weights, as in the study).
  The ref code predicts ``x_{t,0}`` from a learned constant without the context
  (SPEC §7); here every position, the first included, sees ``c_t``
  (``ref_first_value=True`` reproduces the ref code's form, for comparison).
* :class:`MADELowLevel` ("nade" in the ref code): a masked MLP, one small network per
  position, all positions in parallel. The first layer of position ``i`` is
  ``W^c_i c_t + (M ⊙ W^x_i) x_{t,<L-1} + b_i`` with the mask ``M_{i,v} = [v < i]``; later
  layers are per-position (no mixing across positions), each normalised over its own
  hidden units only. The ref code applies ``LayerNorm`` jointly over all ``L``
  positions, which leaks values ``≥ i`` into position ``i`` (SPEC §7); the per-position
  normalisation used here keeps the density normalised. Affine parameters stay per
  position ``(L, H)``, so the parameter count equals the study's.

Both are teacher-forced in training: all ``B·T`` steps of a batch (and, for the masked
MLP, all ``L`` positions) are processed at once; sampling loops over the ``L``
positions only.

Flat models (RNN-flat, SRNN-flat) see one value per step: :func:`flatten_batch`
turns a step batch ``(B, T, L)`` into a value batch ``(B, T·L, 1)`` whose input for
value ``(t, j)`` is the previous value in reading order, so the flat models score
exactly the same targets as the step models.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from ..data.batch import SequenceBatch
from ..heads import OutputHead

__all__ = ["LowLevelModel", "LSTMLowLevel", "MADELowLevel", "make_low_level", "flatten_batch",
           "flat_inputs", "LOW_LEVEL_FORMS"]


def _per_position_linear(L: int, in_dim: int, out_dim: int) -> tuple[nn.Parameter, nn.Parameter]:
    """Weights ``(L, in, out)`` and bias ``(L, out)``, initialised like ``nn.Linear`` per position."""
    weight = torch.empty(L, in_dim, out_dim)
    bound = 1.0 / math.sqrt(max(in_dim, 1))
    nn.init.uniform_(weight, -bound, bound)
    bias = torch.zeros(L, out_dim)
    return nn.Parameter(weight), nn.Parameter(bias)


class LowLevelModel(nn.Module):
    """Common interface of the within-step autoregressive models.

    ``distribution(context (B, T, C), x (B, T, L))`` → the density of the steps, batch
    ``(B, T)``, event ``(L,)``, teacher-forced on ``x``; ``sample(context (N, C))`` →
    ``(N, L)``. ``context_dim`` may be 0 (a context-free within-step model).
    """

    def __init__(self, context_dim: int, head: OutputHead):
        super().__init__()
        if context_dim < 0:
            raise ValueError(f"context_dim must be ≥ 0, got {context_dim}")
        self.context_dim = context_dim
        self.head = head
        self.step_dim = head.step_dim
        self.params_per_value = head.params_per_value

    def _context(self, context: torch.Tensor | None, batch_shape) -> torch.Tensor:
        if context is None:
            if self.context_dim:
                raise ValueError(f"this low-level model needs a context of size {self.context_dim}")
            return torch.zeros(*batch_shape, 0, device=self._device())
        if context.shape[-1] != self.context_dim:
            raise ValueError(f"context has size {context.shape[-1]}, expected {self.context_dim}")
        return context

    def _device(self):
        return next(self.parameters()).device

    def params(self, context: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """Raw parameters ``(..., L, P)`` of every value, teacher-forced on ``x (..., L)``."""
        raise NotImplementedError  # pragma: no cover

    def distribution(self, context: torch.Tensor | None, x: torch.Tensor):
        return self.head.distribution(self.params(context, x))

    @torch.no_grad()
    def sample(self, context: torch.Tensor | None, num: int | None = None) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover


class LSTMLowLevel(LowLevelModel):
    """An LSTM over the ``L`` values of a step, fed the step context at every position.

    Position ``i`` reads ``[e(x_{i-1}), c]`` (``x_{-1} = 0``); ``e`` is a linear embedding of
    the scalar value (``embed=None``: the raw value). The initial LSTM state is learned
    (as in the study). Raw parameters of value ``i``: ``W_i g_i + b_i``.
    """

    def __init__(self, context_dim: int, head: OutputHead, hidden: int, num_layers: int = 1,
                 embed: int | None = None, dropout: float = 0.0, ref_first_value: bool = False):
        super().__init__(context_dim, head)
        #: the ref code's form (SPEC §7), for comparison only: position i reads [e(x_i), c] and value i
        #: is predicted from the output *before* it, so x_0 comes from the learned initial state alone
        self.ref_first_value = bool(ref_first_value)
        self.hidden = hidden
        self.num_layers = num_layers
        self.embed = nn.Linear(1, embed) if embed else None
        in_dim = (embed or 1) + context_dim
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.init_h = nn.Parameter(torch.empty(num_layers, hidden).uniform_(-0.01, 0.01))
        self.init_c = nn.Parameter(torch.empty(num_layers, hidden).uniform_(-0.01, 0.01))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.out_weight, self.out_bias = _per_position_linear(self.step_dim, hidden, self.params_per_value)

    def _inputs(self, prev: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``prev (N, n)`` previous values, ``context (N, C)`` → LSTM inputs ``(N, n, E + C)``."""
        v = prev.unsqueeze(-1)
        if self.embed is not None:
            v = self.dropout(self.embed(v))
        ctx = context.unsqueeze(1).expand(-1, prev.shape[1], -1)
        return torch.cat([v, ctx], dim=-1)

    def _state(self, n: int):
        h = self.init_h.unsqueeze(1).expand(-1, n, -1).contiguous()
        c = self.init_c.unsqueeze(1).expand(-1, n, -1).contiguous()
        return h, c

    def params(self, context, x):
        batch_shape = x.shape[:-1]
        context = self._context(context, batch_shape)
        L = self.step_dim
        x = x.reshape(-1, L)
        context = context.expand(*batch_shape, self.context_dim).reshape(x.shape[0], self.context_dim)
        state = self._state(x.shape[0])
        if self.ref_first_value:
            out, _ = self.lstm(self._inputs(x, context), state)
            out = torch.cat([state[0][-1].unsqueeze(1), out[:, :-1]], dim=1)  # shift: x_i from outputs < i
        else:
            prev = F.pad(x[:, :-1], (1, 0))  # x_{i-1}, with 0 before the first value
            out, _ = self.lstm(self._inputs(prev, context), state)  # all B·T steps at once
        out = self.dropout(out)
        raw = torch.einsum("nlh,lhp->nlp", out, self.out_weight) + self.out_bias
        return raw.reshape(*batch_shape, L, self.params_per_value)

    @torch.no_grad()
    def sample(self, context, num=None):
        if context is None:
            context = torch.zeros(num, 0, device=self._device())
        n = context.shape[0]
        state = self._state(n)
        prev = torch.zeros(n, 1, device=context.device, dtype=context.dtype)
        values = []
        for i in range(self.step_dim):
            if self.ref_first_value:  # output before reading x_i: the state after x_{<i}
                g = state[0][-1] if i == 0 else out[:, 0]
            else:
                out, state = self.lstm(self._inputs(prev, context), state)
                g = out[:, 0]
            raw = g @ self.out_weight[i] + self.out_bias[i]
            v = self.head.value_distribution(raw, i).sample()
            values.append(v)
            prev = v.unsqueeze(1)
            if self.ref_first_value:
                out, state = self.lstm(self._inputs(prev, context), state)
        return torch.stack(values, dim=-1)


class MADELowLevel(LowLevelModel):
    """Masked per-position MLP: value ``i`` depends on the context and ``x_{<i}`` only.

    Layer 0 of position ``i``: ``h_i = W^c_i c + (M ⊙ W^x)_i x_{<L-1} + b_i`` with
    ``M_{i,v} = [v < i]``; then per-position normalisation over the ``hidden`` units,
    a per-position affine map, ReLU and dropout; layers ``1 … num_layers-1`` are
    per-position ``hidden × hidden`` maps with the same normalisation. The output
    layer gives the raw parameters of value ``i`` from ``h_i``.
    """

    def __init__(self, context_dim: int, head: OutputHead, hidden: int, num_layers: int = 1,
                 dropout: float = 0.0):
        super().__init__(context_dim, head)
        if num_layers < 1:
            raise ValueError(f"num_layers must be ≥ 1, got {num_layers}")
        L = self.step_dim
        self.hidden = hidden
        self.num_layers = num_layers
        # context and previous-value weights of layer 0, one block per position
        w0, self.b0 = _per_position_linear(L, context_dim + L - 1, hidden)
        self.w0 = w0
        mask = torch.zeros(L, context_dim + L - 1, 1)
        mask[:, :context_dim] = 1.0
        mask[:, context_dim:, 0] = torch.tril(torch.ones(L, L - 1), diagonal=-1)  # [v < i]
        self.register_buffer("mask0", mask, persistent=False)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for _ in range(1, num_layers):
            w, b = _per_position_linear(L, hidden, hidden)
            self.weights.append(w)
            self.biases.append(b)
        # per-position normalisation: statistics over the hidden units of ONE position
        self.norm_weight = nn.ParameterList([nn.Parameter(torch.ones(L, hidden)) for _ in range(num_layers)])
        self.norm_bias = nn.ParameterList([nn.Parameter(torch.zeros(L, hidden)) for _ in range(num_layers)])
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.out_weight, self.out_bias = _per_position_linear(L, hidden, self.params_per_value)

    def _norm(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        h = F.layer_norm(h, (self.hidden,))  # over the last dim only: no mixing of positions
        return h * self.norm_weight[layer] + self.norm_bias[layer]

    def params(self, context, x):
        batch_shape = x.shape[:-1]
        context = self._context(context, batch_shape)
        inp = torch.cat([context, x[..., :-1]], dim=-1)  # x_{L-1} is never an input
        h = torch.einsum("...v,lvh->...lh", inp, self.w0 * self.mask0) + self.b0
        h = self.dropout(F.relu(self._norm(h, 0)))
        for layer, (w, b) in enumerate(zip(self.weights, self.biases), start=1):
            h = torch.einsum("...lh,lhk->...lk", h, w) + b
            h = self.dropout(F.relu(self._norm(h, layer)))
        return torch.einsum("...lh,lhp->...lp", h, self.out_weight) + self.out_bias

    @torch.no_grad()
    def sample(self, context, num=None):
        if context is None:
            context = torch.zeros(num, 0, device=self._device())
        n = context.shape[0]
        x = torch.zeros(n, self.step_dim, device=context.device, dtype=context.dtype)
        for i in range(self.step_dim):  # value i reads x_{<i} only, so later zeros do not matter
            raw = self.params(context, x)[:, i]
            x[:, i] = self.head.value_distribution(raw, i).sample()
        return x


LOW_LEVEL_FORMS = ("lstm", "made")


def make_low_level(form: str, context_dim: int, head: OutputHead, hidden: int, num_layers: int = 1,
                   embed: int | None = None, dropout: float = 0.0, ref_first_value: bool = False) -> LowLevelModel:
    """``form="lstm"`` → :class:`LSTMLowLevel`; ``form="made"`` → :class:`MADELowLevel`."""
    if form == "lstm":
        return LSTMLowLevel(context_dim, head, hidden, num_layers, embed=embed, dropout=dropout,
                            ref_first_value=ref_first_value)
    if ref_first_value:
        raise ValueError("ref_first_value is a switch of the LSTM low-level model (low='lstm') only")
    if form == "made":
        return MADELowLevel(context_dim, head, hidden, num_layers, dropout=dropout)
    raise ValueError(f"unknown low-level form {form!r}; choose one of {LOW_LEVEL_FORMS}")


# ---------------------------------------------------------------------------- flat models

def flat_inputs(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Previous value in reading order for every value of a chunk, ``(B, T, L)``.

    Value ``(t, j)`` with ``j > 0`` follows ``x_{t,j-1}``; value ``(t, 0)`` follows the
    last value of the previous step, ``x_{t-1,L-1} = inputs[:, t, L-1]`` (for ``t = 0``
    this is the last value of the chunk's conditioning step ``inputs[:, 0]``).
    """
    return torch.cat([inputs[..., -1:], targets[..., :-1]], dim=-1)


def flatten_batch(batch: SequenceBatch) -> SequenceBatch:
    """A step batch ``(B, T, L)`` → a value batch ``(B, T·L, 1)``; the mask repeated ``L`` times.

    The flat targets are the step targets in reading order, so a flat model's summed
    log-likelihood over the ``L`` values of a step is a log-likelihood of that step.
    """
    B, T, L = batch.inputs.shape
    prev = flat_inputs(batch.inputs, batch.targets)
    return SequenceBatch(
        inputs=prev.reshape(B, T * L, 1),
        targets=batch.targets.reshape(B, T * L, 1),
        mask=batch.mask.repeat_interleave(L, dim=1),
        seq_ids=batch.seq_ids,
    )
