"""Generic guides (filtering, smoothing, mean-field) and the papers' posteriors: swappable, correct."""
from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

from conftest import make_batch, make_spec
from pyro_srnn.models import GUIDES, MODELS, GuideMismatch, build_guide, build_model, model_names

model_names()  # registers every model and guide
MINE = ["storn", "vrnn", "srnn-fraccaro", "zforcing", "dmm"]
GENERIC = ["filtering", "smoothing", "mean-field"]
OWN_POSTERIORS = {"vrnn": "vrnn-posterior", "zforcing": "zforcing-posterior",
                  "srnn-fraccaro": "srnn-fraccaro-posterior"}
PAIRS = [(m, g) for m in MINE for g in dict.fromkeys([MODELS[m].cls.default_guide, *GENERIC])]
SEQUENTIAL_GUIDES = [("vrnn", "vrnn-posterior"), ("zforcing", "zforcing-posterior"),
                     ("srnn-fraccaro", "srnn-fraccaro-posterior"), ("dmm", "smoothing"), ("vrnn", "smoothing")]



def tiny(name, family="bernoulli", L=6, **overrides):
    return build_model(name, make_spec(family, L), "tiny", **overrides)


def test_pairs_cover_every_model_with_its_paper_posterior_and_every_generic_guide():
    # STORN's paper posterior is the filtering guide, the DMM's is the smoothing guide (Krishnan's combiner)
    assert len(PAIRS) == 5 * 4 - 2
    assert MODELS["storn"].cls.default_guide == "filtering" and MODELS["dmm"].cls.default_guide == "smoothing"
    for model, guide in OWN_POSTERIORS.items():
        assert MODELS[model].cls.default_guide == guide


@pytest.mark.parametrize("estimator", [Trace_ELBO, TraceMeanField_ELBO])
@pytest.mark.parametrize("name,guide_name", PAIRS)
def test_guides_are_interchangeable_and_gradients_reach_model_and_guide(name, guide_name, estimator):
    model = tiny(name).train()
    guide = build_guide(guide_name, model)
    assert guide.name == guide_name
    loss = estimator().differentiable_loss(model, guide, make_batch(), kl_scale=0.5)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    guide_params = list(guide.parameters())
    model_params = list(model.parameters())
    assert guide_params and all(p.grad is not None for p in guide_params), "every guide parameter is used"
    for params in (guide_params, model_params):
        grads = [p.grad for p in params if p.grad is not None]
        assert all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.norm()) for g in grads) > 0
    # the prior's and the output's parameters both learn
    assert model.head.proj.weight.grad.abs().sum() > 0 if hasattr(model, "head") else model.C.weight.grad.abs().sum() > 0
    prior = {"storn": None, "dmm": "transition"}.get(name, "prior_net")
    if prior:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, prior).parameters())


@pytest.mark.parametrize("family,L", [("gaussian", 5), ("handwriting", 3)])
@pytest.mark.parametrize("guide_name", GENERIC)
def test_generic_guides_on_other_families(guide_name, family, L):
    for name in ("vrnn", "dmm"):
        model = tiny(name, family, L)
        loss = Trace_ELBO().differentiable_loss(model, build_guide(guide_name, model), make_batch(family, L))
        assert torch.isfinite(loss)


def test_generic_guide_sizes_follow_the_model_and_rebuild_from_their_config():
    model = tiny("vrnn")
    guide = build_guide("smoothing", model)
    assert guide.hparams == {"hidden": model.hparams["hidden"], "mlp": model.hparams["mlp"]}
    wide = build_guide("smoothing", model, hidden=24)
    assert wide.rnn.hidden == 24
    config = wide.config()
    rebuilt = GUIDES[config["name"]].cls(model, **config["hparams"])
    rebuilt.load_state_dict(wide.state_dict())
    pyro.set_rng_seed(2)
    a = Trace_ELBO().loss(model, wide, make_batch())
    pyro.set_rng_seed(2)
    assert a == Trace_ELBO().loss(model, rebuilt, make_batch())


# ------------------------------------------------------------------------------ mismatch

MISMATCHES = [("f-rnn", g) for g in GENERIC] + [
    ("vrnn", "zforcing-posterior"), ("zforcing", "vrnn-posterior"), ("dmm", "srnn-fraccaro-posterior"),
    ("storn", "vrnn-posterior"),
] + ([("vrnn", "delta")] if "delta" in GUIDES else [])


@pytest.mark.parametrize("name,guide_name", MISMATCHES)
def test_a_guide_that_does_not_fit_is_refused_naming_both(name, guide_name):
    model = tiny(name)
    with pytest.raises(GuideMismatch) as err:
        build_guide(guide_name, model)
    assert repr(guide_name) in str(err.value) and repr(name) in str(err.value)


def test_mismatch_from_the_cli_fails_before_any_step(tmp_path, capsys):
    from pyro_srnn.cli import main

    out = tmp_path / "run"
    code = main(["train", "--model", "vrnn", "--guide", "zforcing-posterior", "--size", "tiny", "--steps", "2",
                 "--no-progress", "--out", str(out)])
    assert code != 0
    err = capsys.readouterr().err
    assert "zforcing-posterior" in err and "vrnn" in err
    assert not (out / "latest.pt").exists()


# -------------------------------------------------------------------------- correctness

@pytest.mark.parametrize("name,guide_name", [("storn", "mean-field"), ("vrnn", "vrnn-posterior"),
                                             ("srnn-fraccaro", "srnn-fraccaro-posterior"), ("dmm", "smoothing"),
                                             ("zforcing", "filtering")])
