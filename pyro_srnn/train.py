"""The one training loop of the zoo: SVI with an ELBO module and a torch optimiser.

Protocol of the study (SPEC §5): Adam, learning rate cosine-decayed from 1e-3 to
1e-6 over the run, global gradient-norm clipping at 0.5 on the loss normalised per
value (per audio sample, 88-key step or pen point), KL annealing of the latent sites by ``poutine.scale`` (0.2 + increment per
update, capped at 1). The ELBO is Pyro's ``Trace_ELBO`` (or ``TraceMeanField_ELBO``)
used as an ``nn.Module`` (``elbo(model, guide)``), so any torch optimiser, scheduler
or DDP reduction applies.

On a CUDA device each step up to its one read back to the host (loss, backward pass, clipping) is
captured in a CUDA graph and replayed (:mod:`pyro_srnn.graphs`; ``cuda_graph=False`` steps
eagerly), so Pyro's Python runs once, not at every step.

Every ``valid_every`` steps the model is evaluated on the validation split; the run
directory keeps ``best.pt`` (best validation), ``latest.pt``, ``metrics.csv`` and
``curves.png``. ``resume=True`` continues from ``latest.pt`` with model, guide,
optimiser, step (hence learning rate, annealing and the data order) and RNG restored,
so an interrupted run ends with exactly the parameters of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import BatchSampler, chunk_sequences, load_dataset
from .data.core import DataSpec, SequenceDataset, atomic_write
from .distributed import DistContext, derived_seed
from .graphs import GraphedStep
from .precision import check_precision, install_bf16_autocast
from .evaluate import evaluate_chunks
from .samples import medium_kwargs
from .infer import SigmoidAnnealing, make_elbo, make_schedule
from .models import build_guide, build_model
from .models.base import SequenceGuide, SequenceModel, model_from_config, GUIDES

__all__ = ["TrainConfig", "Trainer", "use_cuda_graph", "TrainingDiverged", "train", "make_optimizer",
           "STUDY_BATCH_SIZE", "study_batch_size", "study_increment", "cosine_lr", "loss_units_per_step", "PYRO_VALIDATION_MODES", "pyro_validation_mode", "PyroChecks"]

#: study batch sizes per domain (SPEC §5), and the data sets that differ from their domain's
STUDY_BATCH_SIZE = {"midi": 16, "speech": 32, "handwriting": 32}
STUDY_BATCH_SIZE_OF_DATASET = {"vctk": 128, "blizzard": 128}


def study_batch_size(spec: DataSpec) -> int:
    """The study's batch size for a data set (SPEC §5: TIMIT 32, VCTK/Blizzard 128, MIDI 16, IAM-OnDB 32)."""
    return STUDY_BATCH_SIZE_OF_DATASET.get(spec.name, STUDY_BATCH_SIZE.get(spec.domain, 16))


def loss_units_per_step(spec: DataSpec) -> int:
    """How many units the loss is normalised by per scored step before clipping (SPEC §5: "per value —
    speech: per audio sample; MIDI: per 88-key step; handwriting: per pen point"): each of a speech
    step's samples counts, a MIDI or handwriting step counts once."""
    return 1 if spec.domain in ("midi", "handwriting") else spec.step_dim


def cosine_lr(step: int, steps: int, lr: float, lr_min: float) -> float:
    """The learning rate of update ``step`` (0-based) of a ``steps``-update run: cosine decay from ``lr``
    to ``lr_min``, held at ``lr_min`` past the end. A function of the step alone (no scheduler
    state), so a resumed run with a longer ``--steps`` follows the new horizon."""
    t = min(step, steps) / max(steps, 1)
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * t)) / 2


