"""Data-parallel training: 2 gloo processes on CPU == one process on the union of their shards.

The 2-process runs are launched with ``torchrun --standalone`` (a free port on
localhost) exactly as a user would, going through ``pyro_srnn.distributed.
distributed_context`` and the ``Trainer``. The first launch stops after 3 of 6 updates,
the second resumes from ``latest.pt``; the final parameters must equal those of an
uninterrupted single-process run with the full batch (same seed, F-RNN tiny, no
dropout) within 1e-6. Every write is recorded per rank: only rank 0 writes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from pyro_srnn.checkpoint import load_checkpoint
from pyro_srnn.data.core import DataSpec, SequenceDataset
from pyro_srnn.distributed import DistContext
from pyro_srnn.train import TrainConfig, Trainer

STEPS, STOP_AT, BATCH = 6, 3, 4

WORKER = textwrap.dedent('''
    import json, sys
    import numpy as np
    import torch
    import pyro_srnn.train as train_mod
    from pyro_srnn.data.core import DataSpec, SequenceDataset
    from pyro_srnn.distributed import distributed_context
    from pyro_srnn.train import TrainConfig, Trainer

    sys.path.insert(0, sys.argv[1])
    from test_distributed import tiny_dataset, tiny_config

    out, stop_at, resume, model = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
    writes, draws = [], []
    real_randn_like = torch.randn_like

    def randn_like(*a, **k):  # the noise of the training steps (validation runs without grad)
        noise = real_randn_like(*a, **k)
        if torch.is_grad_enabled():
            draws.append(noise.flatten()[:4].tolist())
        return noise

    torch.randn_like = randn_like
    real_save, real_atomic = train_mod.save_checkpoint, train_mod.atomic_write

    def save_checkpoint(path, state):
        writes.append(str(path))
        return real_save(path, state)

    def atomic_write(path, *a, **k):
        writes.append(str(path))
        return real_atomic(path, *a, **k)

    train_mod.save_checkpoint, train_mod.atomic_write = save_checkpoint, atomic_write
    with distributed_context("cpu") as ctx:
        trainer = Trainer(tiny_config(out, stop_at=stop_at, model=model), dataset=tiny_dataset(), dist=ctx)
        if resume:
            trainer.resume()
        trainer.fit()
        report = {"rank": ctx.rank, "world_size": ctx.world_size, "writes": writes, "step": trainer.step,
                  "history": trainer.history, "draws": draws}
    with open(f"{out}/report-{'resume' if resume else 'first'}-rank{ctx.rank}.json", "w") as f:
        json.dump(report, f)
''')


def tiny_dataset() -> SequenceDataset:
    spec = DataSpec(name="tiny-ddp", step_dim=6, family="bernoulli", domain="midi", chunk_len=8)
    rng = np.random.default_rng(7)

    def seqs(n):
        return [(rng.random((int(k), 6)) < 0.3).astype(np.float32) for k in rng.integers(5, 20, size=n)]

    return SequenceDataset(spec, seqs(16), seqs(4), seqs(4))


def tiny_config(out, stop_at=None, model="f-rnn") -> TrainConfig:
    return TrainConfig(dataset="tiny-ddp", model=model, size="tiny", model_args={"dropout": 0.0},
                       steps=STEPS, stop_at=stop_at, batch_size=BATCH, valid_every=STOP_AT, log_every=1,
                       eval_batch_size=2,  # validation in several batches: the ranks share them out
                       progress=False, out=str(out), seed=0)


def _two_ranks(worker, *args) -> None:
    """``torchrun --standalone --nproc_per_node 2 worker args…``, as a user launches training."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), *map(str, args)]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _torchrun(tmp_path, out, stop_at, resume, model="f-rnn"):
    worker = tmp_path / "ddp_worker.py"
    worker.write_text(WORKER)
    _two_ranks(worker, os.path.dirname(__file__), out, stop_at, "1" if resume else "0", model)
    phase = "resume" if resume else "first"
    return [json.loads((out / f"report-{phase}-rank{r}.json").read_text()) for r in (0, 1)]


def test_single_process_context_is_inactive():
    ctx = DistContext()
    t = torch.ones(3)
    assert not ctx.active and ctx.all_reduce_sum(t) is t


