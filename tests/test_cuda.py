"""Precision and CUDA.

* bf16 on CPU is refused with one clear error (CPU runs are float32).
* The bf16 mechanism (layer autocast, densities in float32) is checked on CPU with
  ``device_type="cpu"``: the LSTM runs under autocast, the head's parameters and the
  loss stay float32 and close to the float32 loss, and removing the hooks restores
  the float32 loss exactly.
* CUDA tests train a few steps on the GPU (fp32 and bf16) and skip cleanly without one.
* CUDA graphs of the step (``pyro_srnn.graphs``; ``--cuda-graph``, on by default wherever they can
  be): off on CPU, with Pyro's checks at every step and with data-parallel training, and one clear
  error there when asked for (checked without a GPU); on a GPU, models that draw no noise train to
  the same parameters through replayed graphs as eagerly (one graph, several shapes, bf16, every
  output family, both estimators), a sampling model trains and resumes, a diverging replayed step
  stops before its update, and a step that cannot be captured is one clear error.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pyro_srnn.infer import make_elbo
from pyro_srnn.models import build_guide, build_model
from pyro_srnn.precision import check_precision, install_bf16_autocast
from pyro_srnn.train import TrainConfig, Trainer

from conftest import make_batch, make_dataset, make_spec

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_bf16_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="bf16 needs --device cuda"):
        check_precision("bf16", "cpu")
    with pytest.raises(ValueError, match="unknown precision"):
        check_precision("fp16", "cpu")
    config = TrainConfig(model="f-rnn", size="tiny", steps=1, precision="bf16", device="cpu", out=str(tmp_path))
    with pytest.raises(ValueError, match="bf16 needs --device cuda"):
        Trainer(config, dataset=make_dataset())


def test_cli_refuses_bf16_on_cpu(tmp_path, capsys):
    from pyro_srnn.cli import main

    code = main(["train", "--dataset", "bach_chorales", "--size", "tiny", "--steps", "1", "--precision", "bf16",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    assert code != 0
    assert "bf16 needs --device cuda" in capsys.readouterr().err
    assert not (tmp_path / "run" / "latest.pt").exists()


def test_layer_autocast_keeps_densities_in_float32():
    """On CPU only the Linear layers are autocast (oneDNN has no bf16 LSTM): embed and head projection."""
    spec = make_spec("gaussian", L=6)
    model = build_model("f-rnn", spec, "tiny")
    guide = build_guide(None, model)
    batch = make_batch("gaussian", L=6)
    elbo = make_elbo("trace")(model, guide)
    with torch.no_grad():
        loss32 = elbo(batch)

    seen = {}

    def record(module, args):
        seen.setdefault("proj_autocast", torch.is_autocast_enabled("cpu"))

    handles = install_bf16_autocast(model, guide, device_type="cpu", layers=(nn.Linear,))
    model.head.proj.register_forward_pre_hook(record)  # runs after the autocast pre-hook
    assert len(handles) == 2 * 2  # embed Linear and head projection
    with torch.no_grad():
        d, _ = model.rnn(batch.inputs)
        raw = model.head.raw(d)
        loss16 = elbo(batch)
    assert seen["proj_autocast"] is True
    assert not torch.is_autocast_enabled("cpu")  # left again after the layer
    assert d.dtype == torch.float32 and raw.dtype == torch.float32
    assert loss16.dtype == torch.float32
    assert loss16 != loss32  # the layers really ran in bf16 ...
    assert float(loss16) == pytest.approx(float(loss32), rel=2e-2)  # ... and the loss is still the loss
    handles.remove()
    with torch.no_grad():
        assert torch.equal(elbo(batch), loss32)


def test_all_network_layers_are_hooked_once():
    spec = make_spec("bernoulli", L=6)
    model = build_model("f-rnn", spec, "tiny")
    guide = build_guide(None, model)
    handles = install_bf16_autocast(model, guide, model)  # shared layers are hooked once
    assert len(handles) == 2 * 3  # embed Linear, LSTM, head projection
    handles.remove()
    assert not model.rnn.lstm._forward_pre_hooks and not model.rnn.lstm._forward_hooks


def _train_on_cuda(tmp_path, model, precision):
    config = TrainConfig(model=model, size="tiny", steps=3, valid_every=3, batch_size=4, device="cuda",
                         precision=precision, progress=False, out=str(tmp_path / f"{model}-{precision}"))
    trainer = Trainer(config, dataset=make_dataset())
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    row = trainer.fit()
    assert trainer.step == 3
    assert trainer.graphed.replays == 2  # the default on a GPU: the first step eager (Pyro's checks), then replays
    assert all(p.is_cuda for p in trainer.model.parameters())
    assert torch.isfinite(torch.tensor(row["loss_per_value"]))
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / f"{model}-{precision}" / "best.pt").exists()


@needs_cuda
@pytest.mark.parametrize("model", ["f-rnn", "f-srnn"])
def test_train_a_few_steps_on_cuda(tmp_path, model):
    _train_on_cuda(tmp_path, model, "fp32")


@needs_cuda
@pytest.mark.parametrize("model", ["f-rnn", "f-srnn"])
def test_train_a_few_steps_on_cuda_in_bf16(tmp_path, model):
    _train_on_cuda(tmp_path, model, "bf16")


@needs_cuda
def test_bf16_loss_is_float32_and_close_on_cuda():
    spec = make_spec("bernoulli", L=6)
    model = build_model("f-rnn", spec, "tiny").cuda()
    guide = build_guide(None, model)
    batch = make_batch("bernoulli", L=6).to("cuda")
    elbo = make_elbo("trace")(model, guide)
    with torch.no_grad():
        loss32 = float(elbo(batch))
        handles = install_bf16_autocast(model, guide, device_type="cuda")
        loss16 = elbo(batch)
        handles.remove()
    assert loss16.dtype == torch.float32
    assert float(loss16) == pytest.approx(loss32, rel=2e-2)


# ---------------------------------------------------------------- CUDA graphs of the step (--cuda-graph)

def test_cuda_graph_is_refused_off_cuda_with_one_clear_error(tmp_path):
    config = TrainConfig(model="f-rnn", size="tiny", steps=1, cuda_graph=True, device="cpu", out=str(tmp_path))
    with pytest.raises(ValueError, match="--cuda-graph needs --device cuda"):
        Trainer(config, dataset=make_dataset())
    assert not any(tmp_path.iterdir())


def test_cli_refuses_cuda_graph_on_cpu(tmp_path, capsys):
    from pyro_srnn.cli import main

    code = main(["train", "--dataset", "bach_chorales", "--size", "tiny", "--steps", "1", "--cuda-graph",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    assert code != 0
    assert "--cuda-graph needs --device cuda" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_cuda_graph_default_insist_and_opt_out():
    from pyro_srnn.cli import build_parser

    parse = lambda *extra: build_parser().parse_args(["train", *extra]).cuda_graph  # noqa: E731
    assert parse() is None and parse("--cuda-graph") is True and parse("--no-cuda-graph") is False


@pytest.mark.parametrize("change, message", [
    (dict(pyro_validation="always"), "Pyro's checks cannot run at every step"),
    (dict(world_size=2), "single-process training"),
    (dict(device="cpu"), "--cuda-graph needs --device cuda"),
])
def test_cuda_graph_is_on_wherever_it_can_be_and_refused_where_asked_for_and_impossible(change, message):
    """Decided before anything is built (so without a GPU): by default CUDA graphs are used on a CUDA
    device unless Pyro's checks run at every step (each reads values back to the host, which a
    capture forbids) or the run is data-parallel (collectives are not captured); asking for them there
    is one clear error, and ``cuda_graph=False`` always trains eagerly."""
    from pyro_srnn.distributed import DistContext
    from pyro_srnn.train import use_cuda_graph

    def use(cuda_graph, change=change):
        config = TrainConfig(model="f-rnn", cuda_graph=cuda_graph, pyro_validation=change.get("pyro_validation", "first"))
        return use_cuda_graph(config, torch.device(change.get("device", "cuda")),
                              DistContext(world_size=change.get("world_size", 1)))

    assert use(None, {}) is True and use(True, {}) is True and use(False, {}) is False
    assert use(None) is False and use(False) is False
    with pytest.raises(ValueError, match=message):
        use(True)


def _graph_and_eager(tmp_path, model, *, precision="fp32", chunk_len=8, steps=6, max_graphs=8, family="bernoulli",
                     **config):
    """The same run twice, eagerly and with --cuda-graph, on the same (padded) batches."""
    dataset = make_dataset(family, L=3 if family == "handwriting" else 6, chunk_len=chunk_len, n_train=24)
    trainers = []
    for graph in (False, True):
        cfg = TrainConfig(model=model, size="tiny", steps=steps, valid_every=steps, batch_size=4, device="cuda",
                          precision=precision, progress=False, cuda_graph=graph,
                          out=str(tmp_path / f"{model}-{precision}-{graph}"), **config)
        trainer = Trainer(cfg, dataset=dataset)
        trainer.sampler.pad_to = chunk_len  # the graph run's padding, for both
        if trainer.graphed is not None:
            trainer.graphed.max_graphs = max_graphs
        trainers.append(trainer)
    return trainers


def _assert_same_training(eager, graphed, rtol):
    rows = [eager.fit(), graphed.fit()]
    assert eager.step == graphed.step
    for key in ("loss_per_value", "kl_per_step", "kl_scale", "lr"):
        assert rows[1][key] == pytest.approx(rows[0][key], rel=rtol, abs=1e-7), key
    for (name, a), b in zip(eager.model.state_dict().items(), graphed.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=rtol, atol=rtol * 1e-2, msg=name)
    assert (graphed.out / "best.pt").exists()


@needs_cuda
@pytest.mark.parametrize("model, precision", [("f-rnn", "fp32"), ("delta-srnn", "fp32"), ("rnn-hier", "fp32"),
                                              ("f-rnn", "bf16")])
def test_cuda_graph_training_equals_eager_training(tmp_path, model, precision):
    """Models that draw no noise (an autoregressive model, a Delta guide) train to the same parameters
    through replayed graphs as eagerly: batches copied into the static buffers, the annealed KL scale
    (delta-srnn) and the value count filled in at every step, the first step (Pyro's checks) eager."""
    eager, graphed = _graph_and_eager(tmp_path, model, precision=precision)
    _assert_same_training(eager, graphed, rtol=1e-2 if precision == "bf16" else 1e-4)
    assert len(graphed.graphed.graphs) == 1 and graphed.graphed.replays == graphed.step - 1


@needs_cuda
def test_cuda_graph_one_graph_per_batch_shape_and_eager_past_the_last(tmp_path):
    """Whole sequences (no chunking): batches of lengths 16, 17, 8, 18, 13, 18, 18, 18, 16, 14, 16, 11.
    Four graphs at most (17, 8, 18, 13), the other shapes eager; the parameters' gradients must follow
    whichever graph replayed last (18 again after 13)."""
    eager, graphed = _graph_and_eager(tmp_path, "f-rnn", chunk_len=None, steps=12, max_graphs=4)
    with pytest.warns(RuntimeWarning, match="more than 4 batch shapes"):
        _assert_same_training(eager, graphed, rtol=1e-4)
    assert len(graphed.graphed.graphs) == 4
    assert graphed.graphed.replays == 7


@needs_cuda
def test_cuda_graph_training_of_a_sampling_model_and_its_resume(tmp_path):
    """f-srnn samples its latents inside the graph (fresh noise at every replay); a run stopped and
    resumed captures again and ends where the uninterrupted one does (step, schedule)."""
    config = dict(model="f-srnn", size="tiny", steps=6, valid_every=3, batch_size=4, device="cuda",
                  progress=False, cuda_graph=True, out=str(tmp_path / "run"))
    dataset = make_dataset(n_train=24)
    first = Trainer(TrainConfig(**config, stop_at=3), dataset=dataset)
    before = {k: v.detach().clone() for k, v in first.model.state_dict().items()}
    first.fit()
    losses = [row["loss_per_value"] for row in first.history]
    second = Trainer(TrainConfig(**config), dataset=dataset)
    second.resume()
    row = second.fit()
    # a new process checks its first step eagerly (--pyro-validation first), then captures anew
    assert first.graphed.replays == 2 and second.step == 6 and second.graphed.replays == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in losses + [row["loss_per_value"]])
    after = second.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # the resumed steps' annealed KL scale and cosine learning rate (the row: their mean), as an uninterrupted run's
    assert row["kl_scale"] == pytest.approx(sum(0.2 + k * 1e-4 for k in (3, 4, 5)) / 3)
    assert row["lr"] == pytest.approx(sum(1e-6 + (1e-3 - 1e-6) * (1 + math.cos(math.pi * k / 6)) / 2
                                          for k in (3, 4, 5)) / 3, rel=1e-6)


