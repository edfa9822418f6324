"""Stochastic recurrent networks with sequential latent dependence (SPEC §2, seed appendix B).

Within a chunk, ``inputs[:, t] = x_{t-1}`` and ``targets[:, t] = x_t``; ``z_{-1} = 0``.

* **STORN** (Bayer & Osendorfer 2014)::

      p(z_t) = N(0, I)                                      context-free prior
      h_t = LSTM([φx(x_{t-1}), z_t], h_{t-1});  p(x_t | h_t)  emission
      q(z_t | x_≤t)  (the generic ``filtering`` guide)

* **VRNN** (Chung et al. 2015)::

      v_{t-1} = LSTM([φx(x_{t-1}), φz(z_{t-1})], v_{t-2})   recurrence through z
      p(z_t | v_{t-1});  p(x_t | [v_{t-1}, z_t])
      q(z_t | φx(x_t), v_{t-1})  (``vrnn-posterior``, filtering)

* **SRNN** (Fraccaro et al. 2016, ``srnn-fraccaro``)::

      d_t = LSTM(x_{t-1}, d_{t-1})                          deterministic, over x_<t
      p(z_t | z_{t-1}, d_t);  p(x_t | d_t, z_t)
      a_t = LSTM←([x_t, d_t], a_{t+1})
      q(z_t | z_{t-1}, a_t), mean = prior mean + correction  (``srnn-fraccaro-posterior``, smoothing)

* **Z-forcing** (Goyal et al. 2017)::

      h_{t-1} = LSTM([φx(x_{t-1}), φz(z_{t-1})], h_{t-2})   (h_t runs over [x_t, z_t])
      p(z_t | h_{t-1});  p(x_t | [h_{t-1}, z_t])
      b_t = LSTM←(x_t, b_{t+1})                             backward RNN over x_≥t
      q(z_t | h_{t-1}, b_t)  (``zforcing-posterior``)
      auxiliary cost  α · Σ_t log N(b_t ; μ(z_t), σ(z_t))  (training only; b_t a fixed target)

Every model samples the latent path as **one** site ``"z"`` (``(B, T, d_z)``) under
``poutine.scale(kl_scale)`` and observes the chunk as one site ``"x"``. Where the prior
depends on earlier latents it is a path-dependent
:class:`~pyro_srnn.distributions.SequenceNormal`: ``params_fn(z)`` scores a given path
teacher-forced (one full-sequence LSTM pass), ``sampler()`` draws one ancestrally (a loop
in plain torch, stepping the *same* LSTM weights with :class:`StepLSTM`). The same model
code therefore serves a replayed ``z`` (from a guide) and a sampled one (generation).

Speed: features that model and guide both need — the VRNN / Z-forcing recurrence ``v``
(a deterministic function of ``(x, z)``), Fraccaro's forward RNN ``d``, Z-forcing's backward
RNN ``b`` — are stored in ``batch.cache`` by whoever computes them first (usually the
posterior's sampling loop) *keyed to the sampled ``z`` tensor* and to the weights' versions
and train/grad mode (:meth:`LatentSequenceModel.path_feature`). The model therefore never
recomputes what its guide already ran, and a batch reused for several updates never sees a
stale feature or a freed graph (each ELBO evaluation draws a new ``z``).
"""
from __future__ import annotations

import pyro
import torch
from pyro import poutine
from torch import nn

from ..distributions import SequenceNormal, latent_mask, masked_sequence
from ..heads import make_head
from ..nn import BackwardRNN, ForwardRNN, GaussianLayer
from .base import SequenceGuide, SequenceModel, register_guide, register_model, sequences_plate

__all__ = ["StepLSTM", "shift_right", "LatentRecurrence", "LatentSequenceModel", "STORN", "RecurrentLatentModel",
           "VRNN", "ZForcing", "FraccaroSRNN", "VRNNPosterior", "ZForcingPosterior", "FraccaroPosterior",
           "LATENT_PRESETS", "vrnn_torch_loss"]

