"""The embedded default data set: Bach chorales from the music21 corpus."""
import numpy as np
import pytest

from pyro_srnn.data import bach, load_dataset


@pytest.fixture
def small_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_SRNN_CACHE", str(tmp_path))
    return tmp_path


def test_score_to_roll_samples_quarter_note_steps():
    from music21 import note, stream

    s = stream.Stream()
    s.append(note.Note("C4", quarterLength=1))  # MIDI 60 → key 39
    s.append(note.Note("E4", quarterLength=2))  # MIDI 64 → key 43
    s.append(note.Note("G4", quarterLength=0.5))  # sounds at quarter time 3 → one step
    roll = bach.score_to_roll(s)
    assert roll.shape == (4, 88)
    assert roll[0].nonzero()[0].tolist() == [39]
    assert roll[1].nonzero()[0].tolist() == [43] and roll[2].nonzero()[0].tolist() == [43]
    assert roll[3].nonzero()[0].tolist() == [46]


def test_conversion_split_and_cache_reuse(small_cache, monkeypatch):
    ds = bach.load_bach_chorales(max_pieces=5, workers=1, progress=False)
    assert not ds.info["from_cache"]
    seqs = ds.train + ds.valid + ds.test
    assert 1 <= len(seqs) <= 5 and len(ds.train) >= len(ds.test)
    for s in seqs:
        assert s.shape[1] == 88 and s.dtype == np.float32
        assert set(np.unique(s)) <= {0.0, 1.0}
        assert 1 <= s.sum(1).max() <= 8  # four voices, a few doubled notes at most
    files = list(small_cache.iterdir())
    assert [f.name for f in files] == ["bach_chorales-v1-first5.npz"]

    def no_parsing(name):
        raise AssertionError("the second load must read the cache, not the corpus")

    monkeypatch.setattr(bach, "convert_chorale", no_parsing)
    again = bach.load_bach_chorales(max_pieces=5, workers=1, progress=False)
    assert again.info["from_cache"]
    for a, b in zip(seqs, again.train + again.valid + again.test):
        np.testing.assert_array_equal(a, b)


def test_transposition_to_c():
    from music21 import corpus

    name = bach.chorale_names()[0]
    roll = bach.convert_chorale(name)
    key = corpus.parse(name).analyze("key")
    # after transposition the pitch-class profile peaks on C (major) or C/Eb/G (minor triad)
    pcs = np.zeros(12)
    for k in range(88):
        pcs[(k + bach.LOWEST_MIDI) % 12] += roll[:, k].sum()
    top = set(np.argsort(pcs)[-3:].tolist())
    assert 0 in top, (key, pcs)


def test_split_is_seeded_by_piece_and_disjoint():
    names = [f"p{i}" for i in range(50)]
    a, b = bach.split_names(names), bach.split_names(names)
    assert a == b
    assert len(a["train"]) == 30 and len(a["valid"]) == 10 and len(a["test"]) == 10
    assert not set(a["train"]) & set(a["valid"]) and not set(a["valid"]) & set(a["test"])


def test_the_default_dataset_loads_through_the_registry():
    ds = load_dataset("bach_chorales")  # the full corpus (converted once, ~1-2 min, then cached)
    summary = ds.summary()
    assert summary["train"]["sequences"] > 150 and summary["test"]["sequences"] > 40
    assert ds.spec.step_dim == 88 and ds.spec.chunk_len == 100 and ds.spec.metric_unit == "time step"
