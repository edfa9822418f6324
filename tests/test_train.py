"""The training engine: resume equality, divergence handling, atomic checkpoints, annealing, metrics."""
import math
import os

import pytest
import torch

from pyro_srnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_srnn.infer import LinearAnnealing, make_schedule
from pyro_srnn.train import TrainConfig, Trainer, TrainingDiverged, load_trained

from conftest import make_dataset


def tiny_config(tmp_path, **kw):
    base = dict(model="f-rnn", size="tiny", steps=8, batch_size=4, valid_every=4, progress=False,
                out=str(tmp_path), model_args={"dropout": 0.3}, log_every=2)
    base.update(kw)
    return TrainConfig(**base)


def params_of(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_resume_gives_identical_parameters(tmp_path):
    data = make_dataset()
    straight = Trainer(tiny_config(tmp_path / "a"), dataset=data)
    straight.fit()

    first = Trainer(tiny_config(tmp_path / "b", stop_at=4), dataset=data)
    first.fit()
    assert first.step == 4
    # a fresh process: new objects, different global RNG state, then --resume
    torch.manual_seed(12345)
    second = Trainer(tiny_config(tmp_path / "b"), dataset=data)
    second.resume()
    assert second.step == 4
    second.fit()
    assert second.step == 8
    a, b = params_of(straight), params_of(second)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight.optimizer.param_groups[0]["lr"] == second.optimizer.param_groups[0]["lr"]


def _interrupt_in(trainer, monkeypatch, method, call, how):
    """Interrupt ``trainer`` in its ``call``-th call of ``method``: "signal" sends SIGINT (a Ctrl-C)
    before the call, "raise" raises KeyboardInterrupt after it (a second Ctrl-C, or one where no
    handler of the trainer's runs), once its noise has been drawn, "raise before" instead of it."""
    import signal

    original, calls = getattr(trainer, method), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call and how == "signal":
            os.kill(os.getpid(), signal.SIGINT)
        if len(calls) == call and how == "raise before":
            raise KeyboardInterrupt
        out = original(*args, **kwargs)
        if len(calls) == call and how == "raise":
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(trainer, method, wrapped)


@pytest.mark.parametrize("method, call, how, stopped_at", [
    ("_loss_terms", 6, "signal", 6),  # Ctrl-C: update 6 finishes, then the run stops
    ("_loss_terms", 6, "raise", 5),  # inside update 6's loss: nothing applied, its noise drawn again
    ("validate", 1, "raise", 4),  # inside the validation of update 4: it runs on resume
    ("train_step", 6, "raise", 6),  # update 6 applied, the loop not yet on: its noise is not drawn again
    ("save", 3, "raise before", 8),  # writing the new best.pt of update 8: the validation runs again
])
def test_a_run_interrupted_anywhere_resumes_to_the_uninterrupted_parameters(tmp_path, monkeypatch, method, call,
                                                                            how, stopped_at):
    """Ctrl-C (SIGINT) or a KeyboardInterrupt inside an update or a validation: ``latest.pt`` holds the
    last finished update (and its random state), and the resumed run ends with the parameters, the
    validations and the best checkpoint of an uninterrupted one (F-SRNN: latent noise and dropout)."""
    import signal

    data = make_dataset()
    config = lambda out: tiny_config(out, model="f-srnn", model_args={})  # noqa: E731
    straight = Trainer(config(tmp_path / "a"), dataset=data)
    straight.fit()

    first = Trainer(config(tmp_path / "b"), dataset=data)
    _interrupt_in(first, monkeypatch, method, call, how)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the trainer's handler is gone
    assert load_checkpoint(tmp_path / "b" / "latest.pt")["step"] == stopped_at
    torch.manual_seed(12345)
    second = Trainer(config(tmp_path / "b"), dataset=data)
    second.resume()
    second.fit()
    for a, b in ((straight.model, second.model), (straight.guide, second.guide)):
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), k
    validated = lambda t: [(r["step"], r["valid"]) for r in t.history if "valid" in r]  # noqa: E731
    assert validated(second) == validated(straight) and [s for s, _ in validated(second)] == [4, 8]
    best = lambda out: load_checkpoint(out / "best.pt")  # noqa: E731
    assert best(tmp_path / "a")["step"] == best(tmp_path / "b")["step"] == 8  # (saves: best 4, latest 4, best 8)