@needs_cuda
def test_cuda_graph_step_that_diverges_stops_before_the_update(tmp_path):
    """A non-finite loss in a replayed step stops training as in an eager one: no update applied, and
    the batch re-run eagerly with Pyro's checks names the site."""
    from pyro_srnn.train import TrainingDiverged

    config = TrainConfig(model="f-rnn", size="tiny", steps=4, valid_every=100, batch_size=4, device="cuda",
                         progress=False, cuda_graph=True, out=str(tmp_path))
    trainer = Trainer(config, dataset=make_dataset(n_train=24))
    for step in range(2):  # the eager first step, then the capture
        trainer.train_step(trainer.sampler.batch(step).to("cuda"))
    assert trainer.graphed.replays == 1
    with torch.no_grad():
        trainer.model.head.proj.bias.fill_(float("nan"))
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 3"):
        trainer.train_step(trainer.sampler.batch(2).to("cuda"))
    assert trainer.graphed.replays == 2 and trainer.step == 2
    after = trainer.model.state_dict()
    for k in before:
        torch.testing.assert_close(after[k], before[k], equal_nan=True)


@needs_cuda
def test_cli_trains_with_cuda_graph(tmp_path, capsys):
    from pyro_srnn.cli import main

    code = main(["train", "--dataset", "bach_chorales", "--size", "tiny", "--steps", "4", "--valid-every", "4",
                 "--valid-max-batches", "1", "--device", "cuda", "--cuda-graph", "--out", str(tmp_path / "run"),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "result.json").exists()


@needs_cuda
@pytest.mark.parametrize("family, model, estimator", [
    ("gaussian", "f-rnn", "trace"), ("handwriting", "f-rnn", "meanfield"), ("gaussian", "f-srnn", "meanfield"),
    ("handwriting", "vrnn", "meanfield"), ("bernoulli", "zforcing", "meanfield"), ("bernoulli", "srnn-fraccaro", "trace"),
    ("gaussian", "dmm", "trace"), ("bernoulli", "storn", "meanfield"),
])
def test_cuda_graph_across_output_families_and_estimators(tmp_path, family, model, estimator):
    """Every output head (Bernoulli, Gaussian mixture, pen and mixtures) and both estimators (the
    closed-form KL included) capture; F-RNN, which draws no noise, trains to the eager parameters;
    the latent models' replayed steps report a loss close to the eager run's (different noise)."""
    eager, graphed = _graph_and_eager(tmp_path, model, family=family, steps=4, estimator=estimator)
    if model == "f-rnn":
        _assert_same_training(eager, graphed, rtol=1e-4)
    else:
        rows = [eager.fit(), graphed.fit()]
        assert all(math.isfinite(r["loss_per_value"]) and math.isfinite(r["kl_per_step"]) for r in rows)
        assert rows[1]["loss_per_value"] == pytest.approx(rows[0]["loss_per_value"], rel=0.2, abs=0.05)
    assert graphed.graphed.replays == 3


_CAPTURE_FAILURE = """
import sys
import torch
sys.path.insert(0, "tests")
from conftest import make_dataset
from pyro_srnn.graphs import GraphCaptureError
from pyro_srnn.train import TrainConfig, Trainer

config = TrainConfig(model="f-rnn", size="tiny", steps=3, batch_size=4, device="cuda", progress=False,
                     cuda_graph=True, pyro_validation="off", out=sys.argv[1])
trainer = Trainer(config, dataset=make_dataset(n_train=24))
real_pass = trainer.graphed.step_pass

def reading_pass(batch, kl_scale, divisor):
    read = real_pass(batch, kl_scale, divisor)
    float(read[0])  # a host read: a synchronisation, forbidden while capturing
    return read

trainer.graphed.step_pass = reading_pass
try:
    trainer.train_step(trainer.sampler.batch(0).to("cuda"))
except GraphCaptureError as e:
    assert not trainer.graphed.graphs and all(p.grad is None for p in trainer.params)
    print(e)
"""


_LIVE_GRAPH = """
import sys
sys.path.insert(0, "tests")
from conftest import make_dataset
from pyro_srnn.graphs import GraphCaptureError
from pyro_srnn.train import TrainConfig, Trainer

config = TrainConfig(model="f-rnn", size="tiny", steps=3, batch_size=4, device="cuda", progress=False,
                     cuda_graph=True, pyro_validation="off", out=sys.argv[1])
trainer = Trainer(config, dataset=make_dataset(n_train=24))
kept = sum((p * 1.0).sum() for p in trainer.params)  # built on the default stream, and kept alive
kept.backward()
trainer.optimizer.zero_grad(set_to_none=True)
try:
    trainer.train_step(trainer.sampler.batch(0).to("cuda"))
    print("captured")
except GraphCaptureError as e:
    print(e)
"""


@needs_cuda
def test_cuda_graph_capture_names_a_live_autograd_graph(tmp_path):
    """A loss kept alive from an eager backward pass holds the parameters' accumulate-grad nodes on the
    default stream, which a capture cannot use (bench_scaling's timing met it on an H100): the error says
    so and what to do. (In its own process, like every failed capture.)"""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _LIVE_GRAPH, str(tmp_path)], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "could not be captured" in done.stdout, done.stdout
    assert "still alive" in done.stdout and "delete it before training" in done.stdout


