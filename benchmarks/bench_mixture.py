"""Scoring 1-D Gaussian mixtures: the heads' ``NormalMixture`` against torch's ``MixtureSameFamily``.

The speech heads score ``k``-component mixtures for every value of every step: at the reduced
speech configuration of ``bench_step.py`` (batch 32 × 40 steps × 200 samples, 20 components)
that is 5.1M component densities per training step. Three ways to compute the same log density
from the same raw parameters ``(logits, loc, log_std)``, forward and backward:

* ``torch_msf`` — ``MixtureSameFamily(Categorical(logits), Normal(loc, exp(log_std)))`` (the
  heads' former density: the weights are normalised by ``Categorical`` and again in ``log_prob``);
* ``normal_mixture`` — ``pyro_srnn.heads.NormalMixture`` (what the heads use now);
* ``hand_written`` — the formula of ``benchmarks/_torch_losses.py`` (the ``bench_step`` baseline).

The three log densities are asserted equal first; then the three are interleaved for ``--reps``
rounds and the median time of each is reported.

Usage::

    python benchmarks/bench_mixture.py --threads 1
    python benchmarks/bench_mixture.py --threads 2 --components 5

Writes ``benchmarks/results/bench_mixture.csv`` (rows merged by ``components`` and ``threads``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _torch_losses import _mixture_log_prob  # noqa: E402
from bench_step import machine_info, save_merged  # noqa: E402
from pyro_srnn.heads import _mixture  # noqa: E402

LOG_STD_MIN = -7.0


def densities(params, x):
    def torch_msf():
        logits, loc, log_std = params.chunk(3, dim=-1)
        return torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=logits, validate_args=False),
            torch.distributions.Normal(loc, log_std.clamp(min=LOG_STD_MIN).exp(), validate_args=False),
            validate_args=False).log_prob(x)

    def normal_mixture():  # exactly the heads' density (a NormalMixture for k ≥ 2)
        return _mixture(params, LOG_STD_MIN).log_prob(x)

    def hand_written():
        return _mixture_log_prob(params, x, LOG_STD_MIN)

    return {"torch_msf": torch_msf, "normal_mixture": normal_mixture, "hand_written": hand_written}


def run(batch=32, T=40, L=200, components=20, reps=30, warmup=3, seed=0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(batch, T, L, 3 * components, generator=g).requires_grad_()
    x = torch.randn(batch, T, L, generator=g)
    fns = densities(params, x)
    with torch.no_grad():
        values = {k: f() for k, f in fns.items()}
    for k, v in values.items():
        if not torch.allclose(v, values["torch_msf"], rtol=1e-4, atol=1e-3):
            raise AssertionError(f"{k}: log density differs from MixtureSameFamily's")
    times = {k: [] for k in fns}
    for i in range(warmup + reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f().sum().backward()
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
            params.grad = None
    base = statistics.median(times["torch_msf"])
    info = machine_info()
    return [{"density": k, "components": components, "batch": batch, "T": T, "L": L,
             "fwd_bwd_ms": 1e3 * statistics.median(v), "vs_torch_msf": statistics.median(v) / base, "reps": reps,
             **info} for k, v in times.items()]


def main(argv=None):
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--components", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--T", type=int, default=40)
    p.add_argument("--L", type=int, default=200)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_mixture.csv"))
    args = p.parse_args(argv)
    if args.components < 2:
        p.error("--components must be at least 2 (one component is a plain Normal, no mixture)")
    if args.threads:
        torch.set_num_threads(args.threads)
    frame = pd.DataFrame(run(args.batch, args.T, args.L, args.components, args.reps))
    print(frame[["density", "components", "threads", "fwd_bwd_ms", "vs_torch_msf"]].to_string(
        index=False, float_format=lambda v: f"{v:.3f}"))
    save_merged(frame, args.out, ["density", "components", "threads"])
    return frame


if __name__ == "__main__":
    main()