@pytest.mark.parametrize("change, named", [
    (dict(size="small"), "model hidden"),  # another preset: other widths
    (dict(model_args={"dropout": 0.5}), "model dropout: 0.3 saved, 0.5 here"),
    (dict(dataset=None), "model spec"),  # another data set (make_dataset's L=7)
])
def test_resume_into_another_configuration_names_the_settings_that_differ(tmp_path, change, named):
    """Resuming a checkpoint with a configuration that builds another model is one CheckpointError
    naming each differing setting, not torch's size-mismatch error of the first tensor."""
    Trainer(tiny_config(tmp_path, steps=2), dataset=make_dataset()).fit()
    dataset = make_dataset(L=7) if "dataset" in change else make_dataset()
    change = {k: v for k, v in change.items() if k != "dataset"}
    other = Trainer(tiny_config(tmp_path, steps=2, **change), dataset=dataset)
    with pytest.raises(CheckpointError, match="holds another f-rnn") as error:
        other.resume()
    assert named in str(error.value)


def test_outputs_of_a_run(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), dataset=make_dataset())
    trainer.fit()
    for name in ("best.pt", "latest.pt", "metrics.csv", "curves.png"):
        assert (tmp_path / name).exists(), name
    import pandas as pd

    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert {"step", "loss_per_value", "kl_per_step", "lr", "kl_scale", "valid"} <= set(frame.columns)
    assert frame["step"].iloc[-1] == 8
    assert frame["valid"].notna().sum() == 2  # steps 4 and 8
    # the learning rate decays on the cosine schedule from 1e-3
    assert frame["lr"].iloc[0] < 1e-3 and frame["lr"].is_monotonic_decreasing
    model, guide, state = load_trained(tmp_path / "best.pt")
    assert model.name == "f-rnn" and guide.name == "none" and not model.training


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), dataset=make_dataset())
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        trainer.resume()


@pytest.mark.parametrize("mode", ["always", "first"])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, mode):
    import contextlib

    trainer = Trainer(tiny_config(tmp_path, stop_at=4, pyro_validation=mode), dataset=make_dataset())
    trainer.fit()
    good = load_checkpoint(tmp_path / "latest.pt")
    trainer.config.stop_at = None
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    # with "always", Pyro's validation of the step itself also warns of the NaN: expected there
    warns = pytest.warns(UserWarning, match="Encountered NaN") if mode == "always" else contextlib.nullcontext()
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at step 5 \(Pyro's checks .*Encountered NaN"), warns:
        trainer.fit()
    kept = load_checkpoint(tmp_path / "latest.pt")
    assert kept["step"] == 4
    for k, v in kept["model_state"].items():
        assert torch.isfinite(v).all(), k
        assert torch.equal(v, good["model_state"][k])


def test_interrupted_checkpoint_write_leaves_no_corrupt_file(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1, "x": torch.ones(3)})

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "x": torch.zeros(3)})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["latest.pt"]


def test_interrupted_result_write_keeps_the_old_file(tmp_path, monkeypatch):
    """``result.json`` marks a finished run (benchmarks reuse runs that have one): never half written."""
    from pathlib import Path

    from pyro_srnn.data import write_text_atomic

    path = tmp_path / "result.json"
    write_text_atomic(path, '{"value": 1.0}')
    real_write_text = Path.write_text

    def broken_write_text(self, text, *a, **k):
        real_write_text(self, text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", broken_write_text)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, '{"value": 2.0, "steps": 3000}')
    monkeypatch.undo()
    assert path.read_text() == '{"value": 1.0}'
    assert sorted(os.listdir(tmp_path)) == ["result.json"]
    write_text_atomic(path, '{"value": 2.0}')
    assert path.read_text() == '{"value": 2.0}'


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_loading_never_executes_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "pyro_srnn-checkpoint-v1", "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot load checkpoint .*never runs pickled code") as error:
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
    assert "\n" not in str(error.value)  # one line, without torch's advice to load it unsafely
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "junk.pt")
    assert "\n" not in str(error.value) and "junk.pt" in str(error.value)


def test_study_annealing_schedule():
    s = LinearAnnealing(start=0.2, increment=1e-4)
    assert s(0) == pytest.approx(0.2)
    assert s(1000) == pytest.approx(0.3)
    assert s(10**6) == 1.0
    assert make_schedule("none")(0) == 1.0
    with pytest.raises(ValueError, match="> 0"):
        LinearAnnealing(start=0.0)


