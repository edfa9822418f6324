"""Data-set specs, the split container, the on-disk cache and the data-set registry.

Every reader returns a :class:`SequenceDataset`: three lists of ``(steps, L)``
float32 arrays plus a :class:`DataSpec` that says what the values are (which
output family models them), how the study chunks them, and the unit of the
reported metric. Readers convert once and cache the result as ``.npz`` under
:func:`cache_dir`; the write is atomic (temporary name, fsync, then ``os.replace``)
and the file gets the mode an ordinary write would (0666 less the umask). A cache
that cannot be read back (:class:`CacheError`) is converted again from the source.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = [
    "DataSpec", "SequenceDataset", "DatasetEntry", "DATASETS", "register_dataset", "load_dataset",
    "cache_dir", "atomic_write", "write_text_atomic", "save_splits", "load_splits", "DataError", "METRIC_UNITS",
    "versioned_cache_path", "dataset_from_cache", "cached_dataset", "CacheError",
]


class DataError(ValueError):
    """Bad or missing input data. The message names the file and the problem."""

    def __init__(self, message="", *args):
        if isinstance(message, str):
            message = printable(message)
        super().__init__(message, *args)


class CacheError(DataError):
    """A cache file that cannot be read back (damaged, cut short, or not written by :func:`save_splits`)."""


def printable(text: str) -> str:
    """``text`` with the bytes of undecodable file names shown as ``\\xNN``.

    ``os.listdir``/``Path.rglob`` give a name that is not UTF-8 as lone surrogates
    (``surrogateescape``); printing such a string raises UnicodeEncodeError, so a message
    naming the file would itself crash the command that reports it.
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


#: reported metric units (SPEC §4) → how the summed log-likelihood is divided
METRIC_UNITS = {
    "time step": "steps",  # per scored step (sum over the L values of a step)
    "utterance": "sequences",  # per test sequence (TIMIT)
    "line": "sequences",  # per handwriting line (IAM-OnDB)
    "audio sample": "values",  # per scored value (VCTK)
    "8000 samples": "values",  # per 8000 scored values (Blizzard), i.e. 0.5 s at 16 kHz
    "value": "values",
}


@dataclass(frozen=True)
class DataSpec:
    """What a data set's steps are.

    ``family`` picks the output head: ``"bernoulli"`` (binary values, MIDI),
    ``"gaussian"`` (real values, speech) or ``"handwriting"`` (pen bit, dx, dy).
    ``chunk_len`` is the study's training/evaluation chunk length in steps (None:
    whole sequences). ``metric_unit`` is one of :data:`METRIC_UNITS`.
    """

    name: str
    step_dim: int
    family: str
    domain: str
    chunk_len: int | None
    metric_unit: str = "time step"
    flat_chunk_len: int | None = None  # chunk length of the flat models, in values

    def __post_init__(self):
        if self.family not in ("bernoulli", "gaussian", "handwriting"):
            raise ValueError(f"unknown output family {self.family!r}")
        if self.metric_unit not in METRIC_UNITS:
            raise ValueError(f"unknown metric unit {self.metric_unit!r}; known: {sorted(METRIC_UNITS)}")
        if self.family == "handwriting" and self.step_dim != 3:
            raise ValueError("handwriting steps are (pen, dx, dy): L must be 3")

    def metric_divisor(self, num_steps: int, num_sequences: int) -> float:
        """Denominator turning a summed log-likelihood into the study's unit."""
        kind = METRIC_UNITS[self.metric_unit]
        if kind == "steps":
            return float(num_steps)
        if kind == "sequences":
            return float(num_sequences)
        values = float(num_steps * self.step_dim)
        return values / 8000.0 if self.metric_unit == "8000 samples" else values

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SequenceDataset:
    """Train/valid/test lists of ``(steps, L)`` float32 arrays and their spec."""

    spec: DataSpec
    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> list[np.ndarray]:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}; use train, valid or test")
        return getattr(self, name)

    def validate(self) -> "SequenceDataset":
        """Check shapes and values once, with a message naming the data set."""
        for split in ("train", "valid", "test"):
            for i, s in enumerate(self.split(split)):
                if s.ndim != 2 or s.shape[1] != self.spec.step_dim:
                    raise DataError(
                        f"{self.spec.name}: {split} sequence {i} has shape {s.shape}, "
                        f"expected (steps, {self.spec.step_dim})"
                    )
                if not np.isfinite(s).all():
                    raise DataError(f"{self.spec.name}: {split} sequence {i} contains NaN or inf")
        return self

    def summary(self) -> dict:
        return {
            split: {"sequences": len(self.split(split)), "steps": int(sum(len(s) for s in self.split(split)))}
            for split in ("train", "valid", "test")
        }


# --------------------------------------------------------------------------- cache

