"""The estimators, checked with maths on the simplified SRNN family (tiny sizes).

* the Pyro losses equal a plain-PyTorch negative ELBO of the same modules, value and
  gradients, given the same random noise;
* ``Trace_ELBO`` and ``TraceMeanField_ELBO`` agree in expectation;
* the IWAE bound is ≥ the ELBO, grows with ``K`` and matches ``RenyiELBO(alpha=0)``;
* KL annealing scales exactly the latent terms, in model and guide;
* padded steps contribute nothing and rows of a batch are independent;
* gradients are finite and reach every parameter; the forward RNN runs once per step.
"""
from __future__ import annotations

import math

import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from conftest import make_batch, make_spec
from pyro_srnn.infer import iwae_log_likelihood, log_weights
from pyro_srnn.models import build_guide, build_model

MODELS = [("f-srnn", {}), ("srnn-flat", {}), ("srnn-flat", {"flat_chunk": 4}), ("srnn-hier", {}),
          ("srnn-hier", {"low": "lstm", "low_hidden": 8})]
IDS = ["f-srnn", "srnn-flat", "srnn-flat-reset", "srnn-hier-made", "srnn-hier-lstm"]



def build(name="f-srnn", family="bernoulli", L=5, **kw):
    model = build_model(name, make_spec(family, L), "tiny", **kw)
    guide = build_guide(None, model)
    model.eval()
    guide.eval()
    return model, guide


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


# ------------------------------------------------------------------ Pyro == plain torch