def test_two_gloo_processes_with_resume_equal_one_process_on_the_union(tmp_path):
    out = tmp_path / "ddp"
    first = _torchrun(tmp_path, out, STOP_AT, resume=False)
    second = _torchrun(tmp_path, out, STEPS, resume=True)

    # only rank 0 writes (checkpoints, metrics, curves); rank 1 writes nothing
    for reports in (first, second):
        assert reports[0]["world_size"] == 2
        assert any(w.endswith("latest.pt") for w in reports[0]["writes"])
        assert reports[1]["writes"] == []
    assert second[0]["step"] == second[1]["step"] == STEPS

    single = Trainer(tiny_config(tmp_path / "single"), dataset=tiny_dataset())
    single.fit()
    ddp_state = load_checkpoint(out / "latest.pt")["model_state"]
    single_state = single.model.state_dict()
    assert ddp_state.keys() == single_state.keys()
    moved = 0.0
    initial = Trainer(tiny_config(tmp_path / "init"), dataset=tiny_dataset()).model.state_dict()
    for key, value in single_state.items():
        torch.testing.assert_close(ddp_state[key], value, rtol=0, atol=1e-6, msg=f"parameter {key}")
        moved = max(moved, float((value - initial[key]).abs().max()))
    assert moved > 1e-4  # training really changed the parameters

    # validation and logged (global) losses agree across ranks and with the single process
    for phase in (first, second):
        valid0 = [r["valid"] for r in phase[0]["history"] if "valid" in r]
        valid1 = [r["valid"] for r in phase[1]["history"] if "valid" in r]
        assert valid0 and valid0 == pytest.approx(valid1, rel=1e-6)
    single_rows = {r["step"]: r for r in single.history}
    for row in second[0]["history"]:
        ref = single_rows[row["step"]]
        assert row["loss_per_value"] == pytest.approx(ref["loss_per_value"], rel=1e-5)
        if "valid" in ref:
            assert row["valid"] == pytest.approx(ref["valid"], rel=1e-5)


def test_ranks_draw_their_own_noise_and_a_resumed_run_draws_the_same(tmp_path):
    """A latent model (F-SRNN): the two ranks' latent draws differ at every update, and a run
    interrupted after 3 updates and resumed draws, and ends with, what an uninterrupted one does."""
    whole = _torchrun(tmp_path, tmp_path / "whole", STEPS, resume=False, model="f-srnn")
    _torchrun(tmp_path, tmp_path / "split", STOP_AT, resume=False, model="f-srnn")
    resumed = _torchrun(tmp_path, tmp_path / "split", STEPS, resume=True, model="f-srnn")
    for rank in (0, 1):
        assert len(whole[rank]["draws"]) == STEPS  # one latent path per update
        assert whole[rank]["draws"][STOP_AT:] == resumed[rank]["draws"]
    for step in range(STEPS):
        assert whole[0]["draws"][step] != whole[1]["draws"][step], f"update {step + 1}: the ranks drew the same noise"
    # validation (an ELBO estimate, batches shared out among the ranks): one value on every rank
    valid = [[row["valid"] for row in whole[rank]["history"] if "valid" in row] for rank in (0, 1)]
    assert len(valid[0]) == 2 and valid[0] == valid[1]
    whole_state = load_checkpoint(tmp_path / "whole" / "latest.pt")
    resumed_state = load_checkpoint(tmp_path / "split" / "latest.pt")
    for part in ("model_state", "guide_state"):
        for key, value in whole_state[part].items():
            torch.testing.assert_close(resumed_state[part][key], value, rtol=0, atol=1e-6, msg=f"{part} {key}")


REDUCE_WORKER = textwrap.dedent('''
    import json, sys
    import torch
    from pyro_srnn.distributed import distributed_context

    with distributed_context("cpu") as ctx:
        a, b, c = (torch.nn.Parameter(torch.zeros(2, 3)) for _ in range(3))
        a.grad = torch.full((2, 3), float(ctx.rank + 1))
        if ctx.rank == 1:  # b is used by rank 1's shard only, c by none
            b.grad = torch.arange(6.0).reshape(2, 3)
        ctx.reduce_gradients([a, b, c])
        grads = {name: None if p.grad is None else p.grad.tolist() for name, p in zip("abc", (a, b, c))}
    with open(f"{sys.argv[1]}/grads-rank{ctx.rank}.json", "w") as f:
        json.dump(grads, f)
''')


def test_gradients_missing_on_one_rank_are_summed_on_every_rank(tmp_path):
    """A parameter without a gradient on one rank (unused by its shard) must not break the one flat
    all-reduce, and every rank must end with the same gradients, as one process on the union would."""
    worker = tmp_path / "reduce_worker.py"
    worker.write_text(REDUCE_WORKER)
    _two_ranks(worker, tmp_path)
    for rank in (0, 1):
        grads = json.loads((tmp_path / f"grads-rank{rank}.json").read_text())
        assert grads["a"] == [[3.0] * 3] * 2
        assert grads["b"] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
        assert grads["c"] is None  # no rank had one: Adam skips it, as it would in one process


@pytest.mark.parametrize("device, local_rank, gpus, message", [
    ("cuda:1", "0", 2, "under torchrun give --device cuda"),
    ("cuda", "2", 2, "has 2 visible GPU"),
])
def test_one_gpu_per_process_is_checked_before_the_process_group(monkeypatch, device, local_rank, gpus, message):
    """NCCL's own error for two ranks on one GPU is obscure: a clear one comes first (no GPU needed)."""
    from pyro_srnn.distributed import distributed_context

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", local_rank)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: pytest.fail("must not reach set_device"))
    with pytest.raises(ValueError, match=message):
        with distributed_context(device):
            pass


def test_batch_must_divide_among_ranks():
    from pyro_srnn.data import BatchSampler, chunk_sequences

    chunks = chunk_sequences(tiny_dataset().train, 8, step_dim=6)
    with pytest.raises(ValueError, match="not divisible by the world size"):
        BatchSampler(chunks, 5, rank=0, world_size=2)
