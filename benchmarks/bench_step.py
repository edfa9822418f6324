"""Training-step time of every registered model: the package's Pyro SVI path against plain PyTorch.

For each model of ``pyro_srnn.models.MODELS`` (with its default guide) and each
configuration, one process builds the model and guide once and times two training
steps on the SAME module instances and the SAME batch:

* **pyro** — exactly what ``Trainer.train_step`` does: ``make_elbo(estimator)(model,
  guide)`` (a ``Trace_ELBO`` ``nn.Module``), ``(loss / num_values).backward()``,
  ``clip_grad_norm_(params, 0.5)``, the trainer's Adam (``make_optimizer``: fused where supported),
  with Pyro's validation as the trainer's ``--pyro-validation`` mode (default ``first``: the first
  step, a warm-up one, is checked; the timed steps are not);
* **torch** — the hand-written loss of ``benchmarks/_torch_losses.py`` (the same
  negative ELBO in plain torch), then the same backward, clipping and Adam step.

Before timing, both losses are computed once with the same torch seed (eval mode, so
only the latent noise is random) and asserted equal. The two steps are then
interleaved (the order alternates every repetition) and the median of ``--reps``
repetitions after ``--warmup`` is reported (with ``--quick``, one warm-up pair instead of two
and more repetitions until each path has run ``--min-time`` = 1 s, so 50-ms steps get ~20
pairs); ``ratio = pyro_ms / torch_ms``.
``paired_ratio`` (with ``_q1``/``_q3``) is the median of the per-pair ratios (the two steps of
a pair ran back to back): the same comparison, robust to load drifting during the run.

Targets: ratio ≤ 1.05 when all latents of a chunk are drawn at once (or there are
none), ≤ 1.15 when the latent path is drawn step by step (``SequenceNormal`` with a
sampler: VRNN, Z-forcing, Fraccaro's SRNN, DMM).

Configurations (synthetic data of the right shape: Bernoulli keys at rate 0.1, or
standard-normal audio):

* ``midi`` — batch 16, T 100, L 88, the model's study MIDI preset (``--quick``: ``small``);
* ``speech`` — batch 32, T 40, L 200, the reduced speech configuration: the model's study
  speech preset at half width (``speech@0.5``, about a quarter of the weights; the study's
  17M-parameter models take 1.3-3.4 s a step on 2 cores, the half-width ones 0.2-0.7 s), and
  the ``small`` preset for the flat and hier models (an LSTM step per value: even at 1/8 of the
  study's width their step takes 2-3 s). ``--quick``: ``small`` (flat and hier: ``small@0.5``).

and, not timed by default (no ratio target):

* ``micro`` — batch 2, T 4, L 8, ``tiny`` presets: the tensor work nearly vanishes, so
  ``overhead_ms = pyro_ms − torch_ms`` is Pyro's fixed cost per step (tracing, sample sites,
  the plate), the part that does not shrink when a GPU makes the tensor work fast
  (``--configs micro`` → ``bench_step_micro.csv``).

Flat models (``*-flat``: one LSTM step per value) run over ``T · L`` values; they use
``flat_T`` steps instead (speech 10 steps = 2000 samples, the study's flat chunk;
MIDI 20 steps = 1760 keys) so one step stays within seconds on 2 cores. ``--quick`` gives
the models with an LSTM step per value (flat) or per position (hier) fewer values, so that
the whole run stays under 3 minutes on 2 cores: flat ``quick_flat_T`` (speech 2 steps = 400
samples, MIDI 3 steps = 264 keys), hier ``quick_hier_T`` (speech 10, MIDI 25 steps), and at
speech the ``small`` preset at half width (``small@0.5``; at full ``small`` width one SRNN-flat
step over 400 samples takes 1.6 s).

Usage::

    python benchmarks/bench_step.py             # full: reps 15, study MIDI presets, half-width speech
    python benchmarks/bench_step.py --quick     # every model, small sizes, reps 10, < 3 min
    python benchmarks/bench_step.py --models f-rnn vrnn --configs midi

Writes ``benchmarks/results/bench_step[_quick].csv`` (replacing the rows of the models and
configurations it ran, keeping the others) and a plot of the whole table beside it (same name,
``.png``), and prints the table.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pyro  # noqa: E402

from pyro_srnn.data.batch import SequenceBatch  # noqa: E402
from pyro_srnn.data.core import DataSpec  # noqa: E402
from pyro_srnn.infer import make_elbo  # noqa: E402
from pyro_srnn.models import MODELS, build_guide, build_model, model_names  # noqa: E402
try:
    from pyro_srnn.train import make_optimizer  # noqa: E402
except ImportError:  # an older revision (compare_revisions.sh): its trainer's optimiser was plain Adam
    def make_optimizer(params, lr):
        return torch.optim.Adam(params, lr=lr)
try:
    from pyro_srnn.train import PYRO_VALIDATION_MODES, PyroChecks  # noqa: E402
except ImportError:  # an older revision (compare_revisions.sh), before the trainer's validation modes
    PYRO_VALIDATION_MODES = ("always", "first", "off")

    class PyroChecks:  # the trainer's, for its training steps
        def __init__(self, mode):
            self.mode, self.pending = mode, mode == "first"

        def on(self, what):
            return self.mode == "always" or self.pending

        def done(self, what):
            self.pending = False

from _torch_losses import TORCH_LOSSES  # noqa: E402

CONFIGS = {
    "midi": dict(batch=16, T=100, L=88, family="bernoulli", domain="midi", size="midi", quick_size="small",
                 flat_T=20, quick_flat_T=3, quick_hier_T=25),
    # the study's speech models at half width (a quarter of the weights); models with an LSTM over
    # every value (flat, hier) keep their ``small`` preset: at 1/8 of the study's width a step
    # still takes 2-3 s on 2 cores (200 or 2000 sequential LSTM steps)
    "speech": dict(batch=32, T=40, L=200, family="gaussian", domain="speech", size="speech@0.5",
                   per_value_size="small", quick_size="small", quick_per_value_size="small@0.5", flat_T=10,
                   quick_flat_T=2, quick_hier_T=10),
    # Pyro's fixed cost per step (``overhead_ms``): tiny presets on a batch of 2 × 4 steps × 8 values,
    # so the tensor work is a few hundred µs and the rest is Python per sample site. Not one of
    # issue #8's ratio configurations (no target: a ratio of two near-empty steps means little);
    # run it with ``--configs micro`` (→ ``bench_step_micro.csv``)
    "micro": dict(batch=2, T=4, L=8, family="bernoulli", domain="midi", size="tiny", quick_size="tiny",
                  flat_T=2, quick_flat_T=2, has_target=False),
}
#: configurations a plain run times (the ratio targets of issue #8)
DEFAULT_CONFIGS = ("midi", "speech")
TARGET_AT_ONCE = 1.05
TARGET_SEQUENTIAL = 1.15
CLIP_NORM = 0.5


# ---------------------------------------------------------------- machine

def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict:
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "python": platform.python_version(),
        "device": device,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def save_merged(frame, path, keys, defaults: dict | None = None) -> "pd.DataFrame":
    """Write ``frame`` to the CSV ``path`` atomically, keeping the rows of ``path`` whose ``keys``
    are not in ``frame`` (so re-running one part of a benchmark keeps the other parts). ``defaults``:
    the value of a key column in saved rows from before that column existed."""
    import pandas as pd

    from pyro_srnn.data.core import atomic_write

    path = Path(path)
    if path.exists():
        old = pd.read_csv(path)
        for key, value in (defaults or {}).items():
            old[key] = old[key].fillna(value) if key in old else value
        done = set(map(tuple, frame[keys].astype(str).values))
        old = old[[tuple(k) not in done for k in old[keys].astype(str).values]]
        frame = pd.concat([old, frame], ignore_index=True)
    with atomic_write(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    return frame


# ---------------------------------------------------------------- data

def make_spec(config: dict) -> DataSpec:
    return DataSpec(name=f"bench-{config['domain']}", step_dim=config["L"], family=config["family"],
                    domain=config["domain"], chunk_len=config["T"])


def synthetic_batch(config: dict, seed: int = 0, device="cpu") -> SequenceBatch:
    """A full batch of the configuration's shape (one step more, shifted into inputs/targets)."""
    g = torch.Generator().manual_seed(seed)
    B, T, L = config["batch"], config["T"], config["L"]
    if config["family"] == "bernoulli":
        seq = (torch.rand(B, T + 1, L, generator=g) < 0.1).float()
    elif config["family"] == "handwriting":
        pen = (torch.rand(B, T + 1, 1, generator=g) < 0.1).float()
        seq = torch.cat([pen, torch.randn(B, T + 1, 2, generator=g)], dim=-1)
    else:
        seq = torch.randn(B, T + 1, L, generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    return SequenceBatch(seq[:, :-1].contiguous(), seq[:, 1:].contiguous(), mask).to(device)


def fresh(batch: SequenceBatch) -> SequenceBatch:
    """Same tensors, empty feature cache (each training step computes its shared features anew)."""
    return SequenceBatch(batch.inputs, batch.targets, batch.mask, batch.seq_ids)


# ---------------------------------------------------------------- steps

def _per_value(name: str) -> bool:
    """An LSTM step per value (flat) or per position within a step (hier)."""
    return name.endswith(("-flat", "-hier"))


def preset_size(name: str, config: dict, quick: bool = False) -> str:
    """The model size a configuration uses for model ``name``."""
    if quick:
        return config.get("quick_per_value_size", config["quick_size"]) if _per_value(name) else config["quick_size"]
    return config.get("per_value_size", config["size"]) if _per_value(name) else config["size"]


def model_config(name: str, config: dict, quick: bool = False) -> dict:
    """The configuration model ``name`` runs at: flat models over ``flat_T`` steps (``quick_flat_T``
    with ``--quick``), hier models over ``quick_hier_T`` steps with ``--quick``, others as given."""
    if name.endswith("-flat"):
        return dict(config, T=config["quick_flat_T" if quick else "flat_T"])
    if quick and name.endswith("-hier") and "quick_hier_T" in config:
        return dict(config, T=config["quick_hier_T"])
    return config


def latent_is_sequential(model, guide, batch) -> bool:
    """True when the guide's latent path is drawn step by step (a ``SequenceNormal`` with a sampler)."""
    if not model.has_latent:
        return False
    with torch.no_grad():
        trace = pyro.poutine.trace(guide).get_trace(fresh(batch))
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"]:
            fn = site["fn"]
            while hasattr(fn, "base_dist"):
                fn = fn.base_dist
            if getattr(fn, "sequential", False):
                return True
    return False


class StepRunner:
    """One training step, Pyro path or torch path, on shared modules with separate Adam states."""

    def __init__(self, model, guide, loss_fn, params, lr=1e-3):
        self.model, self.guide, self.loss_fn, self.params = model, guide, loss_fn, params
        self.optimizer = make_optimizer(params, lr=lr)  # the trainer's (fused Adam where supported)

    def step(self, batch, kl_scale):
        loss = static_step(self.loss_fn, self.params, self.optimizer, batch, kl_scale, batch.num_scored_values)
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss)


