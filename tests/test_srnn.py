"""The simplified SRNN family (f-srnn, srnn-flat, srnn-hier): shapes, sampling, guides, presets, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from conftest import make_batch, make_spec
from pyro_srnn.cli import main
from pyro_srnn.data import chunk_sequences, collate
from pyro_srnn.data.core import DataSpec
from pyro_srnn.models import GuideMismatch, build_guide, build_model
from pyro_srnn.models.lowlevel import flatten_batch

FAMILIES = [("bernoulli", 6), ("gaussian", 5), ("handwriting", 3)]
NAMES = ["f-srnn", "srnn-flat", "srnn-hier"]



def cases():
    for name in NAMES:
        for family, L in FAMILIES:
            if not (name == "srnn-flat" and family == "handwriting"):
                yield name, family, L


@pytest.mark.parametrize("name,family,L", list(cases()))
def test_sites_have_time_as_an_event_dimension(name, family, L):
    model = build_model(name, make_spec(family, L), "tiny")
    guide = build_guide(None, model)
    assert guide.name == "srnn-posterior" == model.default_guide and model.has_latent
    lengths = (7, 4, 2)
    batch = make_batch(family, L, lengths=lengths)
    B, T = len(lengths), max(lengths) - 1  # a sequence of n steps gives n − 1 (input, target) pairs
    T_view, L_view = (T * L, 1) if name == "srnn-flat" else (T, L)
    guide_trace = poutine.trace(guide).get_trace(batch)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch)
    for trace in (guide_trace, model_trace):
        z = trace.nodes["z"]
        assert z["value"].shape == (B, T_view, model.latent_dim)
        assert z["fn"].batch_shape == (B,) and z["fn"].event_shape == (T_view, model.latent_dim)
        assert z["fn"].log_prob(z["value"]).shape == (B,)
    x = model_trace.nodes["x"]
    assert x["is_observed"] and x["fn"].batch_shape == (B,) and x["fn"].event_shape == (T_view, L_view)
    assert torch.isfinite(x["fn"].log_prob(x["value"])).all()
    # the KL of a row covers only its own steps: a row of length 2 has a smaller path than one of 7
    kl_rows = guide_trace.nodes["z"]["fn"].log_prob(guide_trace.nodes["z"]["value"]) \
        - model_trace.nodes["z"]["fn"].log_prob(guide_trace.nodes["z"]["value"])
    assert torch.isfinite(kl_rows).all()


@pytest.mark.parametrize("name,family,L", list(cases()))
def test_generate_draws_valid_steps(name, family, L):
    model = build_model(name, make_spec(family, L), "tiny")
    first = torch.zeros(L)
    x = model.generate(3, 6, first_step=first)
    assert x.shape == (3, 6, L) and torch.isfinite(x).all()
    assert torch.equal(x[:, 0], first.expand(3, L))
    if family == "bernoulli":
        assert set(x.unique().tolist()) <= {0.0, 1.0}
    if family == "handwriting":
        assert set(x[..., 0].unique().tolist()) <= {0.0, 1.0}
    assert model.generate(2, 1).shape == (2, 1, L)


@pytest.mark.parametrize("family,L", FAMILIES)
def test_srnn_hier_lstm_low_level_generates_valid_steps(family, L):
    model = build_model("srnn-hier", make_spec(family, L), "tiny", low="lstm", low_hidden=8)
    x = model.generate(2, 4)
    assert x.shape == (2, 4, L) and torch.isfinite(x).all()
    if family != "gaussian":
        assert set(x[..., 0].unique().tolist()) <= {0.0, 1.0}


def test_srnn_flat_rejects_handwriting_with_a_reason():
    with pytest.raises(ValueError, match="handwriting"):
        build_model("srnn-flat", make_spec("handwriting", 3), "tiny")


def test_srnn_flat_scores_the_flattened_chunk_and_resets_every_flat_chunk():
    spec = make_spec("bernoulli", 4)
    model = build_model("srnn-flat", spec, "tiny", flat_chunk=6)
    batch = make_batch("bernoulli", 4, lengths=(5, 3))
    view = model.latent_view(batch)
    flat = flatten_batch(batch)
    assert view is model.latent_view(batch)  # computed once per batch, shared by model and guide
    assert torch.equal(view.targets, flat.targets) and torch.equal(view.inputs, flat.inputs)
    # d_n depends only on the inputs of its own sub-chunk of 6 values
    d = model.forward_features(view.inputs)
    changed = view.inputs.clone()
    changed[:, :6] = 1.0 - changed[:, :6]
    d2 = model.forward_features(changed)
    assert not torch.allclose(d[:, :6], d2[:, :6]) and torch.equal(d[:, 6:], d2[:, 6:])


def test_srnn_posterior_backward_rnn_reads_whole_stream_chunks():
    """Stream batching leaves unscored holes inside a chunk: a_t must still read every real step ≥ t."""
    rng = np.random.default_rng(0)
    seqs = [rng.random((n, 4)).astype(np.float32) for n in (4, 6, 3)]
    batch = collate(chunk_sequences(seqs, 5, stream=True))
    assert not batch.mask[0, 3] and batch.mask[0, 4]  # a hole inside the first chunk
    model = build_model("f-srnn", make_spec("bernoulli", 4), "tiny")
    guide = build_guide(None, model)
    emb = model.embed(batch.targets)
    a = guide.backward_rnn(emb, batch.mask)
    for row in range(batch.batch_size):
        n = int(batch.mask[row].nonzero().max()) + 1  # real steps: up to the last scored one
        expected = guide.backward_rnn.lstm(emb[row:row + 1, :n].flip(1))[0].flip(1)
        assert torch.allclose(a[row:row + 1, :n], expected, atol=1e-6)


@pytest.mark.parametrize("guide_name", ["filtering", "smoothing", "mean-field"])
@pytest.mark.parametrize("name", NAMES)
def test_generic_guides_serve_the_srnn_family(name, guide_name):
    model = build_model(name, make_spec("bernoulli", 4), "tiny")
    guide = build_guide(guide_name, model)
    batch = make_batch("bernoulli", 4, lengths=(5, 3))
    loss = Trace_ELBO().differentiable_loss(model, guide, batch)
    assert torch.isfinite(loss)
    z = poutine.trace(guide).get_trace(make_batch("bernoulli", 4, lengths=(5, 3))).nodes["z"]["value"]
    assert z.shape == (2, 4 * (4 if name == "srnn-flat" else 1), model.latent_dim)


def test_srnn_posterior_refuses_other_models():
    with pytest.raises(GuideMismatch, match="simplified SRNN"):
        build_guide("srnn-posterior", build_model("f-rnn", make_spec("bernoulli", 4), "tiny"))


TABLE6 = {  # Dai et al. 2019, Table 6 (millions of parameters)
    ("f-srnn", "speech"): 17.53, ("f-srnn", "midi"): 2.28, ("f-srnn", "handwriting"): 1.17,
    ("srnn-flat", "speech"): 16.93, ("srnn-flat", "midi"): 2.24,
    ("srnn-hier", "speech"): 17.25, ("srnn-hier", "midi"): 3.05, ("srnn-hier", "handwriting"): 1.02,
}
DOMAIN_SPECS = {"speech": DataSpec("s", 200, "gaussian", "speech", 40),
                "midi": DataSpec("m", 88, "bernoulli", "midi", 100),
                "handwriting": DataSpec("h", 3, "handwriting", "handwriting", None, "line")}


@pytest.mark.parametrize("name,domain", sorted(TABLE6))
def test_study_presets_match_table6_parameter_counts(name, domain):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(name, DOMAIN_SPECS[domain], "study")
        guide = build_guide(None, model)
    count = sum(p.numel() for m in (model, guide) for p in m.parameters()) / 1e6
    assert count == pytest.approx(TABLE6[name, domain], rel=0.01)


CLI_RUNS = [("f-srnn", "trace", []), ("f-srnn", "meanfield", []), ("srnn-hier", "meanfield", []),
            # MIDI has no flat chunk in the study; resetting every step (88 values) keeps this test quick
            ("srnn-flat", "trace", ["--model-arg", "flat_chunk=88", "--batch-size", "4"])]


@pytest.mark.parametrize("name,estimator,extra", CLI_RUNS, ids=[f"{n}-{e}" for n, e, _ in CLI_RUNS])
def test_cli_trains_on_bach_chorales(name, estimator, extra, tmp_path, capsys):
    argv = ["train", "--model", name, "--size", "tiny", "--steps", "3", "--valid-every", "3",
            "--valid-max-batches", "1", "--estimator", estimator, "--no-progress", "--out", str(tmp_path), *extra]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == name and summary["guide"] == "srnn-posterior" and summary["steps"] == 3
    assert summary["metric"] == "neg_elbo" and summary["unit"] == "nats per time step"
    # an untrained tiny model is close to a fair coin per key (88 log 2 ≈ 61 nats), never absurd
    assert 20.0 < summary["value"] < 120.0
    assert (tmp_path / "best.pt").exists()