def study_increment(domain: str) -> float:
    """KL-annealing increment per update of the study: MIDI 1e-4, others 5e-5."""
    return 1e-4 if domain == "midi" else 5e-5


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient: training stops, the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    dataset: str = "bach_chorales"
    model: str = "f-rnn"
    guide: str | None = None
    size: str = "small"
    model_args: dict = field(default_factory=dict)
    steps: int = 3000
    batch_size: int | None = None  # None: the study's batch size of the domain
    lr: float = 1e-3
    lr_min: float = 1e-6
    clip_norm: float = 0.5
    estimator: str = "trace"
    anneal: str = "linear"
    anneal_start: float = 0.2
    anneal_increment: float | None = None  # None: the study's increment of the domain
    valid_every: int = 250
    valid_max_batches: int | None = None
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "cpu"
    out: str = "runs/default"
    data_dir: str | None = None
    stream: bool = False
    stop_at: int | None = None  # stop (and checkpoint) after this step; resume later
    log_every: int = 10
    progress: bool = True
    precision: str = "fp32"
    # Pyro's validation (shape checks, per-site NaN/inf checks of log-densities forward and backward,
    # distribution argument checks): "always"; "first" (default): the first training step and the
    # first validation pass of the process only; "off". Each value check reads a tensor back to the
    # host (on a GPU a synchronisation), while a program's structure does not change between steps.
    # In every mode the trainer checks loss and gradient norm each step and, when one is not finite,
    # re-runs that batch with Pyro's checks on to name the site (TrainingDiverged's message).
    pyro_validation: str = "first"
    # CUDA graphs (pyro_srnn.graphs): capture each step's loss, backward and clipping once and replay
    # it, so Pyro's Python runs once instead of every step; batches are padded to the chunk length
    # (one shape, one graph). None (default): on wherever it can be — a CUDA device, one process,
    # pyro_validation not "always"; True: on, or a clear error where it cannot be; False: eager steps.
    cuda_graph: bool | None = None

    def __post_init__(self):
        self.pyro_validation = pyro_validation_mode(self.pyro_validation)

    def to_dict(self) -> dict:
        return asdict(self)


PYRO_VALIDATION_MODES = ("always", "first", "off")


def pyro_validation_mode(value) -> str:
    """``"always"``, ``"first"`` or ``"off"``; the booleans of configurations saved before the modes
    existed read as ``"always"`` (True) and ``"off"`` (False)."""
    if isinstance(value, bool):
        return "always" if value else "off"
    if value not in PYRO_VALIDATION_MODES:
        raise ValueError(f"pyro_validation must be one of {', '.join(PYRO_VALIDATION_MODES)}; got {value!r}")
    return value


def use_cuda_graph(config: TrainConfig, device: torch.device, dist: DistContext) -> bool:
    """Whether the trainer captures its steps in CUDA graphs: ``config.cuda_graph`` where given (``True``
    where it cannot work — off CUDA, with Pyro's checks at every step, with data-parallel training —
    is a ``ValueError``), else wherever it can work."""
    reasons = []
    if device.type != "cuda":
        reasons.append(f"--cuda-graph needs --device cuda (got device {str(device)!r}): CUDA graphs are a CUDA feature")
    if config.pyro_validation == "always":
        reasons.append("--cuda-graph replays steps without running Python, so Pyro's checks cannot run at every "
                       "step: use --pyro-validation first (the default) or off")
    if dist.active:
        reasons.append("--cuda-graph is for single-process training: data-parallel collectives are not captured")
    if config.cuda_graph is None:
        return not reasons
    if config.cuda_graph and reasons:
        raise ValueError(reasons[0])
    return bool(config.cuda_graph)


