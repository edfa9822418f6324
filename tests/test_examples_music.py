"""Every music and handwriting example runs end to end with ``--smoke`` on miniature data.

The pickle, MIDI and IAM-OnDB examples read miniature corpora written in the exact formats by the
reader tests' helpers; the offline sets (music21, LASA, Hershey) use a tiny subset. Each run must
train, evaluate the test split in the data set's unit and write samples a person can open.
"""
from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from test_handwriting_data import _write_lasa, make_iamondb
from test_music_data import SONGS, _np_songs, _write_midi, write_pickle

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_SRNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(EXAMPLES))


#: the examples whose smoke run keeps the default latent model (f-srnn); the others run the cheaper
#: f-rnn to keep the suite short (the data path, which is what differs between examples, is the same)
LATENT_SMOKE = {"jsb_chorales", "iamondb", "lasa", "midi_folder"}


def run(name: str, argv: list[str], tmp_path) -> dict:
    module = importlib.import_module(name)
    out = tmp_path / "run"
    model = [] if name in LATENT_SMOKE else ["--model", "f-rnn"]
    summary = module.main(argv + model + ["--smoke", "--no-progress", "--out", str(out)])
    assert summary["smoke"] is True and summary["dataset"] == name and summary["steps"] == 3
    assert math.isfinite(summary["value"]) and summary["split"] == "test"
    assert json.loads((out / "result.json").read_text())["value"] == pytest.approx(summary["value"])
    assert all(Path(p).stat().st_size > 0 for p in summary["samples"])
    return summary


def _midi_samples_ok(summary):
    import pretty_midi

    mids = [p for p in summary["samples"] if p.endswith(".mid")]
    assert len(mids) == 2 and any(p.endswith("pianoroll.png") for p in summary["samples"])
    for p in mids:
        pretty_midi.PrettyMIDI(p)  # a readable MIDI file
    assert summary["unit"] == "nats per time step"


# A larger miniature than the reader tests' SONGS: the smoke run takes up to 8/2/2 songs
SMOKE_SONGS = {split: [song for _ in range(3) for song in songs if len(song) > 1] for split, songs in SONGS.items()}


@pytest.mark.parametrize("name, file_name", [
    ("muse", "MuseData.pickle"), ("nottingham", "Nottingham.pickle"),
    ("jsb_chorales", "JSB Chorales.pickle"), ("piano_midi", "Piano-midi.de.pickle"),
])
def test_note_pickle_examples(tmp_path, name, file_name):
    write_pickle(tmp_path / file_name, _np_songs(SMOKE_SONGS))
    _midi_samples_ok(run(name, ["--data-dir", str(tmp_path)], tmp_path))


def test_midi_folder_example(tmp_path):
    for i in range(5):
        _write_midi(tmp_path / "midi" / f"p{i}.mid", [(60 + i, 0.0, 2.0), (67, 1.0, 3.0), (72 - i, 2.0, 2.5)])
    _midi_samples_ok(run("midi_folder", ["--data-dir", str(tmp_path / "midi"), "--step-seconds", "0.25"], tmp_path))


@pytest.mark.parametrize("name, pieces", [("bach_chorales", 5), ("folk_tunes", 5), ("palestrina", 5)])
def test_music21_examples_on_a_tiny_subset(tmp_path, name, pieces):
    _midi_samples_ok(run(name, ["--max-pieces", str(pieces)], tmp_path))


def _pen_samples_ok(summary):
    pngs = [p for p in summary["samples"] if p.endswith(".png")]
    assert len(pngs) == 2 and summary["unit"] == "nats per line"
    with open(pngs[0], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_iamondb_example(tmp_path):
    root = make_iamondb(tmp_path / "iam")
    _pen_samples_ok(run("iamondb", ["--data-dir", str(root)], tmp_path))


def test_lasa_example(tmp_path):
    # miniature LASA folder in the shipped .mat layout (the real 1000-point demos are slow on CPU)
    folder = tmp_path / "lasa"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for shape in range(3):
        _write_lasa(folder / f"Shape{shape}.mat", [np.cumsum(rng.normal(size=(2, 30)), axis=1) for _ in range(2)])
    _pen_samples_ok(run("lasa", ["--data-dir", str(folder)], tmp_path))


def test_hershey_example(tmp_path):
    summary = run("hershey", ["--max-sentences", "5", "--variants", "1", "--spacing", "40"], tmp_path)
    _pen_samples_ok(summary)


def test_examples_document_command_and_study_defaults():
    for name in ("muse", "nottingham", "jsb_chorales", "piano_midi", "midi_folder", "bach_chorales",
                 "folk_tunes", "palestrina", "iamondb", "lasa", "hershey"):
        text = (EXAMPLES / f"{name}.py").read_text()
        assert f"python examples/{name}.py" in text and "def main(" in text
        args = importlib.import_module(name).build_parser().parse_args([])
        midi = name not in ("iamondb", "lasa", "hershey")
        assert args.batch_size == (16 if midi else 32) and args.steps == 20000 and args.size == "study"
