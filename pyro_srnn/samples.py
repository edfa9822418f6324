"""Samples a person can look at or hear: MIDI (+ piano roll PNG), WAV, pen-trajectory PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.core import DataSpec, atomic_write

__all__ = ["write_samples", "medium_kwargs", "roll_to_midi", "plot_roll", "write_wav", "plot_handwriting"]

LOWEST_MIDI = 21


def roll_to_midi(roll: np.ndarray, path: Path, step_seconds: float = 0.25, program: int = 0) -> None:
    """A binary ``(steps, 88)`` roll → a MIDI file (pretty_midi), one note per held key."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program)
    padded = np.vstack([np.zeros((1, roll.shape[1])), roll > 0.5, np.zeros((1, roll.shape[1]))])
    changes = np.diff(padded.astype(np.int8), axis=0)
    for key in range(roll.shape[1]):
        onsets = np.flatnonzero(changes[:, key] == 1)
        offsets = np.flatnonzero(changes[:, key] == -1)
        for on, off in zip(onsets, offsets):
            inst.notes.append(pretty_midi.Note(velocity=80, pitch=key + LOWEST_MIDI,
                                               start=on * step_seconds, end=off * step_seconds))
    pm.instruments.append(inst)
    with atomic_write(path, suffix=".mid") as tmp:
        pm.write(str(tmp))


def _figure():
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # keep a notebook's (inline) backend when pyplot is in use
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roll(rolls: np.ndarray, path: Path) -> None:
    plt = _figure()
    fig, axes = plt.subplots(len(rolls), 1, figsize=(10, 1.8 * len(rolls)), squeeze=False)
    for ax, roll in zip(axes[:, 0], rolls):
        ax.imshow(roll.T, origin="lower", aspect="auto", cmap="Greys", interpolation="nearest")
        ax.set_ylabel("key")
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def write_wav(frames: np.ndarray, path: Path, sample_rate: int = 16000, mean: float = 0.0, std: float = 1.0) -> None:
    """``(steps, 200)`` normalised frames → a 16-bit WAV (soundfile)."""
    import soundfile as sf

    audio = frames.reshape(-1) * std + mean
    audio = np.clip(audio, -1.0, 1.0)
    with atomic_write(path, suffix=".wav") as tmp:
        sf.write(str(tmp), audio, sample_rate, subtype="PCM_16", format="WAV")


def plot_handwriting(steps: np.ndarray, path: Path, scale: float = 1.0, offset_mean=(0.0, 0.0)) -> None:
    """``(steps, 3)`` (pen, dx, dy) → pen trajectory PNG; pen = 1 lifts the pen after the point.

    Normalised offsets are mapped back with ``Δ·scale + offset_mean`` before summing.
    """
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8, 2.5))
    xy = np.cumsum(steps[:, 1:] * scale + np.asarray(offset_mean, dtype=np.float64), axis=0)
    start = 0
    for i, pen in enumerate(steps[:, 0]):
        if pen > 0.5 or i == len(steps) - 1:
            ax.plot(xy[start : i + 1, 0], -xy[start : i + 1, 1], "k-", linewidth=1)
            start = i + 1
    ax.set_aspect("equal")
    ax.axis("off")
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def medium_kwargs(spec: DataSpec, info: dict | None) -> dict:
    """How to map model-space samples back to the data's medium, from a data set's ``info``:
    speech undoes the waveform normalisation (mean, std), handwriting the offset
    normalisation (scale, offset_mean). JSON-able, so checkpoints keep it."""
    info = info or {}
    if spec.family == "gaussian" and "mean" in info and "std" in info:
        return {"mean": float(info["mean"]), "std": float(info["std"]),
                "sample_rate": int(info.get("sample_rate", 16000))}
    if spec.family == "handwriting" and "scale" in info and "offset_mean" in info:
        return {"scale": float(np.asarray(info["scale"])),
                "offset_mean": [float(v) for v in np.asarray(info["offset_mean"]).reshape(-1)]}
    return {}


def write_samples(samples: np.ndarray, spec: DataSpec, out: Path, **kwargs) -> list[Path]:
    """Write ``(N, T, L)`` samples in the data set's natural medium; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if spec.family == "bernoulli" and spec.step_dim == 88:
        for i, roll in enumerate(samples):
            p = out / f"sample_{i:02d}.mid"
            roll_to_midi(roll, p)
            paths.append(p)
        p = out / "pianoroll.png"
        plot_roll(samples, p)
        paths.append(p)
    elif spec.family == "handwriting":
        for i, s in enumerate(samples):
            p = out / f"sample_{i:02d}.png"
            plot_handwriting(s, p, **kwargs)
            paths.append(p)
    elif spec.family == "gaussian":
        for i, s in enumerate(samples):
            p = out / f"sample_{i:02d}.wav"
            write_wav(s, p, **kwargs)
            paths.append(p)
    else:
        p = out / "samples.npy"
        np.save(p, samples)
        paths.append(p)
    return paths
