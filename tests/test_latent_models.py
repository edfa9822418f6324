"""STORN, VRNN, SRNN (Fraccaro), Z-forcing and the DMM: structure, maths and training from the CLI."""
from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample

from conftest import make_batch, make_spec
from pyro_srnn.infer import iwae_log_likelihood, log_weights
from pyro_srnn.models import GUIDES, MODELS, build_guide, build_model, model_names
from pyro_srnn.models.srnns import StepLSTM, vrnn_torch_loss

model_names()  # registers every model and guide
LATENT_MODELS = ["storn", "vrnn", "srnn-fraccaro", "zforcing", "dmm"]
SEQUENTIAL_PRIOR = ["vrnn", "srnn-fraccaro", "zforcing", "dmm"]
GENERIC_GUIDES = ["filtering", "smoothing", "mean-field"]
FAMILIES = [("bernoulli", 6), ("gaussian", 5), ("handwriting", 3)]



def tiny(name, family="bernoulli", L=6, **overrides):
    return build_model(name, make_spec(family, L), "tiny", **overrides)


def traces(model, guide, batch, kl_scale=1.0, seed=0):
    pyro.set_rng_seed(seed)
    guide_trace = poutine.trace(guide).get_trace(batch, kl_scale=kl_scale)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch, kl_scale=kl_scale)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return model_trace, guide_trace


def sample_sites(trace):
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]


# ------------------------------------------------------------------------------ structure

@pytest.mark.parametrize("name", LATENT_MODELS)
def test_registered_with_presets_latent_dim_and_default_guide(name):
    cls = MODELS[name].cls
    assert {"tiny", "small", "speech", "midi", "handwriting"} <= set(cls.PRESETS)
    for size in ("speech", "midi", "handwriting"):
        assert cls.PRESETS[size]["z_dim"] > 0
    model = tiny(name)
    assert model.has_latent and model.latent_dim == cls.PRESETS["tiny"]["z_dim"]
    assert model.default_guide in GUIDES
    assert GUIDES[model.default_guide].cls.fits(model) is None


@pytest.mark.parametrize("family,L", FAMILIES)
@pytest.mark.parametrize("name", LATENT_MODELS)
def test_one_latent_site_and_one_observed_site(name, family, L):
    model = tiny(name, family, L).eval()  # no training-only auxiliary factor
    batch = make_batch(family, L, lengths=(7, 4, 2))
    model_trace, guide_trace = traces(model, build_guide(None, model), batch)
    assert sample_sites(model_trace) == ["z", "x"]
    z, x = model_trace.nodes["z"], model_trace.nodes["x"]
    assert z["value"].shape == (3, 6, model.latent_dim) and not z["is_observed"]
    assert x["is_observed"] and x["fn"].event_shape == (6, L) and x["fn"].batch_shape == (3,)
    assert sample_sites(guide_trace) == ["z"]
    assert torch.isfinite(x["log_prob_sum"]) and torch.isfinite(z["log_prob_sum"])


@pytest.mark.parametrize("name", SEQUENTIAL_PRIOR)
def test_ancestral_sampler_and_teacher_forced_scoring_agree(name):
    """The prior's sampling loop (StepLSTM.step) and its one-pass scoring give the same (loc, scale)."""
    model = tiny(name).eval()
    batch = make_batch(lengths=(8, 5, 3))
    trace = poutine.trace(model).get_trace(batch)
    fn, z = trace.nodes["z"]["fn"], trace.nodes["z"]["value"]
    loc, scale = fn.params_fn(z.clone())  # a fresh tensor: no cache, really teacher-forced
    assert torch.allclose(loc, fn._last[1], atol=1e-5) and torch.allclose(scale, fn._last[2], atol=1e-5)
    # and the per-step densities of the path differ from those of another path (the check can fail)
    other = fn.params_fn(torch.randn_like(z))
    assert not torch.allclose(other[0], loc, atol=1e-3)


def test_step_lstm_step_equals_full_pass():
    lstm = StepLSTM(5, 7, num_layers=2)
    x = torch.randn(3, 6, 5)
    full, (h, c) = lstm(x)
    state, outs = None, []
    for t in range(6):
        out, state = lstm.step(x[:, t], state)
        outs.append(out)
    assert torch.allclose(torch.stack(outs, 1), full, atol=1e-6)
    assert torch.allclose(state[0], h, atol=1e-6) and torch.allclose(state[1], c, atol=1e-6)