#: sizes shared by the four models. ``speech`` is Z-forcing's Blizzard/TIMIT configuration
#: (LSTM 1024, embedding 512, MLP 512, d_z 256, Goyal et al. 2017); MIDI and handwriting
#: are of the scale of the study's MIDI / IAM-OnDB models (SPEC §6).
LATENT_PRESETS = {
    "tiny": dict(hidden=16, embed=16, mlp=16, z_dim=4, dropout=0.0),
    "small": dict(hidden=128, embed=64, mlp=64, z_dim=32, dropout=0.0),
    "speech": dict(hidden=1024, embed=512, mlp=512, z_dim=256, dropout=0.0, num_components=1),
    "midi": dict(hidden=300, embed=128, mlp=128, z_dim=64, dropout=0.5),
    "handwriting": dict(hidden=400, embed=128, mlp=128, z_dim=32, dropout=0.5, num_components=5),
}


def shift_right(z: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """``z_{t-1}`` aligned with step ``t``: ``(B, T, d)`` → ``(B, T, d)``, step 0 gets ``first`` (or 0)."""
    head = torch.zeros_like(z[:, :1]) if first is None else first.expand_as(z[:, :1])
    return torch.cat([head, z[:, :-1]], dim=1)


class StepLSTM(nn.LSTM):
    """A batch-first ``nn.LSTM`` that can also advance one step with the same weights.

    ``forward`` runs a whole sequence (cuDNN where available); :meth:`step` applies
    ``torch.lstm_cell`` layer by layer, the same function, for ancestral sampling.
    No dropout between layers, so both paths compute the same recurrence.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__(input_size, hidden_size, num_layers=num_layers, batch_first=True)

    def step(self, x: torch.Tensor, state=None):
        """``x (B, in)`` → ``(h (B, H), (h_n, c_n))``; ``state`` as returned by ``forward`` (or None)."""
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.shape[0], self.hidden_size)
            state = (zeros, zeros)
        hs, cs, inp = [], [], x
        for k in range(self.num_layers):
            h, c = torch.lstm_cell(inp, [state[0][k], state[1][k]], getattr(self, f"weight_ih_l{k}"),
                                   getattr(self, f"weight_hh_l{k}"), getattr(self, f"bias_ih_l{k}"),
                                   getattr(self, f"bias_hh_l{k}"))
            hs.append(h)
            cs.append(c)
            inp = h
        return inp, (torch.stack(hs), torch.stack(cs))


def _gaussian_path(locs, scales, zs):
    return torch.stack(zs, 1), torch.stack(locs, 1), torch.stack(scales, 1)


class LatentSequenceModel(SequenceModel):
    """Common part of the latent models of this module: sizes, output head, latent shape."""

    has_latent = True
    PRESETS = LATENT_PRESETS

    def __init__(self, spec, hidden=128, embed=64, mlp=64, z_dim=32, dropout=0.0, num_components=None, **extra):
        super().__init__(spec, hidden=hidden, embed=embed, mlp=mlp, z_dim=z_dim, dropout=dropout,
                         num_components=num_components, **extra)
        self.hidden, self.z_dim, self.mlp = hidden, z_dim, mlp
        self.head = make_head(spec.family, mlp, spec.step_dim, num_components)

    @property
    def latent_dim(self) -> int:
        return self.z_dim

    def latent_shape(self, batch) -> tuple[int, int, int]:
        return (batch.batch_size, batch.num_steps, self.z_dim)

    # ------------------------------------------------------------ features shared per path
    def path_feature(self, batch, key: str, z: torch.Tensor, fn):
        """``fn()`` for the latent path ``z``, computed once: reused when it was stored for this
        very ``z`` tensor (by the guide, or an earlier call) with the same weights and modes."""
        hit = batch.cache.get((id(self), key))
        if hit is not None and hit[0] is z and hit[1] == self.feature_state():
            return hit[2]
        value = fn()
        self.remember(batch, key, z, value)
        return value

    def remember(self, batch, key: str, z: torch.Tensor, value) -> None:
        """Store a feature computed alongside the path ``z`` (see :meth:`path_feature`)."""
        batch.cache[(id(self), key)] = (z, self.feature_state(), value)

    def observe(self, batch, features: torch.Tensor) -> None:
        pyro.sample("x", masked_sequence(self.head(features), batch.mask), obs=batch.targets)


# ---------------------------------------------------------------------------------------- STORN

@register_model("storn", "STORN: p(z_t)=N(0,I), h_t=LSTM([x_t-1,z_t],h_t-1), p(x_t|h_t); q(z_t|x_≤t)")
class STORN(LatentSequenceModel):
    default_guide = "filtering"

    def __init__(self, spec, hidden=128, embed=64, mlp=64, z_dim=32, dropout=0.0, num_components=None):
        super().__init__(spec, hidden=hidden, embed=embed, mlp=mlp, z_dim=z_dim, dropout=dropout,
                         num_components=num_components)
        self.phi_x = nn.Sequential(nn.Linear(spec.step_dim, embed), nn.ReLU())
        self.rnn = StepLSTM(embed + z_dim, hidden)
        self.decoder = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, mlp), nn.ReLU())

    def forward(self, batch, kl_scale: float = 1.0):
        self.check_batch(batch)
        zeros = batch.targets.new_zeros(self.latent_shape(batch))
        with sequences_plate(batch):
            with poutine.scale(scale=kl_scale):
                z = pyro.sample("z", SequenceNormal(zeros, torch.ones_like(zeros), mask=batch.mask))
            h, _ = self.rnn(torch.cat([self.phi_x(batch.inputs), z], -1))
            self.observe(batch, self.decoder(h))

    @torch.no_grad()
    def generate(self, num_sequences, num_steps, first_step=None):
        x = self._first_step(num_sequences, first_step)
        out, state = [x], None
        for _ in range(num_steps - 1):
            z = torch.randn(num_sequences, self.z_dim, device=x.device)
            h, state = self.rnn.step(torch.cat([self.phi_x(x), z], -1), state)
            x = self.head(self.decoder(h)).sample()
            out.append(x)
        return torch.stack(out, 1)


# ------------------------------------------------------------------------ VRNN and Z-forcing

class LatentRecurrence(nn.Module):
    """``v_{t-1} = LSTM([φx(x_{t-1}), φz(z_{t-1})], v_{t-2})``: the recurrence through z of VRNN / Z-forcing."""

    def __init__(self, step_dim: int, z_dim: int, hidden: int, embed: int, num_layers: int = 1):
        super().__init__()
        self.phi_x = nn.Sequential(nn.Linear(step_dim, embed), nn.ReLU())
        self.phi_z = nn.Sequential(nn.Linear(z_dim, embed), nn.ReLU())
        self.lstm = StepLSTM(2 * embed, hidden, num_layers)

    def teacher_forced(self, ex_prev: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``v (B, T, H)`` for a given path; ``ex_prev = φx(inputs)``."""
        v, _ = self.lstm(torch.cat([ex_prev, self.phi_z(shift_right(z))], -1))
        return v

    def step(self, ex_prev_t: torch.Tensor, z_prev: torch.Tensor, state=None):
        return self.lstm.step(torch.cat([ex_prev_t, self.phi_z(z_prev)], -1), state)


class RecurrentLatentModel(LatentSequenceModel):
    """VRNN / Z-forcing: prior ``p(z_t | v_{t-1})``, emission ``p(x_t | [v_{t-1}, z_t])``."""

    def __init__(self, spec, hidden=128, embed=64, mlp=64, z_dim=32, dropout=0.0, num_components=None,
                 num_layers=1, **extra):
        super().__init__(spec, hidden=hidden, embed=embed, mlp=mlp, z_dim=z_dim, dropout=dropout,
                         num_components=num_components, num_layers=num_layers, **extra)
        self.core = LatentRecurrence(spec.step_dim, z_dim, hidden, embed, num_layers)
        self.prior_net = GaussianLayer(hidden, z_dim, mlp)
        self.decoder = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden + z_dim, mlp), nn.ReLU())

    # --------------------------------------------------------------- the recurrence, shared
    def context(self, batch, z: torch.Tensor) -> torch.Tensor:
        """``v (B, T, H)`` (``v[:, t] = v_{t-1}``) for the path ``z``: computed once per path."""
        core = self.core
        return self.path_feature(batch, "v", z, lambda: core.teacher_forced(core.phi_x(batch.inputs), z))

    def sample_path(self, batch, step_params):
        """Ancestral loop shared by prior and posteriors.

        ``step_params(t, v_t) -> (loc, scale)`` of ``z_t``; returns ``(z, loc, scale)`` and
        remembers ``v`` for ``z``.
        """
        core = self.core  # looked up once, outside the time loop
        ex = core.phi_x(batch.inputs)
        B, T, _ = ex.shape
        z_prev, state = ex.new_zeros(B, self.z_dim), None
        zs, locs, scales, vs = [], [], [], []
        for t in range(T):
            v_t, state = core.step(ex[:, t], z_prev, state)
            loc, scale = step_params(t, v_t)
            z_prev = loc + scale * torch.randn_like(loc)
            zs.append(z_prev)
            locs.append(loc)
            scales.append(scale)
            vs.append(v_t)
        z, loc, scale = _gaussian_path(locs, scales, zs)
        self.remember(batch, "v", z, torch.stack(vs, 1))
        return z, loc, scale

    def prior(self, batch) -> SequenceNormal:
        prior_net = self.prior_net
        return SequenceNormal(
            params_fn=lambda z: prior_net(self.context(batch, z)),
            sampler=lambda: self.sample_path(batch, lambda t, v_t: prior_net(v_t)),
            shape=self.latent_shape(batch), mask=batch.mask,
        )

    def forward(self, batch, kl_scale: float = 1.0):
        self.check_batch(batch)
        with sequences_plate(batch):
            with poutine.scale(scale=kl_scale):
                z = pyro.sample("z", self.prior(batch))
            v = self.context(batch, z)
            self.observe(batch, self.decoder(torch.cat([v, z], -1)))
            self.auxiliary(batch, z)

    def auxiliary(self, batch, z) -> None:
        """Extra training-only factors (Z-forcing)."""

    @torch.no_grad()
    def generate(self, num_sequences, num_steps, first_step=None):
        x = self._first_step(num_sequences, first_step)
        out, state = [x], None
        z = x.new_zeros(num_sequences, self.z_dim)
        for _ in range(num_steps - 1):
            v, state = self.core.step(self.core.phi_x(x), z, state)
            loc, scale = self.prior_net(v)
            z = loc + scale * torch.randn_like(loc)
            x = self.head(self.decoder(torch.cat([v, z], -1))).sample()
            out.append(x)
        return torch.stack(out, 1)


