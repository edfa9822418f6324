"""Scaling: flat models against sequence length; hier models, masked (MADE) against LSTM low level.

1. **Flat models** (``rnn-flat``, ``srnn-flat``, ``small`` presets, batch 8): one training
   step (the ``Trainer.train_step`` sequence) over a flat sequence of ``N`` values,
   ``N`` in 500, 1000, 2000, 4000 (a 1-value-per-step Gaussian spec, no state reset, so
   the LSTM really runs over all ``N``). Each point runs in a fresh subprocess so that
   its peak memory is its own: ``peak_MiB`` is the growth of the peak resident set
   (``resource.getrusage(...).ru_maxrss``) over the resident set after the model is
   built. Both should grow linearly in ``N`` (``time_per_value_ms`` ≈ constant).
2. **Hier models** on ``bach_chorales`` (``rnn-hier`` and ``srnn-hier``, the study's MIDI
   presets by default, batch 16, chunks of 100 steps) with the low level a masked MLP
   (MADE, one pass for all 88 keys) or an LSTM over the 88 keys (88 sequential steps),
   everything else equal. ``--lstm-hidden H ...`` adds LSTM low levels of width ``H``
   (rows ``lstm-h<H>``: the preset's LSTM is only as wide as its MADE, which may cap its
   NLL). *Timing*: median time of one update (``Trainer.train_step`` as ``pyro-srnn train``
   runs it: on a GPU a replayed CUDA graph, column ``cuda_graph``), and of the low level
   alone (forward + backward, eager), over ``--steps`` updates after ``--warmup`` updates, in
   this process, on ``--device`` (``cuda`` times on the GPU, synchronised). *NLL*: each variant trained for
   ``--nll-steps`` updates with ``pyro-srnn train`` on the same device (the study's
   protocol; runs in parallel subprocesses, reused when finished), test NLL of the
   best-validation checkpoint; a run finished on another device is read when this device
   has none (column ``nll_device``), and a variant whose NLL the saved CSV already holds
   (from any machine: the run directories are not kept) is not trained again. Each LSTM row carries the preset MADE's speed-up over
   it and the relative NLL difference. Target (issue #8): MADE ≥ 10× faster per update at a
   test NLL within ±2 % of the LSTM's. ``--made-hidden W ...`` adds MADEs of width ``W``
   (rows ``made-h<W>``; the preset MADE's NLL is far better than the preset LSTM's, so
   equal NLL needs a narrower MADE or a wider LSTM); each LSTM row then names the fastest
   MADE row within ±2 % of its test NLL (``equal_nll_made``, ``equal_nll_update_speedup``,
   ``target_met``). ``--made-curve EVERY UPDATES`` also trains MADE's first
   ``UPDATES`` updates of the same schedule, validated every ``EVERY``, and adds to each LSTM
   row when MADE first reached that LSTM's best validation NLL and ``equal_nll_speedup``, the
   training time of the LSTM's run over MADE's time to the same NLL.

Usage::

    python benchmarks/bench_scaling.py                  # both parts
    python benchmarks/bench_scaling.py --part flat --lengths 500 1000
    python benchmarks/bench_scaling.py --part hier --nll-steps 0      # timing only
    python benchmarks/bench_scaling.py --part hier --hier-models rnn-hier --nll-steps 2000
    python benchmarks/bench_scaling.py --part hier --device cuda --lstm-hidden 256 --jobs 6
    python benchmarks/bench_scaling.py --part compare --made-curve 25 500   # CSV → comparisons, plot
    python benchmarks/bench_scaling.py --part hier --hier-models rnn-hier --made-hidden 2 4 8 \
        --lstm-hidden 512 1024 --steps 3 --warmup 1     # equal-NLL pairs (slow: wide LSTMs on a CPU)

Writes ``benchmarks/results/scaling_flat.csv``, ``scaling_hier.csv`` (keyed by model, low
level, device and model size: rows not run this time are kept; rows are compared only with rows
of their own size) and ``scaling.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FLAT_MODELS = ("rnn-flat", "srnn-flat")
HIER = ("rnn-hier", "srnn-hier")  # both switch their low level with the model argument ``low``
LOWS = ("made", "lstm")
#: the clipped loss's normalisation of NLL runs trained now: units per step (``pyro_srnn.train.
#: loss_units_per_step``; bach_chorales: one per 88-key step, SPEC §5). Runs and CSV rows from before
#: that protocol lack the field: they normalised per key, 88 units per step. An equal-NLL pair, a reused
#: NLL or a MADE curve only ever joins variants trained under the same normalisation.
LOSS_UNITS = 1
OLD_LOSS_UNITS = 88


def _units(value) -> int:
    """The loss units per step of a run or row; a missing value (NaN, None) is the old protocol's."""
    return OLD_LOSS_UNITS if value is None or value != value else int(value)