class PyroChecks:
    """Whether Pyro's validation runs for the next pass of a kind (``"step"``, ``"validation pass"``)
    under a :data:`PYRO_VALIDATION_MODES` mode: always, never, or (``"first"``) until :meth:`done`
    was called for that kind — a pass that fails is checked again."""

    def __init__(self, mode):
        self.mode = pyro_validation_mode(mode)
        self._done: set[str] = set()

    def on(self, what: str) -> bool:
        return self.mode == "always" or (self.mode == "first" and what not in self._done)

    def done(self, what: str) -> None:
        self._done.add(what)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    # generator states are CPU byte tensors; a checkpoint loaded onto a GPU (map_location) moved them
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def make_optimizer(params, lr: float) -> torch.optim.Adam:
    """Adam, fused where torch supports the parameters' device and dtype: one kernel updates every
    parameter, where the default runs several per parameter tensor (2.5–9× faster updates at the
    study's MIDI presets on one CPU core, ``benchmarks/bench_optimizer.py``; on a GPU, a few
    launches instead of hundreds). Same algorithm and hyper-parameters; the trainer and the step
    benchmark both build their optimiser here."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(params, lr=lr)


def _config_differences(what: str, saved: dict, current: dict) -> list[str]:
    """``"<what> <key>: <saved> saved, <current> here"`` for each setting of two configurations that differs."""
    plain = lambda value: json.loads(json.dumps(value, default=str))  # noqa: E731  (tuples and lists alike)
    saved, current = plain(saved), plain(current)
    flat = lambda config: {**{k: v for k, v in config.items() if k != "hparams"}, **config.get("hparams", {})}  # noqa: E731
    saved, current = flat(saved), flat(current)
    return [f"{what} {key}: {saved.get(key)!r} saved, {current.get(key)!r} here"
            for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]


class DeferredInterrupt:
    """Ctrl-C during training: the first one lets the update under way finish (with its validation and
    checkpoint, when due) and stops training there, so ``--resume`` continues exactly; a second one
    interrupts at once. Only where Python's own SIGINT handler is in place, in the main thread, and
    with ``enabled`` (single-process runs: ranks of a data-parallel run would stop at different updates)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.requested = False
        self._previous = None

    def __enter__(self):
        if (self.enabled and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C: KeyboardInterrupt at once

    def __exit__(self, *exc) -> bool:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False


class Trainer:
    """Builds data, model, guide, ELBO and optimiser from a :class:`TrainConfig` and runs it."""

    def __init__(self, config: TrainConfig, dataset: SequenceDataset | None = None, *,
                 dist: DistContext | None = None):
        self.config = config
        self.dist = dist or DistContext()
        rank, world_size = self.dist.rank, self.dist.world_size
        self.is_main = rank == 0
        self.out = Path(config.out)
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but no CUDA device is available")
        check_precision(config.precision, self.device)
        self.uses_cuda_graph = use_cuda_graph(config, self.device, self.dist)

        self.dataset = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
        spec = self.dataset.spec
        if not self.dataset.train:
            raise ValueError(f"data set {spec.name!r} has an empty training split")
        if not self.dataset.valid:
            raise ValueError(f"data set {spec.name!r} has an empty validation split")

        pyro.set_rng_seed(config.seed)
        self.model: SequenceModel = build_model(config.model, spec, config.size, **config.model_args)
        self.guide: SequenceGuide = build_guide(config.guide, self.model)
        self.model.to(self.device)
        self.guide.to(self.device)
        # bf16: network layers under autocast, densities and the ELBO in float32 (pyro_srnn.precision)
        self.precision_hooks = (install_bf16_autocast(self.model, self.guide, device_type=self.device.type)
                                if config.precision == "bf16" else None)

        chunk_len = self.model_chunk_len(spec)
        self.train_chunks = chunk_sequences(self.dataset.train, chunk_len, stream=config.stream,
                                            step_dim=spec.step_dim)
        self.valid_chunks = chunk_sequences(self.dataset.valid, chunk_len, step_dim=spec.step_dim)
        batch_size = config.batch_size or study_batch_size(spec)
        self.loss_units_per_step = loss_units_per_step(spec)
        # a captured step fixes the batch's shape: pad every batch to the chunk length (padding is masked)
        self.sampler = BatchSampler(self.train_chunks, batch_size, seed=config.seed, rank=rank,
                                    world_size=world_size, pad_to=chunk_len if self.uses_cuda_graph else None)

        self.elbo = make_elbo(config.estimator)
        self.loss_fn = self.elbo(self.model, self.guide)
        self.params = [p for p in self.loss_fn.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, lr=config.lr)
        self.graphed = GraphedStep(self._step_pass, self.params) if self.uses_cuda_graph else None
        increment = config.anneal_increment if config.anneal_increment is not None else study_increment(spec.domain)
        if not self.model.has_latent or not self.guide.anneals:  # no KL to anneal
            self.kl_schedule = make_schedule("none")
        elif config.anneal == "linear":
            self.kl_schedule = make_schedule("linear", start=config.anneal_start, increment=increment)
        elif config.anneal == "sigmoid":  # the linear ramp of the same start and increment, smoothed
            self.kl_schedule = SigmoidAnnealing.like_linear(start=config.anneal_start, increment=increment)
        else:
            self.kl_schedule = make_schedule(config.anneal)
        self.step = 0
        self.best_valid = math.inf
        self.history: list[dict] = []
        self._rng_at_step: dict | None = None  # the random state at the start of the update under way
        self._applying_update = False  # inside the optimiser's step (an interrupt there: no checkpoint)
        self.pyro_checks = PyroChecks(config.pyro_validation)  # per process: a resumed run checks again

    @staticmethod
    def model_chunk_len(spec: DataSpec) -> int | None:
        return spec.chunk_len

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "model_config": self.model.config(),
            "guide_config": self.guide.config(),
            "model_state": self.model.state_dict(),
            "guide_state": self.guide.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "best_valid": self.best_valid,
            "history": self.history,
            "train_config": self.config.to_dict(),
            "medium": medium_kwargs(self.dataset.spec, self.dataset.info),
            "rng": self._rng_at_step or _rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model_state"])
        self.guide.load_state_dict(state["guide_state"])
        self.optimizer.load_state_dict(state["optimizer"])  # (a "scheduler" entry of older checkpoints: unused)
        self.step = int(state["step"])
        self.best_valid = float(state["best_valid"])
        self.history = list(state["history"])
        _set_rng_state(state["rng"])

    def resume(self) -> None:
        path = self.out / "latest.pt"
        if not path.exists():
            raise CheckpointError(f"--resume: no checkpoint to resume from at {path}")
        state = load_checkpoint(path, map_location=self.device)
        saved = state["model_config"]
        if saved["name"] != self.model.name:
            raise CheckpointError(f"--resume: {path} holds model {saved['name']!r}, not {self.model.name!r}")
        differences = [*_config_differences("model", saved, self.model.config()),
                       *_config_differences("guide", state["guide_config"], self.guide.config())]
        if differences:  # else load_state_dict fails on the first mismatched tensor, naming no setting
            raise CheckpointError(f"--resume: {path} holds another {self.model.name} than this configuration "
                                  "builds: " + "; ".join(differences))
        self.load_state_dict(state)

    def save(self, name: str) -> None:
        if self.is_main:
            save_checkpoint(self.out / name, self.state_dict())

    # ------------------------------------------------------------------ steps
    def train_step(self, batch) -> dict:
        self.model.train()
        self.guide.train()
        if self.dist.active:
            # each rank its own noise (latent draws, dropout), a function of (seed, rank, step): ranks
            # sharing one stream would give rows at the same place of their shards the same draws,
            # and a resumed rank draws what it would have drawn (rank 0 saves only its own RNG state)
            torch.manual_seed(derived_seed(self.config.seed, self.dist.rank, self.step))
        kl_scale = self.kl_schedule(self.step)
        # the batch's counts are host integers (counted on the CPU before it moved); the loss and
        # reconstruction stay on the device until after backward and clipping, where one read
        # brings back everything the step reports (on a GPU each read is a synchronisation, and
        # one before backward would stop the CPU from queueing the backward pass)
        num_values, num_steps = batch.num_scored_values, batch.num_scored_steps
        units = num_steps * self.loss_units_per_step  # the loss is normalised per these before clipping
        checks = self.pyro_checks.on("step")
        read = None
        if self.graphed is not None and not checks:
            with pyro.validation_enabled(False):  # (only a capture runs Python)
                read = self.graphed(batch, kl_scale, max(units, 1))
        if read is None:
            with pyro.validation_enabled(checks):  # its backward hooks are made in the forward pass
                read = (self._distributed_step_pass(batch, kl_scale, num_steps) if self.dist.active
                        else self._step_pass(batch, kl_scale, max(units, 1)))
        read = read.tolist()  # the step's one read back to the host
        loss_value, recon, grad_norm_value = read[:3]
        if self.dist.active:
            num_steps = int(read[3])
            num_values = num_steps * batch.step_dim
        if not math.isfinite(loss_value) or not math.isfinite(grad_norm_value):
            self.optimizer.zero_grad(set_to_none=True)
            found = self.diagnose(batch, kl_scale)
            raise TrainingDiverged(
                f"non-finite {'loss' if not math.isfinite(loss_value) else 'gradient'} at step {self.step + 1}"
                + (f" (Pyro's checks of that batch: {found})" if found else "")
                + f"; training stopped, the last good checkpoint is {self.out / 'latest.pt'}"
            )
        self.pyro_checks.done("step")
        lr = cosine_lr(self.step, self.config.steps, self.config.lr, self.config.lr_min)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._applying_update = True
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._rng_at_step = None  # the update is applied: a checkpoint now holds the random state after it
        self._applying_update = False
        kl = (loss_value + recon) / kl_scale if self.model.has_latent else 0.0  # loss = −recon + s·KL
        return {"step": self.step, "loss_per_value": loss_value / max(num_values, 1),
                "nll_per_step": loss_value / max(num_steps, 1),
                "kl_per_step": kl / max(num_steps, 1), "kl_scale": kl_scale, "lr": lr}

    def _loss_terms(self, batch, kl_scale):
        """The loss (``−ELBO`` with the latent sites scaled by ``kl_scale``) and, detached, the float64
        pair (loss, reconstruction) that the step reports."""
        loss = self.loss_fn(batch, kl_scale=kl_scale)
        recon = self.elbo.last_recon
        if not torch.is_tensor(recon):  # a number (no observed site), made on the device: no copy, no sync
            recon = loss.detach().new_full((), float("nan") if recon is None else float(recon))
        return loss, torch.stack([loss.detach().double(), recon.detach().double()])

    def _backward_and_clip(self, loss, divisor):
        """Backward of the loss per unit (:func:`loss_units_per_step`; ``divisor``: their count),
        gradients averaged across ranks, clipped to ``clip_norm``; returns the gradient norm before
        clipping."""
        (loss / divisor).backward()
        self.dist.reduce_gradients(self.params)
        return torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_norm)

    def _step_pass(self, batch, kl_scale, divisor) -> torch.Tensor:
        """A single process's step up to its read: ``[loss, reconstruction, gradient norm]`` (float64, on
        the device), the gradients in place. ``kl_scale`` and ``divisor`` are numbers, or 0-dim device
        tensors when a CUDA graph captures this pass (``pyro_srnn.graphs``)."""
        loss, sums = self._loss_terms(batch, kl_scale)
        grad_norm = self._backward_and_clip(loss, divisor)
        return torch.cat([sums, grad_norm.detach().double().reshape(1)])

    def _distributed_step_pass(self, batch, kl_scale, num_steps: int) -> torch.Tensor:
        """:meth:`_step_pass` of one rank: ``[loss, reconstruction, gradient norm, scored steps]``, all
        summed over the ranks but the norm (of the averaged gradients)."""
        loss, sums = self._loss_terms(batch, kl_scale)
        # one collective: the global count (normalise by it, so N ranks == one process on the
        # union of their shards) and the global loss and reconstruction sums (logged by rank 0,
        # and a non-finite loss on any rank stops every rank)
        totals = self.dist.all_reduce_sum(torch.cat([
            torch.tensor([float(num_steps)], dtype=torch.float64, device=loss.device), sums]))
        steps, sums = totals[:1], totals[1:]
        units = (steps[0] * self.loss_units_per_step).clamp(min=1).to(loss.dtype)
        grad_norm = self._backward_and_clip(loss, units)
        return torch.cat([sums, grad_norm.detach().double().reshape(1), steps])

    def diagnose(self, batch, kl_scale) -> str:
        """Re-run a batch's loss and backward pass with Pyro's validation on and return what its
        checks found, e.g. ``Encountered NaN: log_prob_sum at site 'x'`` (a site's log-density, or
        its gradient: ``backward …``) or a distribution's rejected argument; ``""`` when nothing.

        Used when a step's loss or gradient norm is not finite, so that every validation mode
        names the site; the gradients it leaves are cleared. Local to this process (no collective)."""
        errors: list[str] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with pyro.validation_enabled(True):
                    loss = self.loss_fn(batch, kl_scale=kl_scale)
                loss.backward()  # the hooks Pyro's checks put on each site's log-density
            except (ValueError, RuntimeError) as e:  # e.g. a distribution's argument check
                errors.append(f"{type(e).__name__}: {e}")
            finally:
                self.optimizer.zero_grad(set_to_none=True)
        found = dict.fromkeys(str(w.message) for w in caught if str(w.message).startswith("Encountered"))
        return "; ".join([*found, *errors])  # Pyro's findings first seen first, each once

    def validate(self) -> float:
        cfg = self.config
        with pyro.validation_enabled(self.pyro_checks.on("validation pass")):
            result = evaluate_chunks(self.model, self.guide, self.valid_chunks, self.dataset.spec,
                                     estimator=cfg.estimator, batch_size=cfg.eval_batch_size,
                                     device=self.device, max_batches=cfg.valid_max_batches, seed=cfg.seed,
                                     dist=self.dist)
        self.pyro_checks.done("validation pass")
        return result["value"]

    def fit(self) -> dict:
        """Train until ``config.steps`` (or ``config.stop_at``); returns the last metrics row."""
        if self.config.progress:
            from tqdm.auto import tqdm
        else:  # tqdm.auto warns in notebooks without ipywidgets, even for a disabled bar
            from tqdm import tqdm

        cfg = self.config
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        end = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
        bar = tqdm(total=end, initial=self.step, desc=f"{cfg.model}/{self.guide.name}",
                   disable=not (cfg.progress and self.is_main), dynamic_ncols=True)
        row: dict = {}
        running = []
        saved_at = None  # the step whose checkpoint and metrics are on disk
        interrupt = DeferredInterrupt(enabled=not self.dist.active)
        try:
            with interrupt:
                if self._validation_owed():  # a run interrupted while validating: that validation first
                    row = self._validate_and_save(self._history_row(self.step))
                    saved_at = self.step
                while self.step < end and not interrupt.requested:
                    batch = self.sampler.batch(self.step).to(self.device)
                    self._rng_at_step = _rng_state()  # what a checkpoint taken inside this step holds
                    stats = self.train_step(batch)  # (it clears _rng_at_step with the update applied)
                    running.append(stats)
                    bar.update(1)
                    # a validation step is also a logged step, so --valid-every is honoured whatever log_every is
                    validate_now = self._is_validation_step(self.step)
                    if self.step % cfg.log_every == 0 or self.step == end or validate_now:
                        row = self._log_row(running)
                        bar.set_postfix(loss=f"{row['loss_per_value']:.4f}", kl=f"{row['kl_per_step']:.3f}",
                                        lr=f"{row['lr']:.2e}")
                        if validate_now:
                            self._validate_and_save(row)
                            saved_at = self.step
                if interrupt.requested and self.step < end:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            self._checkpoint_interrupted(running)
            raise
        finally:
            bar.close()
        if self.step == end:
            if saved_at != self.step:
                self.save("latest.pt")
                self.write_metrics()
            if not (self.out / "best.pt").exists():
                self.save("best.pt")
        return row

    def _is_validation_step(self, step: int) -> bool:
        return step % self.config.valid_every == 0 or step == self.config.steps

    def _log_row(self, running: list[dict]) -> dict:
        """The metrics row of the updates since the last one (their means), appended to the history;
        ``running`` is emptied at the same time (an interrupt cannot log them twice)."""
        row = {k: float(np.mean([r[k] for r in running])) for k in running[0]}
        row["step"] = self.step
        self.history.append(row)
        running.clear()
        return row

    def _history_row(self, step: int) -> dict:
        """The history's row of ``step``, appended (with no training metrics) where there is none."""
        if self.history and self.history[-1].get("step") == step:
            return self.history[-1]
        row = {"step": step}
        self.history.append(row)
        return row

    def _validation_owed(self) -> bool:
        """Whether this step was due a validation that has not run (interrupted while validating)."""
        if self.step == 0 or not self._is_validation_step(self.step):
            return False
        last = self.history[-1] if self.history else {}
        return not (last.get("step") == self.step and last.get("valid", math.nan) == last.get("valid", math.nan))

    def _validate_and_save(self, row: dict) -> dict:
        """Validate, keep ``best.pt`` if this is the best so far, write ``latest.pt`` and the metrics.
        Interrupted before all is written, the validation is undone, so that it runs again on resume
        (the same value: it draws its own noise) and ``best.pt`` cannot be left behind its record."""
        best_before = self.best_valid
        try:
            row["valid"] = self.validate()
            if row["valid"] < self.best_valid:
                self.best_valid = row["valid"]
                self.save("best.pt")
            self.save("latest.pt")
            self.write_metrics()
        except KeyboardInterrupt:
            self.best_valid = best_before
            row.pop("valid", None)
            raise
        return row

    def _checkpoint_interrupted(self, running: list[dict]) -> None:
        """Ctrl-C: checkpoint the last finished update, so ``--resume`` continues exactly. Inside an
        update's loss or backward pass nothing was applied yet: its gradients are dropped and the
        random state goes back to the update's start. Inside the optimiser's step itself the state is
        neither before nor after the update, and ``latest.pt`` is left as it was."""
        if self._applying_update:
            if self.is_main:
                print(f"interrupted while applying update {self.step + 1}: {self.out / 'latest.pt'} is left as "
                      "it was", file=sys.stderr)
            return
        self.optimizer.zero_grad(set_to_none=True)
        if self._rng_at_step is not None:
            _set_rng_state(self._rng_at_step)
            self._rng_at_step = None
        if running:  # the updates since the last row: a row of their own
            self._log_row(running)
        self.save("latest.pt")
        self.write_metrics()

    # ------------------------------------------------------------------ outputs
    def write_metrics(self) -> None:
        if not self.is_main or not self.history:
            return
        import pandas as pd

        frame = pd.DataFrame(self.history)
        with atomic_write(self.out / "metrics.csv", suffix=".csv") as tmp:
            frame.to_csv(tmp, index=False)
        plot_curves(frame, self.out / "curves.png", title=f"{self.config.model} / {self.guide.name} on "
                                                           f"{self.dataset.spec.name}",
                    unit=self.dataset.spec.metric_unit)


