"""Shared fixtures. Pyro validation is on for every test; Pyro warnings are errors (pyproject)."""
from __future__ import annotations

import os

import numpy as np
import pyro
import pytest
import torch

from pyro_srnn.data.core import DataSpec, SequenceDataset
from pyro_srnn.data import chunk_sequences, collate

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _pyro_validation_and_seed():
    pyro.enable_validation(True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    # tiny models: one intra-op thread is many times faster than two contending ones
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class HostReadLog:
    """Names of the tensor reads back to Python (``bool()``, ``.item()``, ``float()``, …) made while
    ``active``: on a GPU each one is a host–device synchronisation."""

    METHODS = ("__bool__", "item", "__float__", "__int__", "tolist")

    def __init__(self):
        self.events: list[str] = []
        self.active = True


@pytest.fixture
def host_reads(monkeypatch) -> HostReadLog:
    """Records every tensor read back to the host during the test (see :class:`HostReadLog`)."""
    log = HostReadLog()
    for method in HostReadLog.METHODS:
        original = getattr(torch.Tensor, method)

        def read(self, *args, _original=original, _method=method, **kwargs):
            if log.active:
                log.events.append(_method)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, read)
    return log


def make_spec(family: str = "bernoulli", L: int = 6, chunk_len: int | None = 8, unit: str = "time step",
              domain: str | None = None) -> DataSpec:
    domain = domain or {"bernoulli": "midi", "gaussian": "speech", "handwriting": "handwriting"}[family]
    return DataSpec(name=f"tiny-{family}", step_dim=L, family=family, domain=domain, chunk_len=chunk_len,
                    metric_unit=unit)


def random_sequences(family: str, L: int, lengths, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        if family == "bernoulli":
            out.append((rng.random((n, L)) < 0.3).astype(np.float32))
        elif family == "handwriting":
            pen = (rng.random((n, 1)) < 0.1).astype(np.float32)
            out.append(np.concatenate([pen, rng.normal(size=(n, 2)).astype(np.float32)], axis=1))
        else:
            out.append(rng.normal(size=(n, L)).astype(np.float32))
    return out


def make_dataset(family: str = "bernoulli", L: int = 6, chunk_len: int | None = 8, n_train: int = 12,
                 seed: int = 0) -> SequenceDataset:
    spec = make_spec(family, L, chunk_len)
    rng = np.random.default_rng(seed)
    lengths = lambda n: rng.integers(5, 20, size=n)  # noqa: E731
    return SequenceDataset(spec, random_sequences(family, L, lengths(n_train), seed),
                           random_sequences(family, L, lengths(4), seed + 1),
                           random_sequences(family, L, lengths(4), seed + 2))


def make_batch(family: str = "bernoulli", L: int = 6, lengths=(9, 6, 3), chunk_len: int | None = None, seed: int = 0):
    """A padded batch with ragged lengths (so masking is exercised)."""
    seqs = random_sequences(family, L, lengths, seed)
    return collate(chunk_sequences(seqs, chunk_len, step_dim=L))


@pytest.fixture
def tiny_dataset():
    return make_dataset()