def test_sigmoid_annealing_is_the_linear_ramp_smoothed_and_follows_its_flags(tmp_path):
    """``--anneal sigmoid`` takes ``--anneal-start`` and ``--anneal-increment`` (the domain's study
    increment by default): it starts near the start, is half-way where the linear ramp is, and is
    at 1 (within 1 %) where the linear one reaches it; extreme settings do not overflow."""
    from pyro_srnn.infer import SigmoidAnnealing

    trainer = Trainer(tiny_config(tmp_path, model="f-srnn", model_args={}, anneal="sigmoid", anneal_start=0.5,
                                  anneal_increment=1e-3), dataset=make_dataset())
    beta = trainer.kl_schedule
    assert isinstance(beta, SigmoidAnnealing)
    assert beta(0) == pytest.approx(0.5, abs=0.01) and beta(250) == pytest.approx(0.75)
    assert beta(500) == pytest.approx(1.0, abs=0.01) and beta(0) < beta(100) < beta(400) < 1.0
    study = Trainer(tiny_config(tmp_path / "b", model="f-srnn", model_args={}, anneal="sigmoid"),
                    dataset=make_dataset()).kl_schedule  # MIDI: 0.2 + 1e-4 per update reaches 1 at 8000
    assert study.midpoint == pytest.approx(4000) and study(0) == pytest.approx(0.2, abs=0.01)
    constant = SigmoidAnnealing.like_linear(start=0.3, increment=0.0), SigmoidAnnealing.like_linear(1.0, 1e-4)
    assert [(s(0), s(10**6)) for s in constant] == [(0.3, 0.3), (1.0, 1.0)]  # as the linear ramp: constant
    sharp = SigmoidAnnealing(start=0.1, midpoint=1e6, width=1e-3)
    assert sharp(0) == 0.1 and sharp(2e6) == 1.0
    with pytest.raises(ValueError, match="width"):
        SigmoidAnnealing(width=0)


@pytest.mark.parametrize("guide, annealed", [("delta", False), ("delta-gaussian", True)])
def test_the_delta_guide_trains_its_exact_likelihood_unannealed(tmp_path, guide, annealed):
    """With the delta guide the ELBO is the δ-RNN log-likelihood (Proposition 1) and its ``z`` term is
    ``log p(x^a_t | x_<t)``: no KL to anneal, so the scale stays 1; a proper posterior is annealed."""
    trainer = Trainer(tiny_config(tmp_path, model="delta-srnn", guide=guide, model_args={"d_leak": 2}),
                      dataset=make_dataset("gaussian", L=5))
    assert (trainer.kl_schedule(0) < 1.0) is annealed and trainer.kl_schedule(10**6) == 1.0


def test_gradient_clipping_bounds_the_update(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, clip_norm=1e-3, lr=1.0), dataset=make_dataset())
    batch = trainer.sampler.batch(0)
    before = [p.detach().clone() for p in trainer.params]
    # with lr 1 and Adam, an update moves each element by at most ~lr; clipping keeps the gradient norm ≤ clip
    loss = trainer.loss_fn(batch) / batch.num_scored_values
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(trainer.params, 1e-3)
    total = math.sqrt(sum(float((p.grad ** 2).sum()) for p in trainer.params))
    assert total <= 1e-3 * (1 + 1e-4) and float(norm) > 1e-3
    assert all(torch.equal(a, p.detach()) for a, p in zip(before, trainer.params))


@pytest.mark.parametrize("family, L, per_step", [("bernoulli", 6, 1), ("handwriting", 3, 1), ("gaussian", 5, 5)])
def test_the_loss_is_normalised_per_study_unit_before_clipping(tmp_path, family, L, per_step, monkeypatch):
    """SPEC §5: the clipped loss is normalised per audio sample (speech: each value of a step), per
    88-key step (MIDI) and per pen point (handwriting): the backward pass divides by those counts."""
    from pyro_srnn.train import loss_units_per_step

    trainer = Trainer(tiny_config(tmp_path), dataset=make_dataset(family, L=L))
    assert loss_units_per_step(trainer.dataset.spec) == per_step
    divisors = []
    backward_and_clip = trainer._backward_and_clip
    monkeypatch.setattr(trainer, "_backward_and_clip",
                        lambda loss, divisor: divisors.append(divisor) or backward_and_clip(loss, divisor))
    batch = trainer.sampler.batch(0)
    trainer.train_step(batch)
    assert divisors == [batch.num_scored_steps * per_step] and batch.num_scored_steps < batch.num_scored_values


def test_study_batch_sizes_per_data_set():
    """SPEC §5: TIMIT 32, VCTK and Blizzard 128, MIDI 16, IAM-OnDB 32 (the CLI's default batch size)."""
    from pyro_srnn.data.bach import SPEC as BACH
    from pyro_srnn.data.speech import speech_spec
    from pyro_srnn.train import study_batch_size

    assert [study_batch_size(speech_spec(name, "utterance")) for name in ("timit", "vctk", "blizzard")] == [32, 128, 128]
    assert study_batch_size(BACH) == 16
    assert study_batch_size(make_dataset("handwriting", L=3).spec) == 32