@pytest.mark.parametrize("analytic_kl", [False, True], ids=["trace", "meanfield"])
@pytest.mark.parametrize("name,kw", MODELS, ids=IDS)
def test_pyro_loss_equals_plain_torch_loss(name, kw, analytic_kl):
    model, guide = build(name, "gaussian", **kw)
    elbo = TraceMeanField_ELBO() if analytic_kl else Trace_ELBO()
    torch.manual_seed(3)
    pyro_loss = elbo.differentiable_loss(model, guide, make_batch("gaussian", 5), kl_scale=0.3)
    pyro_grads = torch.autograd.grad(pyro_loss, list(model.parameters()) + list(guide.parameters()))
    torch.manual_seed(3)
    torch_loss = guide.torch_loss(make_batch("gaussian", 5), kl_scale=0.3, analytic_kl=analytic_kl)
    torch_grads = torch.autograd.grad(torch_loss, list(model.parameters()) + list(guide.parameters()))
    assert torch.allclose(pyro_loss, torch_loss, rtol=1e-5, atol=1e-4)
    for a, b in zip(pyro_grads, torch_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ Trace vs MeanField

def test_trace_and_meanfield_elbo_agree_in_expectation():
    model, guide = build("f-srnn")
    batch = make_batch("bernoulli", 5, lengths=(8, 5)).repeat(100)  # 200 rows: 100 draws per sequence
    with torch.no_grad():
        trace = torch.tensor([Trace_ELBO().loss(model, guide, batch) for _ in range(30)])
        meanfield = torch.tensor([TraceMeanField_ELBO().loss(model, guide, batch) for _ in range(30)])
    (mt, st), (mm, sm) = mean_and_se(trace), mean_and_se(meanfield)
    assert abs(mt - mm) < 4 * math.hypot(st, sm), (mt, mm, st, sm)
    # the analytic KL removes the Monte Carlo noise of log q − log p: a less noisy estimator
    assert sm < st


# ------------------------------------------------------------------ IWAE

def test_iwae_bounds_the_elbo_grows_with_k_and_matches_renyi():
    model, guide = build("f-srnn")
    batch = make_batch("bernoulli", 5, lengths=(8, 5, 3))
    R, B = 48, batch.batch_size
    with torch.no_grad():  # R independent estimates of each bound, summed over the batch
        elbo = log_weights(model, guide, batch.repeat(4 * R)).reshape(4 * R, B).sum(1)
        iwae = {k: iwae_log_likelihood(model, guide, batch.repeat(R), k).reshape(R, B).sum(1) for k in (1, 10, 100)}
        renyi = {k: -torch.tensor([RenyiELBO(alpha=0, num_particles=k).loss(model, guide, batch) for _ in range(16)])
                 for k in (10,)}
    m_elbo, s_elbo = mean_and_se(elbo)
    stats = {k: mean_and_se(v) for k, v in iwae.items()}
    # K = 1 is the ELBO itself (in expectation)
    assert abs(stats[1][0] - m_elbo) < 4 * math.hypot(stats[1][1], s_elbo)
    # non-decreasing in K, and strictly above the ELBO at K = 100
    assert stats[10][0] > stats[1][0] - 3 * math.hypot(stats[10][1], stats[1][1])
    assert stats[100][0] > stats[10][0] - 3 * math.hypot(stats[100][1], stats[10][1])
    assert stats[100][0] > m_elbo + 3 * math.hypot(stats[100][1], s_elbo)
    # RenyiELBO(alpha=0) takes its log-mean-exp per row of the "sequences" plate: the same bound
    m_renyi, s_renyi = mean_and_se(renyi[10])
    assert abs(m_renyi - stats[10][0]) < 4 * math.hypot(s_renyi, stats[10][1])


def test_iwae_slices_the_repeated_batch_by_a_budget_of_values(monkeypatch):
    """The K copies of the batch are scored in slices of at most ``max_values`` values (at least one
    copy each): memory grows with values, so a budget in rows ran a full-mode notebook out of memory."""
    import pyro_srnn.infer.estimators as estimators

    model, guide = build("f-srnn")
    batch = make_batch("bernoulli", 5, lengths=(8, 5, 3))
    sizes = []
    original = estimators.log_weights
    monkeypatch.setattr(estimators, "log_weights",
                        lambda m, g, b, **kw: (sizes.append(b.inputs.numel()), original(m, g, b, **kw))[1])
    one = batch.inputs.numel()
    for budget, copies in ((3 * one + 1, [3, 3, 1]), (one // 2, [1] * 7), (10 ** 9, [7])):
        sizes.clear()
        value = iwae_log_likelihood(model, guide, batch, 7, max_values=budget)
        assert sizes == [c * one for c in copies]
        assert value.shape == (batch.batch_size,) and torch.isfinite(value).all()


# ------------------------------------------------------------------ KL annealing

def _traces(model, guide, batch, kl_scale, seed=5):
    torch.manual_seed(seed)
    guide_trace = poutine.trace(guide).get_trace(batch, kl_scale=kl_scale)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch, kl_scale=kl_scale)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return model_trace, guide_trace


@pytest.mark.parametrize("name,kw", MODELS[:2] + MODELS[3:4], ids=["f-srnn", "srnn-flat", "srnn-hier"])
def test_kl_annealing_scales_only_the_latent_terms(name, kw):
    model, guide = build(name, **kw)
    batch = make_batch("bernoulli", 5)
    m02, g02 = _traces(model, guide, batch, 0.2)
    m1, g1 = _traces(model, guide, batch, 1.0)
    assert torch.equal(g02.nodes["z"]["value"], g1.nodes["z"]["value"])
    assert g02.nodes["z"]["scale"] == pytest.approx(0.2, rel=1e-12) and m02.nodes["x"]["scale"] == 1.0
    assert m02.nodes["z"]["scale"] == pytest.approx(0.2, rel=1e-12)
    assert torch.equal(m02.nodes["x"]["log_prob"], m1.nodes["x"]["log_prob"])
    assert torch.allclose(m02.nodes["z"]["log_prob"], 0.2 * m1.nodes["z"]["log_prob"], rtol=1e-6, atol=0)
    assert torch.allclose(g02.nodes["z"]["log_prob"], 0.2 * g1.nodes["z"]["log_prob"], rtol=1e-6, atol=0)
    # and the loss is −(reconstruction + 0.2 · (log p(z) − log q(z)))
    recon = m1.nodes["x"]["log_prob_sum"]
    latent = m1.nodes["z"]["log_prob_sum"] - g1.nodes["z"]["log_prob_sum"]
    torch.manual_seed(5)
    loss = Trace_ELBO().differentiable_loss(model, guide, batch, kl_scale=0.2)
    assert torch.allclose(loss, -(recon + 0.2 * latent), rtol=1e-6)


# ------------------------------------------------------------------ masking

def _garbage_in_padding(batch):
    pad = ~batch.mask
    g = torch.randn_like(batch.targets) * 7 + 3
    batch.targets[pad] = g[pad]
    batch.inputs[:, 1:][pad[:, 1:]] = g[:, 1:][pad[:, 1:]]  # inputs[:, 0] is the conditioning step
    return batch


@pytest.mark.parametrize("name,kw", MODELS, ids=IDS)
def test_padded_steps_contribute_nothing(name, kw):
    model, guide = build(name, "gaussian", **kw)
    for elbo in (Trace_ELBO(), TraceMeanField_ELBO()):
        clean_batch, dirty_batch = make_batch("gaussian", 5), _garbage_in_padding(make_batch("gaussian", 5))
        assert not torch.equal(clean_batch.targets, dirty_batch.targets)
        torch.manual_seed(1)
        clean = elbo.loss(model, guide, clean_batch)
        torch.manual_seed(1)
        dirty = elbo.loss(model, guide, dirty_batch)
        assert clean == pytest.approx(dirty, rel=1e-6)


def _row_log_weights(model, guide, batch, z):
    """``log p(x, z) − log q(z | x)`` per row for a given latent path ``z``."""
    data = {"z": z}
    guide_trace = poutine.trace(poutine.condition(guide, data=data)).get_trace(batch)
    model_trace = poutine.trace(poutine.condition(model, data=data)).get_trace(batch)
    lp = sum(site["fn"].log_prob(site["value"]) for site in model_trace.nodes.values() if site["type"] == "sample")
    return lp - guide_trace.nodes["z"]["fn"].log_prob(z)


@pytest.mark.parametrize("name,kw", MODELS, ids=IDS)
def test_each_row_scores_as_if_alone(name, kw):
    """In a padded batch, row i's log weight equals that of row i alone, cut to its length."""
    model, guide = build(name, "bernoulli", **kw)
    lengths = (9, 6, 3)
    batch = make_batch("bernoulli", 5, lengths=lengths)
    with torch.no_grad():
        z = poutine.trace(guide).get_trace(batch).nodes["z"]["value"]
        together = _row_log_weights(model, guide, batch, z)
        per_step = 5 if model.view_step_dim == 1 else 1  # latent steps per data step
        for i, n in enumerate(n - 1 for n in lengths):  # n steps give n − 1 (input, target) pairs
            alone = make_batch("bernoulli", 5, lengths=lengths).select(slice(i, i + 1))
            alone.inputs, alone.targets, alone.mask = alone.inputs[:, :n], alone.targets[:, :n], alone.mask[:, :n]
            lw = _row_log_weights(model, guide, alone, z[i:i + 1, :n * per_step])
            assert torch.allclose(lw, together[i:i + 1], rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------ gradients and shared work

@pytest.mark.parametrize("name,kw", MODELS, ids=IDS)
def test_gradients_are_finite_and_reach_model_and_guide(name, kw):
    model, guide = build(name, "gaussian", **kw)
    model.train()
    guide.train()
    loss = TraceMeanField_ELBO().differentiable_loss(model, guide, make_batch("gaussian", 5), kl_scale=0.2)
    loss.backward()
    for owner, module in (("model", model), ("guide", guide)):
        for pname, p in module.named_parameters():
            assert p.grad is not None, f"{owner}.{pname} gets no gradient"
            assert torch.isfinite(p.grad).all(), f"{owner}.{pname}"
            assert p.grad.abs().sum() > 0, f"{owner}.{pname} has an all-zero gradient"


@pytest.mark.parametrize("name,kw", MODELS, ids=IDS)
def test_forward_rnn_runs_once_for_model_and_guide(name, kw):
    model, guide = build(name, **kw)
    calls = {"forward": 0, "backward": 0}
    model.forward_rnn.register_forward_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1))
    guide.backward_rnn.register_forward_hook(lambda *a: calls.__setitem__("backward", calls["backward"] + 1))
    for elbo in (Trace_ELBO(), TraceMeanField_ELBO()):
        calls.update(forward=0, backward=0)
        elbo.differentiable_loss(model, guide, make_batch("bernoulli", 5)).backward()
        assert calls == {"forward": 1, "backward": 1}


@pytest.mark.parametrize("guide_name", ["srnn-posterior", "mean-field"])
def test_one_batch_reused_for_several_updates_never_sees_stale_features(guide_name):
    """The cached d_t follows the weights and the grad mode: training on one batch = fresh batches."""
    model = build_model("f-srnn", make_spec("bernoulli", 5), "tiny")
    guide = build_guide(guide_name, model)
    loss_fn = Trace_ELBO()(model, guide)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=0.05)
    batch = make_batch("bernoulli", 5)
    with torch.no_grad():
        loss_fn(batch)  # an evaluation without a graph first
    for step in range(3):
        torch.manual_seed(step)
        reused = loss_fn(batch)
        torch.manual_seed(step)
        fresh = loss_fn(make_batch("bernoulli", 5))
        assert torch.allclose(reused, fresh)
        reused.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.forward_rnn.parameters())
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("name,guide_name", [("f-srnn", None), ("rnn-hier", None), ("delta-rnn", None),
                                             ("delta-srnn", "delta"), ("delta-srnn", "delta-gaussian"),
                                             ("srnn-flat", None)])