def test_mean_field_kl_equals_the_monte_carlo_log_ratio_in_expectation(name, guide_name):
    """TraceMeanField_ELBO's KL term (analytic per step, along the sampled path) has the
    expectation of log q(z) − log p(z) under q."""
    model = tiny(name).eval()
    guide = build_guide(guide_name, model)
    n = 300
    batch = make_batch(lengths=(6, 4, 3)).repeat(n)
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch)
        q, p = guide_trace.nodes["z"]["fn"], model_trace.nodes["z"]["fn"]
        z = guide_trace.nodes["z"]["value"]
        log_ratio = (q.log_prob(z) - p.log_prob(z)).reshape(n, 3)
        kl = kl_divergence(q, p).reshape(n, 3)
    diff = log_ratio - kl
    assert torch.all(diff.mean(0).abs() < 4 * diff.std(0) / math.sqrt(n) + 1e-4), (diff.mean(0), diff.std(0))
    assert torch.all(kl.mean(0) > 0)
    if name == "storn":  # eager prior and guide: the KL is exact, the same for every draw
        assert torch.allclose(kl, kl[:1].expand_as(kl), rtol=1e-5)


@pytest.mark.parametrize("name,guide_name", SEQUENTIAL_GUIDES)
def test_sequential_guides_score_their_own_draws_teacher_forced(name, guide_name):
    model = tiny(name)
    guide = build_guide(guide_name, model)
    batch = make_batch(lengths=(8, 5, 3))
    site = poutine.trace(guide).get_trace(batch).nodes["z"]
    q, z = site["fn"], site["value"]
    assert q.sequential
    loc, scale = q.params_fn(z.clone())
    assert torch.allclose(loc, q._last[1], atol=1e-5) and torch.allclose(scale, q._last[2], atol=1e-5)


def test_filtering_guide_sees_only_past_and_present_the_others_see_the_future():
    model = tiny("storn")
    batch = make_batch(lengths=(9, 9))
    changed = make_batch(lengths=(9, 9), seed=7)
    s = 4
    changed.targets[:, : s + 1] = batch.targets[:, : s + 1]

    def loc(guide, b):
        return poutine.trace(guide).get_trace(b).nodes["z"]["fn"].loc

    for name in ("filtering", "mean-field"):
        guide = build_guide(name, model)
        before, after = loc(guide, batch), loc(guide, changed)
        if name == "filtering":
            assert torch.allclose(before[:, : s + 1], after[:, : s + 1], atol=1e-6)
        else:
            assert not torch.allclose(before[:, :1], after[:, :1], atol=1e-6)
        assert not torch.allclose(before[:, s + 1:], after[:, s + 1:])


# --------------------------------------------------------------- other latent models of the zoo

OTHER_LATENT = [n for n in model_names() if MODELS[n].cls.has_latent and n not in MINE]


@pytest.mark.parametrize("name", OTHER_LATENT)
def test_generic_guides_serve_the_other_latent_models_or_say_why_not(name):
    spec = make_spec("bernoulli", 4)
    model = build_model(name, spec, "tiny")
    for guide_name in GENERIC:
        try:
            guide = build_guide(guide_name, model)
        except GuideMismatch as err:
            assert repr(guide_name) in str(err) and repr(name) in str(err)
            continue
        batch = make_batch("bernoulli", 4, lengths=(5, 3))
        trace = poutine.trace(guide).get_trace(batch)
        assert trace.nodes["z"]["value"].shape[-1] == model.latent_dim
        loss = Trace_ELBO().differentiable_loss(model, guide, make_batch("bernoulli", 4, lengths=(5, 3)))
        assert torch.isfinite(loss)


def test_sequences_plate_is_the_full_plate_and_makes_no_tensor_when_entered_again():
    """Every model and guide enters ``sequences_plate(batch)``: Pyro's ``plate("sequences", B)`` over
    the whole batch (index ``arange(B)``, frame size B, scale 1, the same trace for model and guide),
    whose index is made once per size and device, where a plain plate makes its index and a probe
    tensor at every entry (on a GPU a kernel launch per plate and step)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from pyro_srnn.models.base import sequences_plate

    class CountOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls += 1
            return func(*args, **(kwargs or {}))

    batch = make_batch(lengths=(9, 6, 3))
    model = tiny("vrnn")
    guide = build_guide(None, model)
    guide_trace = poutine.trace(guide).get_trace(batch, kl_scale=0.5)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch, kl_scale=0.5)
    for trace, sites in ((guide_trace, ["z"]), (model_trace, ["z", "x"])):
        assert torch.equal(trace.nodes["sequences"]["value"], torch.arange(3))
        for name in sites:
            frame, = trace.nodes[name]["cond_indep_stack"]
            assert (frame.name, frame.size, frame.dim) == ("sequences", 3, -1)
            assert trace.nodes[name]["fn"].batch_shape == (3,)
    assert model_trace.nodes["x"]["scale"] == 1.0 and guide_trace.nodes["z"]["scale"] == 0.5  # KL annealing only

    counts = []
    for enter in (lambda: sequences_plate(batch), lambda: pyro.plate("sequences", batch.batch_size)):
        with enter():  # a first entry (the helper's index may be made here)
            pass
        with CountOps() as ops:
            with poutine.trace():
                with enter():
                    pass
        counts.append(ops.calls)
    assert counts[0] == 0 and counts[1] >= 1, counts