def test_resume_with_more_steps_follows_the_new_cosine_horizon(tmp_path):
    """The learning rate is the cosine of (update, --steps): a finished 8-update run resumed with
    --steps 16 continues on the 16-update curve, decreasing to lr_min — not back up the old period."""
    from pyro_srnn.train import cosine_lr
    import pandas as pd

    data = make_dataset()
    first = Trainer(tiny_config(tmp_path, log_every=1, valid_every=100), dataset=data)
    first.fit()
    longer = Trainer(tiny_config(tmp_path, log_every=1, valid_every=100, steps=16), dataset=data)
    longer.resume()
    longer.fit()
    lr = pd.read_csv(tmp_path / "metrics.csv").set_index("step")["lr"]
    assert list(lr.index) == list(range(1, 17))
    for step in range(1, 9):  # row k: the rate of update k (0-based k - 1)
        assert lr[step] == pytest.approx(cosine_lr(step - 1, 8, 1e-3, 1e-6), rel=1e-12)
    for step in range(9, 17):
        assert lr[step] == pytest.approx(cosine_lr(step - 1, 16, 1e-3, 1e-6), rel=1e-12)
    assert lr.loc[9:].is_monotonic_decreasing and cosine_lr(20, 16, 1e-3, 1e-6) == 1e-6


def test_empty_training_split_is_refused(tmp_path):
    data = make_dataset()
    data.train = []
    with pytest.raises(ValueError, match="empty training split"):
        Trainer(tiny_config(tmp_path), dataset=data)


@pytest.mark.parametrize("model", ["f-rnn", "f-srnn"])
def test_pyro_validation_modes_choose_the_checked_steps_not_the_updates(tmp_path, model, monkeypatch):
    """``pyro_validation`` only decides where Pyro's checks run — every training step and validation
    pass ("always"), the first step and the first pass of the process ("first", the default), none
    ("off") — and leaves the global switch as it was; the parameters after the same updates are equal."""
    import pyro.poutine.trace_struct as trace_struct

    checked = []  # (what, step) of every per-site check of Pyro's
    running = {}
    for name in ("warn_if_nan", "warn_if_inf"):
        original = getattr(trace_struct, name)
        monkeypatch.setattr(trace_struct, name, lambda *a, _f=original, **k: (
            checked.append((running["what"], running["trainer"].step)), _f(*a, **k))[1])
    data = make_dataset()
    results = {}
    for mode in ("always", "first", "off"):
        checked.clear()
        trainer = Trainer(tiny_config(tmp_path / mode, model=model, pyro_validation=mode), dataset=data)
        running["trainer"] = trainer
        for what in ("train_step", "validate"):
            method = getattr(trainer, what)
            setattr(trainer, what, lambda *a, _m=method, _w=what, **k: (running.update(what=_w), _m(*a, **k))[1])
        trainer.fit()
        results[mode] = (sorted(set(checked)), params_of(trainer))
        assert trace_struct.is_validation_enabled()  # restored after every step
    # steps counted before the update (0 = the first step); validation passes after steps 4 and 8
    assert results["always"][0] == [("train_step", i) for i in range(8)] + [("validate", 4), ("validate", 8)]
    assert results["first"][0] == [("train_step", 0), ("validate", 4)]
    assert results["off"][0] == []
    for mode in ("first", "off"):
        for k, value in results["always"][1].items():
            assert torch.equal(value, results[mode][1][k]), (mode, k)


def test_pyro_validation_booleans_of_older_configs_read_as_modes(tmp_path):
    assert tiny_config(tmp_path, pyro_validation=True).pyro_validation == "always"
    assert tiny_config(tmp_path, pyro_validation=False).pyro_validation == "off"
    assert tiny_config(tmp_path).pyro_validation == "first"
    with pytest.raises(ValueError, match="pyro_validation must be one of always, first, off"):
        tiny_config(tmp_path, pyro_validation="sometimes")


def test_non_finite_loss_is_caught_without_pyro_validation(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, pyro_validation="off"), dataset=make_dataset())
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    # no warning from Pyro (its checks are off; a warning would fail the test): the trainer stops the run
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 1"):
        trainer.fit()


