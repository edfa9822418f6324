"""Bach chorales from the music21 corpus: the embedded default data set ``bach_chorales``.

The 371 Riemenschneider chorales ship with music21 (no network). Conventions of
this converter (close to, but not the same as, the published JSB Chorales
benchmark, which has its own reader ``jsb_chorales``):

* **kept files**: the chorales with exactly four parts (SATB); others are skipped;
* **repeats** are written out with ``expandRepeats()`` where music21 can (else the
  score is kept as notated);
* **transposition**: each chorale is transposed so that the tonic of its
  analysed key (music21's Krumhansl key finder) is C: major → C major, minor → C minor,
  by the smallest interval (within ±6 semitones), as in the JSB benchmark;
* **time step**: one quarter note; a key is on at step ``k`` when a note sounds at
  quarter-note time ``k`` (onset ≤ k < onset + duration);
* **keys**: 88 piano keys, MIDI 21 (A0) … 108 (C8);
* **split**: by piece, a fixed seeded shuffle (seed 0) of the sorted file names,
  60 % train / 20 % valid / 20 % test.

The result is cached as ``bach_chorales-v1.npz`` under :func:`~pyro_srnn.data.core.cache_dir`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .core import CacheError, DataError, DataSpec, SequenceDataset, cache_dir, load_splits, save_splits

NUM_KEYS = 88
LOWEST_MIDI = 21
CACHE_VERSION = "v1"

SPEC = DataSpec(name="bach_chorales", step_dim=NUM_KEYS, family="bernoulli", domain="midi",
                chunk_len=100, metric_unit="time step", flat_chunk_len=None)


def chorale_names() -> list[str]:
    """Sorted corpus paths of the Riemenschneider chorales shipped with music21."""
    from music21 import corpus

    return sorted(str(n) for n in corpus.chorales.Iterator(returnType="filename"))


def score_to_roll(score, steps_per_quarter: int = 1) -> np.ndarray:
    """A music21 score → ``(steps, 88)`` binary roll, ``steps_per_quarter`` steps per quarter note."""
    length = int(np.ceil(float(score.highestTime) * steps_per_quarter))
    roll = np.zeros((max(length, 1), NUM_KEYS), dtype=np.float32)
    for element in score.recurse().notes:
        onset = float(element.getOffsetInHierarchy(score)) * steps_per_quarter
        end = onset + float(element.duration.quarterLength) * steps_per_quarter
        first, last = int(np.ceil(onset - 1e-6)), int(np.ceil(end - 1e-6))  # steps k with onset ≤ k < end
        for pitch in element.pitches:
            key = pitch.midi - LOWEST_MIDI
            if 0 <= key < NUM_KEYS and last > first:
                roll[first:last, key] = 1.0
    return roll


def convert_chorale(name: str) -> np.ndarray | None:
    """Parse one chorale and return its roll, or None when it is not a four-part chorale."""
    from music21 import corpus, interval, pitch

    score = corpus.parse(name)
    if len(score.parts) != 4:
        return None
    key = score.analyze("key")
    shift = (pitch.Pitch("C").pitchClass - key.tonic.pitchClass) % 12
    if shift > 6:
        shift -= 12
    try:
        score = score.expandRepeats()
    except Exception:  # music21 raises several types on malformed repeat marks
        pass
    if shift:
        score = score.transpose(interval.Interval(shift))
    return score_to_roll(score)


def split_names(names: list[str], seed: int = 0, fractions=(0.6, 0.2)) -> dict[str, list[str]]:
    perm = np.random.default_rng(seed).permutation(len(names))
    n_train = int(round(fractions[0] * len(names)))
    n_valid = int(round(fractions[1] * len(names)))
    pick = lambda idx: [names[i] for i in sorted(idx)]  # noqa: E731
    return {
        "train": pick(perm[:n_train]),
        "valid": pick(perm[n_train : n_train + n_valid]),
        "test": pick(perm[n_train + n_valid :]),
    }


def cache_path(max_pieces: int | None = None) -> Path:
    suffix = "" if max_pieces is None else f"-first{max_pieces}"
    return cache_dir() / f"bach_chorales-{CACHE_VERSION}{suffix}.npz"


def load_bach_chorales(data_dir: str | None = None, *, max_pieces: int | None = None,
                       workers: int | None = None, progress: bool = True) -> SequenceDataset:
    """Load (converting once, then from the cache) the music21 Bach chorales.

    ``max_pieces`` keeps only the first N chorale files (sorted), for quick tests.
    ``data_dir`` is unused: the corpus ships with music21.
    """
    path = cache_path(max_pieces)
    try:
        splits, meta = load_splits(path, required=("train", "valid", "test"))
        return SequenceDataset(SPEC, splits["train"], splits["valid"], splits["test"],
                               info={"cache": str(path), "from_cache": True,
                                     "pieces": int(meta.get("pieces", -1))})
    except (FileNotFoundError, CacheError):  # not converted yet, or damaged: convert (again)
        pass
    try:
        names = chorale_names()
    except ImportError as e:  # pragma: no cover - music21 is a dependency
        raise DataError("bach_chorales needs music21 (pip install music21)") from e
    if max_pieces is not None:
        names = names[:max_pieces]
    rolls = _convert_all(names, workers=workers, progress=progress)
    kept = {n: r for n, r in zip(names, rolls) if r is not None and len(r) > 1}
    if not kept:
        raise DataError("bach_chorales: no four-part chorale could be converted from the music21 corpus")
    parts = split_names(sorted(kept))
    splits = {k: [kept[n] for n in v] for k, v in parts.items()}
    empty = [k for k, v in splits.items() if not v]
    if empty:
        raise DataError(f"bach_chorales: the {' and '.join(empty)} split is empty ({len(kept)} chorales "
                        "converted, split 60/20/20 %); use more pieces (max_pieces)")
    save_splits(path, splits, pieces=len(kept))
    return SequenceDataset(SPEC, splits["train"], splits["valid"], splits["test"],
                           info={"cache": str(path), "from_cache": False, "pieces": len(kept)})


def _convert_all(names, workers=None, progress=True, convert=None, desc="bach_chorales: converting"):
    """``convert`` (default :func:`convert_chorale`) over ``names``, in ``workers`` processes when many."""
    from tqdm.auto import tqdm

    convert = convert_chorale if convert is None else convert
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    if workers > 1 and len(names) > 8:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            it = pool.imap(convert, names, chunksize=4)
            return list(tqdm(it, total=len(names), desc=desc, disable=not progress))
    return [convert(n) for n in tqdm(names, desc=desc, disable=not progress)]