def test_one_batch_scored_twice_without_an_update(name, guide_name):
    """Pyro's own Trace_ELBO, loss and backward twice on one batch, weights unchanged: the shared
    features are recomputed after a backward freed their graph (no "backward through the graph a
    second time"), and both passes give the same loss and gradients."""
    model = build_model(name, make_spec("gaussian", 5), "tiny")
    guide = build_guide(guide_name, model)
    batch = make_batch("gaussian", 5)
    params = list(model.parameters()) + list(guide.parameters())
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        loss = Trace_ELBO().differentiable_loss(model, guide, batch)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        results.append((loss.detach(), grads))
    (l1, g1), (l2, g2) = results
    assert torch.equal(l1, l2)
    for a, b in zip(g1, g2):
        assert (a is None and b is None) or torch.equal(a, b)


# ------------------------------------------------------------------ the loss stays on the device

def _every_model_and_guide():
    from pyro_srnn.models import GUIDES, model_names

    pairs = []
    for name in model_names():
        for guide_name in [None] + sorted(GUIDES):
            spec = make_spec("bernoulli", 5)
            try:
                model = build_model(name, spec, "tiny")
                build_guide(guide_name, model)
            except Exception:  # a guide that does not fit the model (GuideMismatch, …)
                continue
            pairs.append((name, guide_name))
    return pairs