@needs_cuda
def test_cuda_graph_capture_failure_is_one_clear_error(tmp_path):
    """A step that reads a value back to the host cannot be captured: the trainer says so and how to go
    on. (In its own process: a failed capture leaves the process's CUDA generator unusable.)"""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _CAPTURE_FAILURE, str(tmp_path)], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "could not be captured" in done.stdout and "train with --no-cuda-graph" in done.stdout
    assert "new process" in done.stdout


class _ScriptedCapture:
    """A GraphedStep whose capture, instead of touching a GPU, warns and then raises or succeeds."""

    def __init__(self, warning: str | None, fails: bool):
        import warnings
        from types import SimpleNamespace

        from pyro_srnn.graphs import GraphedStep, _Captured

        self.param = nn.Parameter(torch.zeros(2))
        self.step = GraphedStep(lambda *a: None, [self.param])
        self.warning, self.fails = warning, fails

        def capture(batch, kl_scale, divisor):
            if self.warning:
                warnings.warn(self.warning, UserWarning, stacklevel=1)
            if self.fails:
                self.param.grad = torch.ones(2)  # a half-made step's gradient: dropped
                raise RuntimeError("CUDA error: operation would make the legacy stream depend on a capturing "
                                   "blocking stream")
            return _Captured(batch, torch.zeros(()), torch.zeros(()), SimpleNamespace(replay=lambda: None),
                             torch.zeros(3), [None])  # a "graph" that replays nothing

        self.step._capture = capture


