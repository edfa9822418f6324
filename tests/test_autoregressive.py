"""Within-step autoregressive models (LSTM and masked MLP), flattening, RNN-flat and RNN-hier."""
from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import torch

from pyro_srnn.cli import main as cli_main
from pyro_srnn.data import chunk_sequences, collate
from pyro_srnn.data.batch import SequenceBatch
from pyro_srnn.heads import make_head
from pyro_srnn.infer import log_weights
from pyro_srnn.models import build_guide, build_model
from pyro_srnn.models.base import EmptyGuide
from pyro_srnn.models.lowlevel import (LSTMLowLevel, MADELowLevel, flatten_batch, flat_inputs,
                                       make_low_level)
from pyro_srnn.train import TrainConfig, Trainer

from conftest import make_batch, make_dataset, make_spec, random_sequences


def _low(form, family="bernoulli", L=4, C=3, hidden=8, num_layers=2, k=2):
    torch.manual_seed(1)
    head = make_head(family, None, L, k)
    if form == "lstm":
        return LSTMLowLevel(C, head, hidden, num_layers, embed=5)
    return MADELowLevel(C, head, hidden, num_layers)


def _all_binary(L):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=L)))


@pytest.mark.parametrize("form", ["lstm", "made"])
@pytest.mark.parametrize("C", [0, 3])
def test_binary_step_density_sums_to_one(form, C):
    L = 4
    low = _low(form, L=L, C=C)
    low.eval()
    x = _all_binary(L)  # (16, 4)
    ctx = torch.randn(2, 1, C)  # two different contexts, each must normalise
    xs = x.unsqueeze(0).expand(2, -1, -1)  # (2, 16, L): B=2 contexts, T=16 configurations
    context = ctx.expand(-1, 16, -1) if C else None
    d = low.distribution(context, xs)
    assert d.batch_shape == (2, 16) and d.event_shape == (L,)
    total = d.log_prob(xs).logsumexp(-1)
    assert torch.allclose(total, torch.zeros(2), atol=1e-5)


@pytest.mark.parametrize("form", ["lstm", "made"])
@pytest.mark.parametrize("family", ["bernoulli", "gaussian", "handwriting"])
def test_each_value_depends_only_on_earlier_values(form, family):
    L = 3 if family == "handwriting" else 5
    low = _low(form, family=family, L=L)
    low.eval()
    ctx = torch.randn(2, 4, 3)
    x = torch.randn(2, 4, L).round() if family == "bernoulli" else torch.randn(2, 4, L)
    base = low.params(ctx, x)
    for i in range(L):
        x2 = x.clone()
        x2[..., i:] = x2[..., i:] + 1.7  # change value i and everything after it
        p2 = low.params(ctx, x2)
        assert torch.allclose(base[..., : i + 1, :], p2[..., : i + 1, :], atol=1e-6), i
        if i + 1 < L:  # a later value does see the change (the dependence is real)
            assert not torch.allclose(base[..., i + 1:, :], p2[..., i + 1:, :])
    # and the first value sees the context (corrected ref code, SPEC §7)
    ctx2 = ctx + 1.0
    assert not torch.allclose(low.params(ctx2, x)[..., 0, :], base[..., 0, :])


@pytest.mark.parametrize("form", ["lstm", "made"])
def test_gaussian_step_density_integrates_to_one(form):
    """L = 2 real values: numerical double integral of the step density ≈ 1."""
    low = _low(form, family="gaussian", L=2, C=3, k=3)
    low.eval()
    with torch.no_grad():
        grid = torch.linspace(-12, 12, 481)
        dx = grid[1] - grid[0]
        x0, x1 = torch.meshgrid(grid, grid, indexing="ij")
        x = torch.stack([x0.reshape(-1), x1.reshape(-1)], -1).unsqueeze(0)
        ctx = torch.randn(1, 1, 3).expand(1, x.shape[1], 3)
        p = low.distribution(ctx, x).log_prob(x).exp().sum() * dx * dx
    assert abs(float(p) - 1.0) < 1e-3


