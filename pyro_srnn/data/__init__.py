"""Data: the batch type, chunking, the cache and the data-set readers.

Readers register themselves in :data:`DATASETS` (see :mod:`pyro_srnn.data.registry`).
"""
from .batch import BatchSampler, Chunk, SequenceBatch, chunk_sequences, collate, iterate_batches
from .core import (
    DATASETS, DataError, DataSpec, DatasetEntry, SequenceDataset, atomic_write, cache_dir,
    load_dataset, load_splits, register_dataset, save_splits, write_text_atomic,
)

_REGISTERED = False


def ensure_registered() -> None:
    """Import the readers once so that they register their data sets."""
    global _REGISTERED
    if not _REGISTERED:
        _REGISTERED = True
        from . import registry  # noqa: F401


__all__ = [
    "BatchSampler", "Chunk", "SequenceBatch", "chunk_sequences", "collate", "iterate_batches",
    "DATASETS", "DataError", "DataSpec", "DatasetEntry", "SequenceDataset", "atomic_write",
    "cache_dir", "load_dataset", "load_splits", "register_dataset", "save_splits", "write_text_atomic",
    "ensure_registered",
]