PAIRS = _every_model_and_guide()


@pytest.mark.parametrize("estimator,pyro_elbo", [("trace", Trace_ELBO), ("meanfield", TraceMeanField_ELBO)])
@pytest.mark.parametrize("name,guide_name", PAIRS, ids=[f"{n}-{g or 'default'}" for n, g in PAIRS])
def test_estimators_equal_pyros(name, guide_name, estimator, pyro_elbo):
    """The package's estimators (their loss kept on the device) give Pyro's Trace_ELBO and
    TraceMeanField_ELBO losses and gradients, for every model with every guide that fits it."""
    import pyro

    from pyro_srnn.infer import make_elbo

    model = build_model(name, make_spec("bernoulli", 5), "tiny")
    guide = build_guide(guide_name, model)
    batch = make_batch("bernoulli", L=5)
    params = [p for p in (*model.parameters(), *guide.parameters()) if p.requires_grad]
    results = []
    for loss_fn in (make_elbo(estimator).differentiable_loss, pyro_elbo().differentiable_loss):
        pyro.set_rng_seed(3)
        loss = loss_fn(model, guide, batch, kl_scale=0.7)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        results.append((loss, grads))
    (ours, ours_grads), (pyros, pyro_grads) = results
    assert torch.is_tensor(ours) and ours.requires_grad
    assert float(ours.detach()) == pytest.approx(float(pyros.detach()), rel=1e-6, abs=1e-6)
    for a, b in zip(ours_grads, pyro_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimator,pyro_elbo", [("trace", Trace_ELBO), ("meanfield", TraceMeanField_ELBO)])
@pytest.mark.parametrize("name", sorted({n for n, _ in PAIRS}))
def test_estimators_read_nothing_back_from_the_device(name, estimator, pyro_elbo, host_reads):
    """With Pyro's validation off, a forward and backward pass of either estimator's loss reads no
    tensor back to the host (on a GPU every such read is a synchronisation); Pyro's own read one
    per sample site (Trace_ELBO) or per particle (TraceMeanField_ELBO) and one for the loss."""
    import pyro

    from pyro_srnn.infer import make_elbo

    model = build_model(name, make_spec("bernoulli", 5), "tiny")
    guide = build_guide(None, model)
    batch = make_batch("bernoulli", L=5)
    with pyro.validation_enabled(False):
        for loss_fn, expect_reads in ((make_elbo(estimator)(model, guide), False), (pyro_elbo()(model, guide), True)):
            loss_fn(batch, kl_scale=0.5).backward()  # first call: lazy set-up may read shapes
            host_reads.events.clear()
            loss_fn(batch, kl_scale=0.5).backward()
            assert bool(host_reads.events) == expect_reads, (loss_fn, host_reads.events)


def _toy_program(data, kl_scale=1.0):
    """A model and guide with every kind of guide site the estimators handle: a reparameterised
    Gaussian under ``poutine.scale``, a masked, reinterpreted one, and a Bernoulli (no
    reparameterisation: Pyro's REINFORCE term)."""
    import pyro
    import pyro.distributions as dist

    loc = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    logit = torch.nn.Parameter(torch.tensor(0.4))
    mask = torch.tensor([[True, True, False], [True, False, False]])

    def model():
        with pyro.plate("rows", 2):
            with poutine.scale(scale=kl_scale):
                a = pyro.sample("a", dist.Normal(0.0, 1.0))
            b = pyro.sample("b", dist.Normal(torch.zeros(2, 3), 1.0).mask(mask).to_event(1))
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(a + c + b.sum(-1), 1.0), obs=data)

    def guide():
        with pyro.plate("rows", 2):
            with poutine.scale(scale=kl_scale):
                pyro.sample("a", dist.Normal(loc, 1.0))
            pyro.sample("b", dist.Normal(loc.unsqueeze(-1).expand(2, 3), 0.5).mask(mask).to_event(1))
            pyro.sample("c", dist.Bernoulli(logits=logit.expand(2)))

    return model, guide, [loc, logit]


