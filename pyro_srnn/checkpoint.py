"""Checkpoints: written atomically, loaded with ``weights_only=True`` (no pickled code runs)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .data.core import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "FORMAT"]

FORMAT = "pyro_srnn-checkpoint-v1"


class CheckpointError(ValueError):
    pass


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` to ``path`` through a temporary file and an atomic rename."""
    state = {"format": FORMAT, **state}
    with atomic_write(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt, truncated, or containing code to run
        if "Weights only load failed" in str(e):  # torch's advice (load it unsafely) is not ours to give
            reason = ("it holds objects other than tensors and plain data, and loading never runs "
                      "pickled code (weights_only)")
        else:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]  # one line: torch's run on
        raise CheckpointError(f"cannot load checkpoint {path}: {reason}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro_srnn checkpoint")
    return state