@register_model("vrnn", "VRNN: v_t-1=LSTM([x_t-1,z_t-1]), p(z_t|v_t-1), p(x_t|v_t-1,z_t); q(z_t|x_t,v_t-1)")
class VRNN(RecurrentLatentModel):
    default_guide = "vrnn-posterior"

    def __init__(self, spec, hidden=128, embed=64, mlp=64, z_dim=32, dropout=0.0, num_components=None,
                 num_layers=1):
        super().__init__(spec, hidden=hidden, embed=embed, mlp=mlp, z_dim=z_dim, dropout=dropout,
                         num_components=num_components, num_layers=num_layers)


@register_model("zforcing", "Z-forcing: h_t-1=LSTM([x_t-1,z_t-1]), p(z_t|h_t-1), p(x_t|h_t-1,z_t); "
                            "q(z_t|h_t-1,b_t), b_t backward over x_≥t; aux α·log p(b_t|z_t)")
class ZForcing(RecurrentLatentModel):
    """Z-forcing. ``aux_weight`` α (0, 0.0025 or 0.005 in the study) weighs the auxiliary cost.

    The auxiliary cost ``α Σ_t log N(b_t; μ(z_t), σ(z_t))`` is a ``pyro.factor("aux")`` added
    in training mode only: it is not part of the likelihood, so evaluation (eval mode) and
    the IWAE estimate exclude it. ``b_t`` is a fixed target (gradient stopped), so the
    backward RNN is trained by the posterior only and cannot collapse to satisfy the cost.
    """

    default_guide = "zforcing-posterior"

    def __init__(self, spec, hidden=128, embed=64, mlp=64, z_dim=32, dropout=0.0, num_components=None,
                 num_layers=1, aux_weight=0.0025):
        super().__init__(spec, hidden=hidden, embed=embed, mlp=mlp, z_dim=z_dim, dropout=dropout,
                         num_components=num_components, num_layers=num_layers, aux_weight=aux_weight)
        if aux_weight < 0:
            raise ValueError(f"zforcing: aux_weight must be ≥ 0, got {aux_weight}")
        self.aux_weight = float(aux_weight)
        self.backward_rnn = BackwardRNN(spec.step_dim, hidden)
        self.aux_net = GaussianLayer(z_dim, hidden, mlp)

    def backward_features(self, batch) -> torch.Tensor:
        """``b (B, T, H)``, ``b[:, t]`` summarises ``x_{≥t}`` of the chunk (mask-aware)."""
        return self.backward_rnn(batch.targets, batch.mask)

    def auxiliary_log_prob(self, batch, z: torch.Tensor) -> torch.Tensor:
        """``Σ_t log N(b_t; μ(z_t), σ(z_t))`` per row, masked (unweighted)."""
        b = self.path_feature(batch, "b", z, lambda: self.backward_features(batch)).detach()
        loc, scale = self.aux_net(z)
        lp = torch.distributions.Normal(loc, scale).log_prob(b).sum(-1)
        return lp.masked_fill(~batch.mask, 0.0).sum(-1)

    def auxiliary(self, batch, z) -> None:
        if self.training and self.aux_weight > 0:
            pyro.factor("aux", self.aux_weight * self.auxiliary_log_prob(batch, z))