@pytest.mark.parametrize("num_particles", [1, 3])
@pytest.mark.parametrize("kl_scale", [1.0, 0.3])
@pytest.mark.parametrize("reparameterised_only", [True, False], ids=["reparam", "with-reinforce"])
def test_trace_estimator_equals_pyros_for_every_kind_of_guide_site(num_particles, kl_scale, reparameterised_only):
    """The device-side ``trace`` estimator returns the surrogate itself when its value is the loss
    (reparameterised sites, scaled or not) and Pyro's value-plus-surrogate otherwise (a
    REINFORCE site); either way its value and gradients are Pyro's, for one or several particles,
    and Pyro's own ``loss`` / ``loss_and_grads`` still work on it."""
    import pyro

    from pyro_srnn.infer import make_elbo

    model, guide, params = _toy_program(torch.tensor([0.5, -1.0]), kl_scale)
    if reparameterised_only:
        guide = poutine.block(guide, hide=["c"])
        model = poutine.condition(model, data={"c": torch.tensor([1.0, 0.0])})
    results = []
    for elbo in (make_elbo("trace", num_particles=num_particles), Trace_ELBO(num_particles=num_particles)):
        pyro.set_rng_seed(5)
        loss = elbo.differentiable_loss(model, guide)
        results.append((loss, torch.autograd.grad(loss, params, allow_unused=True)))
        pyro.set_rng_seed(5)
        value = elbo.loss(model, guide)
        pyro.set_rng_seed(5)
        value_with_grads = elbo.loss_and_grads(model, guide)
        grads = [p.grad.clone() if p.grad is not None else None for p in params]
        for p in params:
            p.grad = None
        results[-1] += (value, value_with_grads, grads)
    ours, pyros = results
    assert float(ours[0].detach()) == pytest.approx(float(pyros[0].detach()), rel=1e-6)
    for a, b in zip(ours[1] + tuple(ours[4]), pyros[1] + tuple(pyros[4])):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert float(ours[2]) == pytest.approx(pyros[2], rel=1e-6)
    assert float(ours[3]) == pytest.approx(pyros[3], rel=1e-6)
    # each path really is taken: the loss's value is kept apart only with a REINFORCE site, whose
    # gradient for the Bernoulli's logit is not zero
    elbo = make_elbo("trace")
    value, _ = elbo._loss_terms(*next(iter(elbo._get_traces(model, guide, (), {}))))
    assert (value is None) == reparameterised_only
    if not reparameterised_only:
        assert ours[1][1] is not None and float(ours[1][1].abs()) > 0