def _units_of(frame):
    """The loss units per step of each row of a frame (rows without the column: the old protocol)."""
    import pandas as pd

    if "loss_units_per_step" not in frame:
        return pd.Series(OLD_LOSS_UNITS, index=frame.index)
    return frame["loss_units_per_step"].map(_units)


def low_level_variants(lstm_hidden=(), made_hidden=()) -> dict[str, dict]:
    """Row label → model arguments: the two forms at the preset's widths, then wider LSTMs
    (``lstm-h<H>``) and narrower or wider MADEs (``made-h<W>``)."""
    variants = {low: {"low": low} for low in LOWS}
    for h in lstm_hidden:
        variants[f"lstm-h{int(h)}"] = {"low": "lstm", "low_hidden": int(h)}
    for w in made_hidden:
        variants[f"made-h{int(w)}"] = {"low": "made", "low_hidden": int(w)}
    return variants


def is_made(label: str) -> bool:
    """Whether a row label names a masked (MADE) low level: ``made`` or ``made-h<W>``."""
    return label == "made" or label.startswith("made-")


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


def hier_timing(name: str, label: str, model_args: dict, dataset, size: str, batch: int, steps: int,
                warmup: int = 3, device: str = "cpu") -> dict:
    """Median time of one update (``Trainer.train_step``, as ``pyro-srnn train`` runs it: on a GPU a
    replayed CUDA graph, column ``cuda_graph``) and of the low level alone.

    The low-level-only time is one forward and backward pass of the within-step model
    (``low_level.distribution(context, x).log_prob(x)``, masked sum) on the update's
    targets and a context of the right size: the part of the update that the two forms
    compute differently. On CUDA every timer reads after a synchronisation.
    """
    import torch

    from bench_step import _sync
    from pyro_srnn.train import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(dataset="bach_chorales", model=name, size=size, model_args=dict(model_args),
                             steps=warmup + steps, batch_size=batch, progress=False, out=out, seed=0, device=device)
        trainer = Trainer(config, dataset=dataset)
        update, low_only = [], []
        low_level = trainer.model.low_level
        for step in range(warmup + steps):
            data = trainer.sampler.batch(step).to(trainer.device)
            _sync(device)
            t0 = time.perf_counter()
            trainer.train_step(data)
            _sync(device)
            t1 = time.perf_counter()
            low_s = _low_level_pass_s(low_level, data, device)
            if step >= warmup:
                update.append(t1 - t0)
                low_only.append(low_s)
        B, T, L = data.targets.shape
    return {"model": name, "low_level": label, "device": device, "size": size, "batch": B, "T": T, "L": L,
            "timed_updates": steps, "update_s": statistics.median(update), "low_level_s": statistics.median(low_only),
            "params": sum(p.numel() for p in trainer.params), "threads": torch.get_num_threads(),
            "cuda_graph": trainer.uses_cuda_graph}


def _low_level_pass_s(low_level, data, device: str) -> float:
    """Seconds of one forward and backward pass of the low level alone, on a random context. Its autograd
    graph dies with this frame: one kept alive into the trainer's next capture (on a GPU) would hold
    accumulate-grad nodes of the default stream, which the capture's stream cannot use."""
    import torch

    from bench_step import _sync

    context = torch.randn(*data.targets.shape[:-1], low_level.context_dim, device=data.targets.device,
                          requires_grad=True)
    _sync(device)
    t0 = time.perf_counter()
    log_p = low_level.distribution(context, data.targets).log_prob(data.targets)
    (log_p * data.mask).sum().backward()
    _sync(device)
    t1 = time.perf_counter()
    low_level.zero_grad(set_to_none=True)
    return t1 - t0