@pytest.mark.parametrize("form", ["lstm", "made"])
@pytest.mark.parametrize("family", ["bernoulli", "gaussian", "handwriting"])
def test_sample_shapes_and_values(form, family):
    L = 3 if family == "handwriting" else 4
    low = _low(form, family=family, L=L)
    s = low.sample(torch.randn(6, 3))
    assert s.shape == (6, L)
    if family == "bernoulli":
        assert set(s.unique().tolist()) <= {0.0, 1.0}
    if family == "handwriting":
        assert set(s[:, 0].unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(s).all()
    assert _low(form, family=family, L=L, C=0).sample(None, num=5).shape == (5, L)


@pytest.mark.parametrize("form", ["lstm", "made"])
def test_sampling_matches_scored_density(form):
    """Ancestral samples of a context-free binary model follow the density it scores (L=3)."""
    torch.manual_seed(0)
    low = _low(form, L=3, C=0, hidden=6)
    low.eval()
    n = 20000
    s = low.sample(None, num=n)
    codes = (s * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(codes, minlength=8).float() / n
    x = _all_binary(3).unsqueeze(0)
    probs = low.distribution(None, x).log_prob(x).exp()[0]
    assert torch.allclose(freq, probs, atol=0.015)


@pytest.mark.parametrize("form", ["lstm", "made"])
def test_low_level_gradients_reach_every_parameter(form):
    low = _low(form, family="gaussian", L=4, k=2)
    ctx = torch.randn(2, 3, 3, requires_grad=True)
    x = torch.randn(2, 3, 4)
    low.distribution(ctx, x).log_prob(x).sum().backward()
    for name, p in low.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if not name.startswith("w0"):
            assert p.grad.abs().sum() > 0, name
    assert ctx.grad.abs().sum() > 0


def test_reference_code_form_of_the_lstm_ignores_the_context_for_the_first_value():
    """``ref_first_value=True`` (ref code, SPEC §7): still normalised and autoregressive, but value 0 is blind."""
    torch.manual_seed(1)
    low = LSTMLowLevel(3, make_head("bernoulli", None, 4), 8, 2, embed=5, ref_first_value=True).eval()
    x = _all_binary(4).unsqueeze(0)
    ctx = torch.randn(1, 1, 3).expand(1, 16, 3)
    assert abs(float(low.distribution(ctx, x).log_prob(x).logsumexp(-1).detach())) < 1e-5
    p1, p2 = low.params(ctx, x), low.params(ctx + 1.0, x)
    assert torch.allclose(p1[..., 0, :], p2[..., 0, :])  # the defect: x_0 does not see the context
    assert not torch.allclose(p1[..., 1:, :], p2[..., 1:, :])
    x2 = x.clone()
    x2[..., 2:] = 1 - x2[..., 2:]
    assert torch.allclose(low.params(ctx, x2)[..., :3, :], p1[..., :3, :])  # value i reads x_<i only
    # ancestral sampling follows the scored density (context-free, L=3)
    low3 = LSTMLowLevel(0, make_head("bernoulli", None, 3), 6, 1, ref_first_value=True).eval()
    s = low3.sample(None, num=20000)
    freq = torch.bincount((s * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long(), minlength=8).float() / 20000
    x3 = _all_binary(3).unsqueeze(0)
    assert torch.allclose(freq, low3.distribution(None, x3).log_prob(x3).exp()[0], atol=0.015)
    with pytest.raises(ValueError, match="LSTM low-level"):
        make_low_level("made", 3, make_head("bernoulli", None, 4), 8, ref_first_value=True)


def test_make_low_level_rejects_unknown_form():
    with pytest.raises(ValueError, match="low-level form"):
        make_low_level("gru", 3, make_head("bernoulli", None, 4), 8)


def test_context_size_is_checked():
    low = _low("made", C=3)
    with pytest.raises(ValueError, match="context has size 2"):
        low.params(torch.randn(1, 2, 2), torch.zeros(1, 2, 4))


def test_flatten_batch_reading_order_and_mask():
    batch = make_batch("gaussian", L=3, lengths=(5, 3))
    flat = flatten_batch(batch)
    B, T, L = batch.inputs.shape
    assert flat.inputs.shape == (B, T * L, 1) and flat.mask.shape == (B, T * L)
    # targets in reading order; every flat input is the previous flat target, the first is
    # the last value of the conditioning step inputs[:, 0]
    ft = flat.targets[..., 0]
    fi = flat.inputs[..., 0]
    assert torch.equal(ft, batch.targets.reshape(B, -1))
    valid = flat.mask[:, 1:]  # (padded steps have zero inputs)
    assert torch.equal(fi[:, 1:][valid], ft[:, :-1][valid])
    assert torch.equal(fi[:, 0], batch.inputs[:, 0, -1])
    assert torch.equal(flat.mask.reshape(B, T, L), batch.mask.unsqueeze(-1).expand(-1, -1, L))
    assert flat.num_scored_values == batch.num_scored_values
    assert torch.equal(flat_inputs(batch.inputs, batch.targets)[:, 1:, 0], batch.inputs[:, 1:, -1])


# ---------------------------------------------------------------------------- models


STEP_MODELS = [("rnn-flat", {}), ("rnn-flat", {"flat_chunk": 4}), ("rnn-hier", {"low": "lstm"}),
               ("rnn-hier", {"low": "made"}), ("delta-rnn", {"d_leak": 2}),
               ("delta-rnn", {"split": "interleave", "stride": 2})]
IDS = ["flat", "flat-reset", "hier-lstm", "hier-made", "delta-random", "delta-interleave"]


def _model(name, spec, kw):
    torch.manual_seed(0)
    m = build_model(name, spec, "tiny", **kw)
    m.eval()
    return m


def _lw(model, guide, batch):
    with torch.no_grad():
        return log_weights(model, guide, batch)


def _step_log_probs(model, batch):
    with torch.no_grad():
        return model.step_distribution(batch).log_prob(batch.targets)


@pytest.mark.parametrize("name,kw", STEP_MODELS, ids=IDS)
def test_step_density_normalises_over_all_binary_steps(name, kw):
    """Given one history, the 16 possible next steps (L=4) have probabilities summing to 1."""
    model = _model(name, make_spec("bernoulli", 4), kw)
    steps = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))
    history = torch.tensor([1.0, 0.0, 1.0, 1.0]).expand(16, 1, 4)
    batch = collate_steps(history, steps.unsqueeze(1))
    total = _lw(model, EmptyGuide(model), batch).logsumexp(0)
    assert abs(float(total)) < 1e-5


def collate_steps(inputs, targets):
    return SequenceBatch(inputs.clone(), targets.clone(), torch.ones(inputs.shape[:2], dtype=torch.bool))


@pytest.mark.parametrize("name,kw", STEP_MODELS, ids=IDS)
@pytest.mark.parametrize("family", ["gaussian", "handwriting"])
def test_future_steps_do_not_change_earlier_densities(name, kw, family):
    L = 3 if family == "handwriting" else 4
    if name == "delta-rnn" and family == "handwriting":
        kw = {"split": "interleave", "stride": 2}
    model = _model(name, make_spec(family, L), kw)
    seq = random_sequences(family, L, [9])[0]
    later = seq.copy()
    later[5:, 1:] += 1.3  # steps ≥ 5 change (offsets / real values only: the pen bit stays binary)
    a = _step_log_probs(model, collate(chunk_sequences([seq], None)))
    b = _step_log_probs(model, collate(chunk_sequences([later], None)))
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)  # targets x_1..x_4 (targets[t] = x_{t+1})
    assert not torch.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("name,kw", STEP_MODELS + [("delta-srnn", {"d_leak": 2})], ids=IDS + ["delta-srnn"])