class RecurrentPosterior(SequenceGuide):
    """``q(z_t | v_{t-1}, s_t)`` stepping the model's own recurrence; ``s_t`` chosen by subclasses."""

    model_class: type = RecurrentLatentModel

    def __init__(self, model, mlp=None):
        mlp = mlp or getattr(model, "mlp", None)
        super().__init__(model, mlp=mlp)
        self.net = GaussianLayer(model.hidden + self.side_dim(model), model.z_dim, mlp)

    @classmethod
    def fits(cls, model):
        problem = super().fits(model)
        if problem:
            return problem
        if not isinstance(model, cls.model_class):
            return f"it steps the recurrence of {cls.model_class.name!r} models only"
        return None

    def side_dim(self, model) -> int:  # pragma: no cover
        raise NotImplementedError

    def side(self, batch) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, batch, kl_scale: float = 1.0):
        model, net = self.model, self.net
        side = self.side(batch)

        def params_fn(z):
            return net(torch.cat([model.context(batch, z), side], -1))

        def sampler():
            return model.sample_path(batch, lambda t, v_t: net(torch.cat([v_t, side[:, t]], -1)))

        q = SequenceNormal(params_fn=params_fn, sampler=sampler, shape=model.latent_shape(batch), mask=batch.mask)
        with sequences_plate(batch), poutine.scale(scale=kl_scale):
            z = pyro.sample("z", q)
        self.share(batch, z, side)

    def share(self, batch, z, side) -> None:
        """Leave features the model also needs in the batch's cache, keyed to ``z``."""


