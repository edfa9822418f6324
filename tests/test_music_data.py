"""Music readers on miniature corpora written in the exact published formats.

Note pickles are written with real numpy integer scalars (pickle protocols 2 and 4 and the
Python-2 layout whose scalar payload is a str); MIDI files with pretty_midi; music21 readers
only ever parse a few corpus files.
"""
from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from pyro_srnn.data import DataError, load_dataset
from pyro_srnn.data import music
from pyro_srnn.data.safe_pickle import safe_load


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_SRNN_CACHE", str(tmp_path / "cache"))


SONGS = {
    "train": [[(60, 64, 67), (60,), (), (20, 62)], [(21,), (108,), (109, 21)]],
    "valid": [[(72,), (74, 77)], [(48,)]],  # the second song has one step: nothing to score
    "test": [[(36, 40), (43,), (47,)]],
}


def _np_songs(songs, dtype=np.int64):
    return {k: [[tuple(dtype(n) for n in step) for step in song] for song in v] for k, v in songs.items()}


class _Py2Pickler(pickle.Pickler):
    """Writes numpy scalars as Python 2 / old numpy did: ``scalar(dtype, <str payload>)`` (no
    ``_codecs``) and ``dtype("i4", 0, 1)`` with int flags."""

    def reducer_override(self, obj):
        if isinstance(obj, np.integer):
            func = np.int64(0).__reduce__()[0]  # numpy's own multiarray.scalar
            return func, (obj.dtype, obj.tobytes().decode("latin1"))
        if isinstance(obj, np.dtype):
            _, (spec, _, _), state = obj.__reduce__()
            return np.dtype, (spec, 0, 1), state
        return NotImplemented


def write_pickle(path, data, variant="protocol2"):
    if variant == "py2":
        buffer = io.BytesIO()
        _Py2Pickler(buffer, protocol=2).dump(data)
        # files written under numpy 1 name the global numpy.core.multiarray.scalar
        raw = buffer.getvalue().replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
        assert b"cnumpy.core.multiarray" in raw
        path.write_bytes(raw)
    else:
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol={"protocol2": 2, "protocol4": 4}[variant])
    return path


@pytest.mark.parametrize("variant", ["protocol2", "protocol4", "py2"])
def test_note_pickle_rolls_and_splits(tmp_path, variant):
    write_pickle(tmp_path / "JSB Chorales.pickle", _np_songs(SONGS, np.int32 if variant == "py2" else np.int64),
                 variant)
    ds = music.load_note_pickle("jsb_chorales", str(tmp_path))  # a folder holding the published name
    assert ds.spec.step_dim == 88 and ds.spec.family == "bernoulli"
    assert ds.spec.chunk_len == 100 and ds.spec.metric_unit == "time step"
    assert ds.spec.metric_divisor(num_steps=7, num_sequences=2) == 7.0
    assert [len(s) for s in ds.train] == [4, 3] and [len(s) for s in ds.valid] == [2] and len(ds.test) == 1
    first = ds.train[0]
    assert first.shape == (4, 88) and first.dtype == np.float32
    assert set(np.flatnonzero(first[0])) == {60 - 21, 64 - 21, 67 - 21}
    assert first[2].sum() == 0  # a silent step stays silent
    assert set(np.flatnonzero(first[3])) == {62 - 21}  # MIDI 20 is below A0: dropped
    assert set(np.flatnonzero(ds.train[1][1])) == {87}  # MIDI 108 (C8) is the top key
    assert ds.info["dropped_notes"] == 2 and ds.info["dropped_songs"] == 1
    assert ds.info["from_cache"] is False


def test_safe_load_matches_pickle_for_numpy_scalars(tmp_path):
    data = _np_songs(SONGS)
    write_pickle(tmp_path / "a.pickle", data)
    loaded = safe_load(tmp_path / "a.pickle")
    assert loaded == pickle.loads(pickle.dumps(data))
    assert isinstance(loaded["train"][0][0][0], np.int64)


def test_note_pickle_cache_is_reused(tmp_path, monkeypatch):
    path = write_pickle(tmp_path / "Nottingham.pickle", _np_songs(SONGS))
    first = load_dataset("nottingham", str(path))
    calls = []
    monkeypatch.setattr(music, "parse_note_pickle", lambda p: calls.append(p) or (_ for _ in ()).throw(AssertionError))
    second = load_dataset("nottingham", str(path))
    assert not calls and second.info["from_cache"] is True
    assert second.info["dropped_notes"] == 2 and second.info["source"] == str(path)
    for a, b in zip(first.train + first.valid + first.test, second.train + second.valid + second.test):
        np.testing.assert_array_equal(a, b)


