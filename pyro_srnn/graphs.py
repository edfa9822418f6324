"""CUDA graphs of the training step (``train --cuda-graph``, the default on a GPU): Pyro's Python runs
once, its kernels replay.

On a GPU the steps of most models here are launch-bound: the host's Python — Pyro tracing guide and
model, the sample sites, the plate, autograd, the launches of a 100-step sampling loop — decides the
step time, not the kernels. ``benchmarks/bench_graphs.py`` measured it (one H200, 2026-11-26, the
study's MIDI presets, all 13 models): captured, Pyro's step costs what the hand-written torch step
costs (0.965–1.026×; eagerly seven models are 1.06–1.12×, ``bench_step_cuda.csv``), and the trainer's
step is 1.4–2.2× faster for the launch-bound models and 3.3–5.8× for the sequential ones.

What is captured is everything up to the step's one read back to the host: the loss (Pyro's ELBO
module: guide and model traced, every site scored), the reconstruction term, the backward pass of the
loss over the value count and the gradient-norm clipping. The trainer then reads loss, reconstruction
and gradient norm as in an eager step, stops before any update when one is not finite, and runs the
optimiser and the learning rate eagerly (a fused Adam: a few launches). So checkpoints, ``--resume`` and
the learning-rate schedule are those of eager training, and a diverging step still names its site
(the trainer re-runs that batch eagerly with Pyro's checks on).

A captured step reads its inputs from static buffers: each step copies its batch into them and fills
the KL scale and the value count (0-dim device tensors; the models take the KL scale as a tensor in
``poutine.scale`` unchanged) before the replay. A graph fixes the batch's shape, so there is one per
shape (the trainer pads chunked batches to the chunk length, so one in all); past ``max_graphs``
shapes, steps of a new shape run eagerly. The gradients live in each graph's memory and are pointed to
by ``param.grad`` after each replay. Before a capture, ``warmup`` forward-backward passes run on a side
stream (cuDNN and cuBLAS plans, the allocator), their gradients dropped. Random draws replay from the
CUDA generator's advancing offset: fresh noise at every replay.

Not combined with Pyro's validation at every step (each check reads a value back to the host, which a
capture forbids; the default ``--pyro-validation first`` checks the first, eager step) or with
data-parallel training (its collectives are not captured): there the trainer steps eagerly, and
refuses ``--cuda-graph`` when asked for (:func:`pyro_srnn.train.use_cuda_graph`). A step that cannot
be captured raises :class:`GraphCaptureError` (one cause met in practice, and named by the error: an
autograd graph over the parameters kept alive from an eager pass, e.g. a stored loss, whose
accumulate-grad nodes belong to the stream that pass ran on); a failed capture can leave the
process's CUDA random generator unusable, so the way on is a new process with ``--no-cuda-graph``.

Reference: PyTorch, "CUDA Graphs" (``torch.cuda.graph``, whole-network capture).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from .data.batch import SequenceBatch

__all__ = ["GraphedStep", "GraphCaptureError", "capture_graph", "graph_key"]


class GraphCaptureError(RuntimeError):
    """A training step that a CUDA graph could not hold (the cause is chained)."""


#: what a capture that met accumulate-grad nodes of another stream means, and the way out
LIVE_GRAPH_HINT = (": an autograd graph over these parameters made before the capture is still alive (a loss or "
                   "output kept from an earlier forward pass holds their accumulate-grad nodes, which belong to "
                   "the stream it ran on); delete it before training")

#: ``(batch, kl_scale, divisor) -> tensor [loss, reconstruction, gradient norm]``, after backward and clipping
StepPass = Callable[[SequenceBatch, object, object], torch.Tensor]


def graph_key(batch: SequenceBatch) -> tuple:
    """What a captured graph fixes about a batch: shapes and dtypes of its tensors."""
    return (tuple(batch.inputs.shape), batch.inputs.dtype, batch.targets.dtype,
            None if batch.seq_ids is None else tuple(batch.seq_ids.shape))


@dataclass
class _Captured:
    batch: SequenceBatch  # the static input buffers
    kl_scale: torch.Tensor
    divisor: torch.Tensor
    graph: "torch.cuda.CUDAGraph"
    read: torch.Tensor  # the static output: [loss, reconstruction, gradient norm]
    grads: list  # each parameter's gradient in this graph's memory (None: no gradient)


def capture_graph(fn: Callable[[], torch.Tensor], warmup: int, device, *,
                  after_warmup: Callable[[], None] | None = None) -> tuple["torch.cuda.CUDAGraph", torch.Tensor]:
    """``fn`` captured in a CUDA graph, and its output (a static tensor: each ``graph.replay()`` rewrites it).

    ``warmup`` calls run first on a side stream — cuDNN and cuBLAS plans, the allocator's pools, state
    made on first use (Adam's) — each followed by ``after_warmup`` (drop the gradients it made), as
    ``torch.cuda.graph`` asks. The trainer's step (:class:`GraphedStep`) and ``bench_graphs.py``'s
    whole step (optimiser included) are both captured here.
    """
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
            if after_warmup is not None:
                after_warmup()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


class GraphedStep:
    """Runs ``step_pass`` (forward, backward, clipping) of a batch as a replayed CUDA graph, one per shape.

    ``__call__(batch, kl_scale, divisor)`` returns the pass's output (a static tensor, overwritten at the
    next replay: read it first) with the gradients in ``param.grad``, or ``None`` when the batch has
    a new shape and ``max_graphs`` graphs exist (run that step eagerly).
    """

    def __init__(self, step_pass: StepPass, params, *, warmup: int = 2, max_graphs: int = 8):
        if warmup < 1:
            raise ValueError("a capture needs at least one warm-up pass")
        self.step_pass = step_pass
        self.params = list(params)
        self.warmup = warmup
        self.max_graphs = max_graphs
        self.graphs: dict[tuple, _Captured] = {}
        self.replays = 0
        self._warned = False

    def __call__(self, batch: SequenceBatch, kl_scale: float, divisor: float) -> torch.Tensor | None:
        key = graph_key(batch)
        captured = self.graphs.get(key)
        if captured is None:
            if len(self.graphs) >= self.max_graphs:
                if not self._warned:
                    warnings.warn(f"--cuda-graph: more than {self.max_graphs} batch shapes; steps of further "
                                  "shapes run eagerly", RuntimeWarning, stacklevel=2)
                    self._warned = True
                return None
            with warnings.catch_warnings(record=True) as caught:  # kept to explain a failure
                try:
                    captured = self._capture(batch, kl_scale, divisor)
                except Exception as e:  # noqa: BLE001 — name the feature and the way out, keep the cause
                    self._clear_grads()
                    cause = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    said = [str(w.message) for w in caught] + [str(e), str(e.__cause__ or e.__context__ or "")]
                    raise GraphCaptureError(
                        f"the training step could not be captured in a CUDA graph ({cause})"
                        + (LIVE_GRAPH_HINT if any("AccumulateGrad" in text for text in said) else "")
                        + "; train with --no-cuda-graph, in a new process (a failed capture can leave this "
                        "one's CUDA random generator unusable)") from e
            for w in caught:  # a capture that worked: its warnings go on as they came
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
            self.graphs[key] = captured
        static = captured.batch
        static.inputs.copy_(batch.inputs, non_blocking=True)
        static.targets.copy_(batch.targets, non_blocking=True)
        static.mask.copy_(batch.mask, non_blocking=True)
        if static.seq_ids is not None:
            static.seq_ids.copy_(batch.seq_ids, non_blocking=True)
        captured.kl_scale.fill_(float(kl_scale))  # a kernel argument: no copy from the host
        captured.divisor.fill_(float(divisor))
        captured.graph.replay()
        for p, g in zip(self.params, captured.grads):
            p.grad = g
        self.replays += 1
        return captured.read

    def _capture(self, batch: SequenceBatch, kl_scale: float, divisor: float) -> _Captured:
        device = batch.inputs.device
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a batch on a CUDA device, got {device}")
        static = SequenceBatch(batch.inputs.clone(), batch.targets.clone(), batch.mask.clone(),
                               None if batch.seq_ids is None else batch.seq_ids.clone())
        kl = torch.full((), float(kl_scale), device=device)
        div = torch.full((), float(divisor), device=device)

        def run():  # a fresh batch object each pass: the shared-feature cache is per step
            return self.step_pass(SequenceBatch(static.inputs, static.targets, static.mask, static.seq_ids), kl, div)

        self._clear_grads()
        graph, read = capture_graph(run, self.warmup, device, after_warmup=self._clear_grads)
        grads = [p.grad for p in self.params]  # made in the capture: they live in the graph's memory
        return _Captured(static, kl, div, graph, read, grads)

    def _clear_grads(self) -> None:
        for p in self.params:
            p.grad = None
