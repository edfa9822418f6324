"""The one batch type and the one chunking routine of the zoo.

Conventions of the study (Dai et al. 2019, ref code), used by every data set:

* A sequence ``s`` of ``N`` steps, each a vector of ``L`` values, is modelled
  autoregressively: the *targets* are ``s[1:]`` and the *inputs* are ``s[:-1]``
  (targets shifted by one step). The first step of a sequence is therefore
  never scored; a sequence of length 1 has nothing to score and yields no chunk.
* Training and evaluation cut the ``N - 1`` (input, target) pairs into chunks of
  ``chunk_len`` steps; every chunk starts from a fresh recurrent state. The last,
  partial chunk is kept and padded; its padded steps are masked out.
* ``chunk_len=None`` keeps each sequence whole (whole-sequence batching; padding
  up to the longest sequence of a batch, masked).
* ``stream=True`` is the study's concatenated-stream batching: all sequences of
  a split are joined into one stream before chunking; the target that is the
  first step of a sequence is masked so that it is still never scored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

__all__ = ["SequenceBatch", "Chunk", "chunk_sequences", "collate", "BatchSampler"]


@dataclass
class SequenceBatch:
    """Padded chunks of sequences.

    ``inputs[:, t]`` is ``x_{t-1}`` and ``targets[:, t]`` is ``x_t``, both of shape
    ``(batch, T, L)``; ``mask`` ``(batch, T)`` is True where a target is scored.
    ``seq_ids`` names the source sequence of each row (for per-sequence metrics).
    ``cache`` holds deterministic features that a model and its guide share within
    one step (e.g. the forward RNN over the inputs), so they are computed once.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    seq_ids: torch.Tensor | None = None
    cache: dict = field(default_factory=dict, repr=False, compare=False)
    #: the number of scored steps, once counted (``.to()`` counts on the CPU before moving the mask,
    #: so a batch on a GPU never reads its mask back: each such read is a synchronisation)
    _num_scored: int | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.inputs.shape != self.targets.shape or self.inputs.dim() != 3:
            raise ValueError(
                f"inputs and targets must both be (batch, T, L); got {tuple(self.inputs.shape)} "
                f"and {tuple(self.targets.shape)}"
            )
        if self.mask.shape != self.inputs.shape[:2]:
            raise ValueError(f"mask must be (batch, T) = {tuple(self.inputs.shape[:2])}, got {tuple(self.mask.shape)}")

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    @property
    def num_steps(self) -> int:
        return self.inputs.shape[1]

    @property
    def step_dim(self) -> int:
        return self.inputs.shape[2]

    @property
    def num_scored_steps(self) -> int:
        if self._num_scored is None:
            self._num_scored = int(self.mask.sum())
        return self._num_scored

    @property
    def num_scored_values(self) -> int:
        return self.num_scored_steps * self.step_dim

    def to(self, device=None, dtype=None) -> "SequenceBatch":
        kw = {"device": device}
        counted = self._num_scored
        if counted is None and self.mask.device.type == "cpu":
            counted = self.num_scored_steps
        return SequenceBatch(
            inputs=self.inputs.to(dtype=dtype or self.inputs.dtype, **kw),
            targets=self.targets.to(dtype=dtype or self.targets.dtype, **kw),
            mask=self.mask.to(**kw),
            seq_ids=None if self.seq_ids is None else self.seq_ids.to(**kw),
            _num_scored=counted,
        )

    def repeat(self, k: int) -> "SequenceBatch":
        """Each row ``k`` times, rows of one copy contiguous (``(k, batch)`` order)."""
        rep = lambda t: None if t is None else t.repeat(k, *([1] * (t.dim() - 1)))  # noqa: E731
        return SequenceBatch(rep(self.inputs), rep(self.targets), rep(self.mask), rep(self.seq_ids))

    def select(self, rows) -> "SequenceBatch":
        return SequenceBatch(
            self.inputs[rows], self.targets[rows], self.mask[rows],
            None if self.seq_ids is None else self.seq_ids[rows],
        )


@dataclass
class Chunk:
    """One (inputs, targets) chunk before padding: arrays of shape (n, L), n ≥ 1."""

    inputs: np.ndarray
    targets: np.ndarray
    seq_id: int
    scored: np.ndarray | None = None  # (n,) bool, None = all scored

    def __len__(self) -> int:
        return len(self.targets)


def _check_sequence(seq: np.ndarray, index: int, step_dim: int | None) -> None:
    if seq.ndim != 2:
        raise ValueError(f"sequence {index} must be a (steps, L) array, got shape {seq.shape}")
    if step_dim is not None and seq.shape[1] != step_dim:
        raise ValueError(f"sequence {index} has step size L={seq.shape[1]}, expected L={step_dim}")
    if not np.isfinite(seq).all():
        raise ValueError(f"sequence {index} contains NaN or inf values")