def test_padding_contributes_nothing(name, kw):
    model = _model(name, make_spec("gaussian", 4), kw)
    guide = build_guide(None, model)
    seqs = random_sequences("gaussian", 4, [9, 5, 3])
    batch = collate(chunk_sequences(seqs, None))
    together = _lw(model, guide, batch)
    alone = torch.cat([_lw(model, guide, collate(chunk_sequences([s], None))) for s in seqs])
    assert torch.allclose(together, alone, atol=1e-4)
    batch.targets[~batch.mask] = 5.0  # garbage in the padding changes nothing
    batch.inputs[~batch.mask] = -5.0
    assert torch.allclose(_lw(model, guide, batch), together, atol=1e-5)


@pytest.mark.parametrize("flat_chunk", [None, 5])
@pytest.mark.parametrize("family", ["gaussian", "handwriting"])
def test_flat_model_scores_the_values_one_by_one(flat_chunk, family):
    """The parallel flat forward equals a value-by-value loop over the chunk in reading order."""
    L = 3
    model = _model("rnn-flat", make_spec(family, L), {"flat_chunk": flat_chunk})
    seq = random_sequences(family, L, [6])[0]
    batch = collate(chunk_sequences([seq], None))
    parallel = _step_log_probs(model, batch)[0]  # (T,)
    values = torch.as_tensor(seq).reshape(-1)  # x_0 … x_5 in reading order
    with torch.no_grad():
        state, lps = None, []
        for n in range(L, values.numel()):  # predict every value after the first step
            k = n - L  # index within the chunk
            if flat_chunk and k % flat_chunk == 0:
                state = None
            v = values[n - 1].view(1, 1, 1)
            if model.positional:
                v = torch.cat([v, torch.nn.functional.one_hot(torch.tensor([[k % L]]), L).float()], -1)
            h, state = model.rnn(v, state)
            raw = model.proj(h[0, 0])
            raw = raw.view(L, -1)[k % L] if model.positional else raw
            lps.append(model.head.value_distribution(raw, k % L).log_prob(values[n]))
    looped = torch.stack(lps).view(-1, L).sum(-1)
    assert torch.allclose(parallel, looped, atol=1e-4)


