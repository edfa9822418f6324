"""The study's simplified SRNN (Dai et al. 2019, appendix B, end): F-SRNN, SRNN-flat, SRNN-hier.

With ``x_{t-1}`` the inputs and ``x_t`` the targets of a chunk (state reset per chunk)::

    d_t = LSTM(embed(x_{t-1}), d_{t-1})                      forward RNN over x_<t   (model)
    a_t = LSTM(embed(x_t), a_{t+1})                          backward RNN over x_≥t  (guide)
    p(z_t | d_t)      = N(μ_p(d_t), σ_p(d_t))                prior, no z_<t
    q(z_t | d_t, a_t) = N(μ_q([d_t, a_t]), σ_q([d_t, a_t]))   posterior, no z_<t
    o_t = LSTM([d_t, z_t], o_{t-1})                          emission state
    p(x_t | o_t)                                             output

Neither prior nor posterior depends on ``z_<t``, so the whole latent path of a chunk is
**one** eager :class:`~pyro_srnn.distributions.SequenceNormal` site ``"z"`` drawn at once,
and every RNN runs over the whole chunk in one call (no Python loop over time).

Three output forms (SPEC §2):

* ``f-srnn`` — fully factorised: ``p(x_t | o_t) = Π_i p(x_{t,i} | o_t)`` (one head);
* ``srnn-flat`` — the same model on the flattened sequence, one value per step
  (``x^flat_n = x_{⌊n/L⌋, n mod L}``), hence one latent per value;
* ``srnn-hier`` — an autoregressive model inside the step fed ``o_t``:
  ``p(x_t | o_t) = Π_i p(x_{t,i} | x_{t,<i}, o_t)`` (an LSTM "inp" low-level model for
  speech, a masked MLP "nade" for MIDI and handwriting, :mod:`pyro_srnn.models.lowlevel`).

Speed: the forward RNN features ``d`` are computed once per ELBO evaluation and shared by
model and guide through the batch's cache; the backward RNN runs in the guide only. The input
embedding is shared by both RNNs (the ref code's layout; it reproduces the parameter counts
of the study's Table 6). :func:`srnn_torch_loss` computes the same negative ELBO in plain
PyTorch from the same modules (for benchmarks, and to test the Pyro loss against it).

Output families (SPEC §3): a single Gaussian per value for speech (``k = 1``, ref code),
Bernoulli for MIDI, the pen/dx/dy head for handwriting.

References: Dai, Lai, Yang, Yoo, "Re-examination of the Role of Latent Variables in
Sequence Modeling", NeurIPS 2019 (appendix B, D); Fraccaro et al. 2016 (SRNN);
Goyal et al. 2017 (Z-forcing, whose backward RNN this posterior uses).
"""
from __future__ import annotations

import pyro
import torch
from pyro import poutine
from torch import nn

from ..data.batch import SequenceBatch
from ..distributions import SequenceNormal, latent_mask, masked_sequence
from ..heads import make_head
from ..nn import BackwardRNN, ForwardRNN, GaussianLayer
from .base import SequenceGuide, SequenceModel, register_guide, register_model, sequences_plate
from .lowlevel import LOW_LEVEL_FORMS, flatten_batch, make_low_level

__all__ = ["SimplifiedSRNN", "FSRNN", "SRNNFlat", "SRNNHier", "SRNNPosterior", "srnn_torch_loss"]