@pytest.mark.parametrize("mode", ["first", "off"])
@pytest.mark.parametrize("model, poisoned, site", [("f-rnn", "model", "x"), ("f-srnn", "guide", "z")])
def test_a_diverged_step_names_the_first_non_finite_site(tmp_path, mode, model, poisoned, site):
    """Whatever the mode, a step whose loss is not finite is re-run with Pyro's checks on, and the
    error names the first sample site whose log-density is not finite (the guide's ``z`` when the
    guide's weights are NaN, the observed ``x`` when the model's are); no warning escapes (Pyro's
    warnings are errors in the tests) and no gradient is left behind."""
    trainer = Trainer(tiny_config(tmp_path, model=model, pyro_validation=mode), dataset=make_dataset())
    for _ in range(2):  # with "first", the first step ran the checks: the diverging step is unchecked
        trainer.train_step(trainer.sampler.batch(trainer.step))
    with torch.no_grad():
        for p in getattr(trainer, poisoned).parameters():
            p.fill_(float("nan"))
    with pytest.raises(TrainingDiverged) as caught:
        trainer.train_step(trainer.sampler.batch(trainer.step))
    message = str(caught.value)
    assert message.startswith("non-finite loss at step 3 (Pyro's checks of that batch: "
                              f"Encountered NaN: log_prob_sum at site '{site}'"), message
    assert str(tmp_path / "latest.pt") in message
    assert all(p.grad is None for p in trainer.params)
    assert trainer.step == 2


def test_validation_cadence_does_not_depend_on_the_logging_cadence(tmp_path):
    """--valid-every 3 validates at 3, 6 and the last step even when metrics are logged every 2 updates."""
    import pandas as pd

    Trainer(tiny_config(tmp_path, valid_every=3, log_every=2), dataset=make_dataset()).fit()
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert list(frame.loc[frame["valid"].notna(), "step"]) == [3, 6, 8]
    assert list(frame["step"]) == [2, 3, 4, 6, 8]  # logged steps: every 2nd, plus validation steps


@pytest.mark.parametrize("model", ["f-rnn", "f-srnn"])
def test_a_training_step_reads_one_tensor_back(tmp_path, model, monkeypatch, host_reads):
    """After the first step (the default ``pyro_validation="first"`` checks that one with Pyro's
    validation, which reads every site's log-density back) a training step reads the device back
    once — loss, reconstruction and gradient norm together, after backward and clipping — and never
    before backward (on a GPU each read is a synchronisation; one before backward would keep the
    CPU from queueing the backward pass). The batch's counts come from the CPU, counted before the
    batch moved. (Adam's own reads of its step counters are left out: those tensors live on the CPU.)"""
    trainer = Trainer(tiny_config(tmp_path, model=model), dataset=make_dataset())
    batches = [trainer.sampler.batch(i).to(trainer.device) for i in range(2)]
    assert batches[0]._num_scored == int(batches[0].mask.sum())  # carried over by .to(), not read from the device
    backward = torch.Tensor.backward
    monkeypatch.setattr(torch.Tensor, "backward", lambda self, *a, **k: (host_reads.events.append("backward"),
                                                                         backward(self, *a, **k))[1])
    trainer.optimizer.register_step_pre_hook(lambda *a: setattr(host_reads, "active", False))
    trainer.optimizer.register_step_post_hook(lambda *a: setattr(host_reads, "active", True))
    reads = []
    for batch in batches:
        host_reads.events.clear()  # only the step's own reads (building the trainer and batch read on the CPU)
        stats = trainer.train_step(batch)
        reads.append(list(host_reads.events))
    # the first step: Pyro's checks read each site's log-density (forward) and its gradient (backward)
    assert reads[0].count("__bool__") > 2 and reads[0][-1] == "tolist", reads[0]
    assert reads[1] == ["backward", "tolist"], reads[1]
    assert math.isfinite(stats["loss_per_value"]) and stats["step"] == 2


def test_the_trainer_uses_fused_adam_and_it_updates_as_plain_adam(tmp_path):
    """The trainer's Adam is the fused one where torch has it (CPU and CUDA float32), and a fused
    update equals the default implementation's on the same gradients."""
    from pyro_srnn.train import make_optimizer

    trainer = Trainer(tiny_config(tmp_path), dataset=make_dataset())
    assert trainer.optimizer.param_groups[0]["fused"] is True
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 3, generator=g), torch.randn(7, generator=g)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]
    results = []
    for build in (lambda ps: make_optimizer(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = build(params)
        for step_grads in grads:
            for p, grad in zip(params, step_grads):
                p.grad = grad.clone()
            optimizer.step()
        results.append(params)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not torch.equal(a, start[0] if a.shape == start[0].shape else start[1])  # it did move