def chunk_sequences(
    sequences: Sequence[np.ndarray],
    chunk_len: int | None,
    *,
    stream: bool = False,
    step_dim: int | None = None,
) -> list[Chunk]:
    """Cut sequences into (inputs, targets) chunks following the study's convention.

    ``sequences`` is a list of ``(N_i, L)`` arrays. Returns a list of :class:`Chunk`
    in order (sequence by sequence, chunk by chunk). A length-1 sequence gives no
    chunk. With ``stream=True`` the sequences are first concatenated into one
    stream (the study's batching of the ref code); targets that begin a new
    sequence are not scored.
    """
    if chunk_len is not None and chunk_len < 1:
        raise ValueError(f"chunk_len must be ≥ 1 or None, got {chunk_len}")
    for i, s in enumerate(sequences):
        _check_sequence(np.asarray(s), i, step_dim)
    if stream:
        if not sequences:
            return []
        values = np.concatenate([np.asarray(s) for s in sequences], axis=0)
        starts = np.zeros(len(values), dtype=bool)
        # a zero-length sequence starts nothing (and a trailing one would start past the end)
        lengths = np.array([len(s) for s in sequences])
        starts[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
        scored = ~starts[1:]
        return _chunk_one(values, chunk_len, seq_id=-1, scored=scored)
    chunks: list[Chunk] = []
    for i, s in enumerate(sequences):
        chunks.extend(_chunk_one(np.asarray(s), chunk_len, seq_id=i))
    return chunks


def _chunk_one(values: np.ndarray, chunk_len: int | None, seq_id: int, scored=None) -> list[Chunk]:
    n = len(values) - 1  # number of (input, target) pairs
    if n < 1:
        return []
    c = n if chunk_len is None else chunk_len
    out = []
    for start in range(0, n, c):
        stop = min(start + c, n)
        out.append(
            Chunk(
                inputs=values[start:stop],
                targets=values[start + 1 : stop + 1],
                seq_id=seq_id,
                scored=None if scored is None else scored[start:stop],
            )
        )
    return out


def collate(chunks: Sequence[Chunk], num_steps: int | None = None, dtype=torch.float32) -> SequenceBatch:
    """Pad chunks to a common length (``num_steps`` or the longest) and stack them."""
    if not chunks:
        raise ValueError("cannot collate an empty list of chunks")
    T = num_steps or max(len(c) for c in chunks)
    L = chunks[0].targets.shape[1]
    B = len(chunks)
    inputs = np.zeros((B, T, L), dtype=np.float32)
    targets = np.zeros((B, T, L), dtype=np.float32)
    mask = np.zeros((B, T), dtype=bool)
    for b, c in enumerate(chunks):
        n = len(c)
        inputs[b, :n] = c.inputs
        targets[b, :n] = c.targets
        mask[b, :n] = True if c.scored is None else c.scored
    return SequenceBatch(
        inputs=torch.from_numpy(inputs).to(dtype),
        targets=torch.from_numpy(targets).to(dtype),
        mask=torch.from_numpy(mask),
        seq_ids=torch.tensor([c.seq_id for c in chunks], dtype=torch.long),
    )


class BatchSampler:
    """Seeded, deterministic mini-batches over a list of chunks, addressed by global step.

    Epoch ``e`` uses the permutation drawn from ``numpy.random.default_rng([seed, e])``;
    the batch of global step ``k`` is therefore a pure function of ``(seed, k)``, so a
    resumed run sees exactly the batches an uninterrupted run would. Incomplete last
    batches of an epoch are dropped in training (every step has ``batch_size`` rows).
    With ``world_size > 1`` each rank gets a contiguous shard of the global batch.
    """

    def __init__(self, chunks: Sequence[Chunk], batch_size: int, seed: int = 0, *, rank: int = 0,
                 world_size: int = 1, pad_to: int | None = None):
        if not chunks:
            raise ValueError("no training chunks: the split is empty (or every sequence has length 1)")
        if batch_size < 1:
            raise ValueError(f"batch size must be ≥ 1, got {batch_size}")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the world size {world_size}")
        self.chunks = list(chunks)
        # a split smaller than one batch trains on all of it every step
        bs = min(batch_size, len(self.chunks))
        self.batch_size = bs - bs % world_size
        if self.batch_size == 0:
            raise ValueError(f"{len(self.chunks)} chunks cannot be shared by {world_size} ranks")
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad_to = pad_to
        self.batches_per_epoch = max(1, len(self.chunks) // self.batch_size)

    def indices(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.batches_per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.chunks))
        idx = perm[k * self.batch_size : (k + 1) * self.batch_size]
        per_rank = len(idx) // self.world_size
        return idx[self.rank * per_rank : (self.rank + 1) * per_rank]

    def batch(self, step: int) -> SequenceBatch:
        return collate([self.chunks[i] for i in self.indices(step)], num_steps=self.pad_to)


def iterate_batches(chunks: Sequence[Chunk], batch_size: int) -> Iterator[SequenceBatch]:
    """All chunks in order, in batches (the last one may be smaller): for evaluation."""
    for start in range(0, len(chunks), batch_size):
        yield collate(chunks[start : start + batch_size])
