"""Polyphonic music readers: the note pickles, any folder of MIDI files, and music21 corpora.

Every reader returns 88-key binary piano rolls ``x_t ∈ {0,1}^88`` (key ``k`` is
MIDI note ``21 + k``, A0 … C8), modelled with one Bernoulli per key, chunked
into 100 steps (SPEC §4) and reported in nats **per time step** (the sum over
the 88 keys of a step, averaged over scored steps).

Data sets
---------
``muse``, ``nottingham``, ``jsb_chorales``, ``piano_midi``
    The Boulanger-Lewandowski et al. (2012) pickles ``MuseData.pickle``,
    ``Nottingham.pickle``, ``JSB Chorales.pickle``, ``Piano-midi.de.pickle``:
    ``dict(train=…, valid=…, test=…)`` → songs → time steps → tuples of MIDI
    note numbers (numpy integer scalars). Read with the restricted unpickler of
    :mod:`pyro_srnn.data.safe_pickle`; the splits are the pickle's own.
    Notes outside MIDI 21..108 are **dropped and counted** (``info["dropped_notes"]``);
    non-integral or non-finite note numbers are an error. Songs with fewer than two
    steps (nothing to score) are dropped and counted (``info["dropped_songs"]``).
``midi_folder``
    Any folder of ``.mid``/``.midi`` files (searched recursively), read with
    pretty_midi. Time step: ``steps_per_quarter`` steps per quarter note of the
    file's own tempo map (default 2: eighth notes), or a fixed ``step_seconds``.
    A note sounds at steps ``round(start/Δ) ≤ k < max(round(end/Δ), round(start/Δ)+1)``
    (every note lasts at least one step); drum tracks are skipped. Split: by
    file, a seeded shuffle (seed 0) of the sorted relative paths, 60/20/20 %.
``folk_tunes``
    Nottingham-like folk melodies from the music21 corpus (no network):
    ``ryansMammoth`` (1,059 files, one tune each) and ``oneills1850`` (39 ABC
    books, ~1,850 tunes) by default. Chord symbols, where a tune has them, are
    realised as held chords (``harmony.realizeChordSymbolDurations``) as in the
    Nottingham set (melody + chords) — though these two collections carry almost none, so the
    result is a melody set (1.00 sounding notes per step; 3,068 tunes, 1,841/614/613).
    Eighth-note steps (``steps_per_quarter=2``), repeats expanded where music21 can, no
    transposition. Split by tune, seeded.
``palestrina``
    MuseData-like vocal polyphony: the first ``max_pieces`` (default 300) of the
    1,318 sorted ``palestrina/*.krn`` files of the music21 corpus (parsing takes
    ~0.5 s a piece; all of them: ``max_pieces=0``). Quarter-note steps, no
    transposition, split by piece like ``bach_chorales``.

Each reader converts once and caches the rolls as ``.npz`` (atomic write) under
:func:`~pyro_srnn.data.core.cache_dir`; the cache name is keyed by the source
path, its size and modification time, and the options, so a changed source is
converted again. ``rebuild=True`` forces a new conversion. music21 encodings are
distributed with permission, some non-commercial: the caches stay on the user's
machine; never commit them.

Reference: N. Boulanger-Lewandowski, Y. Bengio, P. Vincent, *Modeling temporal
dependencies in high-dimensional sequences*, ICML 2012.
"""
from __future__ import annotations

import functools
import hashlib
import json
import numbers
from pathlib import Path

import numpy as np

from .bach import LOWEST_MIDI, NUM_KEYS, _convert_all, score_to_roll, split_names
from .core import (DataError, DataSpec, SequenceDataset, cached_dataset,
                   save_splits, versioned_cache_path)

__all__ = [
    "NOTE_PICKLES", "load_note_pickle", "notes_to_roll", "load_midi_folder", "midi_to_roll",
    "load_folk_tunes", "load_palestrina", "music_spec", "note_pickle_available",
]

CACHE_VERSION = "v1"
HIGHEST_MIDI = LOWEST_MIDI + NUM_KEYS - 1  # 108, C8

#: data set name → (published file name, environment variable, description)
NOTE_PICKLES = {
    "muse": ("MuseData.pickle", "PYRO_SRNN_MUSEDATA", "MuseData (classical, orchestral & piano), 88-key rolls"),
    "nottingham": ("Nottingham.pickle", "PYRO_SRNN_NOTTINGHAM", "Nottingham folk tunes (melody + chords)"),
    "jsb_chorales": ("JSB Chorales.pickle", "PYRO_SRNN_JSB_CHORALES",
                     "JSB Chorales benchmark (382 chorales, C major/minor, quarter notes)"),
    "piano_midi": ("Piano-midi.de.pickle", "PYRO_SRNN_PIANO_MIDI", "Piano-midi.de classical piano pieces"),
}