class SimplifiedSRNN(SequenceModel):
    """Common model of the three forms; subclasses choose the view of the data and the output."""

    has_latent = True
    default_guide = "srnn-posterior"
    #: view steps between resets of every RNN state (srnn-flat: the study's flat chunk); None: never
    reset_every: int | None = None

    def __init__(self, spec, hidden=256, embed=128, mlp=128, latent=64, num_layers=1, dropout=0.0,
                 num_components=None, **output_args):
        super().__init__(spec, hidden=hidden, embed=embed, mlp=mlp, latent=latent, num_layers=num_layers,
                         dropout=dropout, num_components=num_components, **output_args)
        self.hidden, self.latent = hidden, latent
        value_dim = self.view_step_dim
        self.forward_rnn = ForwardRNN(value_dim, hidden, num_layers, embed=embed, dropout=dropout)
        self.prior_net = GaussianLayer(hidden, latent, mlp)
        self.emission_rnn = nn.LSTM(hidden + latent, hidden, batch_first=True)
        self.emission_dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.build_output(spec, hidden, num_components, **output_args)

    # ------------------------------------------------------------ what subclasses choose
    @property
    def view_step_dim(self) -> int:
        """Values per step of the sequence the latent path runs over (L, or 1 when flat)."""
        return self.spec.step_dim

    def latent_view(self, batch: SequenceBatch) -> SequenceBatch:
        """The batch the latent path is aligned with: ``z`` has shape ``(B, T_view, d_z)``."""
        return batch

    def build_output(self, spec, hidden, num_components):
        raise NotImplementedError

    def output_distribution(self, o: torch.Tensor, view: SequenceBatch):
        """Per-step distribution of the view's targets (batch ``(B, T_view)``) given ``o``."""
        raise NotImplementedError

    # ------------------------------------------------------------ shapes
    @property
    def latent_dim(self) -> int:
        return self.latent

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The input embedding shared by the forward (model) and backward (guide) RNNs."""
        emb = self.forward_rnn.embed
        return emb(x) if emb is not None else x

    def in_pieces(self, fn, *seqs: torch.Tensor) -> torch.Tensor:
        """``fn`` over sequences ``(B, N, ...)`` with a fresh state every :attr:`reset_every` steps.

        The sequences are cut into sub-chunks (the last one zero/False-padded) that run in
        parallel as rows ``(B·n, C, ...)``, which is also much faster than one long pass.
        """
        C = self.reset_every
        B, N = seqs[0].shape[:2]
        if C is None or C >= N:
            return fn(*seqs)
        n = -(-N // C)

        def cut(x):
            if n * C > N:
                x = torch.cat([x, x.new_zeros((B, n * C - N) + x.shape[2:])], dim=1)
            return x.reshape((B * n, C) + x.shape[2:])

        out = fn(*(cut(x) for x in seqs))
        return out.reshape((B, n * C) + out.shape[2:])[:, :N]

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``d_t`` for every step of ``inputs (B, T, L_view)``."""
        return self.in_pieces(lambda x: self.forward_rnn(x)[0], inputs)

    def features(self, view: SequenceBatch, refresh: bool = False) -> torch.Tensor:
        """``d (B, T, H)``: the forward RNN over the inputs, computed once per loss evaluation.

        Kept in the batch's cache (like :meth:`SequenceModel.shared`) so that the guide and
        the model use one pass. ``srnn-posterior`` runs first in every ELBO and asks for a
        fresh pass (``refresh``); the cached one is also dropped when the weights changed
        in place (optimiser step), or the train/eval or grad mode differs, so reusing one
        batch for several updates never sees a stale ``d`` or a freed graph.
        """
        return self.shared(view, "d", lambda: self.forward_features(view.inputs), refresh=refresh)

    def emission(self, d: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``o_t = LSTM([d_t, z_t], o_{t-1})`` for every step."""
        o = self.in_pieces(lambda x: self.emission_rnn(x)[0], torch.cat([d, z], dim=-1))
        return self.emission_dropout(o)

    # ------------------------------------------------------------ Pyro model
    def forward(self, batch, kl_scale: float = 1.0):
        self.check_batch(batch)
        view = self.latent_view(batch)
        d = self.features(view)
        loc, scale = self.prior_net(d)
        with sequences_plate(view):
            with poutine.scale(scale=kl_scale):
                z = pyro.sample("z", SequenceNormal(loc, scale, mask=view.mask))
            o = self.emission(d, z)
            pyro.sample("x", masked_sequence(self.output_distribution(o, view), view.mask), obs=view.targets)

    # ------------------------------------------------------------ ancestral sampling
    def sample_step(self, o_t: torch.Tensor) -> torch.Tensor:
        """One view step ``(N, L_view)`` from ``p(x_t | o_t)``, ``o_t (N, H)``."""
        raise NotImplementedError

    @torch.no_grad()
    def _generate_view(self, first: torch.Tensor, num_view_steps: int) -> torch.Tensor:
        """Ancestral sampling of ``num_view_steps`` view steps after ``first (N, L_view)``."""
        x, d_state, o_state, out = first, None, None, []
        for n in range(num_view_steps):
            if self.reset_every is not None and n % self.reset_every == 0:
                d_state = o_state = None  # the state resets the model was trained with
            d, d_state = self.forward_rnn(x.unsqueeze(1), d_state)
            loc, scale = self.prior_net(d)
            z = loc + scale * torch.randn_like(loc)
            o, o_state = self.emission_rnn(torch.cat([d, z], dim=-1), o_state)
            x = self.sample_step(self.emission_dropout(o[:, 0]))
            out.append(x)
        return torch.stack(out, dim=1) if out else first.new_zeros(first.shape[0], 0, first.shape[1])


class _StepOutput:
    """Mixin: the latent path runs over the steps (f-srnn, srnn-hier)."""

    @torch.no_grad()
    def generate(self, num_sequences, num_steps, first_step=None):
        x = self._first_step(num_sequences, first_step)
        rest = self._generate_view(x, num_steps - 1)
        return torch.cat([x.unsqueeze(1), rest], dim=1)


@register_model("f-srnn", "simplified SRNN, factorised output: p(z_t|d_t) q(z_t|d_t,a_t) p(x_t|o_t)=Π_i p(x_t,i|o_t), "
                          "o_t=RNN([d_t,z_t],o_t-1)")
class FSRNN(_StepOutput, SimplifiedSRNN):
    """F-SRNN: the simplified SRNN with a fully factorised output head."""

    PRESETS = {
        "tiny": dict(hidden=16, embed=16, mlp=16, latent=4, dropout=0.0),
        "small": dict(hidden=256, embed=128, mlp=128, latent=64, dropout=0.0),
        # study configurations (SPEC §6; Table 6: 17.53M / 2.28M / 1.17M parameters, model + guide)
        "speech": dict(hidden=825, embed=512, mlp=512, latent=256, dropout=0.0),  # 17.53M
        "midi": dict(hidden=272, embed=256, mlp=256, latent=128, dropout=0.5),  # 2.27M
        "handwriting": dict(hidden=218, embed=128, mlp=128, latent=64, dropout=0.5),  # 1.17M
    }

    def build_output(self, spec, hidden, num_components):
        self.head = make_head(spec.family, hidden, spec.step_dim, num_components)

    def output_distribution(self, o, view):
        return self.head(o)

    def sample_step(self, o_t):
        return self.head(o_t).sample()


@register_model("srnn-flat", "simplified SRNN on the flattened sequence (one value per step, one z per value)")
class SRNNFlat(SimplifiedSRNN):
    """SRNN-flat: the simplified SRNN over ``x^flat`` (one value per step, a latent per value).

    The observed site ``"x"`` is the flattened chunk (event ``(T·L, 1)``, see
    :func:`~pyro_srnn.models.lowlevel.flatten_batch`); its log density equals that of the
    chunk. The latent site ``"z"`` has event ``(T·L, d_z)``: generic guides use
    :meth:`latent_view`. ``flat_chunk`` resets every RNN state each that many values, the
    study's flat chunking (speech: 2000 samples, ``DataSpec.flat_chunk_len``, the default
    ``"spec"``) inside the step models' batches; ``None`` runs over the whole chunk.
    """

    PRESETS = {
        "tiny": dict(hidden=16, embed=8, mlp=16, latent=4, dropout=0.0),
        "small": dict(hidden=256, embed=64, mlp=128, latent=32, dropout=0.0),
        "speech": dict(hidden=825, embed=512, mlp=512, latent=256, dropout=0.0),  # 16.93M
        "midi": dict(hidden=273, embed=256, mlp=256, latent=128, dropout=0.5),  # 2.24M
    }

    def __init__(self, spec, *args, **kwargs):
        if spec.family == "handwriting":
            raise ValueError("srnn-flat models one kind of value per step; handwriting steps mix a pen bit "
                             "with offsets (the study has no flat handwriting model): use f-srnn or srnn-hier")
        super().__init__(spec, *args, **kwargs)

    @property
    def view_step_dim(self) -> int:
        return 1

    def latent_view(self, batch):
        return self.shared(batch, "flat", lambda: flatten_batch(batch))

    def build_output(self, spec, hidden, num_components, flat_chunk="spec"):
        if flat_chunk == "spec":
            flat_chunk = spec.flat_chunk_len
        if flat_chunk is not None and int(flat_chunk) < 1:
            raise ValueError(f"flat_chunk must be ≥ 1 values or None, got {flat_chunk}")
        self.reset_every = int(flat_chunk) if flat_chunk else None
        self.head = make_head(spec.family, hidden, 1, num_components)

    def output_distribution(self, o, view):
        return self.head(o)

    def sample_step(self, o_t):
        return self.head(o_t).sample()

    @torch.no_grad()
    def generate(self, num_sequences, num_steps, first_step=None):
        x = self._first_step(num_sequences, first_step)
        L = self.step_dim
        flat = self._generate_view(x[:, -1:], (num_steps - 1) * L)
        return torch.cat([x.unsqueeze(1), flat.reshape(num_sequences, num_steps - 1, L)], dim=1)


@register_model("srnn-hier", "simplified SRNN, autoregressive output within the step: "
                             "p(x_t|o_t) = Π_i p(x_t,i | x_t,<i, o_t)")
class SRNNHier(_StepOutput, SimplifiedSRNN):
    """SRNN-hier: the emission state ``o_t`` is the context of a within-step autoregressive model.

    ``low="lstm"`` is the study's "inp" form (an LSTM over the ``L`` values fed ``o_t`` at
    every position; speech), ``"made"`` its masked-MLP "nade" form (MIDI, handwriting), both
    in the corrected versions of :mod:`pyro_srnn.models.lowlevel` (SPEC §7).
    """

    PRESETS = {
        "tiny": dict(hidden=16, embed=16, mlp=16, latent=4, dropout=0.0, low="made", low_hidden=8),
        "small": dict(hidden=256, embed=128, mlp=128, latent=64, dropout=0.0, low="made", low_hidden=64),
        "speech": dict(hidden=660, embed=512, mlp=512, latent=256, dropout=0.0, low="lstm",
                       low_hidden=808, low_embed=None),  # 17.25M
        "midi": dict(hidden=293, embed=256, mlp=256, latent=128, dropout=0.5, low="made",
                     low_hidden=16),  # 3.05M
        "handwriting": dict(hidden=196, embed=128, mlp=128, latent=64, dropout=0.25, low="made",
                            low_hidden=64),  # 1.02M
    }

    def build_output(self, spec, hidden, num_components, low="made", low_hidden=64, low_layers=1,
                     low_embed=None):
        if low not in LOW_LEVEL_FORMS:
            raise ValueError(f"unknown low-level form {low!r}; choose one of {LOW_LEVEL_FORMS}")
        head = make_head(spec.family, None, spec.step_dim, num_components)
        self.low_level = make_low_level(low, hidden, head, low_hidden, low_layers, embed=low_embed,
                                        dropout=self.hparams["dropout"])

    def output_distribution(self, o, view):
        return self.low_level.distribution(o, view.targets)

    def sample_step(self, o_t):
        return self.low_level.sample(o_t)


# ---------------------------------------------------------------------------- guide

@register_guide("srnn-posterior", "q(z_t|d_t,a_t): a_t backward LSTM over x_≥t, d_t the model's forward RNN "
                                  "(shared, computed once); all z_t at once")
class SRNNPosterior(SequenceGuide):
    """The simplified SRNN's posterior ``q(z_t | d_t, a_t)``.

    ``d_t`` is the model's forward-RNN state (kept in the batch's cache by
    :meth:`SimplifiedSRNN.features`: computed here, reused by the model, so once per
    ELBO evaluation); ``a_t`` is a backward LSTM over the embedded targets ``x_≥t`` of the
    chunk, which this guide owns.
    """

    def __init__(self, model, hidden=None, mlp=None, num_layers=None):
        hidden = hidden or model.hparams.get("hidden")
        mlp = mlp or model.hparams.get("mlp")
        num_layers = num_layers or model.hparams.get("num_layers", 1)
        super().__init__(model, hidden=hidden, mlp=mlp, num_layers=num_layers)  # raises if it does not fit
        in_dim = model.hparams["embed"] or model.view_step_dim
        self.backward_rnn = BackwardRNN(in_dim, hidden, num_layers)
        self.posterior_net = GaussianLayer(model.hidden + hidden, model.latent_dim, mlp)

    @classmethod
    def fits(cls, model):
        if not isinstance(model, SimplifiedSRNN):
            return "it reads the forward RNN of a simplified SRNN (f-srnn, srnn-flat, srnn-hier)"
        return None

    def posterior(self, view: SequenceBatch, d: torch.Tensor):
        a = self.model.in_pieces(self.backward_rnn, self.model.embed(view.targets), view.mask)
        return self.posterior_net(torch.cat([d, a], dim=-1))

    def forward(self, batch, kl_scale: float = 1.0):
        view = self.model.latent_view(batch)
        loc, scale = self.posterior(view, self.model.features(view, refresh=True))
        with sequences_plate(view):
            with poutine.scale(scale=kl_scale):
                pyro.sample("z", SequenceNormal(loc, scale, mask=view.mask))

    def torch_loss(self, batch, kl_scale: float = 1.0, analytic_kl: bool = False) -> torch.Tensor:
        return srnn_torch_loss(self.model, self, batch, kl_scale, analytic_kl)


def srnn_torch_loss(model: SimplifiedSRNN, guide: SRNNPosterior, batch: SequenceBatch, kl_scale: float = 1.0,
                    analytic_kl: bool = False) -> torch.Tensor:
    """The negative ELBO of a simplified SRNN in plain PyTorch, from the same modules.

    ``-Σ_rows [log p(x | z) + kl_scale · (log p(z) − log q(z | x))]`` with one ``z ~ q``
    (reparameterised, the noise drawn at the same point of the computation as in the
    Pyro guide), or with ``analytic_kl`` the Gaussian KL in closed form. Padded steps
    count zero. Equal to ``Trace_ELBO`` (resp. ``TraceMeanField_ELBO``) given the same RNG
    state; this is the hand-written step the Pyro version is benchmarked against.
    """
    view = model.latent_view(batch)
    mask = view.mask
    d = model.forward_features(view.inputs)
    q_loc, q_scale = guide.posterior(view, d)
    z = q_loc + q_scale * torch.randn_like(q_loc)
    p_loc, p_scale = model.prior_net(d)
    o = model.emission(d, z)
    log_px = model.output_distribution(o, view).log_prob(view.targets).masked_fill(~mask, 0.0).sum()
    q = torch.distributions.Normal(q_loc, q_scale, validate_args=False)
    p = torch.distributions.Normal(p_loc, p_scale, validate_args=False)
    if analytic_kl:
        kl = torch.distributions.kl_divergence(q, p).sum(-1)
    else:
        kl = q.log_prob(z).sum(-1) - p.log_prob(z).sum(-1)
    kl = kl.masked_fill(~latent_mask(mask), 0.0).sum()  # holes' latents count (latent_mask)
    return -(log_px - kl_scale * kl)
