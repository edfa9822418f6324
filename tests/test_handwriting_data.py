"""Handwriting readers: IAM-OnDB lineStrokes trees written in the real format, LASA, Hershey."""
from __future__ import annotations

import builtins

import numpy as np
import pytest

from pyro_srnn.data import DataError, load_dataset
from pyro_srnn.data import handwriting as hw


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_SRNN_CACHE", str(tmp_path / "cache"))


def _no_cache_files(tmp_path):
    cache = tmp_path / "cache"
    return not cache.exists() or not list(cache.iterdir())


def _line_xml(strokes) -> str:
    body = []
    for stroke in strokes:
        pts = "".join(f'<Point x="{x}" y="{y}" time="{0.01 * i:.2f}"/>' for i, (x, y) in enumerate(stroke))
        body.append(f'<Stroke colour="black" start_time="0" end_time="1">{pts}</Stroke>')
    return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<WhiteboardCaptureSession>'
            '<WhiteboardDescription><SensorLocation corner="top_left"/></WhiteboardDescription>'
            f'<StrokeSet>{"".join(body)}</StrokeSet></WhiteboardCaptureSession>')


# form → its lines → strokes (points); x grows rightwards, y downwards as on the tablet
FORMS = {
    "a01-000u": [[[(100, 200), (110, 205), (125, 203)], [(130, 200), (131, 220)]],
                 [[(300, 400), (310, 390)]]],
    "a01-001w": [[[(0, 0), (5, 5), (9, 4), (12, 2)]]],
    "b02-010x": [[[(50, 50), (40, 60)], [(45, 45)], [(47, 49), (60, 70)]]],
}


def make_iamondb(root, forms=FORMS, train=("a01-000u",), valid=("a01-001w",), test=None):
    for form, lines in forms.items():
        writer, doc = form.split("-")[0], form.rstrip("abcdefghijklmnopqrstuvwxyz")
        folder = root / "lineStrokes" / writer / doc
        folder.mkdir(parents=True, exist_ok=True)
        for n, strokes in enumerate(lines, start=1):
            (folder / f"{form}-{n:02d}.xml").write_text(_line_xml(strokes), encoding="latin-1")
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "valid.txt").write_text("\n".join(valid) + "\n")
    if test is not None:
        (root / "test.txt").write_text("\n".join(test) + "\n")
    return root


def _raw_steps(strokes):
    return hw.strokes_to_steps([np.array(s, dtype=float) for s in strokes])


def test_strokes_to_steps_pen_lifts_after_last_point():
    steps = _raw_steps(FORMS["a01-000u"][0])
    np.testing.assert_array_equal(steps[:, 0], [0, 0, 1, 0, 1])
    np.testing.assert_array_equal(steps[:, 1], [0, 10, 15, 5, 1])
    np.testing.assert_array_equal(steps[:, 2], [0, 5, -2, -3, 20])


def test_iamondb_splits_normalisation_and_units(tmp_path):
    root = make_iamondb(tmp_path / "iam")
    ds = load_dataset("iamondb", str(root))
    assert ds.spec.step_dim == 3 and ds.spec.family == "handwriting"
    assert ds.spec.chunk_len is None and ds.spec.metric_unit == "line"
    assert ds.spec.metric_divisor(num_steps=100, num_sequences=4) == 4.0
    # train: the two lines of a01-000u; valid: a01-001w; test: the remaining form b02-010x
    assert [len(s) for s in ds.train] == [5, 2] and [len(s) for s in ds.valid] == [4]
    assert [len(s) for s in ds.test] == [5] and ds.info["forms"] == [1, 1, 1]
    raw_train = np.concatenate([_raw_steps(line) for line in FORMS["a01-000u"]])
    mean = raw_train[:, 1:].mean(axis=0)
    np.testing.assert_allclose(ds.info["offset_mean"], mean, rtol=1e-6)
    assert ds.info["scale"] == pytest.approx(56.04462)
    np.testing.assert_allclose(np.concatenate(ds.train)[:, 1:].mean(axis=0), 0.0, atol=1e-6)
    expected_test = _raw_steps(FORMS["b02-010x"][0])
    np.testing.assert_allclose(ds.test[0][:, 1:], (expected_test[:, 1:] - mean) / 56.04462, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ds.test[0][:, 0], [0, 1, 1, 0, 1])  # pen bits stay raw


def test_iamondb_test_list_and_missing_forms(tmp_path):
    root = make_iamondb(tmp_path / "iam", train=("a01-000u", "z99-999z"), test=("b02-010x",))
    ds = hw.load_iamondb(str(root))
    assert len(ds.test) == 1 and ds.info["missing_forms"] == 1


def test_iamondb_form_ids_without_session_letter(tmp_path):
    root = make_iamondb(tmp_path / "iam", train=("a01-000",), valid=("a01-001",))
    ds = hw.load_iamondb(str(root))
    assert [len(s) for s in ds.train] == [5, 2] and len(ds.valid) == 1 and len(ds.test) == 1
    assert ds.info["missing_forms"] == 0