def _device_suffix(device: str) -> str:
    """Run-directory suffix of a device: none for the CPU (the runs made before devices were named)."""
    return "" if device == "cpu" else f"-{device.replace(':', '')}"


def _train_command(name: str, size: str, steps: int, seed: int, out: Path, device: str, model_args: dict,
                   *extra: str) -> list[str]:
    """``pyro-srnn train`` on ``bach_chorales`` with the study's protocol, as every NLL run here uses it."""
    cmd = [sys.executable, "-m", "pyro_srnn", "train", "--dataset", "bach_chorales", "--model", name,
           "--size", size, "--steps", str(steps), "--seed", str(seed), "--out", str(out), "--no-progress",
           "--device", device, *extra]
    for key, value in model_args.items():
        cmd += ["--model-arg", f"{key}={json.dumps(value)}"]
    return cmd


def _nll_run_dir(runs: Path, name: str, label: str, size: str, steps: int, seed: int, device: str = "cpu") -> Path:
    return runs / f"{name}-{size}-{label}-{steps}u-seed{seed}{_device_suffix(device)}"


def finished_nll_run(runs: Path, name: str, label: str, size: str, steps: int, seed: int,
                     device: str = "cpu") -> tuple[Path, str] | None:
    """A finished NLL run of this variant (its ``result.json`` exists) and the device it trained on:
    this device's own run if there is one, else one trained on another device (the NLL after the
    same updates does not depend on the device: 5.03 against 5.04 nats for MADE and 10.91 against
    10.91 for the LSTM, H200 against CPU), else ``None``."""
    own = _nll_run_dir(runs, name, label, size, steps, seed, device)
    if _finished_now(own):
        return own, device
    base = _nll_run_dir(runs, name, label, size, steps, seed, "cpu").name
    if not Path(runs).is_dir():
        return None
    for run in sorted(Path(runs).iterdir()):
        if (run.name == base or run.name.startswith(base + "-")) and _finished_now(run):
            return run, run.name[len(base) + 1:] or "cpu"
    return None


def _finished_now(run: Path) -> bool:
    """A finished run (its ``result.json``) trained under this protocol (:data:`LOSS_UNITS`)."""
    result = Path(run) / "result.json"
    return result.exists() and _units(json.loads(result.read_text()).get("loss_units_per_step")) == LOSS_UNITS


NLL_COLUMNS = ("nll_device", "nll_updates", "valid_nll_best", "test_nll", "run", "loss_units_per_step")


def saved_nll(saved, name: str, label: str, size: str, steps: int, seed: int) -> dict | None:
    """The NLL of this variant as a saved CSV row holds it (``saved``: the rows of ``scaling_hier.csv``,
    any device), or ``None``. The CSV is what outlives the git-ignored run directories: a fresh machine
    (a borrowed GPU) then trains only the variants that no machine has finished."""
    if saved is None or not len(saved) or "test_nll" not in saved:
        return None
    rows = saved[(saved.model == name) & (saved.low_level == label) & (_sizes(saved) == size)
                 & (saved.nll_updates == steps) & saved.test_nll.notna()]
    rows = rows[rows.run.astype(str).str.contains(rf"-seed{seed}(?:-|$)") & (_units_of(rows) == LOSS_UNITS)]
    if not len(rows):
        return None
    row = rows.iloc[0]
    known = {key: row[key] for key in NLL_COLUMNS if key in row}
    if not isinstance(known.get("nll_device"), str):  # rows from before the column: trained where timed
        known["nll_device"] = row["device"]
    return known | {"nll_updates": int(row["nll_updates"]), "loss_units_per_step": LOSS_UNITS}


