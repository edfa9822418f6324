"""What a CUDA graph of the training step does to Pyro's fixed cost on a GPU (issue #8; ``train --cuda-graph``)

On a GPU the steps of the smaller MIDI models (5–20 ms on an H200) are launch-bound: the host's
Python decides the step time, and Pyro's share of it — tracing guide and model, sample sites, the
plate: 0.5–1 ms per step there — keeps seven models over the 1.05 target in ``bench_step_cuda.csv``.
A CUDA graph replays the kernels of a captured step without running any Python, so each path costs
only its kernels. This script measures whether the step can be captured and what it then costs, per
model, at ``bench_step.py``'s MIDI configuration (the study's MIDI presets, batch 16 × 100 steps ×
88 keys; flat models over 20 steps):

* **eager** — the step as ``bench_step.py`` times it (loss, backward of ``loss / values``,
  ``clip_grad_norm_``, fused Adam), Pyro's validation off (the trainer's steps after its first);
* **graph** — the same step (``bench_step.static_step``: no read back to the host) captured once with
  ``torch.cuda.graph`` after 3 warm-up steps on a side stream, with Adam ``capturable=True``, and
  replayed; the batch, KL scale and value count are fixed at capture (the trainer's ``--cuda-graph``
  copies each batch into the captured input tensors and fills the KL scale into a device tensor).

for the Pyro path and the hand-written torch path of ``benchmarks/_torch_losses.py`` alike; and a
``trainer`` row: the trainer's whole step (``Trainer.train_step``: batch collated and copied, the step,
its one read back, Adam, learning rate) eagerly and with ``train --cuda-graph`` (``pyro_srnn.graphs``,
which captures the step up to its read), on synthetic sequences of the same shape. Each model runs
in its own process (a failed capture can leave the CUDA context unusable). Columns:
``model, guide, path, eager_ms, graph_ms, graph_speedup, capture`` (``ok`` or the error), the
median losses of both forms (different noise, the same distribution: similar values), and per
model ``ratio_eager`` / ``ratio_graph`` = Pyro / torch. Needs CUDA: without it the script says so and
exits with status 2. Measured on an H200 (2026-11-26): every model captures; captured, Pyro / torch
is 0.965–1.026 for all 13 models; the trainer's step is 1.4–5.8× faster with ``--cuda-graph``.

Usage::

    python benchmarks/bench_graphs.py --reps 12            # the 7 launch-bound models of bench_step_cuda.csv
    python benchmarks/bench_graphs.py --reps 10 --models dmm rnn-flat srnn-flat srnn-fraccaro vrnn zforcing

Writes ``benchmarks/results/bench_graphs_cuda.csv`` and its plot (``.png``; ``--replot CSV`` redraws
it) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pyro  # noqa: E402
from pyro_srnn.graphs import capture_graph  # noqa: E402  (the trainer's capture)

import bench_step  # noqa: E402
from _torch_losses import TORCH_LOSSES  # noqa: E402
from bench_step import static_step  # noqa: E402  (the benchmarked step, read-free)

#: the models whose eager step on an H200 was 5–28 ms and over target (bench_step_cuda.csv, 2026-11-26)
LAUNCH_BOUND = ("delta-rnn", "delta-srnn", "f-rnn", "f-srnn", "rnn-hier", "srnn-hier", "storn")


def _time_steps(step, warmup: int, reps: int, device) -> tuple[float, float]:
    """Median time (ms) and median loss of ``reps`` synchronised calls of ``step`` (which returns the
    step's loss tensor) after ``warmup`` untimed ones."""
    times, losses = [], []
    for i in range(warmup + reps):
        bench_step._sync(device)
        t0 = time.perf_counter()
        loss = step()
        bench_step._sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            losses.append(float(loss))
    return 1e3 * statistics.median(times), statistics.median(losses)


def measure(name: str, reps: int = 20, warmup: int = 3, device: str = "cuda", trainer: bool = True) -> list[dict]:
    """Eager and captured step of model ``name`` (default guide), Pyro path and torch path, and (``trainer``)
    the trainer's step eagerly and with ``--cuda-graph``. (On a CPU the eager rows are measured and the
    capture is recorded as failed: CUDA graphs need CUDA.)"""
    config = bench_step.model_config(name, bench_step.CONFIGS["midi"])
    size = bench_step.preset_size(name, config)
    pyro.set_rng_seed(0)
    model = bench_step.build_model(name, bench_step.make_spec(config), size).to(device)
    guide = bench_step.build_guide(None, model).to(device)
    batch = bench_step.synthetic_batch(config, 0, device)
    torch_loss = TORCH_LOSSES[(name, guide.name)]
    elbo = bench_step.make_elbo("trace")(model, guide)
    params = [p for p in elbo.parameters() if p.requires_grad]
    kl_scale = 0.5 if model.has_latent else 1.0
    num_values = batch.num_scored_values
    paths = {"pyro": lambda b, s: elbo(b, kl_scale=s),
             "torch": lambda b, s: torch_loss(model, guide, b, s)}
    model.train()
    guide.train()
    with pyro.validation_enabled(False):  # the trainer's steps after its first (--pyro-validation first)
        rows = [_measure_path(path, loss_fn, params, batch, kl_scale, num_values, reps, warmup, device)
                for path, loss_fn in paths.items()]
    rows = [dict(model=name, guide=guide.name, size=size, T=config["T"], **row) for row in rows]
    by_path = {r["path"]: r for r in rows}
    for r in rows:
        r["ratio_eager"] = by_path["pyro"]["eager_ms"] / by_path["torch"]["eager_ms"]
        if "graph_ms" in by_path["pyro"] and "graph_ms" in by_path["torch"]:
            r["ratio_graph"] = by_path["pyro"]["graph_ms"] / by_path["torch"]["graph_ms"]
    if trainer:
        rows.append(dict(model=name, guide=guide.name, size=size, T=config["T"],
                         **measure_trainer(name, config, size, reps, warmup, device)))
    return rows


def _synthetic_dataset(config: dict, sequences: int = 64):
    """Random sequences of the configuration's shape, one chunk each (the trainer's input)."""
    from pyro_srnn.data.core import SequenceDataset

    batches = [bench_step.synthetic_batch(dict(config, batch=sequences), seed) for seed in range(3)]
    split = lambda b: [torch.cat([b.inputs[i, :1], b.targets[i]]).numpy() for i in range(sequences)]  # noqa: E731
    return SequenceDataset(bench_step.make_spec(config), *(split(b) for b in batches))


def measure_trainer(name: str, config: dict, size: str, reps: int, warmup: int, device: str) -> dict:
    """The trainer's whole step (``Trainer.train_step``: the batch collated and copied to the device, the
    step, its one read, Adam, the learning rate) eagerly and with ``cuda_graph=True``, on synthetic
    sequences of the configuration's shape: what ``train --cuda-graph`` gains, read-back included."""
    import tempfile

    from pyro_srnn.train import TrainConfig, Trainer

    dataset = _synthetic_dataset(config)
    row = {"path": "trainer"}
    with tempfile.TemporaryDirectory() as out:
        for graph in (False, True):
            key = "graph" if graph else "eager"
            cfg = TrainConfig(model=name, size=size, steps=10 ** 6, batch_size=config["batch"], device=device,
                              progress=False, cuda_graph=graph, out=out)
            try:
                trainer = Trainer(cfg, dataset=dataset)
            except ValueError as e:  # --cuda-graph off CUDA
                row["capture"] = f"{type(e).__name__}: {e}"[:300]
                continue

            def step(trainer=trainer):
                stats = trainer.train_step(trainer.sampler.batch(trainer.step).to(device))
                return torch.tensor(stats["loss_per_value"])

            row[f"{key}_ms"], row[f"loss_{key}"] = _time_steps(step, warmup + 1, reps, device)  # +1: the checked step
            if graph:
                row["capture"] = "ok" if trainer.graphed.graphs else "no graph"
    if "graph_ms" in row:
        row["graph_speedup"] = row["eager_ms"] / row["graph_ms"]
    return row


def _measure_path(path, loss_fn, params, batch, kl_scale, num_values, reps, warmup, device) -> dict:
    """One path's eager step and captured step (timed replays), as a row."""
    row = {"path": path}
    eager_opt = bench_step.make_optimizer(params, lr=1e-3)

    def eager_step():
        loss = static_step(loss_fn, params, eager_opt, batch, kl_scale, num_values)
        eager_opt.zero_grad(set_to_none=True)
        return loss

    row["eager_ms"], row["loss_eager"] = _time_steps(eager_step, warmup, reps, device)
    try:
        graph_opt = torch.optim.Adam(params, lr=1e-3, fused=True, capturable=True)
        graph, static_loss = capture_graph(
            lambda: static_step(loss_fn, params, graph_opt, batch, kl_scale, num_values), 3, device,
            after_warmup=lambda: graph_opt.zero_grad(set_to_none=True))

        def replay():
            graph.replay()
            return static_loss

        row["graph_ms"], row["loss_graph"] = _time_steps(replay, warmup, reps, device)
        row["graph_speedup"] = row["eager_ms"] / row["graph_ms"]
        row["capture"] = "ok"
    except Exception as e:  # noqa: BLE001 — what stops a capture is the finding
        traceback.print_exc(file=sys.stderr)
        row["capture"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    for p in params:
        p.grad = None
    return row


def plot(frame, path) -> None:
    """Two panels, one row per model: Pyro's step over the hand-written step, eager (bar) and captured
    (dot), against the 1.05 and 1.15 targets; the trainer's step eagerly and with ``--cuda-graph`` (ms,
    log scale), labelled with the speed-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pyro_rows = frame[frame["path"] == "pyro"].set_index("model")
    trainer = frame[frame["path"] == "trainer"].set_index("model")
    models = sorted(set(pyro_rows.index) | set(trainer.index), reverse=True)
    if not models:
        return
    y = range(len(models))
    fig, (ratio_ax, ms_ax) = plt.subplots(1, 2, figsize=(11, 1.4 + 0.32 * len(models)), sharey=True)
    ratios = pyro_rows.reindex(models)
    ratio_ax.barh(y, ratios["ratio_eager"] - 1.0, left=1.0, color="tab:grey", alpha=0.5, label="eager")
    if "ratio_graph" in ratios:
        ratio_ax.scatter(ratios["ratio_graph"], y, color="tab:blue", zorder=3, label="captured (CUDA graph)")
    for target in (1.05, 1.15):
        ratio_ax.axvline(target, color="tab:red", lw=0.8, ls="--" if target > 1.05 else "-")
    ratio_ax.axvline(1.0, color="k", lw=0.6)
    ratio_ax.set_xlabel("Pyro step / hand-written torch step (targets 1.05; 1.15 sequential)")
    ratio_ax.set_yticks(list(y), models, fontsize=8)
    ratio_ax.legend(fontsize=7, loc="upper left")
    steps = trainer.reindex(models)
    if "graph_ms" in steps:
        ms_ax.barh([i + 0.2 for i in y], steps["eager_ms"], height=0.4, color="tab:grey", alpha=0.6, label="eager")
        ms_ax.barh([i - 0.2 for i in y], steps["graph_ms"], height=0.4, color="tab:blue", alpha=0.7,
                   label="--cuda-graph")
        for i, (eager, graph) in enumerate(zip(steps["eager_ms"], steps["graph_ms"])):
            if eager == eager and graph == graph:  # not NaN
                ms_ax.text(eager * 1.05, i, f"{eager / graph:.1f}×", va="center", fontsize=7)
        ms_ax.set_xscale("log")
        ms_ax.set_xlim(right=1.6 * steps["eager_ms"].max())  # room for the labels
        ms_ax.legend(fontsize=7, loc="upper right")
    ms_ax.set_xlabel("trainer step (ms, log scale)")
    gpu = frame["gpu"].dropna().iloc[0] if "gpu" in frame and frame["gpu"].notna().any() else "no GPU"
    fig.suptitle(f"CUDA graphs of the training step ({gpu}, MIDI configuration)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(LAUNCH_BOUND))
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda")
    p.add_argument("--timeout", type=float, default=120, help="seconds per model (its own process)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_graphs_cuda.csv"))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one model, JSON rows on stdout
    p.add_argument("--replot", metavar="CSV", default=None, help="redraw the plot of a saved CSV (no GPU needed)")
    args = p.parse_args(argv)
    if args.replot:
        plot(pd.read_csv(args.replot), Path(args.replot).with_suffix(".png"))
        return None
    if not (str(args.device).startswith("cuda") and torch.cuda.is_available()):
        print("bench_graphs.py measures CUDA graphs: it needs a CUDA device (none here); nothing measured",
              file=sys.stderr)
        raise SystemExit(2)
    if args.one:
        print(json.dumps(measure(args.one, args.reps, args.warmup, args.device)))
        return None
    unknown = sorted(set(args.models) - set(bench_step.model_names()))
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; registered: {bench_step.model_names()}")
    rows = []
    info = bench_step.machine_info(args.device)
    for name in args.models:
        cmd = [sys.executable, __file__, "--one", name, "--reps", str(args.reps), "--warmup", str(args.warmup),
               "--device", args.device]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            lines = done.stdout.strip().splitlines()
            if done.returncode == 0 and lines:
                got = json.loads(lines[-1])
            else:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                got = [{"model": name, "path": "both", "capture": f"process failed (rc={done.returncode}): {tail[:300]}"}]
            if any(row.get("capture") != "ok" for row in got):  # what stopped it, in the log
                print(f"--- {name}: the child's stderr (last 40 lines)", *done.stderr.splitlines()[-40:],
                      sep="\n", file=sys.stderr, flush=True)
        except subprocess.TimeoutExpired:
            got = [{"model": name, "path": "both", "capture": f"timed out after {args.timeout:.0f} s"}]
        for row in got:
            row.update(info)
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                   if k in ("model", "path", "eager_ms", "graph_ms", "graph_speedup", "capture")}, flush=True)
        rows.extend(got)
    frame = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = bench_step.save_merged(frame, out, ["model", "path"])
    plot(merged, out.with_suffix(".png"))
    cols = [c for c in ("model", "path", "eager_ms", "graph_ms", "graph_speedup", "ratio_eager", "ratio_graph",
                        "loss_eager", "loss_graph", "capture") if c in frame]
    with pd.option_context("display.width", 220, "display.max_colwidth", 80):
        print(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nCSV: {out}")
    return frame


if __name__ == "__main__":
    main()