def music_spec(name: str) -> DataSpec:
    return DataSpec(name=name, step_dim=NUM_KEYS, family="bernoulli", domain="midi", chunk_len=100,
                    metric_unit="time step", flat_chunk_len=None)


# --------------------------------------------------------------------------- cache helpers

def _source_key(paths: list[Path], **options) -> str:
    """A short hash of the source paths (resolved), their sizes and mtimes, and the options."""
    parts = []
    for p in paths:
        st = p.stat()
        parts.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"sources": parts, "options": options}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _cached(name: str, key: str) -> Path:
    return versioned_cache_path(name, CACHE_VERSION, key)


def _store(spec: DataSpec, path: Path, splits: dict, **meta) -> SequenceDataset:
    # an empty valid or test split would only surface later, as a NaN score or a crash in training
    counts = {k: len(splits[k]) for k in ("train", "valid", "test")}
    for split, n in counts.items():
        if not n:
            raise DataError(f"{meta.get('source', spec.name)}: the {split} split is empty (train/valid/test: "
                            f"{counts['train']}/{counts['valid']}/{counts['test']} sequences, after dropping "
                            f"those shorter than two steps); {spec.name} needs at least one in every split")
    save_splits(path, splits, **meta)
    info = dict(meta, cache=str(path), from_cache=False)
    return SequenceDataset(spec, splits["train"], splits["valid"], splits["test"], info=info)


# --------------------------------------------------------------------------- note pickles

def _find_pickle(name: str, data_dir: str | None) -> Path:
    file_name, env_var, _ = NOTE_PICKLES[name]
    if not data_dir:
        raise DataError(f"{name}: no data location given: pass --data-dir pointing at {file_name!r} (or the "
                        f"folder holding it), or set ${env_var}")
    path = Path(data_dir)
    if path.is_dir():
        path = path / file_name
        if not path.is_file():
            raise DataError(f"{path}: missing; {name} expects the pickle {file_name!r} in {data_dir}")
    elif not path.is_file():
        raise DataError(f"{path}: no such file or folder ({name} expects {file_name!r} or its folder)")
    return path


def note_pickle_available(name: str):
    def available(data_dir: str | None) -> bool:
        try:
            _find_pickle(name, data_dir)
            return True
        except DataError:
            return False
    return available


def _note_number(value, where: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, numbers.Real)):
        raise DataError(f"{where}: note {value!r} is not a number")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not np.isfinite(value):
        raise DataError(f"{where}: note number {value!r} is NaN or infinite")
    if float(value) != int(value):
        raise DataError(f"{where}: note number {value!r} is not an integer")
    return int(value)


def notes_to_roll(song, where: str) -> tuple[np.ndarray, int]:
    """A song (list of steps, each an iterable of MIDI note numbers) → ``(steps, 88)`` roll, dropped count."""
    if not isinstance(song, (list, tuple)):
        raise DataError(f"{where}: a song must be a list of time steps, got {type(song).__name__}")
    roll = np.zeros((len(song), NUM_KEYS), dtype=np.float32)
    dropped = 0
    for t, step in enumerate(song):
        if not isinstance(step, (list, tuple, set, frozenset)):
            raise DataError(f"{where}, step {t}: a time step must be a tuple/list of MIDI note numbers, "
                            f"got {type(step).__name__}")
        for value in step:
            note = _note_number(value, f"{where}, step {t}")
            if LOWEST_MIDI <= note <= HIGHEST_MIDI:
                roll[t, note - LOWEST_MIDI] = 1.0
            else:
                dropped += 1
    return roll, dropped


