"""The cache layer every reader shares: atomic writes and reading a cache back."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from pyro_srnn.data import DataError, atomic_write, load_splits, save_splits, write_text_atomic
from pyro_srnn.data.core import CacheError


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the old one back."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077], ids=oct)
def test_atomic_writes_get_the_mode_of_an_ordinary_file(tmp_path, umask, mask):
    umask(mask)
    text, npz = tmp_path / "metrics.csv", tmp_path / "cache" / "x.npz"
    write_text_atomic(text, "a,b\n")
    save_splits(npz, {"train": [np.ones((3, 2), np.float32)]})
    with atomic_write(tmp_path / "ckpt.pt") as tmp:
        tmp.write_bytes(b"weights")
    for path in (text, npz, tmp_path / "ckpt.pt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    assert os.umask(mask) == mask  # reading the umask left it as it was
    os.chmod(text, 0o600)  # a file kept private on purpose stays so when written again
    write_text_atomic(text, "a,b\n1,2\n")
    assert stat.S_IMODE(text.stat().st_mode) == 0o600 and text.read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ckpt.pt", "metrics.csv"]  # no temporary


def test_a_damaged_cache_file_is_one_clear_error(tmp_path):
    path = tmp_path / "x.npz"
    save_splits(path, {"train": [np.ones((3, 2), np.float32)], "valid": [], "test": []})
    good = path.read_bytes()
    for damaged in (good[: len(good) // 2], b"not a zip", good[:-30] + b"\0" * 30):
        path.write_bytes(damaged)
        with pytest.raises(CacheError, match=r"damaged cache file .*delete it, or convert again") as err:
            load_splits(path)
        assert str(path) in str(err.value) and isinstance(err.value, DataError)
    path.write_bytes(good)
    with pytest.raises(CacheError, match="no other split"):
        load_splits(path, required=("train", "other"))
    with pytest.raises(FileNotFoundError):  # missing is not damaged
        load_splits(tmp_path / "missing.npz")


def test_data_errors_naming_undecodable_file_names_can_be_printed():
    name = os.fsdecode(b"/data/caf\xe9.wav")  # how os.listdir gives a Latin-1 name
    message = str(DataError(f"{name}: not readable audio"))
    assert message == "/data/caf\\xe9.wav: not readable audio"
    message.encode("utf-8")
