"""Worked example: write a new guide, plug it into the zoo, train with it.

The guide below, ``bigru``, is a mean-field posterior for *any* latent model of the zoo:

    g_t = BiGRU([x_{t-1}, x_t])  (over the whole chunk, both directions)
    q(z | x) = Π_t N(z_t | μ(g_t), σ²(g_t))

It follows the guide contract of :mod:`pyro_srnn.models.base`:

1. subclass :class:`~pyro_srnn.models.SequenceGuide` and build from the model it serves;
2. say in ``fits(model)`` when it cannot serve a model (construction then raises
   ``GuideMismatch``);
3. in ``forward(batch, kl_scale=1.0)`` sample the *whole* latent path as one site ``"z"``
   (``batch (B,)``, event ``(T, d_z)``) inside ``pyro.plate("sequences", B)`` and under
   ``poutine.scale(scale=kl_scale)`` — the same plate and scale as the model's ``"z"``;
4. register it with ``register_guide`` (in the package: import the module from
   ``pyro_srnn/models/registry.py`` so ``pyro-srnn train --guide bigru`` finds it).

This file is executed by the test suite (``tests/test_docs.py``), so the example stays true.
"""
from __future__ import annotations

import os
import tempfile

import pyro
import torch
from pyro import poutine
from torch import nn

from pyro_srnn.data import chunk_sequences, collate, load_dataset
from pyro_srnn.distributions import SequenceNormal, gaussian_params
from pyro_srnn.infer import make_elbo
from pyro_srnn.models import GuideMismatch, SequenceGuide, build_guide, build_model, register_guide
from pyro_srnn.train import TrainConfig, Trainer


@register_guide("bigru", "mean-field q(z_t | x) from a bidirectional GRU over [x_{t-1}, x_t]")
class BiGRUGuide(SequenceGuide):
    def __init__(self, model, hidden: int = 32):
        super().__init__(model, hidden=hidden)  # checks fits(model), keeps a reference to the model
        # models whose path follows another view of the batch (srnn-flat: one z per value) say so
        L = getattr(model, "view_step_dim", model.step_dim)
        d_z = model.latent_dim
        self.rnn = nn.GRU(2 * L, hidden, batch_first=True, bidirectional=True)
        self.to_params = nn.Linear(2 * hidden, 2 * d_z)  # mean and log-variance per step

    @classmethod
    def fits(cls, model):
        problem = super().fits(model)  # "the model has no latent variables"
        if problem:
            return problem
        if model.latent_dim is None:
            return "the model does not say the size of its latent z_t (latent_dim)"
        return None

    def forward(self, batch, kl_scale: float = 1.0):
        latent_view = getattr(self.model, "latent_view", None)
        view = latent_view(batch) if latent_view is not None else batch  # the batch "z" is aligned with
        features, _ = self.rnn(torch.cat([view.inputs, view.targets], dim=-1))
        loc, scale = gaussian_params(self.to_params(features))  # clamps as in the ref code
        with pyro.plate("sequences", view.batch_size), poutine.scale(scale=kl_scale):
            pyro.sample("z", SequenceNormal(loc, scale, mask=view.mask))


if __name__ == "__main__":
    pyro.set_rng_seed(0)
    quick = os.environ.get("PYRO_SRNN_QUICK") == "1"
    data = load_dataset("bach_chorales")

    # 1. a deterministic model has nothing to infer: the guide refuses it, with the reason
    frnn = build_model("f-rnn", data.spec, size="tiny")
    try:
        build_guide("bigru", frnn)
        raise AssertionError("bigru must refuse a model without latent variables")
    except GuideMismatch as err:
        print("refused:", err)

    # 2. on latent models, the ELBO with the new guide is a finite lower bound that
    #    Trace_ELBO and TraceMeanField_ELBO both evaluate (srnn-flat: one latent per value)
    batch = collate(chunk_sequences(data.valid[:4], 20, step_dim=data.spec.step_dim)[:4])
    for model_name in ("f-srnn", "vrnn", "srnn-flat"):
        model = build_model(model_name, data.spec, size="tiny")
        guide = build_guide("bigru", model)
        for estimator in ("trace", "meanfield"):
            loss = make_elbo(estimator).loss(model, guide, batch)
            print(f"{model_name:9s} {estimator:9s} -ELBO per step: {loss / batch.num_scored_steps:.3f} nats")
            assert torch.isfinite(torch.tensor(loss))

    # 3. train model + new guide with the zoo's trainer, by name
    steps = 15 if quick else 300
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(TrainConfig(model="f-srnn", guide="bigru", size="tiny", steps=steps,
                                      batch_size=8, valid_every=steps, valid_max_batches=2,
                                      lr=3e-3, out=out, progress=False), dataset=data)
        before = trainer.validate()
        trainer.fit()
        after = trainer.validate()
    print(f"validation -ELBO per time step: {before:.2f} -> {after:.2f} nats after {steps} updates")
    assert after < before, "training with the new guide must improve the validation ELBO"