def static_step(loss_fn, params, optimizer, batch, kl_scale: float, num_values: int) -> torch.Tensor:
    """One training step that reads nothing back to the host (so a CUDA graph can hold it,
    ``bench_graphs.py``): loss of a fresh batch, backward of ``loss / num_values``, clipping, the
    optimiser's update. The gradients are left in place (a captured step's backward writes them anew
    at every replay; eager callers clear them)."""
    loss = loss_fn(fresh(batch), kl_scale)
    (loss / max(num_values, 1)).backward()
    torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
    optimizer.step()
    return loss.detach()


HOST_READS = ("__bool__", "item", "__float__", "__int__", "tolist")


def count_host_reads(runner: "StepRunner", batch, kl_scale) -> int:
    """Tensor reads back to Python (``bool()``, ``.item()``, ``float()``, …) in one forward and backward
    pass of ``runner``'s loss: on a GPU each is a host–device synchronisation. (The optimiser's own
    reads of its step counters are left out: those tensors stay on the CPU.)"""
    reads = [0]
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(name):
        def read(self, *args, **kwargs):
            reads[0] += 1
            return originals[name](self, *args, **kwargs)
        return read

    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, counting(name))
        loss = runner.loss_fn(fresh(batch), kl_scale)
        loss.backward()
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        runner.optimizer.zero_grad(set_to_none=True)
    return reads[0]


