"""Autoregressive baselines of the study: RNN-flat and RNN-hier (Dai et al. 2019, §5, Table 4).

**RNN-flat** reads the chunk one *value* at a time (speech: one audio sample, MIDI: one
key). With ``v_1 … v_{T·L}`` the values of the chunk in reading order,

    h_n = LSTM(e(v_{n-1}), h_{n-1}),      p(v_n | v_<n) = p(v_n | h_n)           (1-D head)

so ``Σ_{i} log p(x_{t,i} | ·)`` over the ``L`` values of step ``t`` is a log-likelihood of
``x_t``: the model scores exactly the targets of the step models (site ``"x"``, event
``(T, L)``), and its metrics are comparable. The study trains the flat speech model on
chunks of ``DataSpec.flat_chunk_len`` values (2000 samples, a quarter of the step
models' 8000): ``flat_chunk`` resets the LSTM state every that many values inside a
chunk, which reproduces the study's state resets while the batches stay those of the
step models. Each value's 1-D density is the family's head with ``L = 1`` (one
projection shared by every position, as in the study; ``positional=True`` adds a
one-hot of the position inside the step to the input and per-position output weights,
needed when the values of a step have different types, i.e. handwriting).

**RNN-hier** keeps the step-level LSTM and models the values of a step with a
within-step autoregressive model (:mod:`.lowlevel`):

    d_t = LSTM(e(x_{t-1}), d_{t-1}),      p(x_t | x_<t) = Π_i p(x_{t,i} | x_{t,<i}, d_t)

``low="lstm"``: an LSTM over the values fed ``d_t`` at every position (the study's
speech models; ``ref_first_value=True`` is the ref code's variant whose first value
ignores ``d_t``, SPEC §7); ``low="made"``: a masked per-position MLP (MIDI, handwriting, and
Perm-TIMIT). Handwriting steps are ordered pen → dx → dy.

Both are deterministic: the ELBO with the empty guide is the exact log-likelihood.
Training runs every step (and, inside RNN-hier, every value) in parallel; only
generation loops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..heads import make_head
from ..nn import ForwardRNN
from .base import SequenceModel, register_model
from .lowlevel import LOW_LEVEL_FORMS, flat_inputs, make_low_level

__all__ = ["RNNFlat", "RNNHier"]


def _resolve_flat_chunk(flat_chunk, spec) -> int | None:
    """``"spec"`` → ``spec.flat_chunk_len``; ``None``/0 → no reset inside a chunk; an int → itself."""
    if flat_chunk == "spec":
        return spec.flat_chunk_len
    if flat_chunk in (None, 0):
        return None
    flat_chunk = int(flat_chunk)
    if flat_chunk < 1:
        raise ValueError(f"flat_chunk must be ≥ 1 values, got {flat_chunk}")
    return flat_chunk


@register_model("rnn-flat", "LSTM over the flattened sequence, one value per step: "
                            "p(x) = Π_n p(v_n | v_<n), v = values in reading order")
class RNNFlat(SequenceModel):
    PRESETS = {
        "tiny": dict(hidden=16, num_layers=1, embed=8, dropout=0.0),
        "small": dict(hidden=256, num_layers=1, embed=64, dropout=0.0),
        # study (SPEC §6): speech 2-layer LSTM 1100, embedding 512, 20-component mixture (16.86M);
        # MIDI 1-layer LSTM 512, embedding 256 (1.58M); handwriting has no flat model in the study
        "speech": dict(hidden=1100, num_layers=2, embed=512, dropout=0.0, num_components=20),
        "midi": dict(hidden=512, num_layers=1, embed=256, dropout=0.5),
        "handwriting": dict(hidden=256, num_layers=2, embed=128, dropout=0.5, num_components=5,
                            positional=True),
    }

    def __init__(self, spec, hidden=256, num_layers=1, embed=None, dropout=0.0, num_components=None,
                 flat_chunk="spec", positional=None):
        if positional is None:
            positional = spec.family == "handwriting"
        super().__init__(spec, hidden=hidden, num_layers=num_layers, embed=embed, dropout=dropout,
                         num_components=num_components, flat_chunk=flat_chunk, positional=positional)
        L = spec.step_dim
        if spec.family == "handwriting" and not positional:
            raise ValueError("rnn-flat on handwriting needs positional=True: the values of a step are a pen "
                             "bit and two offsets, so each position needs its own output")
        self.positional = bool(positional)
        self.flat_chunk = _resolve_flat_chunk(flat_chunk, spec)
        self.rnn = ForwardRNN(1 + (L if self.positional else 0), hidden, num_layers, embed=embed,
                              dropout=dropout)
        # the step head only turns raw parameters into densities; the projection lives here
        self.head = make_head(spec.family, None, L, num_components)
        P = self.head.params_per_value
        self.proj = nn.Linear(hidden, (L if self.positional else 1) * P)

    # ------------------------------------------------------------------ pieces
    def _position_codes(self, n_values: int, offset: int = 0, device=None) -> torch.Tensor:
        """One-hot of the position (inside its step) of the value each input predicts, ``(n, L)``."""
        pos = (torch.arange(n_values, device=device) + offset) % self.step_dim
        return F.one_hot(pos, self.step_dim).float()

    def _flat_rnn_inputs(self, prev: torch.Tensor) -> torch.Tensor:
        """``prev (B, N)`` previous values → RNN inputs ``(B, N, 1 [+ L])``."""
        v = prev.unsqueeze(-1)
        if self.positional:
            codes = self._position_codes(prev.shape[1], device=prev.device)
            v = torch.cat([v, codes.expand(prev.shape[0], -1, -1)], dim=-1)
        return v

    def _run(self, inputs: torch.Tensor) -> torch.Tensor:
        """The LSTM over ``(B, N, E)`` flat inputs with a state reset every ``flat_chunk`` values."""
        B, N, _ = inputs.shape
        C = self.flat_chunk
        if C is None or C >= N:
            return self.rnn(inputs)[0]
        n = -(-N // C)
        padded = F.pad(inputs, (0, 0, 0, n * C - N))
        out, _ = self.rnn(padded.reshape(B * n, C, -1))  # sub-chunks in parallel, each from a fresh state
        return out.reshape(B, n * C, -1)[:, :N]

    def _params(self, h: torch.Tensor, B: int, T: int) -> torch.Tensor:
        """Flat features ``(B, T·L, H)`` → raw parameters ``(B, T, L, P)``."""
        L, P = self.step_dim, self.head.params_per_value
        raw = self.proj(h)
        if not self.positional:
            return raw.reshape(B, T, L, P)
        raw = raw.reshape(B, T, L, L, P)  # every value computes all positions' parameters: keep its own
        return torch.diagonal(raw, dim1=2, dim2=3).movedim(-1, 2)

    def step_distribution(self, batch):
        B, T, L = batch.targets.shape
        prev = flat_inputs(batch.inputs, batch.targets).reshape(B, T * L)
        h = self._run(self._flat_rnn_inputs(prev))
        return self.head.distribution(self._params(h, B, T))

    def forward(self, batch, kl_scale: float = 1.0):
        self.check_batch(batch)
        self.observe_chunk(batch, self.step_distribution(batch))

    @torch.no_grad()
    def generate(self, num_sequences, num_steps, first_step=None):
        x = self._first_step(num_sequences, first_step)
        L, P = self.step_dim, self.head.params_per_value
        out = [x]
        prev = x[:, -1]
        state, n = None, 0
        for _ in range(num_steps - 1):
            step = []
            for i in range(L):
                if self.flat_chunk is not None and n % self.flat_chunk == 0:
                    state = None  # the state resets the model was trained with
                v = prev[:, None, None]
                if self.positional:
                    v = torch.cat([v, self._position_codes(1, offset=i, device=v.device).expand(v.shape[0], 1, -1)],
                                  dim=-1)
                h, state = self.rnn(v, state)
                raw = self.proj(h[:, 0])
                raw = raw.reshape(-1, L, P)[:, i] if self.positional else raw
                prev = self.head.value_distribution(raw, i).sample()
                step.append(prev)
                n += 1
            out.append(torch.stack(step, dim=-1))
        return torch.stack(out, dim=1)


@register_model("rnn-hier", "step LSTM, then an autoregressive model inside the step: "
                            "p(x_t|x_<t) = Π_i p(x_t,i | x_t,<i, d_t)")
class RNNHier(SequenceModel):
    PRESETS = {
        "tiny": dict(hidden=16, num_layers=1, embed=16, dropout=0.0, low="made", low_hidden=8),
        "small": dict(hidden=256, num_layers=1, embed=128, dropout=0.0, low="made", low_hidden=32),
        # study (SPEC §6, ref code): speech 1-layer LSTM 700, embedding 512, low-level 1-layer
        # LSTM 700 over 512-d value embeddings, 20-component mixtures (17.28M); MIDI LSTM 256 +
        # masked MLP 43 (1.87M); handwriting 2-layer LSTM 256 + masked MLP 64 (0.97M)
        "speech": dict(hidden=700, num_layers=1, embed=512, dropout=0.0, num_components=20, low="lstm",
                       low_hidden=700, low_layers=1, low_embed=512),
        "midi": dict(hidden=256, num_layers=1, embed=256, dropout=0.5, low="made", low_hidden=43, low_layers=1),
        "handwriting": dict(hidden=256, num_layers=2, embed=128, dropout=0.25, num_components=5, low="made",
                            low_hidden=64, low_layers=1),
    }

    def __init__(self, spec, hidden=256, num_layers=1, embed=None, dropout=0.0, num_components=None,
                 low="made", low_hidden=64, low_layers=1, low_embed=None, ref_first_value=False):
        if low not in LOW_LEVEL_FORMS:
            raise ValueError(f"rnn-hier: unknown low-level form low={low!r}; choose one of {LOW_LEVEL_FORMS}")
        super().__init__(spec, hidden=hidden, num_layers=num_layers, embed=embed, dropout=dropout,
                         num_components=num_components, low=low, low_hidden=low_hidden, low_layers=low_layers,
                         low_embed=low_embed, ref_first_value=ref_first_value)
        self.rnn = ForwardRNN(spec.step_dim, hidden, num_layers, embed=embed, dropout=dropout)
        head = make_head(spec.family, None, spec.step_dim, num_components)
        self.low_level = make_low_level(low, hidden, head, low_hidden, low_layers, embed=low_embed,
                                        dropout=dropout, ref_first_value=ref_first_value)

    def step_distribution(self, batch):
        d = self.shared(batch, "d", lambda: self.rnn(batch.inputs)[0])
        return self.low_level.distribution(d, batch.targets)

    def forward(self, batch, kl_scale: float = 1.0):
        self.check_batch(batch)
        self.observe_chunk(batch, self.step_distribution(batch))

    def generate(self, num_sequences, num_steps, first_step=None):
        return self.generate_by_steps(self.rnn, self.low_level.sample, num_sequences, num_steps, first_step)