def plot_curves(frame, path: Path, title: str = "", unit: str = "time step") -> None:
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # keep a notebook's (inline) backend when pyplot is in use
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    annealed = "kl_scale" in frame and (frame["kl_scale"] < 1).any()  # the loss is the −ELBO once the scale is 1
    axes[0].plot(frame["step"], frame["nll_per_step"],
                 label="train loss / step (−ELBO, KL scaled)" if annealed else "train loss / step")
    if "valid" in frame:
        v = frame.dropna(subset=["valid"]) if hasattr(frame, "dropna") else frame
        axes[0].plot(v["step"], v["valid"], "o-", label=f"valid (nats per {unit})")
    axes[0].set_xlabel("update")
    axes[0].set_ylabel("nats")
    axes[0].legend()
    axes[1].plot(frame["step"], frame["kl_per_step"], label="KL / step")
    axes[1].plot(frame["step"], frame["kl_scale"], label="KL scale")
    axes[1].set_xlabel("update")
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def load_trained(path: str | os.PathLike, device="cpu") -> tuple[SequenceModel, SequenceGuide, dict]:
    """Rebuild model and guide from a checkpoint (``weights_only`` load)."""
    state = load_checkpoint(path, map_location=device)
    model = model_from_config(state["model_config"]).to(device)
    model.load_state_dict(state["model_state"])
    gconf = state["guide_config"]
    guide = GUIDES[gconf["name"]].cls(model, **gconf["hparams"]).to(device)
    guide.load_state_dict(state["guide_state"])
    model.eval()
    guide.eval()
    return model, guide, state


def train(config: TrainConfig, resume: bool = False, dataset: SequenceDataset | None = None) -> Trainer:
    trainer = Trainer(config, dataset=dataset)
    if resume:
        trainer.resume()
    trainer.fit()
    return trainer