@pytest.mark.parametrize("warning, hinted", [
    ("The AccumulateGrad node's stream does not match the stream of the node that produced the incoming "
     "gradient.", True),
    (None, False),
])
def test_capture_failure_names_a_live_autograd_graph_when_autograd_warned_of_one(warning, hinted):
    """The error of a failed capture adds the live-graph hint exactly when autograd warned of accumulate-grad
    nodes of another stream during the capture (the GPU case is the test above; this is its logic)."""
    import warnings

    from pyro_srnn.graphs import LIVE_GRAPH_HINT, GraphCaptureError

    scripted = _ScriptedCapture(warning, fails=True)
    batch = make_batch()
    with warnings.catch_warnings(), pytest.raises(GraphCaptureError, match="could not be captured") as error:
        warnings.simplefilter("always")  # as outside the test suite, where warnings are not errors
        scripted.step(batch, 1.0, 1.0)
    assert (LIVE_GRAPH_HINT in str(error.value)) is hinted
    assert "--no-cuda-graph" in str(error.value) and scripted.param.grad is None


def test_warnings_of_a_capture_that_works_are_passed_on():
    """Warnings are held during a capture (to explain a failure) and passed on when it works."""
    scripted = _ScriptedCapture("a capture's own warning", fails=False)
    batch = make_batch()
    with pytest.warns(UserWarning, match="a capture's own warning"):
        scripted.step(batch, 1.0, 1.0)
    assert len(scripted.step.graphs) == 1 and scripted.step.replays == 1
