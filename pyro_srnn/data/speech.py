r"""Speech corpora as 16 kHz waveforms cut into 200-sample frames (SPEC §4).

Every reader turns a corpus in its real on-disk format into a :class:`SequenceDataset`
of ``(steps, 200)`` float32 arrays, one per utterance (or chapter), with the study's
conventions:

* **rate**: 16 kHz. TIMIT must already be 16 kHz (anything else is a :class:`DataError`);
  the other corpora are resampled with ``scipy.signal.resample_poly(x, up, down)``,
  ``up/down = 16000/rate`` reduced by their gcd (VCTK's 48 kHz: up 1, down 3).
  Multi-channel files are averaged to mono.
* **frames**: step :math:`t` holds samples :math:`x_{200t}, \dots, x_{200t+199}`; the
  trailing partial frame of every file is dropped ("truncated to whole frames").
  Files shorter than two frames cannot contribute a scored step and are skipped (listed
  in ``info["skipped_short"]``).
* **normalisation**: one global mean :math:`\mu` and standard deviation :math:`\sigma`
  (ddof 0) of every sample of the training waveforms (before partial frames are dropped, as in
  the ref code), applied to all splits: :math:`(x-\mu)/\sigma`.
  Both are stored in the cache and in ``SequenceDataset.info["mean"/"std"]``
  (samples use them to write audible ``.wav`` files).
* **chunks**: 40 steps (8000 samples) for the frame models, 2000 samples for the flat ones.

Data sets and their splits:

==================== ===================================== ========================================== ============
name                 on disk                               split                                      metric unit
==================== ===================================== ========================================== ============
``timit``            ``TRAIN/**/*.WAV``, ``TEST/**/*.WAV`` 5 % of the sorted TRAIN files to           utterance
                     NIST SPHERE, 16 kHz                   valid (``default_rng(seed)``, seed 0);
                                                           all TEST files
``perm_timit``       as ``timit``                          as ``timit``                               utterance
``vctk``             ``wav48/<speaker>/*.wav``             ``train.lst``/``valid.lst``/``test.lst``   audio sample
                                                           if present, else seeded 35,393 : 4,424
                                                           : 4,425 (≈ 80/10/10) of the sorted ids
``blizzard``         chapter files (mp3, wav, …)           chapter lists if present, else by          8000 samples
                                                           chapter, seeded 1,023 : 65 : 59
``audio_folder``     any audio soundfile reads + G.722     ``TRAIN/``+``TEST/`` if present, else 20 % utterance
                                                           test, then 5 % of the rest to valid
``asterisk_prompts`` ``en_US_f_Allison/**/*.g722``         as ``audio_folder``                        utterance
==================== ===================================== ========================================== ============

**Perm-TIMIT** permutes the 200 values inside every frame with one fixed permutation,
``perm = numpy.random.RandomState(123456).permutation(200)`` (the legacy Mersenne-Twister
generator, so the permutation is the same on every numpy version): the permuted frame is
``frame[perm]``, i.e. new position ``j`` holds old position ``perm[j]``.

**Split lists** (VCTK and Blizzard, optional, in the data directory): ``train.lst``,
``valid.lst`` and ``test.lst``, or the ref code's own files (VCTK ``train_files_list.txt``,
``valid_files_list.txt``, ``test_files_list.txt``; Blizzard ``train_file_list.txt``,
``valid_file_list.txt``, ``test_file_list.txt``, from ``speech/datasets/`` of
github.com/zihangdai/reexamine-srnn). One file per line, named by its stem with or without
extension (``p225_001``, ``p225_001.wav``, ``chp.01.sam.wav.t7``); blank lines and lines
starting with ``#`` are ignored. Either all three lists of a kind are present or none. A
listed file that is missing, or listed twice, is an error; files in no list are left out.

**Differences from the ref code** (github.com/zihangdai/reexamine-srnn, ``speech/*_data.py``),
all deliberate and small: its TIMIT validation split shuffles the ``os.walk`` order with
Python's ``random.seed(1234)`` (not reproducible across file systems; here: the sorted list and
a numpy generator, same count ``int(0.05 * 4620) = 231``); it resamples with ffmpeg (here:
``resample_poly``); it uses ``torch.std`` (ddof 1; the difference is ~1e-8 relative); it keeps
the partial last frame of training files in its sample stream (here every file is cut to whole
frames, as it does for the test files); its Perm-TIMIT permutation is ``torch.randperm`` (here
numpy's, for stability; ``load_perm_timit(..., permutation="torch")`` gives the torch one).

**G.722** files (``.g722``) are raw, headerless G.722 at 64 kbit/s (as Asterisk ships them);
they decode to 16 kHz 16-bit mono with PyPI ``G722==1.2.8`` (``pip install pyro-srnn[speech]``),
a new decoder per file because the codec is stateful.

**Cache**: each conversion is written once, atomically, to
``cache_dir()/<name>-v1-<key>.npz`` where ``<key>`` hashes the absolute source path and the
conventions (seed, split rule, extensions); later loads read only the cache (the audio is not
touched). Pass ``refresh=True`` (or delete the file) after changing the corpus on disk.

Memory: the conversion holds the whole corpus in RAM as float32 (TIMIT ≈ 1.2 GB,
VCTK ≈ 10 GB, Blizzard ≈ 70 GB; the ``.npz`` write needs as much again).

References: Garofolo et al. 1993 (TIMIT, LDC93S1); Veaux et al. 2017 (VCTK);
King & Karaiskos 2013 (Blizzard Challenge 2013); ITU-T G.722; Lai, Dai et al. 2019 (the study).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .core import CacheError, DataError, DataSpec, SequenceDataset, cache_dir, load_splits, save_splits

__all__ = [
    "SAMPLE_RATE", "FRAME", "PERM_TIMIT_SEED", "ASTERISK_PROMPTS_DIR", "speech_spec", "perm_timit_permutation",
    "read_audio", "read_g722", "read_sphere_header", "resample", "to_frames", "split_counts", "seeded_split",
    "load_timit", "load_perm_timit", "load_vctk", "load_blizzard", "load_audio_folder", "load_asterisk_prompts",
    "timit_available", "vctk_available", "blizzard_available", "audio_folder_available",
    "asterisk_prompts_available",
]

SAMPLE_RATE = 16000
FRAME = 200  # samples per step (L)
CHUNK_LEN = 40  # steps per training/evaluation chunk = 8000 samples
FLAT_CHUNK_LEN = 2000  # samples per chunk of the flat models
CACHE_VERSION = "v1"
PERM_TIMIT_SEED = 123456
TIMIT_VALID_FRACTION = 0.05
#: the study's utterance counts (VCTK) and chapter counts (Blizzard): train, valid, test
VCTK_SPLIT = (35393, 4424, 4425)
BLIZZARD_SPLIT = (1023, 65, 59)
AUDIO_FOLDER_TEST_FRACTION = 0.2
SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".sph", ".nist", ".aiff", ".aif", ".au")
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + (".g722",)
ASTERISK_PROMPTS_DIR = "/usr/share/asterisk/sounds/en_US_f_Allison"
SPEECH_EXTRA = "pip install pyro-srnn[speech]"


def speech_spec(name: str, metric_unit: str) -> DataSpec:
    """The spec every speech data set shares: Gaussian output, L=200, 40-step chunks."""
    return DataSpec(name=name, step_dim=FRAME, family="gaussian", domain="speech", chunk_len=CHUNK_LEN,
                    metric_unit=metric_unit, flat_chunk_len=FLAT_CHUNK_LEN)


def perm_timit_permutation(generator: str = "numpy") -> np.ndarray:
    """The fixed within-frame permutation of Perm-TIMIT.

    ``"numpy"`` (default): ``numpy.random.RandomState(123456).permutation(200)``, stable across
    numpy versions. ``"torch"``: the ref code's ``torch.manual_seed(123456); torch.randperm(200)``
    (its value depends on torch's CPU generator, so it is offered for comparison only).
    """
    if generator == "numpy":
        return np.random.RandomState(PERM_TIMIT_SEED).permutation(FRAME)
    if generator == "torch":
        import torch

        return torch.randperm(FRAME, generator=torch.Generator().manual_seed(PERM_TIMIT_SEED)).numpy()
    raise ValueError(f"unknown permutation generator {generator!r}; use 'numpy' or 'torch'")


# --------------------------------------------------------------------------- reading one file

def read_sphere_header(path: str | os.PathLike) -> dict | None:
    """The fields of a NIST SPHERE header (``NIST_1A``), or None when the file is not SPHERE."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head.startswith(b"NIST_1A"):
        return None
    lines = head.split(b"\n")
    try:
        size = int(lines[1].strip())
    except (IndexError, ValueError):
        raise DataError(f"{path}: broken NIST SPHERE header (no header size on line 2)") from None
    if size > len(head):
        with open(path, "rb") as f:
            head = f.read(size)
        lines = head.split(b"\n")
    fields = {}
    for line in lines[2:]:
        parts = line.decode("ascii", "replace").strip().split(None, 2)
        if not parts or parts[0] == "end_head":
            break
        if len(parts) == 3:
            key, kind, value = parts
            fields[key] = _sphere_int(path, key, value) if kind == "-i" else value
    return fields


def _sphere_int(path, key: str, value) -> int:
    """A SPHERE header field that must be an integer, else a DataError naming the file and the field."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: broken NIST SPHERE header: field {key!r} must be an integer, "
                        f"got {value!r}") from None


def read_g722(path: str | os.PathLike) -> np.ndarray:
    """Raw G.722 (64 kbit/s) → 16 kHz float64 waveform in [-1, 1) (a new decoder per file)."""
    try:
        import G722
    except ImportError:
        raise DataError(f"{path}: reading G.722 needs the G722 package: {SPEECH_EXTRA}") from None
    data = Path(path).read_bytes()
    if not data:
        raise DataError(f"{path}: empty file (no G.722 data)")
    pcm = np.asarray(G722.G722(SAMPLE_RATE, 64000).decode(data), dtype=np.int16)
    return pcm.astype(np.float64) / 32768.0


def resample(wave: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling ``rate → target`` (``resample_poly`` with up/down reduced by their gcd)."""
    if rate == target:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(wave, target // g, rate // g)


def read_audio(path: str | os.PathLike, *, target_rate: int = SAMPLE_RATE, require_rate: int | None = None,
               ) -> np.ndarray:
    """One audio file → mono float64 waveform at ``target_rate`` (values in [-1, 1] for PCM).

    Raises one :class:`DataError` naming the file for unreadable, truncated, empty or
    non-finite audio, and (``require_rate``) for a sample rate other than the one required.
    A file is truncated when it holds less audio data than its header announces; a header that
    announces an unknown size (a WAV written to a pipe: ``0xFFFFFFFF``) is read to its end.
    """
    path = Path(path)
    if path.suffix.lower() == ".g722":
        wave, rate = read_g722(path), SAMPLE_RATE
    else:
        wave, rate = _read_soundfile(path)
    if require_rate is not None and rate != require_rate:
        raise DataError(f"{path}: sample rate {rate} Hz, expected {require_rate} Hz")
    if wave.size == 0:
        raise DataError(f"{path}: contains no audio samples")
    if not np.isfinite(wave).all():
        raise DataError(f"{path}: contains NaN or infinite samples")
    return resample(wave, rate, target_rate)


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if path.suffix.lower() == ".mp3" and "MP3" not in sf.available_formats():
        raise DataError(f"{path}: this libsndfile ({sf.__libsndfile_version__}) cannot read MP3; "
                        "install soundfile>=0.12 with libsndfile>=1.1, or convert the file to WAV/FLAC")
    sphere = read_sphere_header(path) if path.stat().st_size else None
    if sphere is not None and "shorten" in str(sphere.get("sample_coding", "")):
        raise DataError(f"{path}: NIST SPHERE compressed with 'shorten'; decompress it first "
                        "(e.g. sph2pipe -f wav) or use the uncompressed LDC release")
    try:
        # bytes: soundfile encodes a str name strictly, so a name that is not UTF-8 (surrogate-escaped
        # by rglob) would raise UnicodeEncodeError; os.fsencode gives back the name's own bytes
        info = sf.info(os.fsencode(path))
        wave, rate = sf.read(os.fsencode(path), dtype="float64", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as e:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes)") from None
        raise DataError(f"{path}: not readable audio (libsndfile: {e})") from None
    frames = wave.shape[0]
    if sphere is not None:  # libsndfile counts what is there; the header says what should be
        expected = _sphere_int(path, "sample_count", sphere.get("sample_count", frames))
        truncated = expected > frames
    else:
        announced = _announced_data(path)
        if announced is not None:
            truncated, expected = announced.truncated, announced.frames
        else:  # formats without a parsed header: libsndfile's own frame count
            expected = info.frames
            if info.format == "MP3":  # the frame count of an MP3 is an estimate (encoder delay, padding, VBR)
                expected = int(0.98 * info.frames) - 4 * 1152
            truncated = frames < expected
    if truncated:
        held = f"read {frames}, expected {expected}" if expected is not None else f"read {frames}"
        raise DataError(f"{path}: truncated audio file (header announces more samples than the file "
                        f"holds; {held})")
    return wave.mean(axis=1), int(rate)


#: data sizes that announce "unknown length": a file written to a pipe cannot seek back to fill in its
#: sizes (0xFFFFFFFF: libsndfile, ffmpeg; 0: some streaming writers; 0x7FFFF000: sox)
UNKNOWN_DATA_SIZES = (0xFFFFFFFF, 0, 0x7FFFF000)
#: bytes per sample of the Sun/NeXT .au encodings with a fixed sample size
_AU_SAMPLE_BYTES = {1: 1, 2: 1, 3: 2, 4: 3, 5: 4, 6: 4, 7: 8, 27: 1}
#: WAVE format tags whose data is one block of ``block_align`` bytes per frame (PCM, float, A-law, µ-law)
_WAV_FRAME_TAGS = (1, 3, 6, 7)


@dataclass
class _Announced:
    """What a header announces about its audio data: whether the file holds less than that
    (``truncated``) and the announced frame count (None where it cannot be computed)."""

    truncated: bool
    frames: int | None


def _announced_data(path: Path) -> _Announced | None:
    """The announced data length of a RIFF/RIFX/RF64 WAV, Wave64, AIFF/AIFC or Sun .au file, or None for
    any other format (or a header too damaged to walk; libsndfile's count is used then).

    A size of :data:`UNKNOWN_DATA_SIZES` means "unknown" (a streamed file): never truncated.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12:
            return None
        if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
            return _walk_chunks(f, size, "<" if head[:4] != b"RIFX" else ">", "wav")
        if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            return _walk_chunks(f, size, ">", "aiff")
        if head[:4] == b"riff":  # Sony Wave64: 16-byte GUIDs and 64-bit sizes
            head += f.read(28)
            if len(head) == 40 and head[24:28] == b"wave":
                return _walk_chunks(f, size, "<", "w64")
        if head[:4] == b".snd":
            head += f.read(12)
            if len(head) < 24:
                return None
            offset, length, encoding, _, channels = struct.unpack(">5I", head[4:24])
            if length in UNKNOWN_DATA_SIZES:
                return _Announced(False, None)
            width = _AU_SAMPLE_BYTES.get(encoding)
            return _Announced(offset + length > size, length // (width * channels) if width and channels else None)
    return None


def _walk_chunks(f, size: int, order: str, kind: str) -> _Announced | None:
    """Walk the chunks of a WAV (``kind="wav"``), Wave64 (``"w64"``) or AIFF file up to its audio data."""
    wav = kind in ("wav", "w64")  # Wave64 has WAV's chunks in longer wrappers
    frame_bytes, frames, ds64_size = None, None, None
    pos = 40 if kind == "w64" else 12
    for _ in range(1000):  # a real header has a handful of chunks before the data
        f.seek(pos)
        if kind == "w64":  # a GUID, then the chunk size counting this 24-byte header
            head = f.read(24)
            if len(head) < 24 or struct.unpack("<Q", head[16:])[0] < 24:
                return None
            cid, length, body = head[:4], struct.unpack("<Q", head[16:])[0] - 24, pos + 24
        else:
            head = f.read(8)
            if len(head) < 8:
                return None
            cid, length, body = head[:4], struct.unpack(order + "I", head[4:])[0], pos + 8
        if wav and cid == b"fmt ":
            fmt = f.read(min(length, 40))
            if len(fmt) >= 14:
                tag, _, _, _, block_align = struct.unpack(order + "HHIIH", fmt[:14])
                if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
                    tag = struct.unpack(order + "H", fmt[24:26])[0]
                frame_bytes = block_align if tag in _WAV_FRAME_TAGS and block_align else None
        elif kind == "wav" and cid == b"ds64":  # RF64: the 64-bit sizes (riff, data, sample count)
            ds64 = f.read(24)
            if len(ds64) == 24:
                ds64_size = struct.unpack("<QQQ", ds64)[1]
        elif kind == "aiff" and cid == b"COMM":
            comm = f.read(6)
            if len(comm) == 6:
                frames = struct.unpack(">hI", comm)[1]
        elif (wav and cid == b"data") or (kind == "aiff" and cid == b"SSND"):
            if kind == "wav" and length == 0xFFFFFFFF and ds64_size is not None:
                length = ds64_size
            if kind != "w64" and length in UNKNOWN_DATA_SIZES:
                return _Announced(False, None)
            if wav:
                frames = length // frame_bytes if frame_bytes else None
            return _Announced(body + length > size, frames)
        if kind == "w64":
            pos = body + length + (-length % 8)  # chunks are aligned to 8 bytes
        else:
            pos = body + length + (length & 1)  # chunks are padded to an even size
        if pos > size:
            return None
    return None


def to_frames(wave: np.ndarray, frame: int = FRAME) -> np.ndarray:
    """Waveform → ``(len // frame, frame)`` float32 steps; the trailing partial frame is dropped."""
    n = len(wave) // frame
    return np.asarray(wave[: n * frame], dtype=np.float32).reshape(n, frame)


# --------------------------------------------------------------------------- splits

def split_counts(n: int, proportions: Iterable[float]) -> tuple[int, int, int]:
    """``n`` items → (train, valid, test) counts in the given proportions (valid/test rounded,
    at least one each when ``n >= 3``; train takes the rest)."""
    p = np.asarray(list(proportions), dtype=np.float64)
    p = p / p.sum()
    n_valid, n_test = int(round(n * p[1])), int(round(n * p[2]))
    if n >= 3:
        n_valid, n_test = max(n_valid, 1), max(n_test, 1)
    return n - n_valid - n_test, n_valid, n_test


def seeded_split(ids: list[str], counts: tuple[int, int, int], seed: int = 0) -> dict[str, list[str]]:
    """A seeded shuffle (``numpy.random.default_rng(seed)``) of the *sorted* ids, cut into
    valid (first), test (next) and train (rest); each part returned sorted."""
    ids = sorted(ids)
    n_train, n_valid, n_test = counts
    if n_train + n_valid + n_test != len(ids):
        raise ValueError("split counts do not add up to the number of items")
    perm = np.random.default_rng(seed).permutation(len(ids))
    pick = lambda idx: sorted(ids[i] for i in idx)  # noqa: E731
    return {"train": pick(perm[n_valid + n_test:]), "valid": pick(perm[:n_valid]),
            "test": pick(perm[n_valid: n_valid + n_test])}


def _seeded_file_split(root: Path, files: list[Path], counts: tuple[int, int, int],
                       seed: int) -> dict[str, list[Path]]:
    """:func:`seeded_split` of ``files``, each known by its path relative to ``root`` (so the
    split does not depend on where the corpus lies)."""
    split = seeded_split([p.relative_to(root).as_posix() for p in files], counts, seed)
    return {part: [root / i for i in ids] for part, ids in split.items()}


def _hold_out_valid(root: Path, train_files: list[Path], fraction: float, seed: int) -> dict[str, list[Path]]:
    """``train`` and ``valid`` from the training files: ``max(1, round(fraction · n))`` of them to
    validation (none when there are fewer than two)."""
    n = len(train_files)
    n_valid = max(1, int(round(fraction * n))) if n >= 2 else 0
    split = _seeded_file_split(root, train_files, (n - n_valid, n_valid, 0), seed)
    return {"train": split["train"], "valid": split["valid"]}


# --------------------------------------------------------------------------- conversion and cache

def _cache_path(name: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"{name}-{CACHE_VERSION}-{digest}.npz"


def _source_dir(name: str, data_dir: str | os.PathLike | None, env_var: str, expected: str) -> Path:
    if not data_dir:
        raise DataError(f"{name}: no data directory given: pass --data-dir DIR or set {env_var} to the folder "
                        f"holding {expected}")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"{name}: data directory {path} does not exist (expected {expected} there)")
    return path.resolve()


def _audio_files(folder: Path, extensions: Iterable[str]) -> list[Path]:
    """Audio files under ``folder`` (recursive, extension case-insensitive), sorted.

    A converted copy named ``X.WAV.wav`` beside its original ``X.WAV`` (some TIMIT copies
    ship both) is skipped, so no utterance is counted twice.
    """
    exts = {e.lower() for e in extensions}
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts]
    names = {p.as_posix().lower() for p in files}
    keep = [p for p in files if not (p.with_suffix("").suffix.lower() in exts
                                     and p.with_suffix("").as_posix().lower() in names)]
    return sorted(keep)


def _combine_moments(a: tuple[int, float, float], wave: np.ndarray) -> tuple[int, float, float]:
    """Merge (count, mean, sum of squared deviations) with one more waveform (Chan et al. 1979)."""
    n_a, mean_a, m2_a = a
    n_b = wave.size
    mean_b = float(wave.mean(dtype=np.float64))
    m2_b = float(((wave - mean_b) ** 2).sum(dtype=np.float64))
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n


def _convert(name: str, parts: dict[str, list[Path]], root: Path, *, read: Callable[[Path], np.ndarray],
             progress: bool) -> tuple[dict, dict]:
    """Read, frame and normalise every file of every split; returns (splits, meta).

    The mean and standard deviation (ddof 0) are those of every sample of the training
    waveforms, before the trailing partial frames are dropped (as the ref code computes them).
    """
    from tqdm.auto import tqdm

    raw: dict[str, list[np.ndarray]] = {}
    ids: dict[str, list[str]] = {}
    skipped: list[str] = []
    moments = (0, 0.0, 0.0)
    total = sum(len(v) for v in parts.values())
    with tqdm(total=total, desc=f"{name}: converting", disable=not progress) as bar:
        for split, files in parts.items():
            raw[split], ids[split] = [], []
            for path in files:
                wave = read(path)
                if split == "train":
                    moments = _combine_moments(moments, wave)
                steps = to_frames(wave)
                bar.update(1)
                rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
                if len(steps) < 2:
                    skipped.append(rel)
                    continue
                raw[split].append(steps)
                ids[split].append(rel)
    for split in ("train", "valid", "test"):
        if not raw[split]:
            raise DataError(f"{name}: no {split} file under {root} is at least two frames "
                            f"({2 * FRAME} samples) long ({len(parts[split])} file(s) in the split, all "
                            "skipped): every split needs one")
    count, mean, m2 = moments
    std = math.sqrt(m2 / count)
    if not std > 0:
        raise DataError(f"{name}: the training audio under {root} is constant (standard deviation 0)")
    for seqs in raw.values():
        for s in seqs:
            s -= np.float32(mean)
            s /= np.float32(std)
    meta = {"mean": mean, "std": std, "skipped_short": skipped, "files": ids}
    return raw, meta


def _read_cache(path: Path) -> tuple[dict, dict] | None:
    """The splits and metadata of a speech cache, or None when it is missing or damaged."""
    try:
        splits, meta = load_splits(path, required=("train", "valid", "test"))
    except (FileNotFoundError, CacheError):
        return None
    if "mean" not in meta or "std" not in meta:  # not written by _load_or_convert
        return None
    return splits, meta


def _load_or_convert(name: str, spec: DataSpec, root: Path, key: dict, build: Callable[[], dict],
                     read: Callable[[Path], np.ndarray], *, refresh: bool, progress: bool) -> SequenceDataset:
    """Load ``name`` from its cache, or list its files (``build``), convert, cache and return it."""
    key = dict(key, reader=name, version=CACHE_VERSION, source=str(root), rate=SAMPLE_RATE, frame=FRAME)
    path = _cache_path(name, key)
    cached = None if refresh else _read_cache(path)  # a damaged cache is converted again
    if cached is not None:
        splits, meta = cached
        files = {s: [str(f) for f in meta.get(f"files_{s}", np.array([], dtype=str)).tolist()]
                 for s in ("train", "valid", "test")}
        info = {"cache": str(path), "from_cache": True, "source": str(root),
                "mean": float(meta["mean"]), "std": float(meta["std"]), "sample_rate": SAMPLE_RATE,
                "frame": FRAME, "files": files,
                "skipped_short": [str(f) for f in meta.get("skipped_short", np.array([], dtype=str)).tolist()]}
        return SequenceDataset(spec, splits["train"], splits["valid"], splits["test"], info=info)
    parts = build()
    for split in ("train", "valid", "test"):
        if not parts.get(split):
            raise DataError(f"{name}: the {split} split under {root} is empty "
                            f"({sum(len(v) for v in parts.values())} files in all)")
    splits, meta = _convert(name, parts, root, read=read, progress=progress)
    save_splits(path, splits, mean=meta["mean"], std=meta["std"], key=json.dumps(key, sort_keys=True),
                skipped_short=np.array(meta["skipped_short"], dtype=str),
                **{f"files_{s}": np.array(meta["files"][s], dtype=str) for s in ("train", "valid", "test")})
    info = {"cache": str(path), "from_cache": False, "source": str(root), "mean": meta["mean"],
            "std": meta["std"], "sample_rate": SAMPLE_RATE, "frame": FRAME, "files": meta["files"],
            "skipped_short": meta["skipped_short"]}
    return SequenceDataset(spec, splits["train"], splits["valid"], splits["test"], info=info)


# --------------------------------------------------------------------------- TIMIT, Perm-TIMIT

TIMIT_EXPECTED = "TRAIN/ and TEST/ trees of NIST SPHERE .WAV files (TIMIT, LDC93S1)"


def _find_child(root: Path, name: str) -> Path | None:
    for candidate in (name, name.lower(), name.capitalize()):
        if (root / candidate).is_dir():
            return root / candidate
    return None


def _timit_read(path: Path) -> np.ndarray:
    return read_audio(path, require_rate=SAMPLE_RATE)


def load_timit(data_dir: str | os.PathLike | None, *, seed: int = 0, valid_fraction: float = TIMIT_VALID_FRACTION,
               refresh: bool = False, progress: bool = True) -> SequenceDataset:
    """TIMIT: ``TRAIN/**/*.WAV`` and ``TEST/**/*.WAV`` (NIST SPHERE, 16 kHz), see the module docstring.

    Validation: ``max(1, round(valid_fraction * n))`` of the sorted training files, drawn by
    ``numpy.random.default_rng(seed).permutation``; test: every TEST file.
    """
    spec = speech_spec("timit", "utterance")
    root = _source_dir("timit", data_dir, "PYRO_SRNN_TIMIT", TIMIT_EXPECTED)

    def build():
        found = {}
        for part in ("TRAIN", "TEST"):
            folder = _find_child(root, part)
            if folder is None:
                raise DataError(f"timit: {part}/ folder missing under {root} (expected {TIMIT_EXPECTED})")
            files = _audio_files(folder, (".wav",))
            if not files:
                raise DataError(f"timit: no .WAV files under {folder} (expected {part}/<dialect>/<speaker>/*.WAV)")
            found[part] = files
        return {**_hold_out_valid(root, found["TRAIN"], valid_fraction, seed), "test": found["TEST"]}

    return _load_or_convert("timit", spec, root, {"seed": seed, "valid_fraction": valid_fraction}, build,
                            _timit_read, refresh=refresh, progress=progress)


def load_perm_timit(data_dir: str | os.PathLike | None, *, permutation: str = "numpy", seed: int = 0,
                    valid_fraction: float = TIMIT_VALID_FRACTION, refresh: bool = False,
                    progress: bool = True) -> SequenceDataset:
    """Perm-TIMIT: TIMIT (same cache) with :func:`perm_timit_permutation` applied inside every frame."""
    timit = load_timit(data_dir, seed=seed, valid_fraction=valid_fraction, refresh=refresh, progress=progress)
    perm = perm_timit_permutation(permutation)
    splits = {s: [np.ascontiguousarray(x[:, perm]) for x in timit.split(s)] for s in ("train", "valid", "test")}
    described = {"numpy": "numpy.random.RandomState(123456).permutation(200)",
                 "torch": "torch.randperm(200) after torch.manual_seed(123456)"}[permutation]
    info = dict(timit.info, permutation_seed=PERM_TIMIT_SEED, permutation_indices=perm.tolist(),
                permutation=f"{described}; permuted frame = frame[perm]")
    return SequenceDataset(speech_spec("perm_timit", "utterance"), splits["train"], splits["valid"],
                           splits["test"], info=info)


# --------------------------------------------------------------------------- split lists (VCTK, Blizzard)

def _list_id(entry: str) -> str:
    """A list entry → the file stem it names: ``p225_001.wav`` → ``p225_001``,
    ``chp.01.sam.wav.t7`` (the ref code's Blizzard lists) → ``chp.01.sam``."""
    entry = entry.strip()
    if entry.lower().endswith(".t7"):
        entry = entry[:-3]
    stem, dot, ext = entry.rpartition(".")
    return stem if dot and "." + ext.lower() in AUDIO_EXTENSIONS else entry


def _find_lists(name: str, root: Path, options: tuple[tuple[str, str, str], ...]) -> list[Path] | None:
    """The first complete set of (train, valid, test) list files in ``root``, or None; a partial set is an error."""
    for names in options:
        paths = [root / n for n in names]
        present = [p.exists() for p in paths]
        if all(present):
            return paths
        if any(present):
            missing = [p.name for p, ok in zip(paths, present) if not ok]
            raise DataError(f"{name}: split lists incomplete in {root}: {', '.join(missing)} missing "
                            f"(give all of {', '.join(names)} or none)")
    return None


def _lists_key(lists: list[Path] | None) -> dict:
    if lists is None:
        return {"lists": None}
    # their contents decide the split: part of the cache key. One digest per file, with its name, so a
    # line moved from the end of one list to the top of the next changes the key
    return {"lists": [[p.name, hashlib.sha256(p.read_bytes()).hexdigest()] for p in lists]}


def _split_by_lists(name: str, files: list[Path], lists: list[Path]) -> dict[str, list[Path]]:
    by_id: dict[str, Path] = {}
    for p in files:
        if p.stem in by_id:
            raise DataError(f"{name}: file name {p.stem!r} appears twice ({by_id[p.stem]} and {p}); "
                            "split lists name files by their stem, which must be unique")
        by_id[p.stem] = p
    split, seen = {}, {}
    for part, lst in zip(("train", "valid", "test"), lists):
        ids = []
        for line in lst.read_text().splitlines():
            if line.strip() and not line.strip().startswith("#"):
                ids.append(_list_id(line))
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise DataError(f"{name}: {lst} names {len(unknown)} file(s) not found under the data directory, "
                            f"e.g. {unknown[0]!r}")
        for i in ids:
            if i in seen:
                raise DataError(f"{name}: {i!r} is listed in both {seen[i]} and {lst.name}")
            seen[i] = lst.name
        split[part] = [by_id[i] for i in ids]
    return split


# --------------------------------------------------------------------------- VCTK

VCTK_EXPECTED = "wav48/<speaker>/*.wav (VCTK-Corpus)"
#: accepted split lists: ours, then the ref code's (datasets/vctk/*_files_list.txt, entries like p225_001.wav)
VCTK_LISTS = (("train.lst", "valid.lst", "test.lst"),
              ("train_files_list.txt", "valid_files_list.txt", "test_files_list.txt"))


def load_vctk(data_dir: str | os.PathLike | None, *, seed: int = 0, refresh: bool = False,
              progress: bool = True) -> SequenceDataset:
    """VCTK: ``wav48/<speaker>/*.wav`` resampled 48 → 16 kHz; the study's split lists when present."""
    spec = speech_spec("vctk", "audio sample")
    root = _source_dir("vctk", data_dir, "PYRO_SRNN_VCTK", VCTK_EXPECTED)
    lists = _find_lists("vctk", root, VCTK_LISTS)

    def build():
        wav48 = _find_child(root, "wav48")
        if wav48 is None:
            raise DataError(f"vctk: wav48/ folder missing under {root} (expected {VCTK_EXPECTED})")
        files = _audio_files(wav48, (".wav",))
        if not files:
            raise DataError(f"vctk: no .wav files under {wav48} (expected {VCTK_EXPECTED})")
        if lists is not None:
            return _split_by_lists("vctk", files, lists)
        return _seeded_file_split(root, files, split_counts(len(files), VCTK_SPLIT), seed)

    key = {"seed": seed, "proportions": VCTK_SPLIT, **_lists_key(lists)}
    return _load_or_convert("vctk", spec, root, key, build, read_audio, refresh=refresh, progress=progress)


# --------------------------------------------------------------------------- Blizzard

BLIZZARD_EXPECTED = "audiobook chapter files (.mp3 or .wav), one file per chapter (Blizzard Challenge 2013)"
#: accepted split lists: ours, then the ref code's (datasets/blizzard/*_file_list.txt, entries like chp.01.sam.wav.t7)
BLIZZARD_LISTS = (("train.lst", "valid.lst", "test.lst"),
                  ("train_file_list.txt", "valid_file_list.txt", "test_file_list.txt"))


def load_blizzard(data_dir: str | os.PathLike | None, *, seed: int = 0, refresh: bool = False,
                  progress: bool = True) -> SequenceDataset:
    """Blizzard 2013: one audio file per chapter (recursive); the study's chapter lists when present,
    else a seeded split by chapter in the proportions 1,023 : 65 : 59."""
    spec = speech_spec("blizzard", "8000 samples")
    root = _source_dir("blizzard", data_dir, "PYRO_SRNN_BLIZZARD", BLIZZARD_EXPECTED)
    lists = _find_lists("blizzard", root, BLIZZARD_LISTS)

    def build():
        files = _audio_files(root, SOUNDFILE_EXTENSIONS)
        if not files:
            raise DataError(f"blizzard: no audio files under {root} (expected {BLIZZARD_EXPECTED})")
        if lists is not None:
            return _split_by_lists("blizzard", files, lists)
        return _seeded_file_split(root, files, split_counts(len(files), BLIZZARD_SPLIT), seed)

    key = {"seed": seed, "proportions": BLIZZARD_SPLIT, **_lists_key(lists)}
    return _load_or_convert("blizzard", spec, root, key, build, read_audio, refresh=refresh, progress=progress)


# --------------------------------------------------------------------------- any folder, Asterisk prompts

AUDIO_FOLDER_EXPECTED = "audio files (" + ", ".join(AUDIO_EXTENSIONS) + "), optionally in TRAIN/ and TEST/"


def load_audio_folder(data_dir: str | os.PathLike | None, *, seed: int = 0, extensions: Iterable[str] | None = None,
                      exclude: Iterable[str] = (), name: str = "audio_folder", env_var: str = "PYRO_SRNN_AUDIO_DIR",
                      refresh: bool = False, progress: bool = True) -> SequenceDataset:
    """Any folder of speech audio under the TIMIT conventions (16 kHz, 200-sample frames, global norm).

    Split: with ``TRAIN/`` and ``TEST/`` sub-folders, as TIMIT (5 % of TRAIN to valid);
    otherwise 20 % of the sorted files to test, then 5 % of the rest to valid, seeded.
    ``exclude`` lists top-level sub-folders to leave out.
    """
    spec = speech_spec(name, "utterance")
    root = _source_dir(name, data_dir, env_var, AUDIO_FOLDER_EXPECTED)
    exts = tuple(sorted({e.lower() if e.startswith(".") else "." + e.lower()
                         for e in (extensions or AUDIO_EXTENSIONS)}))
    excluded = tuple(sorted(exclude))

    def listing(folder: Path) -> list[Path]:
        return [p for p in _audio_files(folder, exts) if p.relative_to(root).parts[0] not in excluded]

    def build():
        train_dir, test_dir = _find_child(root, "TRAIN"), _find_child(root, "TEST")
        if train_dir is not None and test_dir is not None:
            train, test = listing(train_dir), listing(test_dir)
            if not train or not test:
                raise DataError(f"{name}: no audio files ({', '.join(exts)}) under "
                                f"{train_dir if not train else test_dir}")
            return {**_hold_out_valid(root, train, TIMIT_VALID_FRACTION, seed), "test": test}
        files = listing(root)
        if not files:
            raise DataError(f"{name}: no audio files ({', '.join(exts)}) under {root}")
        n = len(files)
        n_test = max(1, int(round(AUDIO_FOLDER_TEST_FRACTION * n))) if n >= 3 else 0
        n_valid = max(1, int(round(TIMIT_VALID_FRACTION * (n - n_test)))) if n >= 3 else 0
        return _seeded_file_split(root, files, (n - n_test - n_valid, n_valid, n_test), seed)

    key = {"seed": seed, "extensions": exts, "exclude": excluded, "test_fraction": AUDIO_FOLDER_TEST_FRACTION,
           "valid_fraction": TIMIT_VALID_FRACTION}
    return _load_or_convert(name, spec, root, key, build, read_audio, refresh=refresh, progress=progress)


def load_asterisk_prompts(data_dir: str | os.PathLike | None = None, *, seed: int = 0, refresh: bool = False,
                          progress: bool = True) -> SequenceDataset:
    """The Asterisk English prompts (one speaker, 568 G.722 files, 25.5 min; Debian
    ``asterisk-core-sounds-en-g722``) as an ``audio_folder``: only ``*.g722`` files, the
    ``silence/`` folder (55 s of near-silence) left out."""
    if data_dir is None and not Path(ASTERISK_PROMPTS_DIR).is_dir():
        raise DataError(f"asterisk_prompts: {ASTERISK_PROMPTS_DIR} does not exist; install it with "
                        f"`apt-get install asterisk-core-sounds-en-g722` and `{SPEECH_EXTRA}`, "
                        "or pass --data-dir")
    return load_audio_folder(data_dir or ASTERISK_PROMPTS_DIR, extensions=(".g722",), exclude=("silence",),
                             name="asterisk_prompts", env_var="PYRO_SRNN_ASTERISK_PROMPTS", seed=seed,
                             refresh=refresh, progress=progress)


# --------------------------------------------------------------------------- presence probes (pyro-srnn datasets)

def timit_available(data_dir) -> bool:
    return bool(data_dir) and Path(data_dir).is_dir() and _find_child(Path(data_dir), "TRAIN") is not None \
        and _find_child(Path(data_dir), "TEST") is not None


def vctk_available(data_dir) -> bool:
    return bool(data_dir) and Path(data_dir).is_dir() and _find_child(Path(data_dir), "wav48") is not None


def blizzard_available(data_dir) -> bool:
    return bool(data_dir) and Path(data_dir).is_dir() and any(
        p.suffix.lower() in SOUNDFILE_EXTENSIONS for p in Path(data_dir).rglob("*"))


def audio_folder_available(data_dir) -> bool:
    return bool(data_dir) and Path(data_dir).is_dir() and any(
        p.suffix.lower() in AUDIO_EXTENSIONS for p in Path(data_dir).rglob("*"))


def asterisk_prompts_available(data_dir) -> bool:
    folder = Path(data_dir or ASTERISK_PROMPTS_DIR)
    if not folder.is_dir() or not any(True for _ in folder.glob("*.g722")):
        return False
    try:
        import G722  # noqa: F401
    except ImportError:
        return False
    return True