def count_ops(runner: "StepRunner", batch, kl_scale) -> int:
    """Tensor operations (ATen calls, views included) in one forward and backward pass of ``runner``'s
    loss: deterministic where timings are not, and on a GPU each non-view one is a kernel launch."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counting(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counting.calls += 1
            return func(*args, **(kwargs or {}))

    try:
        with Counting():
            runner.loss_fn(fresh(batch), kl_scale).backward()
    finally:
        runner.optimizer.zero_grad(set_to_none=True)
    return Counting.calls


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def check_losses_agree(model, guide, elbo_module, torch_loss, batch, kl_scale, seed=123, rtol=1e-4):
    """Both losses with the same noise (eval mode: only latent noise is random); returns (pyro, torch)."""
    model.eval()
    guide.eval()
    try:
        with torch.no_grad():
            torch.manual_seed(seed)
            lp = float(elbo_module(fresh(batch), kl_scale=kl_scale))
            torch.manual_seed(seed)
            lt = float(torch_loss(model, guide, fresh(batch), kl_scale))
    finally:
        model.train()
        guide.train()
    if not abs(lp - lt) <= rtol * max(abs(lp), abs(lt), 1.0):
        raise AssertionError(f"{model.name}/{guide.name}: Pyro loss {lp:.6f} != hand-written torch loss {lt:.6f}")
    return lp, lt


def bench_model(name: str, config_name: str, config: dict, *, size: str, reps: int, warmup: int,
                estimator: str = "trace", device: str = "cpu", seed: int = 0, quick: bool = False,
                min_time: float = 0.0, max_reps: int = 200, with_unvalidated: bool = False,
                pyro_validation: str = "first") -> dict:
    config = model_config(name, config, quick)
    spec = make_spec(config)
    pyro.set_rng_seed(seed)
    model = build_model(name, spec, size).to(device)
    guide = build_guide(None, model).to(device)
    row = {"model": name, "guide": guide.name, "config": config_name, "size": size, "batch": config["batch"],
           "T": config["T"], "L": config["L"], "estimator": estimator,
           "params": sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in guide.parameters())}
    batch = synthetic_batch(config, seed, device)
    sequential = latent_is_sequential(model, guide, batch)
    row["sequential_latent"] = sequential
    row["target"] = ((TARGET_SEQUENTIAL if sequential else TARGET_AT_ONCE) if config.get("has_target", True)
                     else float("nan"))
    torch_loss = TORCH_LOSSES.get((name, guide.name))
    if torch_loss is None:
        row["status"] = "missing hand-written loss"
        return row
    elbo_module = make_elbo(estimator)(model, guide)
    params = [p for p in elbo_module.parameters() if p.requires_grad]
    kl_scale = 0.5 if model.has_latent else 1.0
    lp, lt = check_losses_agree(model, guide, elbo_module, torch_loss, batch, kl_scale)
    row["loss_pyro"], row["loss_torch"] = lp, lt

    checks = PyroChecks(pyro_validation)  # as the trainer ("first": Pyro's checks on the first step only)

    def pyro_step_loss(b, s):
        with pyro.validation_enabled(checks.on("step")):
            loss = elbo_module(b, kl_scale=s)
        checks.done("step")
        return loss

    runners = {
        "pyro": StepRunner(model, guide, pyro_step_loss, params),
        "torch": StepRunner(model, guide, lambda b, s: torch_loss(model, guide, b, s), params),
    }
    if with_unvalidated:  # a third path: the Pyro step with Pyro's validation off (--pyro-validation off)
        def unvalidated(b, s):
            with pyro.validation_enabled(False):
                return elbo_module(b, kl_scale=s)

        runners["pyro_noval"] = StepRunner(model, guide, unvalidated, params)
    times = {name: [] for name in runners}
    model.train()
    guide.train()
    i = 0
    # at least `reps` timed pairs, and more until each path has run `min_time` seconds: fast
    # steps (tens of ms) get enough pairs that a few slow outliers do not move the median
    while i < warmup + reps or sum(times["pyro"]) < min_time or sum(times["torch"]) < min_time:
        names = list(runners)
        order = names[i % len(names):] + names[:i % len(names)]  # each path first in turn
        for which in order:
            _sync(device)
            t0 = time.perf_counter()
            runners[which].step(batch, kl_scale)
            _sync(device)
            if i >= warmup:
                times[which].append(time.perf_counter() - t0)
        i += 1
        if i - warmup >= max_reps:
            break
    row["pyro_ms"] = 1e3 * statistics.median(times["pyro"])
    row["torch_ms"] = 1e3 * statistics.median(times["torch"])
    row["ratio"] = row["pyro_ms"] / row["torch_ms"]
    # what Pyro adds per step: fixed (Python per sample site), so it is the ratio's whole story
    # on small steps, e.g. launch-bound GPU steps
    row["overhead_ms"] = row["pyro_ms"] - row["torch_ms"]
    if with_unvalidated:
        row["pyro_noval_ms"] = 1e3 * statistics.median(times["pyro_noval"])
        row["ratio_noval"] = row["pyro_noval_ms"] / row["torch_ms"]
        row["overhead_noval_ms"] = row["pyro_noval_ms"] - row["torch_ms"]
    for which, runner in runners.items():  # deterministic, and what a GPU pays for: synchronisations, launches
        row[f"host_reads_{which}"] = count_host_reads(runner, batch, kl_scale)
        row[f"ops_{which}"] = count_ops(runner, batch, kl_scale)
    # the same comparison pair by pair (the two steps of a pair ran back to back, so a change
    # of machine load between pairs cancels): median and inter-quartile range of pyro/torch
    paired = sorted(a / b for a, b in zip(times["pyro"], times["torch"]))
    q = statistics.quantiles(paired, n=4) if len(paired) >= 2 else [paired[0]] * 3
    row["paired_ratio"], row["paired_ratio_q1"], row["paired_ratio_q3"] = q[1], q[0], q[2]
    row["over_target"] = bool(row["ratio"] > row["target"])
    row["reps"] = len(times["pyro"])
    row["status"] = "ok"
    return row


def run(models=None, configs=None, *, quick=False, size=None, reps=None, warmup=None, estimator="trace",
        device="cpu", out=None, verbose=True, min_time=None, with_unvalidated=False, pyro_validation="first"):
    """Benchmark ``models`` × ``configs``; returns a pandas DataFrame (also written to CSV when ``out``)."""
    import pandas as pd

    all_models = model_names()  # imports the registry, so MODELS is complete
    models = models or all_models
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; registered: {all_models}")
    configs = configs or list(DEFAULT_CONFIGS)
    reps = reps if reps is not None else (10 if quick else 15)
    warmup = warmup if warmup is not None else (1 if quick else 2)
    min_time = min_time if min_time is not None else (1.0 if quick else 0.0)
    info = dict(machine_info(device), pyro_validation=pyro_validation)
    rows = []
    for config_name in configs:
        config = CONFIGS[config_name]
        for name in models:
            sz = size or preset_size(name, config, quick)
            t0 = time.perf_counter()
            try:
                row = bench_model(name, config_name, config, size=sz, reps=reps, warmup=warmup,
                                  estimator=estimator, device=device, quick=quick, min_time=min_time,
                                  with_unvalidated=with_unvalidated, pyro_validation=pyro_validation)
            except AssertionError:
                raise
            except Exception as e:  # a model that cannot be built at this config is reported, not hidden
                row = {"model": name, "config": config_name, "size": sz, "status": f"error: {type(e).__name__}: {e}"}
            row["bench_s"] = round(time.perf_counter() - t0, 1)
            row.update(info)
            rows.append(row)
            if verbose:
                shown = {k: row.get(k) for k in ("model", "guide", "config", "pyro_ms", "torch_ms", "ratio",
                                                 "pyro_noval_ms", "status") if k in row}
                print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()),
                      flush=True)
    frame = pd.DataFrame(rows)
    lead = ["model", "guide", "config", "size", "pyro_ms", "torch_ms", "ratio", "overhead_ms", "pyro_noval_ms",
            "ratio_noval", "overhead_noval_ms",
            "target", "over_target", "host_reads_pyro", "host_reads_torch", "ops_pyro", "ops_torch",
            "paired_ratio", "paired_ratio_q1", "paired_ratio_q3", "status", "sequential_latent", "params",
            "batch", "T", "L", "estimator", "reps", "loss_pyro", "loss_torch", "bench_s"]
    frame = frame[[c for c in lead if c in frame] + [c for c in frame if c not in lead]]
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        # rows of models / configs not re-run stay (e.g. `--configs speech` keeps the MIDI rows)
        table = save_merged(frame, out, ["model", "config"])
        plot(table, out.with_suffix(".png"))
    return frame


def plot(table, path) -> None:
    """One panel per configuration, one row per model: the bar is the median ratio (from 1, red when
    over the model's target), the dot and whiskers the paired ratio and its inter-quartile range, the
    tick the target. Configurations without a target (``micro``) show Pyro's fixed cost per step,
    ``overhead_ms``, instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = table[table["status"] == "ok"] if "status" in table else table
    configs = list(dict.fromkeys(table["config"]))
    if not configs:
        return
    height = 1.6 + 0.3 * max(len(table[table["config"] == c]) for c in configs)
    legend = None
    fig, axes = plt.subplots(1, len(configs), figsize=(6 * len(configs), height), squeeze=False)
    for ax, config in zip(axes[0], configs):
        rows = table[table["config"] == config].sort_values("model", ascending=False)
        y = list(range(len(rows)))
        first = rows.iloc[0]
        threads = first.get("threads")
        where = (first.get("gpu") if isinstance(first.get("gpu"), str) else
                 f"{first.get('cpu')}, {threads} thread{'' if threads == 1 else 's'}")
        if rows["target"].notna().any():
            over = rows["ratio"] > rows["target"]
            ax.barh(y, rows["ratio"] - 1.0, left=1.0, color=["tab:red" if o else "tab:blue" for o in over], alpha=0.5,
                    label="median ratio")
            if "paired_ratio" in rows:
                ax.errorbar(rows["paired_ratio"], y, fmt="o", color="k", ms=3, lw=1, label="paired ratio (IQR)",
                            xerr=[rows["paired_ratio"] - rows["paired_ratio_q1"],
                                  rows["paired_ratio_q3"] - rows["paired_ratio"]])
            ax.scatter(rows["target"], y, marker="|", s=150, color="tab:red", label="target")
            ax.axvline(1.0, color="grey", lw=0.8)
            ax.set_xlabel("Pyro step / hand-written torch step")
            legend = ax.get_legend_handles_labels()
        elif "overhead_noval_ms" in rows and rows["overhead_noval_ms"].notna().any():  # --with-unvalidated
            mode = rows["pyro_validation"].iloc[0] if "pyro_validation" in rows else "first"
            ax.barh([i + 0.2 for i in y], rows["overhead_ms"], height=0.4, color="tab:blue", alpha=0.5,
                    label=f"Pyro's validation: {mode}")
            ax.barh([i - 0.2 for i in y], rows["overhead_noval_ms"], height=0.4, color="tab:green", alpha=0.5,
                    label="Pyro's validation off")
            ax.set_xlabel("Pyro step − torch step (ms): Pyro's fixed cost")
            ax.legend(fontsize=7)
        else:
            ax.barh(y, rows["overhead_ms"], color="tab:blue", alpha=0.5)
            ax.set_xlabel("Pyro step − torch step (ms): Pyro's fixed cost")
        ax.set_yticks(y, [f"{m} / {g}" for m, g in zip(rows["model"], rows["guide"])], fontsize=8)
        ax.set_title(f"{config} ({where})", fontsize=9)
    fig.tight_layout(rect=(0, 0.06 if legend else 0, 1, 1))
    if legend:  # once, below the panels, where it hides no row
        fig.legend(*legend, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="every model at small sizes, 10 repetitions")
    p.add_argument("--models", nargs="*", default=None)
    p.add_argument("--configs", nargs="*", default=None, choices=list(CONFIGS),
                   help=f"default: {' '.join(DEFAULT_CONFIGS)} (issue #8's); micro: Pyro's fixed cost per step")
    p.add_argument("--size", default=None, help="override the preset size (tiny, small, midi, ...)")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--min-time", type=float, default=None,
                   help="time each path at least this many seconds (more pairs for fast steps; "
                        "default 1 with --quick, else 0)")
    p.add_argument("--estimator", default="trace", choices=["trace", "meanfield"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out", default=None, help="CSV path (default benchmarks/results/bench_step[_quick].csv)")
    p.add_argument("--pyro-validation", choices=PYRO_VALIDATION_MODES, default="first",
                   help="Pyro's validation of the Pyro path, as `pyro-srnn train --pyro-validation` "
                        "(default first: the first step, a warm-up one, is checked)")
    p.add_argument("--no-pyro-validation", dest="pyro_validation", action="store_const", const="off",
                   help="the same as --pyro-validation off")
    p.add_argument("--with-unvalidated", action="store_true",
                   help="also time the Pyro step with Pyro's validation off, interleaved with the other two "
                        "(columns pyro_noval_ms, ratio_noval)")
    p.add_argument("--replot", metavar="CSV", default=None,
                   help="only draw the plot of an existing results CSV (beside it, .png) and exit")
    args = p.parse_args(argv)
    if args.replot:
        import pandas as pd

        plot(pd.read_csv(args.replot), Path(args.replot).with_suffix(".png"))
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    default_name = ("bench_step_micro.csv" if args.configs == ["micro"] else
                    "bench_step_quick.csv" if args.quick else "bench_step.csv")
    out = args.out or HERE / "results" / default_name
    frame = run(args.models, args.configs, quick=args.quick, size=args.size, reps=args.reps, warmup=args.warmup,
                estimator=args.estimator, device=args.device, out=out, min_time=args.min_time,
                with_unvalidated=args.with_unvalidated, pyro_validation=args.pyro_validation)
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        cols = [c for c in ("model", "guide", "config", "size", "pyro_ms", "torch_ms", "ratio", "overhead_ms",
                            "pyro_noval_ms", "ratio_noval", "overhead_noval_ms", "paired_ratio",
                            "target", "over_target", "reps", "status") if c in frame]
        print(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    info = machine_info(args.device)
    print(f"\nmachine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['threads']} threads), "
          f"pyro {info['pyro']}, load average {info['load_avg_1m']}; CSV: {out}")
    missing = frame[frame["status"] != "ok"]["model"].tolist() if "status" in frame else []
    if missing:
        print(f"not timed: {sorted(set(missing))}")
    return frame


if __name__ == "__main__":
    main()