def test_masked_sequence_expands_to_its_own_shape_as_itself():
    """``pyro.plate`` expands every site's distribution; a sequence already of the plate's batch
    shape is returned as is (no new objects), and a real expansion still works."""
    import pyro.distributions as dist

    from pyro_srnn.distributions import masked_sequence

    mask = torch.tensor([[True, True, False], [True, True, True]])
    seq = masked_sequence(dist.Bernoulli(logits=torch.zeros(2, 3, 4)).to_event(1), mask)
    assert seq.batch_shape == (2,) and seq.event_shape == (3, 4)
    assert seq.expand((2,)) is seq
    wide = seq.expand((5, 2))
    assert wide.batch_shape == (5, 2) and wide.event_shape == (3, 4)
    x = torch.ones(2, 3, 4)
    torch.testing.assert_close(wide.log_prob(x), seq.log_prob(x).expand(5, 2))
    assert float(seq.log_prob(x)[0]) == pytest.approx(8 * math.log(0.5))  # the padded step adds nothing


def test_sequence_normal_scores_a_path_as_torchs_normal_masked():
    """``SequenceNormal.log_prob`` (its own Gaussian formula, masked with one ``where``) equals
    torch's ``Normal.log_prob`` summed over the latent values and the scored steps, with gradients."""
    from pyro_srnn.distributions import SequenceNormal, normal_log_density

    g = torch.Generator().manual_seed(0)
    loc = torch.randn(3, 5, 2, generator=g, requires_grad=True)
    scale = (0.1 + torch.rand(3, 5, 2, generator=g)).requires_grad_()
    z = torch.randn(3, 5, 2, generator=g)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])
    reference = torch.distributions.Normal(loc, scale)
    torch.testing.assert_close(normal_log_density(z, loc, scale), reference.log_prob(z))
    ours = SequenceNormal(loc, scale, mask=mask).log_prob(z)
    expected = (reference.log_prob(z).sum(-1) * mask).sum(-1)
    torch.testing.assert_close(ours, expected)
    g_ours = torch.autograd.grad(ours.sum(), (loc, scale))
    g_expected = torch.autograd.grad(expected.sum(), (loc, scale))
    for a, b in zip(g_ours, g_expected):
        torch.testing.assert_close(a, b)
    assert torch.all(g_ours[0][2, 1:] == 0)  # padded steps get no gradient


@pytest.mark.parametrize("max_batches", [None, 1, 2])
def test_a_per_utterance_metric_counts_a_cut_utterance_by_the_fraction_evaluated(max_batches):
    """``max_batches`` may stop inside a sequence: per utterance, it counts for the share of its scored
    steps evaluated (four 10-step sequences in 3-step chunks, 2 chunks a batch: batch 1 is 6 of the
    first sequence's 9 scored steps), so the value stays in nats per utterance."""
    from conftest import make_spec, random_sequences
    from pyro_srnn.data import chunk_sequences
    from pyro_srnn.evaluate import evaluate_chunks
    from pyro_srnn.models import build_guide, build_model

    spec = make_spec("gaussian", 4, chunk_len=3, unit="utterance")
    chunks = chunk_sequences(random_sequences("gaussian", 4, [10, 10, 10, 10]), 3, step_dim=4)
    model = build_model("f-rnn", spec, "tiny")
    result = evaluate_chunks(model, build_guide(None, model), chunks, spec, batch_size=2, max_batches=max_batches)
    evaluated = {None: 4.0, 1: 6 / 9, 2: 1 + 3 / 9}[max_batches]
    assert result["sequences"] == pytest.approx(evaluated)
    assert result["value"] == pytest.approx(-result["total_log_likelihood"] / evaluated)
