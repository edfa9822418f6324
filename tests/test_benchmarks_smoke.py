"""The step benchmark's harness runs and checks itself (correctness only; speed is never asserted)."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_step  # noqa: E402
from _torch_losses import TORCH_LOSSES  # noqa: E402


def test_bench_step_runs_two_repetitions_of_a_tiny_model(tmp_path):
    out = tmp_path / "step.csv"
    frame = bench_step.run(["f-rnn"], ["midi"], size="tiny", reps=2, warmup=0, out=out, verbose=False)
    row = frame.iloc[0]
    assert row["status"] == "ok"
    assert row["pyro_ms"] > 0 and row["torch_ms"] > 0
    assert row["ratio"] == pytest.approx(row["pyro_ms"] / row["torch_ms"])
    assert row["loss_pyro"] == pytest.approx(row["loss_torch"], rel=1e-4)
    saved = pd.read_csv(out)
    for column in ("model", "guide", "config", "pyro_ms", "torch_ms", "ratio", "target", "cpu", "torch"):
        assert column in saved.columns


def test_loss_check_catches_a_wrong_hand_written_loss():
    """The agreement assertion is live: a loss off by one nat is refused."""
    config = bench_step.CONFIGS["midi"]
    config = dict(config, batch=2, T=5)
    spec = bench_step.make_spec(config)
    model = bench_step.build_model("f-rnn", spec, "tiny")
    guide = bench_step.build_guide(None, model)
    batch = bench_step.synthetic_batch(config)
    elbo = bench_step.make_elbo("trace")(model, guide)
    good = TORCH_LOSSES[("f-rnn", "none")]
    lp, lt = bench_step.check_losses_agree(model, guide, elbo, good, batch, 1.0)
    assert lp == pytest.approx(lt, rel=1e-5)
    with pytest.raises(AssertionError, match="hand-written"):
        bench_step.check_losses_agree(model, guide, elbo, lambda *a: good(*a) + 1.0, batch, 1.0)


def test_missing_hand_written_loss_is_reported_not_skipped(monkeypatch):
    monkeypatch.delitem(TORCH_LOSSES, ("f-rnn", "none"))
    frame = bench_step.run(["f-rnn"], ["midi"], size="tiny", reps=2, warmup=0, verbose=False)
    assert frame.iloc[0]["status"] == "missing hand-written loss"
