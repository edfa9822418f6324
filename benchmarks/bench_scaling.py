"""Scaling: flat models against sequence length; hier models, masked (MADE) against LSTM low level.

1. **Flat models** (``rnn-flat``, ``srnn-flat``, ``small`` presets, batch 8): one training
   step (the ``Trainer.train_step`` sequence) over a flat sequence of ``N`` values,
   ``N`` in 500, 1000, 2000, 4000 (a 1-value-per-step Gaussian spec, no state reset, so
   the LSTM really runs over all ``N``). Each point runs in a fresh subprocess so that
   its peak memory is its own: ``peak_MiB`` is the growth of the peak resident set
   (``resource.getrusage(...).ru_maxrss``) over the resident set after the model is
   built. Both should grow linearly in ``N`` (``time_per_value_ms`` ≈ constant).
2. **Hier models** on ``bach_chorales`` (``rnn-hier`` and ``srnn-hier``, ``small``
   presets, batch 16, chunks of 100 steps): the same number of updates with the low
   level a masked MLP (MADE, one pass for all 88 keys) or an LSTM over the 88 keys (88
   sequential steps); time per update and validation NLL (nats per time step, the
   first ``--valid-batches`` batches of the validation split) at the end. Target:
   MADE ≥ 10× faster per update at an NLL within ±2 % of the LSTM's.

Usage::

    python benchmarks/bench_scaling.py                  # both parts
    python benchmarks/bench_scaling.py --part flat --lengths 500 1000
    python benchmarks/bench_scaling.py --part hier --steps 200

Writes ``benchmarks/results/scaling_flat.csv``, ``scaling_hier.csv`` and ``scaling.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FLAT_MODELS = ("rnn-flat", "srnn-flat")
HIER = {"rnn-hier": "low", "srnn-hier": "low_level"}  # model → name of its low-level switch


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def flat_point(model_name: str, n_values: int, batch: int = 8, reps: int = 2) -> dict:
    """One (model, N) point, run in this process (called in a fresh subprocess)."""
    import resource

    import pyro
    import torch

    from bench_step import StepRunner, synthetic_batch
    from pyro_srnn.data.core import DataSpec
    from pyro_srnn.infer import make_elbo
    from pyro_srnn.models import build_guide, build_model

    spec = DataSpec(name="flat-scaling", step_dim=1, family="gaussian", domain="speech", chunk_len=n_values)
    config = dict(batch=batch, T=n_values, L=1, family="gaussian")
    pyro.set_rng_seed(0)
    model = build_model(model_name, spec, "small", flat_chunk=None) if model_name == "rnn-flat" else \
        build_model(model_name, spec, "small")
    guide = build_guide(None, model)
    elbo = make_elbo("trace")(model, guide)
    runner = StepRunner(model, guide, lambda b, s: elbo(b, kl_scale=s), [p for p in elbo.parameters()])
    data = synthetic_batch(config)
    base = _rss_mib()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        runner.step(data, 0.5 if model.has_latent else 1.0)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux
    step_s = min(times)
    return {"model": model_name, "N": n_values, "batch": batch, "step_s": step_s,
            "time_per_value_ms": 1e3 * step_s / n_values, "peak_MiB": peak - base, "threads": torch.get_num_threads()}


def run_flat(lengths, models=FLAT_MODELS, batch=8, threads=None):
    import pandas as pd

    rows = []
    for name in models:
        for n in lengths:
            code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import bench_scaling as b; "
                    f"print(json.dumps(b.flat_point({name!r}, {int(n)}, {int(batch)})))")
            env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, env=env)
            if proc.returncode != 0:
                rows.append({"model": name, "N": n, "status": f"error: {proc.stderr.strip().splitlines()[-1:]}"})
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row["status"] = "ok"
                rows.append(row)
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def run_hier(steps: int, valid_batches: int, models=tuple(HIER), size="small", batch=16):
    import pandas as pd
    import torch

    from pyro_srnn.data import load_dataset
    from pyro_srnn.train import TrainConfig, Trainer

    dataset = load_dataset("bach_chorales")
    rows = []
    for name in models:
        for low in ("made", "lstm"):
            with tempfile.TemporaryDirectory() as out:
                config = TrainConfig(dataset="bach_chorales", model=name, size=size, model_args={HIER[name]: low},
                                     steps=steps, batch_size=batch, valid_max_batches=valid_batches,
                                     eval_batch_size=64, progress=False, out=out, seed=0)
                trainer = Trainer(config, dataset=dataset)
                spent = 0.0
                for step in range(steps):
                    data = trainer.sampler.batch(step)
                    t0 = time.perf_counter()
                    trainer.train_step(data)
                    spent += time.perf_counter() - t0
                with torch.no_grad():
                    nll = trainer.validate()
            rows.append({"model": name, "low_level": low, "steps": steps, "batch": batch, "size": size,
                         "step_s": spent / steps, "valid_nll_per_step": nll,
                         "params": sum(p.numel() for p in trainer.params)})
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    out = []
    for name in models:
        sub = frame[frame.model == name].set_index("low_level")
        if {"made", "lstm"} <= set(sub.index):
            out.append({"model": name, "speedup_made_vs_lstm": sub.loc["lstm", "step_s"] / sub.loc["made", "step_s"],
                        "nll_rel_diff": (sub.loc["made", "valid_nll_per_step"] - sub.loc["lstm", "valid_nll_per_step"])
                        / abs(sub.loc["lstm", "valid_nll_per_step"])})
    summary = pd.DataFrame(out)
    if len(summary):
        summary["target_met"] = (summary.speedup_made_vs_lstm >= 10) & (summary.nll_rel_diff.abs() <= 0.02)
        frame = frame.merge(summary, on="model", how="left")
    return frame


def plot(flat, hier, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    if flat is not None and len(flat) and "step_s" in flat:
        for name, sub in flat[flat.status == "ok"].groupby("model"):
            axes[0].plot(sub.N, sub.step_s, "o-", label=name)
            axes[1].plot(sub.N, sub.peak_MiB, "o-", label=name)
        axes[0].set(xlabel="flat sequence length N (values)", ylabel="training step (s)", title="flat: time")
        axes[1].set(xlabel="flat sequence length N (values)", ylabel="peak RSS growth (MiB)", title="flat: memory")
        axes[0].legend()
        axes[1].legend()
    if hier is not None and len(hier):
        labels = [f"{m}\n{low}" for m, low in zip(hier.model, hier.low_level)]
        axes[2].bar(labels, hier.step_s, color=["C0" if low == "made" else "C1" for low in hier.low_level])
        axes[2].set(ylabel="s per update", title="hier: MADE vs LSTM low level (bach_chorales)")
        for i, v in enumerate(hier.valid_nll_per_step):
            axes[2].annotate(f"NLL {v:.2f}", (i, hier.step_s.iloc[i]), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["flat", "hier", "both"], default="both")
    p.add_argument("--lengths", nargs="*", type=int, default=[500, 1000, 2000, 4000])
    p.add_argument("--steps", type=int, default=150, help="updates per hier model")
    p.add_argument("--valid-batches", type=int, default=4)
    p.add_argument("--hier-models", nargs="*", default=list(HIER), choices=list(HIER))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    flat = hier = None
    if args.part in ("flat", "both"):
        flat = run_flat(args.lengths, threads=args.threads)
        flat.to_csv(out / "scaling_flat.csv", index=False)
        print(flat.to_string(index=False))
    elif (out / "scaling_flat.csv").exists():
        flat = pd.read_csv(out / "scaling_flat.csv")
    if args.part in ("hier", "both"):
        hier = run_hier(args.steps, args.valid_batches, models=tuple(args.hier_models))
        hier.to_csv(out / "scaling_hier.csv", index=False)
        print(hier.to_string(index=False))
    elif (out / "scaling_hier.csv").exists():
        hier = pd.read_csv(out / "scaling_hier.csv")
    plot(flat, hier, out / "scaling.png")
    print(f"\nwrote {out}/scaling_*.csv and scaling.png")


if __name__ == "__main__":
    main()
