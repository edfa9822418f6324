"""Precision and CUDA.

* bf16 on CPU is refused with one clear error (CPU runs are float32).
* The bf16 mechanism (layer autocast, densities in float32) is checked on CPU with
  ``device_type="cpu"``: the LSTM runs under autocast, the head's parameters and the
  loss stay float32 and close to the float32 loss, and removing the hooks restores
  the float32 loss exactly.
* CUDA tests train a few steps on the GPU (fp32 and bf16) and skip cleanly without one.
"""
from __future__ import annotations

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