@pytest.mark.parametrize("name", LATENT_MODELS)
def test_model_is_causal(name):
    """With z fixed, p(x_t | ·) for t < s and p(z_t | ·) for t ≤ s do not see x_≥s."""
    model = tiny(name).eval()
    batch = make_batch(lengths=(9, 9))
    z = torch.randn(2, 8, model.latent_dim)
    s = 4

    def step_terms(b):
        trace = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(b)
        x_site, z_site = trace.nodes["x"], trace.nodes["z"]
        return x_site["fn"].base_dist.log_prob(b.targets), z_site["fn"].step_log_prob(z)

    x_lp, z_lp = step_terms(batch)
    changed = make_batch(lengths=(9, 9), seed=5)
    changed.targets[:, :s] = batch.targets[:, :s]
    changed.inputs[:, : s + 1] = batch.inputs[:, : s + 1]
    x_lp2, z_lp2 = step_terms(changed)
    assert torch.allclose(x_lp[:, :s], x_lp2[:, :s], atol=1e-6)
    assert torch.allclose(z_lp[:, : s + 1], z_lp2[:, : s + 1], atol=1e-6)
    assert not torch.allclose(x_lp[:, s:], x_lp2[:, s:])  # the future did change


# ------------------------------------------------------------------ (c) KL annealing

@pytest.mark.parametrize("name", LATENT_MODELS)
def test_kl_annealing_scales_only_the_latent_terms(name):
    model = tiny(name)
    guide = build_guide(None, model)
    full_m, full_g = traces(model, guide, make_batch(), 1.0)
    ann_m, ann_g = traces(model, guide, make_batch(), 0.2)
    assert torch.equal(full_m.nodes["z"]["value"], ann_m.nodes["z"]["value"])
    assert torch.allclose(ann_m.nodes["x"]["log_prob_sum"], full_m.nodes["x"]["log_prob_sum"], rtol=1e-6)
    assert math.isclose(ann_m.nodes["z"]["scale"], 0.2) and math.isclose(ann_g.nodes["z"]["scale"], 0.2)
    assert full_m.nodes["x"]["scale"] == 1.0
    for a, f in ((ann_m, full_m), (ann_g, full_g)):
        assert torch.allclose(a.nodes["z"]["log_prob_sum"], 0.2 * f.nodes["z"]["log_prob_sum"], rtol=1e-5)
    # the ELBO: loss(0.2) − loss(1) = 0.8 (log p(z) − log q(z)) with the same draw
    pyro.set_rng_seed(0)
    loss_full = Trace_ELBO().loss(model, guide, make_batch(), kl_scale=1.0)
    pyro.set_rng_seed(0)
    loss_ann = Trace_ELBO().loss(model, guide, make_batch(), kl_scale=0.2)
    log_ratio = float((full_m.nodes["z"]["log_prob_sum"] - full_g.nodes["z"]["log_prob_sum"]).detach())
    assert math.isclose(loss_ann - loss_full, 0.8 * log_ratio, rel_tol=1e-4, abs_tol=1e-3)


# ------------------------------------------------------------- (d) the Z-forcing cost

def test_zforcing_auxiliary_cost_changes_the_loss_by_its_weighted_value():
    alpha = 0.005
    model = tiny("zforcing", aux_weight=alpha).train()
    guide = build_guide(None, model)
    batch = make_batch()
    pyro.set_rng_seed(3)
    loss_with = Trace_ELBO().loss(model, guide, batch)
    model.aux_weight = 0.0
    pyro.set_rng_seed(3)
    loss_without = Trace_ELBO().loss(model, guide, batch)
    pyro.set_rng_seed(3)
    z = poutine.trace(guide).get_trace(batch).nodes["z"]["value"]
    aux = float(model.auxiliary_log_prob(batch, z).sum().detach())
    assert abs(aux) > 1.0
    assert math.isclose(loss_with - loss_without, -alpha * aux, rel_tol=1e-4, abs_tol=1e-4)
    # evaluation mode: not part of the likelihood, neither in the ELBO nor in the IWAE weights
    model.aux_weight = alpha
    model.eval()
    pyro.set_rng_seed(3)
    assert math.isclose(Trace_ELBO().loss(model, guide, batch), loss_without, rel_tol=1e-6)
    model_trace, _ = traces(model, guide, batch)
    assert "aux" not in model_trace.nodes
    model.train()
    assert "aux" in traces(model, guide, batch)[0].nodes