def parse_note_pickle(path: Path) -> tuple[dict[str, list[np.ndarray]], dict]:
    """Read a note pickle (restricted unpickler) → split rolls and counts."""
    from .safe_pickle import safe_load

    raw = safe_load(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a dict with keys train/valid/test, got {type(raw).__name__}")
    missing = [k for k in ("train", "valid", "test") if k not in raw]
    if missing:
        raise DataError(f"{path}: the dict lacks the split(s) {missing} (has {sorted(map(str, raw))})")
    splits, dropped_notes, dropped_songs = {}, 0, 0
    for split in ("train", "valid", "test"):
        songs = raw[split]
        if not isinstance(songs, (list, tuple)):
            raise DataError(f"{path}: split {split!r} must be a list of songs, got {type(songs).__name__}")
        rolls = []
        for i, song in enumerate(songs):
            roll, dropped = notes_to_roll(song, f"{path}: {split} song {i}")
            dropped_notes += dropped
            if len(roll) < 2:
                dropped_songs += 1
                continue
            rolls.append(roll)
        splits[split] = rolls
    return splits, {"dropped_notes": dropped_notes, "dropped_songs": dropped_songs}


def load_note_pickle(name: str, data_dir: str | None = None, *, rebuild: bool = False) -> SequenceDataset:
    """Load one of the Boulanger-Lewandowski pickles (``name`` in :data:`NOTE_PICKLES`)."""
    path = _find_pickle(name, data_dir)
    spec = music_spec(name)
    cached = _cached(name, _source_key([path]))
    ds = None if rebuild else cached_dataset(spec, cached)  # a damaged cache is converted again
    if ds is not None:
        return ds
    splits, counts = parse_note_pickle(path)
    return _store(spec, cached, splits, source=str(path), **counts)


def _pickle_loader(name: str):
    def load(data_dir: str | None = None, **kwargs) -> SequenceDataset:
        return load_note_pickle(name, data_dir, **kwargs)
    load.__name__ = f"load_{name}"
    load.__doc__ = f"Load ``{NOTE_PICKLES[name][0]}`` (see :func:`load_note_pickle`)."
    return load


load_muse = _pickle_loader("muse")
load_nottingham = _pickle_loader("nottingham")
load_jsb_chorales = _pickle_loader("jsb_chorales")
load_piano_midi = _pickle_loader("piano_midi")


# --------------------------------------------------------------------------- MIDI folder

MIDI_SUFFIXES = (".mid", ".midi")


def _midi_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)