def test_iamondb_cache_is_reused(tmp_path, monkeypatch):
    root = make_iamondb(tmp_path / "iam")
    first = hw.load_iamondb(str(root))
    monkeypatch.setattr(hw, "read_line_strokes", lambda p: (_ for _ in ()).throw(AssertionError("parsed")))
    second = hw.load_iamondb(str(root))
    assert second.info["from_cache"] is True and first.info["from_cache"] is False
    np.testing.assert_allclose(second.info["offset_mean"], first.info["offset_mean"])
    for a, b in zip(first.train + first.test, second.train + second.test):
        np.testing.assert_array_equal(a, b)


# a01-000 is a document written in two sessions: the forms a01-000u and a01-000x
TWO_SESSIONS = dict(FORMS, **{"a01-000x": [[[(7, 7), (8, 9), (12, 9)]]]})


@pytest.mark.parametrize("lists, pair", [
    # a document id in one list and one of its forms in another
    (dict(train=("a01-000",), valid=("a01-000u",), test=("b02-010x",)), ("train.txt", "valid.txt")),
    (dict(train=("a01-001w",), valid=("a01-000x",), test=("a01-000",)), ("valid.txt", "test.txt")),
    # the same form id in train.txt and test.txt
    (dict(train=("a01-000u", "a01-001w"), valid=("a01-000x",), test=("a01-001w", "b02-010x")),
     ("train.txt", "test.txt")),
])
def test_iamondb_refuses_a_form_in_two_splits(tmp_path, lists, pair):
    root = make_iamondb(tmp_path / "iam", forms=TWO_SESSIONS, **lists)
    with pytest.raises(DataError, match="in both the") as err:
        hw.load_iamondb(str(root))
    message = str(err.value)
    assert str(root / pair[0]) in message and str(root / pair[1]) in message
    assert _no_cache_files(tmp_path)


def test_iamondb_document_and_form_ids_in_one_list_give_each_line_once(tmp_path):
    root = make_iamondb(tmp_path / "iam", forms=TWO_SESSIONS, train=("a01-000", "a01-000u"), valid=("a01-001w",))
    ds = hw.load_iamondb(str(root))
    assert sorted(len(s) for s in ds.train) == [2, 3, 5]  # a01-000u's two lines and a01-000x's one


def test_iamondb_cache_follows_the_line_files(tmp_path):
    root = make_iamondb(tmp_path / "iam")
    assert [len(s) for s in hw.load_iamondb(str(root)).test] == [5]
    # a new line file of a form that is already in a split
    (root / "lineStrokes" / "b02" / "b02-010" / "b02-010x-02.xml").write_text(_line_xml([[(1, 2), (5, 7)]]))
    ds = hw.load_iamondb(str(root))
    assert ds.info["from_cache"] is False and [len(s) for s in ds.test] == [5, 2]
    # an edited line file
    (root / "lineStrokes" / "a01" / "a01-001" / "a01-001w-01.xml").write_text(_line_xml([[(0, 0), (3, 3)]]))
    ds = hw.load_iamondb(str(root))
    assert ds.info["from_cache"] is False and [len(s) for s in ds.valid] == [2]
    assert hw.load_iamondb(str(root)).info["from_cache"] is True


def test_iamondb_damaged_cache_is_converted_again(tmp_path):
    root = make_iamondb(tmp_path / "iam")
    first = hw.load_iamondb(str(root))
    cache = tmp_path / "cache"
    (path,) = cache.iterdir()
    path.write_bytes(path.read_bytes()[:200])
    again = hw.load_iamondb(str(root))
    assert again.info["from_cache"] is False
    for a, b in zip(first.train + first.valid + first.test, again.train + again.valid + again.test):
        np.testing.assert_array_equal(a, b)
    assert hw.load_iamondb(str(root)).info["from_cache"] is True and list(cache.iterdir()) == [path]


def test_iamondb_malformed_xml_names_file(tmp_path):
    root = make_iamondb(tmp_path / "iam")
    bad = root / "lineStrokes" / "a01" / "a01-000" / "a01-000u-02.xml"
    bad.write_text("<WhiteboardCaptureSession><StrokeSet><Stroke><Point x='1' y='2'/>")
    with pytest.raises(DataError, match="malformed XML") as err:
        hw.load_iamondb(str(root))
    assert str(bad) in str(err.value)
    assert _no_cache_files(tmp_path)


@pytest.mark.parametrize("xml, message", [
    ("<WhiteboardCaptureSession><StrokeSet><Stroke><Point x='1'/></Stroke></StrokeSet>"
     "</WhiteboardCaptureSession>", "without the attribute 'y'"),
    ("<WhiteboardCaptureSession><StrokeSet><Stroke><Point x='nan' y='2'/></Stroke></StrokeSet>"
     "</WhiteboardCaptureSession>", "NaN"),
    ("<WhiteboardCaptureSession><StrokeSet><Stroke><Point x='a' y='2'/></Stroke></StrokeSet>"
     "</WhiteboardCaptureSession>", "non-numeric"),
    ("<WhiteboardCaptureSession></WhiteboardCaptureSession>", "no <StrokeSet>"),
    ("<WhiteboardCaptureSession><StrokeSet></StrokeSet></WhiteboardCaptureSession>", "no pen points"),
])
def test_iamondb_bad_points(tmp_path, xml, message):
    root = make_iamondb(tmp_path / "iam")
    bad = root / "lineStrokes" / "a01" / "a01-001" / "a01-001w-01.xml"
    bad.write_text(xml)
    with pytest.raises(DataError, match=message) as err:
        hw.load_iamondb(str(root))
    assert str(bad) in str(err.value)
    assert _no_cache_files(tmp_path)