@pytest.mark.parametrize("name,kw", STEP_MODELS + [("delta-srnn", {})], ids=IDS + ["delta-srnn"])
def test_generate_shapes(name, kw):
    for family, L in (("bernoulli", 4), ("handwriting", 3)):
        kw2 = {"split": "interleave", "stride": 2} if name.startswith("delta") and family == "handwriting" else kw
        model = _model(name, make_spec(family, L), kw2)
        x = model.generate(3, 5)
        assert x.shape == (3, 5, L) and torch.isfinite(x).all()
        binary = x if family == "bernoulli" else x[..., 0]
        assert set(binary.unique().tolist()) <= {0.0, 1.0}


def test_data_with_another_step_size_is_refused():
    for name in ("rnn-flat", "rnn-hier", "delta-rnn", "delta-srnn"):
        model = build_model(name, make_spec("gaussian", 6), "tiny")
        batch = make_batch("gaussian", L=5)
        with pytest.raises(ValueError, match="L=5 does not match the model's L=6"):
            model(batch)


def test_bad_hyper_parameters_fail_before_training(tmp_path, capsys):
    for arg in ("d_leak=88", "d_leak=0", "d_leak=-3"):
        out = tmp_path / arg
        code = cli_main(["train", "--dataset", "bach_chorales", "--model", "delta-rnn", "--size", "tiny",
                         "--steps", "3", "--model-arg", arg, "--out", str(out), "--no-progress"])
        assert code != 0
        assert "0 < d_leak < L=88" in capsys.readouterr().err
        assert not (out / "latest.pt").exists()
    code = cli_main(["train", "--dataset", "bach_chorales", "--model", "rnn-hier", "--size", "tiny",
                     "--steps", "3", "--model-arg", "low=gru", "--out", str(tmp_path / "gru"), "--no-progress"])
    assert code != 0 and "unknown low-level form" in capsys.readouterr().err


# flat_chunk=88: state reset every step's worth of values, so the 8800-value chunks run as 100
# parallel pieces (a whole-chunk LSTM over 8800 values is slow on a CPU)
CLI_RUNS = [("rnn-flat", ["--model-arg", "flat_chunk=88"]), ("rnn-hier", []), ("rnn-hier", ["--model-arg", "low=lstm"]),
            ("delta-rnn", ["--model-arg", "split=interleave"]), ("delta-srnn", [])]


@pytest.mark.parametrize("name,extra", CLI_RUNS, ids=["flat", "hier-made", "hier-lstm", "delta-interleave",
                                                       "delta-srnn"])
def test_trains_from_the_cli_on_bach_chorales(name, extra, tmp_path, capsys):
    code = cli_main(["train", "--dataset", "bach_chorales", "--model", name, "--size", "tiny", "--steps", "3",
                     "--valid-every", "3", "--valid-max-batches", "1", "--batch-size", "4", "--no-progress",
                     "--out", str(tmp_path), *extra])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and math.isfinite(summary["value"]) and summary["value"] > 0
    assert (tmp_path / "best.pt").exists()


@pytest.mark.parametrize("name,guide,kw", [("rnn-flat", None, {}), ("rnn-hier", None, {"low": "lstm"}),
                                           ("delta-rnn", None, {}), ("delta-srnn", "delta", {}),
                                           ("delta-srnn", "delta-gaussian", {})])
def test_trains_on_speech_shaped_data(name, guide, kw, tmp_path):
    data = make_dataset("gaussian", L=8, chunk_len=6)
    data.spec = dataclasses.replace(data.spec, domain="speech", flat_chunk_len=12)  # 1.5 steps per flat chunk
    cfg = TrainConfig(model=name, guide=guide, size="tiny", steps=3, batch_size=4, valid_every=3,
                      progress=False, out=str(tmp_path), model_args=kw)
    trainer = Trainer(cfg, dataset=data)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    row = trainer.fit()
    assert trainer.step == 3 and np.isfinite(row["valid"])
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    if name == "rnn-flat":
        assert trainer.model.flat_chunk == 12


def test_data_whose_steps_differ_from_the_spec_fail_before_training(tmp_path):
    data = make_dataset("gaussian", L=6)
    data.spec = dataclasses.replace(data.spec, step_dim=5)  # the model is built for L=5, the data has L=6
    cfg = TrainConfig(model="rnn-hier", size="tiny", steps=2, batch_size=4, progress=False, out=str(tmp_path))
    with pytest.raises(ValueError, match="L=6, expected L=5"):
        Trainer(cfg, dataset=data)
    assert not any(tmp_path.iterdir())