def midi_to_roll(path: Path, steps_per_quarter: int = 2, step_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """One MIDI file → ``(steps, 88)`` roll and the number of notes outside the 88 keys (dropped)."""
    import pretty_midi

    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as e:  # mido/pretty_midi raise many types on corrupt files
        raise DataError(f"{path}: not a readable MIDI file ({type(e).__name__}: {e})") from e
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    if not notes:
        raise DataError(f"{path}: the MIDI file has no (non-drum) notes")
    if step_seconds is not None:
        to_step = lambda t: t / step_seconds  # noqa: E731
    else:
        ticks_per_step = pm.resolution / steps_per_quarter
        to_step = lambda t: pm.time_to_tick(t) / ticks_per_step  # noqa: E731
    spans = [(int(round(to_step(n.start))), int(round(to_step(n.end))), n.pitch) for n in notes]
    length = max(max(b, a + 1) for a, b, _ in spans)
    roll = np.zeros((length, NUM_KEYS), dtype=np.float32)
    dropped = 0
    for first, last, pitch in spans:
        if not LOWEST_MIDI <= pitch <= HIGHEST_MIDI:
            dropped += 1
            continue
        roll[first : max(last, first + 1), pitch - LOWEST_MIDI] = 1.0
    return roll, dropped


def load_midi_folder(data_dir: str | None = None, *, steps_per_quarter: int = 2, step_seconds: float | None = None,
                     seed: int = 0, rebuild: bool = False, progress: bool = False) -> SequenceDataset:
    """Every MIDI file under ``data_dir`` → rolls, split by file (seeded 60/20/20 %)."""
    from tqdm.auto import tqdm

    if not data_dir:
        raise DataError("midi_folder: no data location given: pass --data-dir (a folder of .mid files) or set "
                        "$PYRO_SRNN_MIDI_DIR")
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (midi_folder expects a folder of .mid/.midi files)")
    files = _midi_files(folder)
    if not files:
        raise DataError(f"{folder}: no .mid/.midi files found (searched recursively)")
    if step_seconds is not None and not step_seconds > 0:
        raise ValueError(f"step_seconds must be positive, got {step_seconds}")
    spec = music_spec("midi_folder")
    cached = _cached("midi_folder", _source_key(files, steps_per_quarter=steps_per_quarter,
                                                step_seconds=step_seconds, seed=seed))
    ds = None if rebuild else cached_dataset(spec, cached)  # a damaged cache is converted again
    if ds is not None:
        return ds
    rolls, dropped = {}, 0
    for path in tqdm(files, desc="midi_folder: converting", disable=not progress):
        roll, d = midi_to_roll(path, steps_per_quarter, step_seconds)
        rolls[str(path.relative_to(folder))] = roll
        dropped += d
    parts = split_names(sorted(rolls), seed=seed)
    splits = {k: [rolls[n] for n in v] for k, v in parts.items()}
    return _store(spec, cached, splits, source=str(folder), files=len(files), dropped_notes=dropped,
                  step=("%g s" % step_seconds) if step_seconds else f"1/{steps_per_quarter} quarter note")


# --------------------------------------------------------------------------- music21 corpora

FOLK_COLLECTIONS = ("ryansMammoth", "oneills1850")
PALESTRINA_DEFAULT_PIECES = 300


def _corpus_files(collections) -> list[str]:
    from music21 import corpus

    files = []
    for c in collections:
        found = sorted(str(p) for p in corpus.getComposer(c))
        if not found:
            raise DataError(f"music21 corpus: collection {c!r} not found (is music21's corpus installed?)")
        files.extend(found)
    return files


def _corpus_id(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[-2:])


def _realise_and_roll(score, steps_per_quarter: int, expand_repeats: bool) -> np.ndarray:
    from music21 import harmony

    if expand_repeats:
        try:
            score = score.expandRepeats()
        except Exception:  # music21 raises several types on malformed repeat marks
            pass
    if score.recurse().getElementsByClass(harmony.ChordSymbol).first() is not None:
        score = harmony.realizeChordSymbolDurations(score)  # chord symbols → chords held until the next one
    return score_to_roll(score, steps_per_quarter)


def convert_corpus_file(path: str, steps_per_quarter: int = 2, expand_repeats: bool = True) -> list[tuple[str, np.ndarray]]:
    """One music21 corpus file (a score or an opus of tunes) → ``[(piece id, roll), …]``."""
    from music21 import corpus, stream

    parsed = corpus.parse(path)
    scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
    out = []
    for i, score in enumerate(scores):
        roll = _realise_and_roll(score, steps_per_quarter, expand_repeats)
        if roll.sum() > 0 and len(roll) > 1:
            out.append((f"{_corpus_id(path)}#{i}" if len(scores) > 1 else _corpus_id(path), roll))
    return out


def _load_corpus(name: str, files: list[str], *, steps_per_quarter: int, expand_repeats: bool, seed: int,
                 workers: int | None, progress: bool, rebuild: bool, **meta) -> SequenceDataset:
    spec = music_spec(name)
    key_blob = json.dumps({"files": [_corpus_id(f) for f in files], "spq": steps_per_quarter,
                           "repeats": expand_repeats, "seed": seed})
    cached = _cached(name, hashlib.sha1(key_blob.encode()).hexdigest()[:12])
    ds = None if rebuild else cached_dataset(spec, cached)  # a damaged cache is converted again
    if ds is not None:
        return ds
    convert = functools.partial(convert_corpus_file, steps_per_quarter=steps_per_quarter,
                                expand_repeats=expand_repeats)
    results = _convert_all(files, workers=workers, progress=progress, convert=convert, desc=f"{name}: converting")
    pieces = dict(item for per_file in results for item in per_file)
    if not pieces:
        raise DataError(f"{name}: no piece could be converted from the music21 corpus")
    parts = split_names(sorted(pieces), seed=seed)
    splits = {k: [pieces[n] for n in v] for k, v in parts.items()}
    return _store(spec, cached, splits, source="music21 corpus", files=len(files), pieces=len(pieces),
                  step=f"1/{steps_per_quarter} quarter note", **meta)


def load_folk_tunes(data_dir: str | None = None, *, collections=FOLK_COLLECTIONS, max_pieces: int | None = None,
                    steps_per_quarter: int = 2, seed: int = 0, workers: int | None = None, progress: bool = True,
                    rebuild: bool = False) -> SequenceDataset:
    """Folk tunes from the music21 corpus (see the module docstring). ``max_pieces``: first N files only."""
    files = _corpus_files(collections)
    if max_pieces:
        files = files[:max_pieces]
    return _load_corpus("folk_tunes", files, steps_per_quarter=steps_per_quarter, expand_repeats=True, seed=seed,
                        workers=workers, progress=progress, rebuild=rebuild, collections=",".join(collections))


def load_palestrina(data_dir: str | None = None, *, max_pieces: int | None = PALESTRINA_DEFAULT_PIECES,
                    steps_per_quarter: int = 1, seed: int = 0, workers: int | None = None, progress: bool = True,
                    rebuild: bool = False) -> SequenceDataset:
    """The first ``max_pieces`` Palestrina pieces of the music21 corpus (0 or None: all 1,318)."""
    files = _corpus_files(["palestrina"])
    if max_pieces:
        files = files[:max_pieces]
    return _load_corpus("palestrina", files, steps_per_quarter=steps_per_quarter, expand_repeats=False, seed=seed,
                        workers=workers, progress=progress, rebuild=rebuild)