def test_iamondb_missing_layout(tmp_path):
    with pytest.raises(DataError, match="PYRO_SRNN_IAMONDB"):
        hw.load_iamondb(None)
    root = tmp_path / "iam"
    root.mkdir()
    with pytest.raises(DataError, match="lineStrokes"):
        hw.load_iamondb(str(root))
    make_iamondb(root)
    (root / "valid.txt").unlink()
    with pytest.raises(DataError, match="valid.txt"):
        hw.load_iamondb(str(root))
    assert not hw.iamondb_available(str(root))


# --------------------------------------------------------------------------- LASA

def test_lasa_from_the_shipped_mat_files():
    ds = load_dataset("lasa")
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [126, 42, 42]
    assert all(s.shape == (1000, 3) for s in ds.train)
    for s in ds.train[:5]:
        np.testing.assert_array_equal(np.flatnonzero(s[:, 0]), [999])  # one stroke: pen lifts at the end
    train = np.concatenate(ds.train)
    np.testing.assert_allclose(train[:, 1:].mean(axis=0), 0.0, atol=1e-5)
    assert train[:, 1:].std() == pytest.approx(1.0, rel=1e-4)  # pooled train std is the scale
    assert ds.spec.metric_unit == "line" and ds.info["shapes"] == 30


def _write_lasa(path, positions):
    from scipy.io import savemat

    demos = np.empty((1, len(positions)), dtype=object)
    for j, pos in enumerate(positions):
        demos[0, j] = {"pos": pos, "t": np.arange(pos.shape[1])[None]}
    savemat(str(path), {"demos": demos})


def test_lasa_custom_folder_and_bad_files(tmp_path):
    folder = tmp_path / "lasa"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for shape in range(3):
        _write_lasa(folder / f"S{shape}.mat", [np.cumsum(rng.normal(size=(2, 20)), axis=1) for _ in range(2)])
    ds = hw.load_lasa(str(folder))
    assert sum(map(len, (ds.train, ds.valid, ds.test))) == 6 and ds.train[0].shape == (20, 3)
    _write_lasa(folder / "S1.mat", [np.zeros((3, 20))])
    with pytest.raises(DataError, match="expected \\(2, points\\)") as err:
        hw.load_lasa(str(folder), rebuild=True)
    assert "S1.mat" in str(err.value)
    _write_lasa(folder / "S1.mat", [np.full((2, 20), np.nan)])
    with pytest.raises(DataError, match="NaN"):
        hw.load_lasa(str(folder), rebuild=True)
    (folder / "S1.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="not a readable .mat file") as err:
        hw.load_lasa(str(folder), rebuild=True)
    assert "S1.mat" in str(err.value)


def test_lasa_missing_package(monkeypatch):
    monkeypatch.setattr(hw.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install pyro-srnn\[handwriting\]"):
        hw.load_lasa()


# --------------------------------------------------------------------------- Hershey

def test_hershey_lines_are_deterministic_and_split_by_sentence():
    ds = hw.load_hershey(max_sentences=5, variants=1)
    assert ds.info["lines"] == 15 and ds.info["sentences"] == 5
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [9, 3, 3]  # 3/1/1 sentences × 3 fonts
    again = hw.load_hershey(max_sentences=5, variants=1, rebuild=True)
    for a, b in zip(ds.train + ds.test, again.train + again.test):
        np.testing.assert_array_equal(a, b)
    line = ds.train[0]
    assert line.shape[1] == 3 and line[-1, 0] == 1.0 and 10 < line[:, 0].sum() < len(line) / 3
    np.testing.assert_allclose(np.concatenate(ds.train)[:, 1:].mean(axis=0), 0.0, atol=1e-5)
    assert ds.spec.metric_unit == "line" and ds.spec.chunk_len is None


def test_hershey_variants_differ_and_y_points_down():
    plain = hw.hershey_strokes("lg", "scripts")
    ys = np.concatenate(plain)[:, 1]
    assert ys.min() <= -99 and ys.max() >= 0  # the l reaches cap height (y = -100), the g descends below 0
    rng = np.random.default_rng(1)
    a, b = hw.hershey_strokes("lg", "scripts", rng), hw.hershey_strokes("lg", "scripts", rng)
    assert len(a) == len(plain) and not np.allclose(np.concatenate(a), np.concatenate(b))


def test_hershey_missing_package(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "HersheyFonts":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DataError, match=r"pip install pyro-srnn\[handwriting\]"):
        hw.load_hershey(max_sentences=2, variants=1)