def test_zforcing_aux_weight_zero_adds_no_factor_and_negative_is_refused():
    model = tiny("zforcing", aux_weight=0.0).train()
    assert "aux" not in traces(model, build_guide(None, model), make_batch())[0].nodes
    with pytest.raises(ValueError, match="aux_weight"):
        tiny("zforcing", aux_weight=-1.0)


# ------------------------------------------------------------------- (e) masking

@pytest.mark.parametrize("guide_name", [None, *GENERIC_GUIDES])
@pytest.mark.parametrize("name", LATENT_MODELS)
def test_padded_steps_contribute_nothing(name, guide_name):
    model = tiny(name)
    guide = build_guide(guide_name, model)
    batch = make_batch(lengths=(9, 6, 3))
    other = make_batch(lengths=(9, 6, 3))
    pad = ~other.mask
    other.targets[pad] = torch.randn_like(other.targets[pad]).abs().round()
    other.inputs[pad] = 1.0 - other.inputs[pad]
    values = []
    for b in (batch, other):
        pyro.set_rng_seed(11)
        values.append(Trace_ELBO().loss(model, guide, b))
        pyro.set_rng_seed(11)
        values.append(log_weights(model, guide, b))
    assert math.isclose(values[0], values[2], rel_tol=1e-5)
    assert torch.allclose(values[1], values[3], atol=1e-4)
    # the valid steps do matter
    other.targets[0, 0] = 1.0 - other.targets[0, 0]
    pyro.set_rng_seed(11)
    assert not math.isclose(values[0], Trace_ELBO().loss(model, guide, other), rel_tol=1e-6)


# ------------------------------------------------------------------ bounds

@pytest.mark.parametrize("name", LATENT_MODELS)
def test_iwae_is_above_the_elbo_and_non_decreasing_in_k(name):
    model = tiny(name).eval()
    guide = build_guide(None, model)
    batch = make_batch(lengths=(6, 5, 3))
    reps = 6
    with torch.no_grad():
        est = {k: torch.stack([iwae_log_likelihood(model, guide, batch, k).sum() for _ in range(reps)])
               for k in (1, 10, 100)}
        elbo = torch.tensor([-TraceMeanField_ELBO().loss(model, guide, batch) for _ in range(reps)])
    mean = {k: float(v.mean()) for k, v in est.items()}
    se = {k: float(v.std()) / math.sqrt(reps) for k, v in est.items()}
    assert abs(mean[1] - float(elbo.mean())) < 4 * (se[1] + float(elbo.std()) / math.sqrt(reps))
    assert mean[10] > mean[1] - 3 * (se[1] + se[10])
    assert mean[100] > mean[10] - 3 * (se[10] + se[100])
    assert mean[100] > mean[1]


# ------------------------------------------------------------------ generation, speed

@pytest.mark.parametrize("family,L", FAMILIES)
@pytest.mark.parametrize("name", LATENT_MODELS)
def test_generate(name, family, L):
    model = tiny(name, family, L)
    first = torch.ones(L) if family == "bernoulli" else torch.zeros(L)
    x = model.generate(3, 6, first_step=first)
    assert x.shape == (3, 6, L) and torch.isfinite(x).all()
    assert torch.equal(x[:, 0], first.expand(3, L))
    if family == "bernoulli":
        assert set(x.unique().tolist()) <= {0.0, 1.0}


def test_linear_dmm_generation_and_refusals():
    model = tiny("dmm", "gaussian", 5, linear=True)
    x = model.generate(400, 3)
    # x_1 = C (A z_init + w) + e: per-value variance σ_z² |C_i|² + σ_x²
    C = model.C.weight.detach()
    var = model.sigma_z ** 2 * (C ** 2).sum(1) + model.sigma_x ** 2
    assert torch.allclose(x[:, 1].var(0), var, rtol=0.3)
    with pytest.raises(ValueError, match="linear-Gaussian"):
        tiny("dmm", "bernoulli", 6, linear=True)
    with pytest.raises(ValueError, match="linear=True"):
        tiny("dmm").exact_log_likelihood(make_batch())