def test_note_pickle_env_var(tmp_path, monkeypatch):
    write_pickle(tmp_path / "MuseData.pickle", _np_songs(SONGS))
    monkeypatch.setenv("PYRO_SRNN_MUSEDATA", str(tmp_path))
    assert len(load_dataset("muse").train) == 2


def test_missing_pickle_names_expected_file(tmp_path):
    with pytest.raises(DataError, match="Piano-midi.de.pickle"):
        music.load_note_pickle("piano_midi", str(tmp_path))
    with pytest.raises(DataError, match="PYRO_SRNN_PIANO_MIDI"):
        music.load_note_pickle("piano_midi", None)
    with pytest.raises(DataError, match="no such file"):
        music.load_note_pickle("piano_midi", str(tmp_path / "nope.pickle"))


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_hostile_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "JSB Chorales.pickle"
    with open(path, "wb") as f:
        pickle.dump({"train": [_Hostile(marker)], "valid": [], "test": []}, f, protocol=2)
    with pytest.raises(DataError) as err:
        music.load_note_pickle("jsb_chorales", str(path))
    assert str(path) in str(err.value) and "system" in str(err.value)
    assert not marker.exists()
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("payload, message", [
    ([np.float64(60.0)], "only integer"),  # a numpy float scalar
    ([np.array([60])], "refused to load global"),  # arrays need numpy._reconstruct
    ([eval], r"refused to load global (__builtin__|builtins)\.eval"),
])
def test_other_globals_are_refused(tmp_path, payload, message):
    path = tmp_path / "x.pickle"
    with open(path, "wb") as f:
        pickle.dump({"train": [[payload]], "valid": [], "test": []}, f, protocol=2)
    with pytest.raises(DataError, match=message) as err:
        safe_load(path)
    assert str(path) in str(err.value)


class _BuiltDtypePickler(pickle.Pickler):
    """Writes one note as ``scalar(dtype("i8") + BUILD(state), payload)`` with a hand-made dtype state:
    the way a pickle can turn an allowed integer dtype into a structured or object one."""

    def __init__(self, file, fields):
        super().__init__(file, protocol=2)
        self.fields = fields

    def reducer_override(self, obj):
        if isinstance(obj, np.integer):
            return np.int64(0).__reduce__()[0], (_Marker(), obj.tobytes())
        if isinstance(obj, _Marker):
            names = tuple(self.fields)
            state = (3, "|", None, names, self.fields, 8, 1, 63 if any(d.hasobject for d, _ in self.fields.values())
                     else 0)
            return np.dtype, ("i8", False, True), state
        return NotImplemented


class _Marker:
    pass


@pytest.mark.parametrize("fields", [
    {"a": (np.dtype("i4"), 0), "b": (np.dtype("i4"), 4)},  # structured: two int32 fields over the int64
    {"a": (np.dtype("O"), 0)},  # an object field: frombuffer would read a pointer from the payload
])
def test_a_pickle_cannot_build_a_structured_or_object_dtype(tmp_path, fields):
    path = tmp_path / "x.pickle"
    with open(path, "wb") as f:
        _BuiltDtypePickler(f, fields).dump({"train": [[(np.int64(60),)]], "valid": [], "test": []})
    with pytest.raises(DataError, match="structured and object dtypes are not allowed") as err:
        safe_load(path)
    assert str(path) in str(err.value)
    assert np.dtype("i8").names is None and np.int64(60) == 60  # nothing shared was changed


@pytest.mark.parametrize("data, message", [
    ({"train": [[(60.5,)]], "valid": [], "test": []}, "not an integer"),
    ({"train": [[(float("nan"),)]], "valid": [], "test": []}, "NaN"),
    ({"train": [], "valid": []}, "lacks the split"),
    ({"train": [[60]], "valid": [], "test": []}, "tuple/list of MIDI note numbers"),
    ([1, 2], "expected a dict"),
])
def test_malformed_note_pickles(tmp_path, data, message):
    path = write_pickle(tmp_path / "Nottingham.pickle", data)
    with pytest.raises(DataError, match=message) as err:
        music.load_note_pickle("nottingham", str(path))
    assert str(path) in str(err.value)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())  # nothing half-written


def test_truncated_pickle(tmp_path):
    path = write_pickle(tmp_path / "Nottingham.pickle", _np_songs(SONGS))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="not a readable note pickle") as err:
        music.load_note_pickle("nottingham", str(path))
    assert str(path) in str(err.value)


