"""Miniature speech corpora in the real on-disk formats, written by the tests themselves.

* TIMIT: ``TRAIN/DR1/<speaker>/<utt>.WAV`` NIST SPHERE 16-bit 16 kHz (``soundfile``, format NIST);
* VCTK: ``wav48/<speaker>/<speaker>_<nnn>.wav`` RIFF 16-bit at 48 kHz;
* Blizzard: chapter ``.mp3`` files (libsndfile >= 1.1 writes MPEG layer III; WAV otherwise);
* G.722: raw headerless 64 kbit/s G.722 as Asterisk ships it, encoded with PyPI ``G722``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def speechlike(num_samples: int, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A short deterministic signal in [-1, 1]: two tones plus noise, with a random level."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / rate
    f0, f1 = rng.uniform(120, 300), rng.uniform(600, 1500)
    level = rng.uniform(0.1, 0.4)
    x = level * (0.6 * np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(2 * np.pi * f1 * t)) \
        + 0.02 * rng.normal(size=num_samples)
    return np.clip(x + rng.uniform(-0.05, 0.05), -0.99, 0.99)


def write_sphere(path: Path, wave: np.ndarray, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, rate, format="NIST", subtype="PCM_16")
    return path


def make_timit(root: Path, n_train: int = 20, n_test: int = 4, samples: int = 1637, suffix: str = ".WAV",
               seed: int = 0) -> Path:
    """A TIMIT tree: ``TRAIN/DR<k>/<speaker>/SX<n>.WAV`` (SPHERE). ``samples`` is not a multiple of 200,
    so every file ends in a partial frame that the reader must drop."""
    for part, n, offset in (("TRAIN", n_train, 0), ("TEST", n_test, 1000)):
        for i in range(n):
            speaker = f"{'FM'[i % 2]}SPK{i // 3}"
            path = root / part / f"DR{1 + i % 2}" / speaker / f"SX{i}{suffix}"
            write_sphere(path, speechlike(samples + 7 * (i % 3), seed=seed + offset + i))
    return root


def make_vctk(root: Path, speakers=("p225", "p226"), per_speaker: int = 5, samples_48k: int = 9600,
              rate: int = 48000, seed: int = 0) -> Path:
    for s_i, speaker in enumerate(speakers):
        folder = root / "wav48" / speaker
        folder.mkdir(parents=True, exist_ok=True)
        for u in range(1, per_speaker + 1):
            wave = speechlike(samples_48k + 30 * u, rate=rate, seed=seed + 100 * s_i + u)
            sf.write(str(folder / f"{speaker}_{u:03d}.wav"), wave, rate, subtype="PCM_16")
    return root


def mp3_available() -> bool:
    return "MP3" in sf.available_formats()


def make_blizzard(root: Path, chapters: int = 5, samples: int = 8000, rate: int = 16000, seed: int = 0) -> Path:
    """Chapter files ``book<k>/chapter<n>.mp3`` (WAV when this libsndfile cannot write MP3)."""
    ext, fmt = (".mp3", "MP3") if mp3_available() else (".wav", "WAV")
    for c in range(chapters):
        folder = root / f"book{c % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        wave = speechlike(samples + 400 * c, rate=rate, seed=seed + c)
        if fmt == "MP3":
            sf.write(str(folder / f"chapter{c:02d}{ext}"), wave, rate, format="MP3", subtype="MPEG_LAYER_III")
        else:
            sf.write(str(folder / f"chapter{c:02d}{ext}"), wave, rate, subtype="PCM_16")
    return root


def g722_encode(wave: np.ndarray) -> bytes:
    """16 kHz float waveform → raw G.722 at 64 kbit/s (a fresh, stateful encoder)."""
    import G722

    pcm = np.round(np.clip(wave, -1, 1) * 32767).astype(np.int16)
    return bytes(G722.G722(16000, 64000).encode(pcm))


def g722_decode(data: bytes) -> np.ndarray:
    import G722

    return np.asarray(G722.G722(16000, 64000).decode(data), dtype=np.int16).astype(np.float64) / 32768.0


def make_g722_folder(root: Path, n: int = 10, samples: int = 1800, seed: int = 0, subfolders=("", "digits")) -> Path:
    for i in range(n):
        folder = root / subfolders[i % len(subfolders)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"prompt-{i:02d}.g722").write_bytes(g722_encode(speechlike(samples + 50 * i, seed=seed + i)))
    return root