def test_vrnn_posterior_reuses_the_recurrence_it_sampled(monkeypatch):
    """With its own posterior, VRNN runs the v recurrence once (in the guide's loop), never teacher-forced."""
    model = tiny("vrnn")
    guide = build_guide(None, model)
    calls = []
    original = model.core.teacher_forced
    monkeypatch.setattr(model.core, "teacher_forced", lambda *a: calls.append(1) or original(*a))
    Trace_ELBO().loss(model, guide, make_batch())
    TraceMeanField_ELBO().loss(model, guide, make_batch())
    assert calls == []
    Trace_ELBO().loss(model, build_guide("mean-field", model), make_batch())  # eager z: one full pass
    assert calls == [1]


def test_vrnn_pyro_loss_equals_the_hand_written_torch_loss():
    model = tiny("vrnn")
    guide = build_guide(None, model)
    batch = make_batch()
    for kl_scale in (0.3, 1.0):
        pyro.set_rng_seed(4)
        pyro_loss = Trace_ELBO().differentiable_loss(model, guide, batch, kl_scale=kl_scale)
        pyro.set_rng_seed(4)
        torch_loss = vrnn_torch_loss(model, guide, make_batch(), kl_scale=kl_scale)
        assert torch.allclose(pyro_loss, torch_loss, rtol=1e-5)


# --------------------------------------------------------------- CLI, bach chorales

# every model with its default guide, and with each generic guide (all fit these models)
CLI_RUNS = [(m, None) for m in LATENT_MODELS] + [
    (m, g) for m in LATENT_MODELS for g in ("filtering", "smoothing", "mean-field")
    if g != MODELS[m].cls.default_guide
]


@pytest.mark.parametrize("name,guide_name", CLI_RUNS)
def test_trains_on_bach_chorales_from_the_cli(name, guide_name, tmp_path, capsys):
    import json

    from pyro_srnn.cli import main

    argv = ["train", "--model", name, "--size", "tiny", "--steps", "3", "--valid-every", "3",
            "--valid-max-batches", "1", "--batch-size", "4", "--no-progress", "--out", str(tmp_path)]
    if guide_name:
        argv += ["--guide", guide_name]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["model"] == name
    assert summary["guide"] == (guide_name or MODELS[name].cls.default_guide)
    assert summary["metric"] == "neg_elbo" and math.isfinite(summary["value"]) and summary["value"] > 0
    assert (tmp_path / "best.pt").exists()


def test_trainer_reports_the_kl_with_its_sign(tmp_path):
    """kl_per_step = (loss + recon) / scale: the analytic KL of STORN (N(0, I) prior) is > 0."""
    from conftest import make_dataset
    from pyro_srnn.train import TrainConfig, Trainer

    config = TrainConfig(model="storn", size="tiny", steps=1, batch_size=4, estimator="meanfield",
                         out=str(tmp_path), progress=False)
    trainer = Trainer(config, dataset=make_dataset())
    stats = trainer.train_step(trainer.sampler.batch(0))
    assert stats["kl_per_step"] > 0 and math.isfinite(stats["kl_per_step"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", LATENT_MODELS)
def test_latent_models_run_on_cuda(name):
    model = tiny(name).cuda()
    guide = build_guide(None, model).cuda()
    loss = TraceMeanField_ELBO().differentiable_loss(model, guide, make_batch().to("cuda"), kl_scale=0.5)
    loss.backward()
    assert loss.is_cuda and torch.isfinite(loss)
    assert model.generate(2, 5).is_cuda


@pytest.mark.parametrize("name", LATENT_MODELS)
def test_one_batch_reused_for_several_updates(name):
    """Features shared through the batch's cache follow the weights: no stale value, no freed graph."""
    model = tiny(name)
    guide = build_guide(None, model)
    loss_fn = Trace_ELBO()(model, guide)
    optim = torch.optim.Adam([*model.parameters(), *guide.parameters()], lr=1e-2)
    batch = make_batch()
    for _ in range(3):
        optim.zero_grad()
        loss_fn(batch).backward()
        optim.step()
    pyro.set_rng_seed(5)
    reused = float(loss_fn(batch).detach())
    pyro.set_rng_seed(5)
    assert reused == float(loss_fn(make_batch()).detach())


def test_fraccaro_model_reuses_the_forward_rnn_its_posterior_ran(monkeypatch):
    model = tiny("srnn-fraccaro")
    guide = build_guide(None, model)
    calls = []
    original = model.forward_rnn.forward
    monkeypatch.setattr(model.forward_rnn, "forward", lambda *a: calls.append(1) or original(*a))
    Trace_ELBO().loss(model, guide, make_batch())
    assert calls == [1]