def hier_nll(names, variants: dict, size: str, steps: int, seed: int, runs: Path, jobs: int,
             device: str = "cpu", saved=None, train: bool = True) -> list[dict]:
    """Train every (model, low-level variant) for ``steps`` updates with ``pyro-srnn train`` (the study's
    protocol: Adam, cosine decay over the run, clipping, dropout of the preset) and read the
    test NLL of the best-validation checkpoint from the run's ``result.json``.

    Runs go to ``runs/<model>-<size>-<label>-<steps>u-seed<seed>[-cuda]``; a finished run (its
    ``result.json`` exists) is read, not repeated — one trained on another device too, when this
    device has none (column ``nll_device``); failing both, a variant whose NLL the saved CSV rows
    ``saved`` hold (:func:`saved_nll`) is taken from them. ``jobs`` runs go at once, the CPU's
    cores split between them (and the GPU shared, on ``cuda``). ``train=False``: read what exists,
    train nothing (the variants without an NLL get no row).
    """
    pending, results, rows = [], {}, []
    for name in names:
        for label, model_args in variants.items():
            found = finished_nll_run(runs, name, label, size, steps, seed, device)
            if found is not None:
                results[(name, label)] = found
                continue
            known = saved_nll(saved, name, label, size, steps, seed)
            if known is not None:
                rows.append({"model": name, "low_level": label, "device": device, **known})
                continue
            if not train:
                continue
            out = _nll_run_dir(runs, name, label, size, steps, seed, device)
            cmd = _train_command(name, size, steps, seed, out, device, model_args,
                                 "--valid-every", str(max(steps // 4, 1)), "--eval-split", "test")
            pending.append(((name, label), out, cmd))
    threads = str(max(1, (os.cpu_count() or 1) // max(jobs, 1)))
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    running = []
    while pending or running:
        while pending and len(running) < jobs:
            key, out, cmd = pending.pop(0)
            out.mkdir(parents=True, exist_ok=True)
            log = open(out / "train.log", "w")
            print("running:", " ".join(cmd), flush=True)
            running.append((key, out, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        time.sleep(5)
        for item in list(running):
            key, out, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(map(str, key))}: training failed, see {out / 'train.log'}")
                results[key] = (out, device)
    for (name, label), (out, nll_device) in results.items():
        summary = json.loads((out / "result.json").read_text())
        rows.append({"model": name, "low_level": label, "device": device, "nll_device": nll_device,
                     "nll_updates": steps, "valid_nll_best": summary["best_valid"], "test_nll": summary["value"],
                     "run": str(out), "loss_units_per_step": _units(summary.get("loss_units_per_step"))})
    return rows


def validation_curve(run: Path):
    """The validation metric of a run against its update count (a pandas Series)."""
    import pandas as pd

    metrics = pd.read_csv(Path(run) / "metrics.csv")
    metrics = metrics[metrics["valid"].notna()]
    return pd.Series(metrics["valid"].to_numpy(), index=metrics["step"].to_numpy())


def _made_curve_dir(runs: Path, name: str, size: str, steps: int, updates: int, every: int, seed: int,
                    device: str = "cpu", units: int = LOSS_UNITS) -> Path:
    """A curve run's directory; curves of the old normalisation (``units``) lack the ``-units`` part."""
    protocol = "" if units == OLD_LOSS_UNITS else f"-units{units}"
    return Path(runs) / (f"{name}-{size}-made-{steps}u-first{updates}-valid{every}-seed{seed}"
                         f"{_device_suffix(device)}{protocol}")


def _curve_done(run: Path, updates: int) -> bool:
    return (run / "metrics.csv").exists() and validation_curve(run).index.max() >= updates


def made_curve_run(name: str, size: str, steps: int, updates: int, every: int, seed: int, runs: Path,
                   device: str = "cpu") -> Path:
    """The first ``updates`` updates of the MADE NLL run (same ``steps``-long schedule and seed), validated
    every ``every`` updates: when MADE reaches a given NLL, to ``every`` updates. Reused when done."""
    out = _made_curve_dir(runs, name, size, steps, updates, every, seed, device)
    if _curve_done(out, updates):
        return out
    out.mkdir(parents=True, exist_ok=True)
    cmd = _train_command(name, size, steps, seed, out, device, {"low": "made"},
                         "--stop-at", str(updates), "--valid-every", str(every))
    print("running:", " ".join(cmd), flush=True)
    with open(out / "train.log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    return out


def _sizes(frame):
    """The model size of each row (rows from before the column: the study's)."""
    import pandas as pd

    return frame["size"].fillna("study") if "size" in frame else pd.Series("study", index=frame.index)


def _size(row) -> str:
    size = getattr(row, "size", None)
    return size if isinstance(size, str) else "study"


HIER_KEYS = ["model", "low_level", "device", "size"]  # a CSV row per variant, device and model size
HIER_KEY_DEFAULTS = {"size": "study"}  # rows saved before the size column
TIME_TO_NLL_COLUMNS = ("lstm_best_valid", "made_reaches_at", "equal_nll_speedup")


def time_to_lstm_nll(frame, curves: dict):
    """Equal-NLL operating points: the LSTM after its whole run against MADE when it first matched it.

    For every LSTM row: its best validation NLL over its ``nll_updates`` updates, and
    ``made_reaches_at``, the first point of MADE's validation curve (``curves[(model, loss units)]``,
    trained under the LSTM run's loss normalisation) at or below
    it (NaN if the curve never gets there). ``equal_nll_speedup`` = (``nll_updates`` × the LSTM's
    update time) / (``made_reaches_at`` × MADE's update time on the same device): how much less
    training time MADE needs for the NLL that the LSTM reached with its budget. (The LSTM may have
    been close to that NLL before the end of its run: see its own validation curve.)
    """
    import math

    import pandas as pd

    made = frame[frame.low_level == "made"]
    made_update_s = {(m, d, z): t for m, d, z, t in zip(made.model, made.device, _sizes(made), made.update_s)}
    rows = []
    units = _units_of(frame)
    for row in frame.itertuples():
        out = dict.fromkeys(TIME_TO_NLL_COLUMNS, math.nan)
        curve = curves.get((row.model, units[row.Index]))
        run = getattr(row, "run", None)
        if not is_made(row.low_level) and curve is not None and isinstance(run, str) and Path(run, "metrics.csv").exists():
            best = validation_curve(Path(run)).min()
            reached = curve.index[curve.to_numpy() <= best]
            out["lstm_best_valid"] = best
            if len(reached):
                made_s = made_update_s.get((row.model, row.device, _size(row)), math.nan)
                out["made_reaches_at"] = reached[0]
                out["equal_nll_speedup"] = (row.nll_updates * row.update_s) / (reached[0] * made_s)
        rows.append(out)
    return pd.concat([frame.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


EQUAL_NLL_TOLERANCE = 0.02  # issue #8: "equal NLL (±2 %)"
COMPARISON_COLUMNS = ("update_speedup", "low_level_speedup", "test_nll_rel_diff", "equal_nll_made",
                      "equal_nll_rel_diff", "equal_nll_update_speedup", "target_met", "as_good_made",
                      "as_good_rel_diff", "as_good_update_speedup")


def fill_nll_across_devices(frame):
    """Rows timed without an NLL (``--nll-steps 0``, or NLL runs not finished on this device) take the
    NLL of the same model and variant measured on another device, which does not depend on the
    device (see :func:`finished_nll_run`); ``nll_device`` says where it was trained."""
    if "test_nll" not in frame:
        return frame
    frame = frame.copy()
    # text columns as objects: read back from a CSV where they are empty they are float NaN columns,
    # which take no strings
    frame["nll_device"] = frame["nll_device"].astype(object) if "nll_device" in frame else None
    if "run" in frame:
        frame["run"] = frame["run"].astype(object)
    has = frame.test_nll.notna()
    frame.loc[has & frame.nll_device.isna(), "nll_device"] = frame.device  # rows from before the column
    units = _units_of(frame)
    frame["loss_units_per_step"] = units.where(has)  # rows without an NLL: none yet
    for i in frame.index[~has]:
        donors = frame[has & (frame.model == frame.at[i, "model"]) & (frame.low_level == frame.at[i, "low_level"])
                       & (_sizes(frame) == _sizes(frame)[i])]
        donors = donors.loc[(units[donors.index] != LOSS_UNITS).sort_values(kind="stable").index]  # this protocol's first
        if len(donors):
            for col in NLL_COLUMNS:
                if col in frame:
                    frame.at[i, col] = donors.iloc[0][col]
    return frame


def compare_low_levels(frame):
    """Each LSTM row against the masked low level, per model and device (MADE rows get NaN).

    * Against the preset MADE (``made``): ``update_speedup`` / ``low_level_speedup`` (the LSTM's
      time over MADE's) and ``test_nll_rel_diff`` ((MADE − LSTM) / |LSTM|).
    * At equal NLL: of the MADE rows (any width) whose test NLL is within ±2 % of the LSTM's,
      the fastest per update: ``equal_nll_made`` (its label), ``equal_nll_rel_diff`` and
      ``equal_nll_update_speedup``. ``target_met`` (issue #8): that speed-up is ≥ 10; False
      where no MADE row is within ±2 %, NaN without NLLs. ``as_good_*``: the same for the fastest
      MADE whose NLL is at most 2 % worse than the LSTM's (better counts too), where the widths
      tried step over the ±2 % band. A row without an NLL takes the NLL of its
      variant from another device's row (:func:`fill_nll_across_devices`).
    """
    import math

    import pandas as pd

    frame = frame.drop(columns=[c for c in COMPARISON_COLUMNS if c in frame]).reset_index(drop=True)
    frame = fill_nll_across_devices(frame)
    made = frame.low_level.map(is_made)
    has_nll = "test_nll" in frame
    units = _units_of(frame)
    rows = []
    for row in frame.itertuples():
        out = dict.fromkeys(COMPARISON_COLUMNS, math.nan)
        out["equal_nll_made"] = out["as_good_made"] = None
        if not made[row.Index]:
            same = frame[made & (frame.model == row.model) & (frame.device == row.device)
                         & (_sizes(frame) == _size(row))]
            preset = same[same.low_level == "made"]
            if len(preset):
                ref = preset.iloc[0]
                out["update_speedup"] = row.update_s / ref.update_s
                out["low_level_speedup"] = row.low_level_s / ref.low_level_s
            if has_nll and row.test_nll == row.test_nll:  # not NaN
                same = same[units[same.index] == units[row.Index]]  # NLLs of the same loss normalisation only
                preset = same[same.low_level == "made"]
                if len(preset):
                    out["test_nll_rel_diff"] = (preset.iloc[0].test_nll - row.test_nll) / abs(row.test_nll)
                rel = (same.test_nll - row.test_nll) / abs(row.test_nll)
                for prefix, near in (("equal_nll", same[rel.abs() <= EQUAL_NLL_TOLERANCE]),
                                     ("as_good", same[rel <= EQUAL_NLL_TOLERANCE])):
                    if len(near):  # the fastest of them
                        best = near.loc[near.update_s.idxmin()]
                        out[f"{prefix}_made"] = best.low_level
                        out[f"{prefix}_rel_diff"] = rel[best.name]
                        out[f"{prefix}_update_speedup"] = row.update_s / best.update_s
                out["target_met"] = bool(out["equal_nll_update_speedup"] >= 10)  # False without a pair (NaN)
        rows.append(out)
    return pd.concat([frame, pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))], axis=1)


def run_hier(steps: int, models=tuple(HIER), size="study", batch=16, nll_steps: int = 0, seed: int = 0,
             runs: Path = Path("runs/bench_hier"), jobs: int = 2, device: str = "cpu", lstm_hidden=(),
             made_hidden=(), warmup: int = 3, saved=None, train_nll: bool = True):
    """Timing (and NLL) rows, one per (model, low-level variant), compared by :func:`compare_low_levels`;
    NLLs of variants that ``saved`` (rows of the CSV) holds are not trained again (``train_nll=False``:
    none is), and a row timed again without a new NLL keeps the one its saved row had."""
    import pandas as pd

    from bench_step import machine_info
    from pyro_srnn.data import load_dataset

    dataset = load_dataset("bach_chorales")
    variants = low_level_variants(lstm_hidden, made_hidden)
    rows = []
    for name in models:
        for label, model_args in variants.items():
            rows.append(hier_timing(name, label, model_args, dataset, size, batch, steps, warmup=warmup,
                                    device=device))
            rows[-1].update({k: v for k, v in machine_info(device).items() if k not in ("threads", "device")})
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    if nll_steps:
        nll = pd.DataFrame(hier_nll(models, variants, size, nll_steps, seed, runs, jobs, device, saved=saved,
                                    train=train_nll))
        if len(nll):
            frame = frame.merge(nll, on=["model", "low_level", "device"], how="left")
    return compare_low_levels(keep_saved_nll(frame, saved))


def keep_saved_nll(frame, saved):
    """``frame`` with the NLL columns of each row that has no NLL taken from its saved row (same model,
    variant, device and size), where that has one: timing a variant again loses no NLL."""
    import math

    import pandas as pd

    if saved is None or "test_nll" not in saved:
        return frame
    saved = saved.assign(size=_sizes(saved))
    donors = saved[saved.test_nll.notna()].drop_duplicates(HIER_KEYS).set_index(HIER_KEYS)
    columns = [c for c in NLL_COLUMNS if c in donors]
    frame = frame.copy()
    for col in columns:  # text columns (device, run) as objects, numbers as floats
        text = not pd.api.types.is_numeric_dtype(donors[col])
        if col not in frame:
            frame[col] = pd.Series([None if text else math.nan] * len(frame), index=frame.index,
                                   dtype=object if text else float)
        elif text and frame[col].dtype != object:
            frame[col] = frame[col].astype(object)
    for i in frame.index:
        key = tuple(frame.at[i, k] for k in HIER_KEYS)
        if pd.isna(frame.at[i, "test_nll"]) and key in donors.index:
            for col in columns:
                frame.at[i, col] = donors.at[key, col]
    return frame


def plotted_nll_rows(hier):
    """The hier rows of the NLL panel: those with a test NLL trained under the current loss
    normalisation (:data:`LOSS_UNITS`); the per-key runs' NLLs are not comparable with them."""
    if "test_nll" not in hier:
        return hier[:0]
    return hier[hier.test_nll.notna() & (_units_of(hier) == LOSS_UNITS)]


def plot(flat, hier, path):
    """Flat time and memory against N; hier update times per device (bars, log scale); and, where
    NLL rows of the current loss normalisation (:data:`LOSS_UNITS`) exist, test NLL against time per
    update, one line per (model, device)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 11))
    axes = axes.ravel()
    if flat is not None and len(flat) and "step_s" in flat:
        for name, sub in flat[flat.status == "ok"].groupby("model"):
            axes[0].plot(sub.N, sub.step_s, "o-", label=name)
            axes[1].plot(sub.N, sub.peak_MiB, "o-", label=name)
        axes[0].set(xlabel="flat sequence length N (values)", ylabel="training step (s)", title="flat: time")
        axes[1].set(xlabel="flat sequence length N (values)", ylabel="peak RSS growth (MiB)", title="flat: memory")
        axes[0].legend()
        axes[1].legend()
    if hier is not None and len(hier) and "update_s" in hier:
        hier = hier.assign(device=hier["device"].fillna("cpu") if "device" in hier else "cpu")
        hier = hier.sort_values(["model", "device", "params"] if "params" in hier else ["model", "device"])
        labels = [f"{m} {low} ({dev})" + ("" if size == "study" else f" [{size}]")
                  for m, low, dev, size in zip(hier.model, hier.low_level, hier.device, _sizes(hier))]
        y = range(len(labels))
        axes[2].barh([i - 0.2 for i in y], hier.update_s, height=0.4, label="whole update")
        axes[2].barh([i + 0.2 for i in y], hier.low_level_s, height=0.4, label="low level alone (fwd+bwd)")
        axes[2].set_yticks(list(y), labels, fontsize=7)
        axes[2].invert_yaxis()
        axes[2].set_xscale("log")  # CPU and GPU times differ by orders of magnitude
        axes[2].set(xlabel="s", title="hier: time per update (bach_chorales)")
        axes[2].legend(fontsize=8)
        nll = plotted_nll_rows(hier)
        if len(nll):
            form = nll.low_level.map(lambda low: "MADE" if is_made(low) else "LSTM")
            for (name, dev, kind), sub in nll.groupby([nll.model, nll.device, form]):
                # one line per form, in order of width (its cost; measured times are noisy)
                sub = sub.sort_values("params") if "params" in sub else sub.sort_values("update_s")
                axes[3].plot(1e3 * sub.update_s, sub.test_nll, "o-" if kind == "MADE" else "s--",
                             label=f"{name} {kind} ({dev})")
                for t, v, low in zip(sub.update_s, sub.test_nll, sub.low_level):
                    axes[3].annotate(low, (1e3 * t, v), fontsize=7, xytext=(3, 3), textcoords="offset points")
            axes[3].set_xscale("log")
            axes[3].set(xlabel="time per update (ms)", ylabel="test NLL after the same updates (nats/step)",
                        title="hier: NLL against time per update, loss per study unit (SPEC §5)\n"
                              "(same-device pairs at equal NLL: issue #8)")
            axes[3].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["flat", "hier", "both", "compare"], default="both",
                   help="compare: time nothing, recompute the hier comparisons (and, with --made-curve, the time "
                        "to equal NLL from finished curves) and the plot from the saved CSV")
    p.add_argument("--lengths", nargs="*", type=int, default=[500, 1000, 2000, 4000])
    p.add_argument("--steps", type=int, default=10, help="timed updates per hier model (after --warmup)")
    p.add_argument("--warmup", type=int, default=3, help="untimed updates before the timed ones (hier part)")
    p.add_argument("--size", default="study", help="hier model size (default: the study's MIDI config)")
    p.add_argument("--nll-steps", type=int, default=2000,
                   help="updates of the NLL comparison runs (0: timing only)")
    p.add_argument("--jobs", type=int, default=2, help="NLL runs at once (cores are split between them)")
    p.add_argument("--nll-train", action=argparse.BooleanOptionalAction, default=True,
                   help="--no-nll-train: read the NLLs of finished runs and of the saved CSV, train none")
    p.add_argument("--runs", default="runs/bench_hier", help="where the NLL runs go (finished runs are reused)")
    p.add_argument("--hier-models", nargs="*", default=list(HIER), choices=list(HIER))
    p.add_argument("--lstm-hidden", nargs="*", type=int, default=[],
                   help="extra LSTM low levels of these widths (rows lstm-h<H>)")
    p.add_argument("--made-hidden", nargs="*", type=int, default=[],
                   help="extra MADE low levels of these widths (rows made-h<W>): each LSTM row names the fastest "
                        "MADE within ±2 %% of its test NLL (columns equal_nll_*)")
    p.add_argument("--device", default="cpu", help="hier part: cpu or cuda (the flat part measures CPU memory)")
    p.add_argument("--made-curve", nargs=2, type=int, default=None, metavar=("EVERY", "UPDATES"),
                   help="also train MADE's first UPDATES updates validated every EVERY updates and report how much "
                        "sooner it reaches each LSTM's best validation NLL (column equal_nll_speedup)")
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
    if args.part in ("hier", "both", "compare"):
        from bench_step import save_merged

        csv, keys = out / "scaling_hier.csv", HIER_KEYS
        if args.part == "compare":  # nothing timed or trained: the saved rows, compared again
            hier = pd.read_csv(csv)
        else:
            hier = run_hier(args.steps, models=tuple(args.hier_models), size=args.size, nll_steps=args.nll_steps,
                            runs=Path(args.runs), jobs=args.jobs, device=args.device, lstm_hidden=args.lstm_hidden,
                            made_hidden=args.made_hidden, warmup=args.warmup,
                            saved=pd.read_csv(csv) if csv.exists() else None, train_nll=args.nll_train)
            hier = save_merged(hier, csv, keys, HIER_KEY_DEFAULTS)  # rows of other models, variants and devices stay
        hier = compare_low_levels(hier.assign(size=_sizes(hier)))  # the comparisons span all the saved rows
        if args.made_curve and args.nll_steps:
            # MADE's NLL after k updates does not depend on the device it ran on (the same updates), so
            # this device's curve serves the rows of every device
            every, updates = args.made_curve
            curves = {} if args.part == "compare" else {
                (name, LOSS_UNITS): validation_curve(made_curve_run(name, args.size, args.nll_steps, updates, every,
                                                                    0, Path(args.runs), args.device))
                for name in args.hier_models}
            for name in set(hier.model):  # curves made earlier (either normalisation), where they exist
                for units in (LOSS_UNITS, OLD_LOSS_UNITS):
                    for device in dict.fromkeys([args.device, "cpu"]):
                        run = _made_curve_dir(Path(args.runs), name, args.size, args.nll_steps, updates, every, 0,
                                              device, units)
                        if (name, units) not in curves and _curve_done(run, updates):
                            curves[(name, units)] = validation_curve(run)
            hier = time_to_lstm_nll(hier.drop(columns=[c for c in TIME_TO_NLL_COLUMNS if c in hier]), curves)
        hier = save_merged(hier, csv, keys, HIER_KEY_DEFAULTS)
        print(hier.to_string(index=False))
    elif (out / "scaling_hier.csv").exists():
        hier = pd.read_csv(out / "scaling_hier.csv")
    plot(flat, hier, out / "scaling.png")
    print(f"\nwrote {out}/scaling_*.csv and scaling.png")


if __name__ == "__main__":
    main()
