"""One timed training step of every model at its full study configuration (SPEC §6).

For each registered model and each domain (``--domains``, default speech and midi), the
model is built with ``--size study`` (the domain's preset: speech ≈17M parameters, MIDI
0.5–3M) and its default guide, and one training step of the package's SVI path (the
``Trainer.train_step`` sequence: Trace_ELBO module, normalised backward, global-norm
clipping, Adam) is timed after one warm-up step, at the study's batch size and chunk
length (speech: batch 32 × 40 steps × 200 samples, flat models 2000 samples; MIDI:
batch 16 × 100 steps × 88 keys, flat models 20 steps). On CPU always; on CUDA as well when
a GPU is present (the card's name is recorded).

Usage::

    python benchmarks/bench_fullsize.py                    # every model, speech and midi, CPU (+ CUDA)
    python benchmarks/bench_fullsize.py --domains midi --models f-rnn vrnn

Writes ``benchmarks/results/bench_fullsize.csv``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pyro  # noqa: E402

from bench_step import StepRunner, _sync, machine_info, make_spec, save_merged, synthetic_batch  # noqa: E402
from pyro_srnn.infer import make_elbo  # noqa: E402
from pyro_srnn.models import MODELS, build_guide, build_model, model_names  # noqa: E402

DOMAINS = {
    "speech": dict(batch=32, T=40, L=200, family="gaussian", domain="speech", flat_T=10),
    "midi": dict(batch=16, T=100, L=88, family="bernoulli", domain="midi", flat_T=20),
    "handwriting": dict(batch=32, T=300, L=3, family="handwriting", domain="handwriting", flat_T=300),
}


def time_one(name, domain, device, warmup=1, reps=1):
    config = dict(DOMAINS[domain])
    if name.endswith("-flat"):
        config["T"] = config["flat_T"]
    spec = make_spec(config)
    pyro.set_rng_seed(0)
    model = build_model(name, spec, "study").to(device)
    guide = build_guide(None, model).to(device)
    elbo = make_elbo("trace")(model, guide)
    params = [p for p in elbo.parameters() if p.requires_grad]
    runner = StepRunner(model, guide, lambda b, s: elbo(b, kl_scale=s), params)
    batch = synthetic_batch(config, 0, device)
    model.train()
    guide.train()
    kl = 0.5 if model.has_latent else 1.0
    for _ in range(warmup):
        runner.step(batch, kl)
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        runner.step(batch, kl)
        _sync(device)
        times.append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in params)
    peak = torch.cuda.max_memory_allocated() / 2**20 if str(device).startswith("cuda") else None
    return {"model": name, "guide": guide.name, "domain": domain, "device": str(device),
            "params_M": round(n_params / 1e6, 3), "batch": config["batch"], "T": config["T"], "L": config["L"],
            "step_s": min(times), "cuda_peak_MiB": peak, "status": "ok"}


def main(argv=None):
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=None)
    p.add_argument("--domains", nargs="*", default=["speech", "midi"], choices=list(DOMAINS))
    p.add_argument("--devices", nargs="*", default=None, help="default: cpu, plus cuda when available")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_fullsize.csv"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    registered = model_names()  # imports every model module, so MODELS is complete
    models = args.models or registered
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    out = Path(args.out)
    rows = []
    for device in devices:
        for domain in args.domains:
            for name in models:
                if name not in MODELS:
                    raise SystemExit(f"unknown model {name!r}")
                try:
                    if str(device).startswith("cuda"):
                        torch.cuda.reset_peak_memory_stats()
                    row = time_one(name, domain, device, warmup=args.warmup, reps=args.reps)
                except Exception as e:  # e.g. a model without a study preset for this domain
                    row = {"model": name, "domain": domain, "device": device,
                           "status": f"not run: {type(e).__name__}: {e}"}
                row.update({k: v for k, v in machine_info(device).items() if k != "device"})
                row["warmup"], row["reps"] = args.warmup, args.reps
                rows.append(row)
                print({k: row.get(k) for k in ("model", "domain", "device", "params_M", "step_s", "status")},
                      flush=True)
                # written after every row (a long run keeps its rows); other models/domains/devices stay
                save_merged(pd.DataFrame(rows), out, ["model", "domain", "device"])
    frame = pd.DataFrame(rows)
    cols = [c for c in ("model", "guide", "domain", "device", "params_M", "step_s", "cuda_peak_MiB", "status")
            if c in frame]
    print(frame[cols].to_string(index=False))
    print(f"\nCSV: {out} (rows of other models/domains/devices kept)")
    return frame


if __name__ == "__main__":
    main()