@register_guide("vrnn-posterior", "VRNN's filtering posterior q(z_t|φx(x_t), v_t-1), stepping the model's v")
class VRNNPosterior(RecurrentPosterior):
    model_class = VRNN

    def side_dim(self, model):
        return model.hparams["embed"]

    def side(self, batch):
        # φx is shared by the recurrence and the encoder, as in Chung et al. (2015)
        return self.model.core.phi_x(batch.targets)


@register_guide("zforcing-posterior", "Z-forcing's posterior q(z_t|h_t-1,b_t), b_t backward LSTM over x_≥t")
class ZForcingPosterior(RecurrentPosterior):
    model_class = ZForcing

    def side_dim(self, model):
        return model.hidden

    def side(self, batch):
        return self.model.backward_features(batch)

    def share(self, batch, z, side) -> None:
        self.model.remember(batch, "b", z, side)  # the auxiliary cost's target


# --------------------------------------------------------------------------- Fraccaro's SRNN

@register_model("srnn-fraccaro", "SRNN (Fraccaro 2016): d_t=LSTM(x_<t), p(z_t|z_t-1,d_t), p(x_t|d_t,z_t); "
                                 "q(z_t|z_t-1,a_t), a_t backward over [x_t,d_t]")
class FraccaroSRNN(LatentSequenceModel):
    default_guide = "srnn-fraccaro-posterior"

    def __init__(self, spec, hidden=128, embed=64, mlp=64, z_dim=32, dropout=0.0, num_components=None,
                 num_layers=1):
        super().__init__(spec, hidden=hidden, embed=embed, mlp=mlp, z_dim=z_dim, dropout=dropout,
                         num_components=num_components, num_layers=num_layers)
        self.forward_rnn = ForwardRNN(spec.step_dim, hidden, num_layers, embed=embed)
        self.prior_net = GaussianLayer(hidden + z_dim, z_dim, mlp)
        self.decoder = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden + z_dim, mlp), nn.ReLU())

    def deterministic(self, batch) -> torch.Tensor:
        """``d (B, T, H)``: ``d[:, t] = d_t`` summarises ``x_<t``."""
        return self.forward_rnn(batch.inputs)[0]

    def deterministic_for(self, batch, z) -> torch.Tensor:
        """``d`` for the path ``z``: the one its sampler (prior or guide) computed, if any."""
        return self.path_feature(batch, "d", z, lambda: self.deterministic(batch))

    def prior_step(self, d_t, z_prev):
        return self.prior_net(torch.cat([d_t, z_prev], -1))

    def prior(self, batch) -> SequenceNormal:
        prior_net = self.prior_net  # looked up once, outside the time loop

        def sampler():
            d = self.deterministic(batch)
            z_prev = d.new_zeros(batch.batch_size, self.z_dim)
            zs, locs, scales = [], [], []
            for t in range(batch.num_steps):
                loc, scale = prior_net(torch.cat([d[:, t], z_prev], -1))
                z_prev = loc + scale * torch.randn_like(loc)
                zs.append(z_prev)
                locs.append(loc)
                scales.append(scale)
            path = _gaussian_path(locs, scales, zs)
            self.remember(batch, "d", path[0], d)
            return path

        return SequenceNormal(params_fn=lambda z: self.prior_step(self.deterministic_for(batch, z), shift_right(z)),
                              sampler=sampler, shape=self.latent_shape(batch), mask=batch.mask)

    def forward(self, batch, kl_scale: float = 1.0):
        self.check_batch(batch)
        with sequences_plate(batch):
            with poutine.scale(scale=kl_scale):
                z = pyro.sample("z", self.prior(batch))
            self.observe(batch, self.decoder(torch.cat([self.deterministic_for(batch, z), z], -1)))

    @torch.no_grad()
    def generate(self, num_sequences, num_steps, first_step=None):
        x = self._first_step(num_sequences, first_step)
        out, state = [x], None
        z = x.new_zeros(num_sequences, self.z_dim)
        for _ in range(num_steps - 1):
            d, state = self.forward_rnn(x.unsqueeze(1), state)
            d = d[:, 0]
            loc, scale = self.prior_step(d, z)
            z = loc + scale * torch.randn_like(loc)
            x = self.head(self.decoder(torch.cat([d, z], -1))).sample()
            out.append(x)
        return torch.stack(out, 1)


