"""A restricted unpickler for the Boulanger-Lewandowski note pickles.

A pickle is a small program: loading one may call any importable function
(``os.system`` included). The published polyphonic-music files (MuseData,
Nottingham, JSB Chorales, Piano-midi.de) are ``dict(train=…, valid=…, test=…)``
of songs → time steps → tuples of MIDI note numbers, where the note numbers are
numpy integer scalars. Loading them needs only the plain containers, numbers,
strings and these globals:

* ``numpy.core.multiarray.scalar`` (files written under numpy 1) and
  ``numpy._core.multiarray.scalar`` (numpy 2): rebuild one scalar from a dtype
  and its raw bytes. Here only **integer** dtypes are accepted;
* ``numpy.dtype``: only from a type string such as ``"i8"`` / ``"<i4"``, always a fresh copy
  (the pickle's BUILD then sets the state of that copy only). A scalar accepts only a dtype
  rebuilt from its type string (``numpy.dtype(d.str)``) with no fields and no Python objects,
  so a BUILD state cannot turn it into a structured or object dtype;
* ``_codecs.encode``: only ``encode(str, "latin1")``. This is how a protocol-2
  pickle written by Python 3 spells a ``bytes`` object (the scalars' payload);
  Python 2 files carry the payload as a ``str`` and need no global for it.

Every other global (``os.system``, ``builtins.eval``, ``numpy.frombuffer``, …)
is refused *before* anything is called, with a :class:`~pyro_srnn.data.core.DataError`
naming the file and the global. Persistent ids and extension codes are refused too.
"""
from __future__ import annotations

import io
import os
import pickle

import numpy as np

from .core import DataError

__all__ = ["safe_load", "ALLOWED_GLOBALS"]

#: the (module, name) pairs :func:`safe_load` resolves; everything else is refused
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
})


def _make_guards(path: str):
    def plain(dtype: np.dtype, what: str) -> np.dtype:
        # a dtype rebuilt from its type string alone, with no fields, sub-arrays or Python objects
        if dtype.names is not None or dtype.hasobject or dtype.shape != ():
            raise DataError(f"{path}: refused {what} {dtype!r}: structured and object dtypes are not allowed")
        clean = np.dtype(dtype.str)
        if clean.names is not None or clean.hasobject or clean.shape != ():
            raise DataError(f"{path}: refused {what} {dtype!r}: structured and object dtypes are not allowed")
        return clean

    def safe_dtype(spec, *rest):
        # numpy pickles dtypes as dtype("i8", False, True) (older numpy: dtype("i8", 0, 1)), then BUILD(state)
        if not isinstance(spec, str) or len(rest) > 2 or any(r not in (0, 1) for r in rest):
            raise DataError(f"{path}: refused numpy.dtype({spec!r}, ...): only type strings are allowed")
        try:
            built = np.dtype(spec)
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: refused numpy.dtype({spec!r}): {e}") from None
        # always a fresh copy (copy=True): the BUILD that follows sets the state of this object only. That
        # state can still add fields or object members, so safe_scalar checks the dtype it is given again
        return np.dtype(plain(built, "numpy.dtype").str, False, True)

    def safe_scalar(dtype, payload=None):
        if not isinstance(dtype, np.dtype) or dtype.kind not in "iu":
            raise DataError(f"{path}: refused numpy scalar of dtype {dtype!r}: only integer note numbers "
                            "are allowed")
        dtype = plain(dtype, "numpy scalar of dtype")  # whatever BUILD made of it
        if not isinstance(payload, (bytes, str)):
            raise DataError(f"{path}: refused numpy scalar with a payload of type {type(payload).__name__}")
        if isinstance(payload, str):  # Python 2 pickles, read with encoding="latin1"
            payload = payload.encode("latin1")
        if len(payload) != dtype.itemsize:
            raise DataError(f"{path}: numpy scalar payload has {len(payload)} bytes, dtype {dtype} needs "
                            f"{dtype.itemsize}")
        return np.frombuffer(payload, dtype=dtype)[0]

    def safe_encode(text, encoding="utf-8", *rest):
        if not isinstance(text, str) or encoding != "latin1" or rest:
            raise DataError(f"{path}: refused _codecs.encode with arguments ({type(text).__name__}, "
                            f"{encoding!r}): only encode(str, 'latin1') is allowed")
        return text.encode("latin1")

    return {
        ("numpy.core.multiarray", "scalar"): safe_scalar,
        ("numpy._core.multiarray", "scalar"): safe_scalar,
        ("numpy", "dtype"): safe_dtype,
        ("_codecs", "encode"): safe_encode,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file, encoding="latin1")  # Python 2 str payloads arrive as latin-1 str
        self._path = path
        self._guards = _make_guards(path)

    def find_class(self, module, name):
        guard = self._guards.get((module, name))
        if guard is None:
            raise DataError(f"{self._path}: refused to load global {module}.{name}: a note pickle may only "
                            "contain dicts, lists, tuples, numbers, strings and numpy integer scalars")
        return guard

    def persistent_load(self, pid):
        raise DataError(f"{self._path}: refused persistent id {pid!r} in a note pickle")


def safe_load(path: str | os.PathLike):
    """Load a note pickle with the restricted unpickler (see the module docstring)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the note pickle ({e.strerror or e})") from e
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as e:  # truncated or corrupt stream: pickle raises many types
        raise DataError(f"{path}: not a readable note pickle ({type(e).__name__}: {e})") from e