def test_damaged_cache_is_converted_again(tmp_path):
    path = write_pickle(tmp_path / "Nottingham.pickle", _np_songs(SONGS))
    first = music.load_note_pickle("nottingham", str(path))
    (cached,) = (tmp_path / "cache").iterdir()
    good = cached.read_bytes()
    for damaged in (good[: len(good) // 2], b"", good[:-30] + b"\0" * 30):
        cached.write_bytes(damaged)
        again = music.load_note_pickle("nottingham", str(path))
        assert again.info["from_cache"] is False
        for a, b in zip(first.train + first.valid + first.test, again.train + again.valid + again.test):
            np.testing.assert_array_equal(a, b)
        assert list((tmp_path / "cache").iterdir()) == [cached] and cached.read_bytes() == good
    assert music.load_note_pickle("nottingham", str(path)).info["from_cache"] is True


def test_empty_valid_or_test_split_is_refused(tmp_path):
    # every valid song has one step: dropped, so the valid split is empty
    path = write_pickle(tmp_path / "Nottingham.pickle", _np_songs(dict(SONGS, valid=[[(60,)], [(61,)]])))
    with pytest.raises(DataError, match="the valid split is empty") as err:
        music.load_note_pickle("nottingham", str(path))
    assert str(path) in str(err.value)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


# --------------------------------------------------------------------------- MIDI folder

def _write_midi(path, notes, tempo=120.0, drum_notes=()):
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    piano = pretty_midi.Instrument(program=0)
    piano.notes = [pretty_midi.Note(velocity=80, pitch=p, start=s, end=e) for p, s, e in notes]
    pm.instruments.append(piano)
    if drum_notes:
        drums = pretty_midi.Instrument(program=0, is_drum=True)
        drums.notes = [pretty_midi.Note(velocity=80, pitch=p, start=s, end=e) for p, s, e in drum_notes]
        pm.instruments.append(drums)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


def test_midi_to_roll_quarter_grid_and_seconds(tmp_path):
    # 120 bpm: a quarter note lasts 0.5 s, an eighth-note step 0.25 s
    path = _write_midi(tmp_path / "a.mid", [(60, 0.0, 0.5), (64, 0.5, 1.0), (67, 0.5, 0.55), (12, 0.0, 1.0)],
                       drum_notes=[(38, 0.0, 2.0)])
    roll, dropped = music.midi_to_roll(path, steps_per_quarter=2)
    assert roll.shape == (4, 88) and dropped == 1  # MIDI 12 is below the keyboard; drums are skipped
    np.testing.assert_array_equal(roll[:, 60 - 21], [1, 1, 0, 0])
    np.testing.assert_array_equal(roll[:, 64 - 21], [0, 0, 1, 1])
    np.testing.assert_array_equal(roll[:, 67 - 21], [0, 0, 1, 0])  # a short note lasts one step
    assert roll.sum() == 5
    roll, _ = music.midi_to_roll(path, step_seconds=0.125)
    assert roll.shape == (8, 88) and roll[:, 60 - 21].sum() == 4
    slow = _write_midi(tmp_path / "slow.mid", [(60, 0.0, 1.0)], tempo=60.0)  # one quarter note at 60 bpm
    assert music.midi_to_roll(slow, steps_per_quarter=2)[0][:, 60 - 21].sum() == 2


def test_midi_folder_split_and_cache(tmp_path, monkeypatch):
    folder = tmp_path / "midi"
    for i in range(5):
        _write_midi(folder / f"sub{i % 2}" / f"piece{i}.mid", [(60 + i, 0.0, 1.0 + i), (72, 0.5, 1.0)])
    ds = load_dataset("midi_folder", str(folder))
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [3, 1, 1]
    assert ds.info["files"] == 5 and ds.spec.chunk_len == 100
    lengths = sorted(len(s) for s in ds.train + ds.valid + ds.test)
    assert lengths == [4, 8, 12, 16, 20]  # (1 + i) s at 0.25 s per step
    monkeypatch.setattr(music, "midi_to_roll", lambda *a, **k: (_ for _ in ()).throw(AssertionError("parsed")))
    again = load_dataset("midi_folder", str(folder))
    assert again.info["from_cache"] is True and len(again.train) == 3


def test_midi_folder_too_small_for_three_splits(tmp_path):
    folder = tmp_path / "midi"
    for i in range(3):  # 60/20/20 % of 3 files: 2/1/0
        _write_midi(folder / f"piece{i}.mid", [(60 + i, 0.0, 2.0)])
    with pytest.raises(DataError, match="the test split is empty") as err:
        music.load_midi_folder(str(folder))
    assert str(folder) in str(err.value)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_midi_folder_bad_files(tmp_path):
    empty = tmp_path / "empty"
    _write_midi(empty / "silent.mid", [])
    with pytest.raises(DataError, match="no \\(non-drum\\) notes") as err:
        music.load_midi_folder(str(empty))
    assert "silent.mid" in str(err.value)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    with pytest.raises(DataError, match="not a readable MIDI file") as err:
        music.load_midi_folder(str(corrupt))
    assert "broken.mid" in str(err.value)
    (tmp_path / "no_midi").mkdir()
    (tmp_path / "no_midi" / "notes.txt").write_text("not music")
    with pytest.raises(DataError, match="no .mid/.midi files"):
        music.load_midi_folder(str(tmp_path / "no_midi"))
    with pytest.raises(DataError, match="no such folder"):
        music.load_midi_folder(str(tmp_path / "missing"))
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


# --------------------------------------------------------------------------- music21 corpora

ABC_WITH_CHORDS = """X:1
T:test
M:4/4
L:1/8
K:G
"G"GABc "D7"d2 B2|"C"c2 e2 "G"d4|]
"""


def test_chord_symbols_are_realised():
    from music21 import converter

    roll = music._realise_and_roll(converter.parse(ABC_WITH_CHORDS, format="abc"), 2, expand_repeats=False)
    assert roll.shape == (16, 88)
    g_major = [55 - 21, 59 - 21, 62 - 21]
    assert roll[0:4, g_major].all() and not roll[4:8, g_major[0]].any()  # G held until D7 at step 4
    assert roll[4:8, [50 - 21, 54 - 21, 57 - 21, 60 - 21]].all()  # D7
    np.testing.assert_array_equal(np.flatnonzero(roll[:4, 67 - 21:73 - 21].any(axis=0)), [0, 2, 4, 5])


def test_score_to_roll_steps_per_quarter():
    from music21 import note, stream

    from pyro_srnn.data.bach import score_to_roll

    s = stream.Stream([note.Note("C4", quarterLength=1.0), note.Note("E4", quarterLength=0.5)])
    np.testing.assert_array_equal(score_to_roll(s)[:, 60 - 21], [1, 0])
    np.testing.assert_array_equal(score_to_roll(s, steps_per_quarter=2)[:, 60 - 21], [1, 1, 0])
    np.testing.assert_array_equal(score_to_roll(s, steps_per_quarter=2)[:, 64 - 21], [0, 0, 1])


def test_folk_tunes_and_palestrina_subsets():
    folk = music.load_folk_tunes(max_pieces=5, progress=False, workers=1)
    assert [len(folk.train), len(folk.valid), len(folk.test)] == [3, 1, 1]
    assert folk.info["files"] == 5 and folk.spec.name == "folk_tunes"
    assert all(s.shape[1] == 88 and set(np.unique(s)) <= {0.0, 1.0} for s in folk.train)
    assert all(s.sum(axis=1).max() >= 1 for s in folk.train)
    assert music.load_folk_tunes(max_pieces=5, progress=False).info["from_cache"] is True
    pal = music.load_palestrina(max_pieces=4, progress=False, workers=1)  # 2/1/1: every split has one
    assert pal.info["pieces"] == 4 and pal.spec.metric_unit == "time step"
    assert max(s.sum(axis=1).max() for s in pal.train + pal.test) >= 3  # polyphony


def test_datasets_command_shows_where_music_and_handwriting_read_from(tmp_path, monkeypatch, capsys):
    from pyro_srnn.cli import main

    write_pickle(tmp_path / "Nottingham.pickle", _np_songs(SONGS))
    monkeypatch.setenv("PYRO_SRNN_NOTTINGHAM", str(tmp_path))
    monkeypatch.delenv("PYRO_SRNN_MUSEDATA", raising=False)
    monkeypatch.delenv("PYRO_SRNN_IAMONDB", raising=False)
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line and not line[0].isspace()}
    assert rows["nottingham"] == "present" and rows["muse"] == "missing" and rows["iamondb"] == "missing"
    assert rows["folk_tunes"] == rows["palestrina"] == rows["lasa"] == rows["hershey"] == "present"
    assert f"reads from: {tmp_path} (env PYRO_SRNN_NOTTINGHAM)" in out
    assert "PYRO_SRNN_MUSEDATA at 'MuseData.pickle'" in out and "lineStrokes" in out