@register_guide("srnn-fraccaro-posterior", "Fraccaro's smoothing posterior q(z_t|z_t-1,a_t), a_t backward LSTM "
                                           "over [x_t,d_t]; mean = prior mean + correction")
class FraccaroPosterior(SequenceGuide):
    """``a_t = LSTM←([x_t, d_t])``; ``q(z_t | z_{t-1}, a_t)`` with the mean parameterised as the
    prior mean plus a correction (Fraccaro et al. 2016, §3.3 "resq")."""

    def __init__(self, model, hidden=None, mlp=None):
        # sizes default to the model's (read with getattr: the fit is checked by the base class)
        hidden, mlp = hidden or getattr(model, "hidden", None), mlp or getattr(model, "mlp", None)
        super().__init__(model, hidden=hidden, mlp=mlp)
        self.backward_rnn = BackwardRNN(model.step_dim + model.hidden, hidden)
        self.net = GaussianLayer(hidden + model.z_dim, model.z_dim, mlp)

    @classmethod
    def fits(cls, model):
        problem = super().fits(model)
        if problem:
            return problem
        if not isinstance(model, FraccaroSRNN):
            return "it reads the forward RNN d_t and the prior of 'srnn-fraccaro' models only"
        return None

    def forward(self, batch, kl_scale: float = 1.0):
        model = self.model
        d = model.deterministic(batch)
        a = self.backward_rnn(torch.cat([batch.targets, d], -1), batch.mask)
        prior_net, net = model.prior_net, self.net  # looked up once, outside the time loop

        def step(a_t, d_t, z_prev):
            prior_loc, _ = prior_net(torch.cat([d_t, z_prev], -1))
            loc, scale = net(torch.cat([a_t, z_prev], -1))
            return prior_loc + loc, scale

        def sampler():
            z_prev = d.new_zeros(batch.batch_size, model.z_dim)
            zs, locs, scales = [], [], []
            for t in range(batch.num_steps):
                loc, scale = step(a[:, t], d[:, t], z_prev)
                z_prev = loc + scale * torch.randn_like(loc)
                zs.append(z_prev)
                locs.append(loc)
                scales.append(scale)
            return _gaussian_path(locs, scales, zs)

        q = SequenceNormal(params_fn=lambda z: step(a, d, shift_right(z)), sampler=sampler,
                           shape=model.latent_shape(batch), mask=batch.mask)
        with sequences_plate(batch), poutine.scale(scale=kl_scale):
            z = pyro.sample("z", q)
        model.remember(batch, "d", z, d)  # the model's prior and emission read the same d_t