def cache_dir() -> Path:
    """``$PYRO_SRNN_CACHE``, else ``$XDG_CACHE_HOME/pyro_srnn``, else ``~/.cache/pyro_srnn``."""
    explicit = os.environ.get("PYRO_SRNN_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyro_srnn"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any error the temporary file is removed, so a reader never sees a
    half-written file (POSIX ``rename`` is atomic within one directory).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600; the file gets the mode open() would give it: an existing file's own, else
        # 0666 less the umask. A file system without modes (FAT, some network mounts) may refuse: the
        # data matters more than the mode
        with contextlib.suppress(OSError):
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)
            except FileNotFoundError:
                mode = 0o666 & ~_umask()
            os.chmod(tmp, mode)
        # flush the data before the rename, so a crash cannot leave the new name on an empty file
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``,
    kernel >= 4.7); elsewhere set and restored at once (another thread could see it briefly)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``path.write_text(text)`` through :func:`atomic_write`: the old file or the whole new one, never half."""
    with atomic_write(path, suffix=Path(path).suffix) as tmp:
        tmp.write_text(text)


def save_splits(path: str | os.PathLike, splits: dict[str, list[np.ndarray]], **meta) -> None:
    """Write split lists of sequences to one ``.npz`` (values + offsets per split), atomically."""
    arrays = {}
    for name, seqs in splits.items():
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        width = seqs[0].shape[1] if seqs else 0
        arrays[f"{name}_values"] = (
            np.concatenate(seqs, axis=0).astype(np.float32) if seqs else np.zeros((0, width), np.float32)
        )
        arrays[f"{name}_lengths"] = lengths
    for key, value in meta.items():
        arrays[f"meta_{key}"] = np.asarray(value)
    with atomic_write(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_splits(path: str | os.PathLike, required: tuple[str, ...] = ()) -> tuple[dict[str, list[np.ndarray]], dict]:
    """Inverse of :func:`save_splits` (no pickles are loaded).

    A file that cannot be read back as written (cut short, damaged, or lacking one of the
    ``required`` splits) raises :class:`CacheError` naming it.
    """
    try:
        # our own file object: np.load leaves the file it opened unclosed when the archive is damaged
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            splits, meta = {}, {}
            for key in z.files:
                if key.endswith("_values"):
                    name = key[: -len("_values")]
                    values, lengths = z[key], z[f"{name}_lengths"]
                    if values.ndim != 2 or lengths.ndim != 1 or (lengths < 0).any() or lengths.sum() != len(values):
                        raise ValueError(f"split {name!r}: the lengths do not add up to the {len(values)} rows")
                    bounds = np.cumsum(np.concatenate([[0], lengths]))
                    splits[name] = [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
                elif key.startswith("meta_"):
                    meta[key[5:]] = z[key]
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise CacheError(f"{path}: damaged cache file ({type(e).__name__}: {e}); delete it, or convert again "
                         "with rebuild=True (refresh=True for speech)") from e
    missing = [name for name in required if name not in splits]
    if missing:
        raise CacheError(f"{path}: damaged cache file (no {', '.join(missing)} split); delete it, or convert "
                         "again with rebuild=True (refresh=True for speech)")
    return splits, meta


def versioned_cache_path(name: str, version: str, key: str) -> Path:
    """``<cache_dir>/<name>-<version>-<key>.npz``: one file per source and conversion options."""
    return cache_dir() / f"{name}-{version}-{key}.npz"


def dataset_from_cache(spec: DataSpec, path: str | os.PathLike) -> SequenceDataset:
    """A data set written by :func:`save_splits`; its metadata becomes ``info`` (plain Python values)."""
    splits, meta = load_splits(path, required=("train", "valid", "test"))
    info = {k: (v.item() if np.ndim(v) == 0 else v.tolist()) for k, v in meta.items()}
    info.update(cache=str(path), from_cache=True)
    return SequenceDataset(spec, splits["train"], splits["valid"], splits["test"], info=info)


def cached_dataset(spec: DataSpec, path: str | os.PathLike) -> SequenceDataset | None:
    """:func:`dataset_from_cache`, or None when the file is missing or damaged.

    Readers call it only once their source is known to be there, so a damaged cache (a
    crash, a full disk, a copy cut short) is converted again and replaced atomically
    instead of stopping the user.
    """
    if not Path(path).exists():
        return None
    try:
        return dataset_from_cache(spec, path)
    except CacheError:
        return None


# --------------------------------------------------------------------------- registry

@dataclass
class DatasetEntry:
    """A registered data set: its loader and what ``pyro-srnn datasets`` says about it."""

    name: str
    loader: Callable[..., SequenceDataset]
    description: str
    source: str  # where it reads from
    how_to_get: str
    available: Callable[[str | None], bool] = lambda data_dir: True
    env_var: str | None = None  # environment variable naming the data directory


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    if entry.name in DATASETS:
        raise ValueError(f"data set {entry.name!r} registered twice")
    DATASETS[entry.name] = entry
    return entry


def resolve_data_dir(entry: DatasetEntry, data_dir: str | None) -> str | None:
    if data_dir:
        return data_dir
    return os.environ.get(entry.env_var) if entry.env_var else None


def load_dataset(name: str, data_dir: str | None = None, **kwargs) -> SequenceDataset:
    """Load a registered data set by name (``data_dir`` or its environment variable)."""
    from . import ensure_registered

    ensure_registered()
    if name not in DATASETS:
        raise KeyError(name)
    entry = DATASETS[name]
    ds = entry.loader(resolve_data_dir(entry, data_dir), **kwargs)
    return ds.validate()
