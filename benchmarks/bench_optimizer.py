"""One Adam update of every model's parameters: torch's default implementation, ``foreach`` and ``fused``.

The trainer builds its optimiser with ``pyro_srnn.train.make_optimizer`` (fused Adam where torch
supports the device and dtype). This script shows what that buys: for every registered model with
its default guide at a configuration of ``bench_step.py`` (study MIDI presets by default), the
median time of ``optimizer.step()`` over ``--reps`` updates after 5 warm-up updates, with the same
random gradients, for each implementation; and checks first that the three give the same
parameters after a few updates.

Usage::

    python benchmarks/bench_optimizer.py --threads 1            # MIDI presets
    python benchmarks/bench_optimizer.py --config micro --size tiny

Writes ``benchmarks/results/bench_optimizer.csv`` and prints the table.
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

import bench_step  # noqa: E402

from pyro_srnn.models import build_guide, build_model, model_names  # noqa: E402

IMPLEMENTATIONS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def _parameters(name: str, config: dict, size: str, device: str):
    model = build_model(name, bench_step.make_spec(config), size).to(device)
    guide = build_guide(None, model).to(device)
    return [p for p in (*model.parameters(), *guide.parameters()) if p.requires_grad]


def bench_model(name: str, config: dict, size: str, reps: int, device: str = "cpu") -> dict:
    template = _parameters(name, config, size, device)
    g = torch.Generator(device=device).manual_seed(0)
    grads = [torch.randn(p.shape, generator=g, device=device) for p in template]
    row = {"model": name, "size": size, "tensors": len(template), "params": sum(p.numel() for p in template)}
    finals = {}
    for impl, kw in IMPLEMENTATIONS.items():
        params = [torch.nn.Parameter(p.detach().clone()) for p in template]
        for p, grad in zip(params, grads):
            p.grad = grad
        optimizer = torch.optim.Adam(params, lr=1e-3, **kw)
        times = []
        for i in range(5 + reps):
            bench_step._sync(device)
            t0 = time.perf_counter()
            optimizer.step()
            bench_step._sync(device)
            if i >= 5:
                times.append(time.perf_counter() - t0)
        row[f"{impl}_ms"] = 1e3 * statistics.median(times)
        finals[impl] = params
    for impl in ("foreach", "fused"):  # the same updates, whichever kernel made them
        for a, b in zip(finals["default"], finals[impl]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    row["fused_speedup"] = row["default_ms"] / row["fused_ms"]
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="midi", choices=list(bench_step.CONFIGS))
    p.add_argument("--size", default=None, help="preset size (default: the configuration's, as bench_step.py)")
    p.add_argument("--models", nargs="*", default=None)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(HERE / "results" / "bench_optimizer.csv"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import pandas as pd

    config = bench_step.CONFIGS[args.config]
    rows = []
    for name in args.models or model_names():
        size = args.size or bench_step.preset_size(name, config)
        row = bench_model(name, config, size, args.reps, args.device)
        row.update(config=args.config, **bench_step.machine_info(args.device))
        rows.append(row)
        print(f"{name}: default {row['default_ms']:.2f} ms, foreach {row['foreach_ms']:.2f} ms, "
              f"fused {row['fused_ms']:.2f} ms", flush=True)
    frame = pd.DataFrame(rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
    cols = ["model", "size", "tensors", "params", "default_ms", "foreach_ms", "fused_ms", "fused_speedup"]
    print(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return frame


if __name__ == "__main__":
    main()