def vrnn_torch_loss(model: VRNN, guide: VRNNPosterior, batch, kl_scale: float = 1.0) -> torch.Tensor:
    """The negative ELBO of VRNN with its posterior, written by hand in plain PyTorch.

    Same modules and the same random draws in the same order as the Pyro model and guide
    under ``Trace_ELBO``, so with the same seed both give the same value (tested); used as
    the speed baseline of the Pyro version (``docs/readme_parts/latent_models.md``).
    """
    normal = torch.distributions.Normal
    ex_prev, ex = model.core.phi_x(batch.inputs), model.core.phi_x(batch.targets)
    z_prev, state = ex.new_zeros(batch.batch_size, model.z_dim), None
    vs, zs, log_ratio = [], [], []
    for t in range(batch.num_steps):
        v_t, state = model.core.step(ex_prev[:, t], z_prev, state)
        q_loc, q_scale = guide.net(torch.cat([v_t, ex[:, t]], -1))
        z_prev = q_loc + q_scale * torch.randn_like(q_loc)
        p_loc, p_scale = model.prior_net(v_t)
        log_ratio.append((normal(p_loc, p_scale).log_prob(z_prev) - normal(q_loc, q_scale).log_prob(z_prev)).sum(-1))
        vs.append(v_t)
        zs.append(z_prev)
    v, z = torch.stack(vs, 1), torch.stack(zs, 1)
    log_x = model.head(model.decoder(torch.cat([v, z], -1))).log_prob(batch.targets)
    log_ratio = torch.stack(log_ratio, 1).masked_fill(~latent_mask(batch.mask), 0.0)  # holes' latents count
    return -(log_x.masked_fill(~batch.mask, 0.0) + kl_scale * log_ratio).sum()
