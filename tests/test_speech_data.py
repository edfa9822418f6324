"""Speech readers on miniature corpora written in the real formats (SPHERE, wav48, mp3, raw G.722)."""
from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from pyro_srnn.data import DataError, load_dataset
from pyro_srnn.data import speech
from pyro_srnn.data.speech import (
    BLIZZARD_SPLIT, VCTK_SPLIT, load_asterisk_prompts, load_audio_folder, load_blizzard, load_perm_timit,
    load_timit, load_vctk, perm_timit_permutation, read_audio, seeded_split, split_counts,
)

from speech_corpora import (
    g722_decode, g722_encode, make_blizzard, make_g722_folder, make_timit, make_vctk, mp3_available, speechlike,
    write_sphere,
)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("PYRO_SRNN_CACHE", str(path))
    return path


@pytest.fixture
def timit(tmp_path):
    return make_timit(tmp_path / "timit")


def raw_frames(path) -> np.ndarray:
    """What the reader must produce before normalisation, computed independently."""
    wave, rate = sf.read(str(path), dtype="float64")
    n = len(wave) // 200
    return wave[: n * 200].reshape(n, 200)


def check_speech_spec(ds, name, unit):
    spec = ds.spec
    assert (spec.name, spec.family, spec.domain, spec.step_dim) == (name, "gaussian", "speech", 200)
    assert (spec.chunk_len, spec.flat_chunk_len, spec.metric_unit) == (40, 2000, unit)


# --------------------------------------------------------------------------- TIMIT

def test_timit_reads_the_sphere_tree_in_whole_frames(timit):
    ds = load_timit(timit, progress=False)
    check_speech_spec(ds, "timit", "utterance")
    assert len(ds.train) + len(ds.valid) == 20 and len(ds.valid) == 1  # 5 % of 20 files
    assert len(ds.test) == 4
    files = ds.info["files"]
    assert all(f.startswith("TRAIN/") and f.endswith(".WAV") for f in files["train"] + files["valid"])
    assert all(f.startswith("TEST/") for f in files["test"])
    mean, std = ds.info["mean"], ds.info["std"]
    for split in ("train", "valid", "test"):
        for seq, rel in zip(ds.split(split), files[split]):
            expected = raw_frames(timit / rel)  # 1637..1651 samples -> 8 whole frames, the rest dropped
            assert seq.shape == expected.shape == (8, 200) and seq.dtype == np.float32
            np.testing.assert_allclose(seq * std + mean, expected, atol=1e-6)


def test_timit_normalises_with_one_global_train_mean_and_std(timit, cache):
    ds = load_timit(timit, progress=False)
    # every sample of the training waveforms, partial last frames included (as the ref code)
    train_raw = np.concatenate([sf.read(str(timit / f), dtype="float64")[0] for f in ds.info["files"]["train"]])
    assert len(train_raw) > 200 * sum(len(s) for s in ds.train)
    assert ds.info["mean"] == pytest.approx(train_raw.mean(), abs=1e-12)
    assert ds.info["std"] == pytest.approx(train_raw.std(), rel=1e-10)
    values = np.concatenate(ds.train).astype(np.float64)  # whole frames only: close to, not exactly, 0 and 1
    assert values.mean() == pytest.approx(0.0, abs=0.05) and values.std() == pytest.approx(1.0, rel=0.05)
    frames = np.concatenate([raw_frames(timit / f) for f in ds.info["files"]["train"]])
    np.testing.assert_allclose(values, ((frames - train_raw.mean()) / train_raw.std()).reshape(values.shape),
                               atol=1e-5)
    # the statistics are stored in the cache, not recomputed on load
    again = load_timit(timit, progress=False)
    assert again.info["from_cache"] and again.info["mean"] == pytest.approx(ds.info["mean"], abs=1e-15)
    assert again.info["std"] == pytest.approx(ds.info["std"], rel=1e-12)


def test_timit_validation_split_is_seeded_sorted_and_disjoint(timit, cache, tmp_path):
    a = load_timit(timit, progress=False)
    b = load_timit(timit, progress=False, refresh=True)
    assert a.info["files"] == b.info["files"]
    files = a.info["files"]
    assert set(files["train"]).isdisjoint(files["valid"])
    assert sorted(files["train"]) == files["train"]
    other = load_timit(timit, progress=False, seed=1)
    # 20 seeds give more than one validation file choice: the seed matters
    choices = {tuple(load_timit(timit, progress=False, seed=s).info["files"]["valid"]) for s in range(6)}
    assert len(choices) > 1 and other.info["cache"] != a.info["cache"]
    # the full corpus: 231 of 4620 training files (5 %)
    ids = [f"TRAIN/DR1/S{i:04d}/SX1.WAV" for i in range(4620)]
    split = seeded_split(ids, (4620 - 231, 231, 0), seed=0)
    assert len(split["valid"]) == 231 and len(split["train"]) == 4389
    assert split == seeded_split(list(reversed(ids)), (4389, 231, 0), seed=0)  # from the *sorted* list


def test_timit_accepts_lower_case_wav_and_skips_converted_copies(tmp_path):
    root = make_timit(tmp_path / "t", n_train=6, n_test=2, suffix=".wav")
    # some TIMIT copies carry X.WAV.wav (RIFF) beside each X.WAV: not a second utterance
    orig = root / "TRAIN" / "DR1" / "FSPK0" / "SX0.wav"
    wave, _ = sf.read(str(orig))
    sf.write(str(orig) + ".wav", wave, 16000)
    ds = load_timit(root, progress=False)
    assert len(ds.train) + len(ds.valid) == 6 and len(ds.test) == 2


def test_timit_second_load_reads_only_the_cache(timit, cache, monkeypatch):
    first = load_timit(timit, progress=False)
    assert not first.info["from_cache"] and Path(first.info["cache"]).parent == cache

    def fail(*args, **kwargs):
        raise AssertionError("the audio was read again")

    monkeypatch.setattr(sf, "read", fail)
    for p in timit.rglob("*.WAV"):
        p.write_bytes(b"overwritten")
    second = load_timit(timit, progress=False)
    assert second.info["from_cache"]
    for split in ("train", "valid", "test"):
        for x, y in zip(first.split(split), second.split(split)):
            np.testing.assert_array_equal(x, y)


def test_timit_through_the_registry_and_environment_variable(timit, monkeypatch):
    monkeypatch.setenv("PYRO_SRNN_TIMIT", str(timit))
    ds = load_dataset("timit")
    assert ds.spec.name == "timit" and len(ds.test) == 4


def test_perm_timit_applies_the_fixed_permutation_inside_every_frame(timit):
    perm = perm_timit_permutation()
    np.testing.assert_array_equal(perm, np.random.RandomState(123456).permutation(200))
    assert sorted(perm.tolist()) == list(range(200)) and (perm != np.arange(200)).any()
    plain = load_timit(timit, progress=False)
    permuted = load_perm_timit(timit, progress=False)
    check_speech_spec(permuted, "perm_timit", "utterance")
    assert permuted.info["mean"] == plain.info["mean"]
    for split in ("train", "valid", "test"):
        assert len(plain.split(split)) == len(permuted.split(split))
        for x, y in zip(plain.split(split), permuted.split(split)):
            for j in (0, 17, 199):
                np.testing.assert_array_equal(y[:, j], x[:, perm[j]])
            np.testing.assert_array_equal(y, x[:, perm])
            assert not np.array_equal(x, y)

    # the ref code's torch permutation, on request
    torch_perm = load_perm_timit(timit, progress=False, permutation="torch")
    import torch

    torch.manual_seed(123456)
    ref = torch.randperm(200).numpy()
    np.testing.assert_array_equal(torch_perm.info["permutation_indices"], ref)
    np.testing.assert_array_equal(torch_perm.train[0], plain.train[0][:, ref])


# --------------------------------------------------------------------------- TIMIT: bad input

def test_timit_rejects_a_sample_rate_other_than_16k(timit):
    bad = timit / "TEST" / "DR1" / "MSPK9" / "SX99.WAV"
    write_sphere(bad, speechlike(1600, 8000), rate=8000)
    with pytest.raises(DataError, match=r"SX99\.WAV: sample rate 8000 Hz, expected 16000 Hz"):
        load_timit(timit, progress=False)


@pytest.mark.parametrize("case", ["no-dir-given", "missing-dir", "missing-test", "empty-train"])
def test_timit_missing_folders_name_what_is_expected(tmp_path, case, monkeypatch):
    monkeypatch.delenv("PYRO_SRNN_TIMIT", raising=False)
    root = tmp_path / "timit"
    if case == "no-dir-given":
        with pytest.raises(DataError, match="PYRO_SRNN_TIMIT.*TRAIN/ and TEST/"):
            load_dataset("timit")
        return
    if case == "missing-dir":
        with pytest.raises(DataError, match=f"{root} does not exist.*TRAIN/ and TEST/"):
            load_timit(root, progress=False)
        return
    make_timit(root, n_train=3, n_test=1)
    if case == "missing-test":
        for p in (root / "TEST").rglob("*.WAV"):
            p.unlink()
        for d in sorted((root / "TEST").rglob("*"), reverse=True):
            d.rmdir()
        (root / "TEST").rmdir()
        with pytest.raises(DataError, match="TEST/ folder missing under"):
            load_timit(root, progress=False)
    else:
        for p in (root / "TRAIN").rglob("*.WAV"):
            p.unlink()
        with pytest.raises(DataError, match=r"no \.WAV files under .*TRAIN"):
            load_timit(root, progress=False)


def _timit_with(tmp_path, name, content: bytes | None = None, wave=None, **sfkw):
    root = make_timit(tmp_path / "timit", n_train=4, n_test=2)
    bad = root / "TEST" / "DR2" / "MSPK8" / name
    bad.parent.mkdir(parents=True, exist_ok=True)
    if content is not None:
        bad.write_bytes(content)
    else:
        sf.write(str(bad), wave, 16000, **sfkw)
    return root, bad


def test_corrupt_truncated_and_empty_files_are_named(tmp_path, cache):
    root, bad = _timit_with(tmp_path, "SX50.WAV", content=b"NOT AUDIO AT ALL " * 20)
    with pytest.raises(DataError, match=r"SX50\.WAV: not readable audio"):
        load_timit(root, progress=False)
    # a SPHERE file cut in the middle: libsndfile reads what is there, the header knows better
    write_sphere(bad, speechlike(4000))
    bad.write_bytes(bad.read_bytes()[:3000])
    with pytest.raises(DataError, match=r"SX50\.WAV: truncated audio file.*expected 4000"):
        load_timit(root, progress=False)
    bad.write_bytes(b"")
    with pytest.raises(DataError, match=r"SX50\.WAV: empty file"):
        load_timit(root, progress=False)
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written


def test_truncated_riff_wav_and_nan_samples(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(4):
        sf.write(str(folder / f"ok{i}.wav"), speechlike(1000, seed=i), 16000)
    cut = folder / "cut.wav"
    sf.write(str(cut), speechlike(4000), 16000, subtype="PCM_16")
    cut.write_bytes(cut.read_bytes()[:4000])
    with pytest.raises(DataError, match=r"cut\.wav: truncated audio file.*expected 4000\)"):
        read_audio(cut)  # the count the header announces, not libsndfile's corrected one
    wave = speechlike(1000)
    wave[500] = np.nan
    sf.write(str(folder / "nan.wav"), wave, 16000, subtype="FLOAT")
    cut.unlink()
    with pytest.raises(DataError, match=r"nan\.wav: contains NaN"):
        load_audio_folder(folder, progress=False)


def test_sphere_header_with_a_non_integer_field_is_named(tmp_path):
    path = write_sphere(tmp_path / "SX1.WAV", speechlike(4000))
    header = path.read_bytes()
    assert b"sample_count -i 4000\n" in header
    path.write_bytes(header.replace(b"sample_count -i 4000\n", b"sample_count -i 4k00\n"))
    with pytest.raises(DataError, match=r"SX1\.WAV: broken NIST SPHERE header: field 'sample_count' .*'4k00'"):
        read_audio(path)
    path.write_bytes(header.replace(b"sample_rate -i 16000\n", b"sample_rate -i 16 kHz\n"))
    with pytest.raises(DataError, match=r"SX1\.WAV: broken NIST SPHERE header: field 'sample_rate'"):
        read_audio(path)


def _streamed(path: Path, riff: int, data: int) -> Path:
    """A complete WAV whose RIFF and data sizes are set as a writer that cannot seek back leaves them."""
    raw = bytearray(path.read_bytes())
    at = raw.find(b"data")
    raw[4:8], raw[at + 4: at + 8] = struct.pack("<I", riff), struct.pack("<I", data)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("riff, data", [(0xFFFFFFFF, 0xFFFFFFFF), (0, 0xFFFFFFFF), (0x7FFFF000, 0x7FFFF000)])
def test_streamed_wav_of_unknown_size_is_read_whole(tmp_path, riff, data):
    wave = speechlike(4000)
    path = tmp_path / "piped.wav"
    sf.write(str(path), wave, 16000, subtype="PCM_16")
    _streamed(path, riff, data)
    np.testing.assert_allclose(read_audio(path), wave, atol=1 / 32768)
    # a RIFF size that disagrees with the file while the data size is right is no truncation either
    sf.write(str(path), wave, 16000, subtype="PCM_16")
    _streamed(path, riff, 8000)
    assert len(read_audio(path)) == 4000


@pytest.mark.parametrize("fmt, subtype", [("AIFF", "PCM_16"), ("AU", "ULAW"), ("W64", "PCM_16"), ("WAV", "FLOAT")])
def test_truncated_files_report_the_announced_sample_count(tmp_path, fmt, subtype):
    path = tmp_path / f"cut.{fmt.lower()}"
    sf.write(str(path), speechlike(4000), 16000, format=fmt, subtype=subtype)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataError, match=r"truncated audio file .*read \d+, expected 4000\)"):
        read_audio(path)


def test_file_names_that_are_not_utf8_are_read_and_named(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(4):
        sf.write(str(folder / f"ok{i}.wav"), speechlike(1000, seed=i), 16000)
    name = os.fsdecode(b"caf\xe9-latin1.wav")  # a Latin-1 name: rglob gives it surrogate-escaped
    sf.write(os.fsencode(folder / name), speechlike(1000, seed=9), 16000)
    assert (folder / name).is_file()
    np.testing.assert_allclose(read_audio(folder / name), sf.read(os.fsencode(folder / name))[0])
    ds = load_audio_folder(folder, progress=False)
    assert name in sum(ds.info["files"].values(), [])
    # an error about such a file names it in a message that can be printed
    (folder / name).write_bytes(b"NOT AUDIO AT ALL " * 20)
    with pytest.raises(DataError, match=r"caf\\xe9-latin1\.wav: not readable audio") as err:
        load_audio_folder(folder, progress=False, refresh=True)
    str(err.value).encode("utf-8")  # no lone surrogate left


def test_damaged_speech_cache_is_converted_again(timit, cache):
    first = load_timit(timit, progress=False)
    (path,) = cache.iterdir()
    path.write_bytes(path.read_bytes()[:1000])
    again = load_timit(timit, progress=False)
    assert again.info["from_cache"] is False and again.info["files"] == first.info["files"]
    for a, b in zip(first.train + first.valid + first.test, again.train + again.valid + again.test):
        np.testing.assert_array_equal(a, b)
    assert load_timit(timit, progress=False).info["from_cache"] is True and list(cache.iterdir()) == [path]


def test_a_failed_conversion_leaves_no_cache_file(timit, cache, monkeypatch):
    # a failure while reading (last file of the test split) ...
    last = sorted((timit / "TEST").rglob("*.WAV"))[-1]
    good = last.read_bytes()
    last.write_bytes(good[:1024])  # header only
    with pytest.raises(DataError, match="truncated"):
        load_timit(timit, progress=False)
    assert not cache.exists() or list(cache.iterdir()) == []
    # ... and a failure in the middle of writing the .npz
    last.write_bytes(good)

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        load_timit(timit, progress=False)
    assert list(cache.iterdir()) == []  # neither the cache nor its temporary file
    monkeypatch.undo()


def test_files_shorter_than_two_frames_are_skipped_and_listed(tmp_path):
    root = make_timit(tmp_path / "timit", n_train=4, n_test=2)
    write_sphere(root / "TEST" / "DR1" / "MSPK7" / "SHORT.WAV", speechlike(350))
    ds = load_timit(root, progress=False)
    assert ds.info["skipped_short"] == ["TEST/DR1/MSPK7/SHORT.WAV"] and len(ds.test) == 2


def test_a_split_left_empty_by_short_files_is_refused(tmp_path, cache):
    root = make_timit(tmp_path / "timit", n_train=4, n_test=2)
    for f in (root / "TEST").rglob("*.WAV"):
        write_sphere(f, speechlike(350))  # under two frames: skipped
    with pytest.raises(DataError, match=r"timit: no test file under .*timit is at least two frames .*2 file"):
        load_timit(root, progress=False)
    assert not cache.exists() or not any(cache.iterdir())


# --------------------------------------------------------------------------- VCTK

def test_vctk_resamples_wav48_to_16k_and_splits_80_10_10(tmp_path):
    root = make_vctk(tmp_path / "vctk")
    ds = load_vctk(root, progress=False)
    check_speech_spec(ds, "vctk", "audio sample")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == split_counts(10, VCTK_SPLIT) == (8, 1, 1)
    files = ds.info["files"]
    assert not set(files["train"]) & set(files["valid"]) and not set(files["valid"]) & set(files["test"])
    mean, std = ds.info["mean"], ds.info["std"]
    for split in ("train", "valid", "test"):
        for seq, rel in zip(ds.split(split), files[split]):
            wave48, rate = sf.read(str(root / rel), dtype="float64")
            assert rate == 48000
            wave16 = resample_poly(wave48, 1, 3)  # 48 kHz -> 16 kHz
            n = len(wave16) // 200
            assert seq.shape == (n, 200) and n == (len(wave48) // 3) // 200
            np.testing.assert_allclose(seq * std + mean, wave16[: n * 200].reshape(n, 200), atol=1e-6)
    # the study's proportions on the full corpus
    assert split_counts(35393 + 4424 + 4425, VCTK_SPLIT) == VCTK_SPLIT


def test_resampling_keeps_a_tone_at_its_frequency(tmp_path):
    t48 = np.arange(48000 // 10) / 48000
    path = tmp_path / "tone.wav"
    sf.write(str(path), 0.5 * np.sin(2 * np.pi * 1000 * t48), 48000, subtype="FLOAT")
    wave = read_audio(path)
    t16 = np.arange(len(wave)) / 16000
    assert len(wave) == 1600
    np.testing.assert_allclose(wave[100:-100], 0.5 * np.sin(2 * np.pi * 1000 * t16[100:-100]), atol=2e-3)


def test_vctk_follows_the_split_lists_when_present(tmp_path):
    root = make_vctk(tmp_path / "vctk")
    (root / "train.lst").write_text("# study split\np225_001\np225_002\np226_001\np226_002\np226_003\n")
    (root / "valid.lst").write_text("p225_003\n\np226_004\n")
    (root / "test.lst").write_text("p225_004\np225_005\np226_005\n")
    ds = load_vctk(root, progress=False)
    stems = {s: [Path(f).stem for f in v] for s, v in ds.info["files"].items()}
    assert stems == {"train": ["p225_001", "p225_002", "p226_001", "p226_002", "p226_003"],
                     "valid": ["p225_003", "p226_004"], "test": ["p225_004", "p225_005", "p226_005"]}
    (root / "test.lst").write_text("p225_004\np999_001\n")
    with pytest.raises(DataError, match=r"test\.lst names 1 file\(s\) not found.*p999_001"):
        load_vctk(root, progress=False)
    (root / "test.lst").write_text("p225_004\np225_003\n")
    with pytest.raises(DataError, match=r"'p225_003' is listed in both valid\.lst and test\.lst"):
        load_vctk(root, progress=False)
    (root / "test.lst").unlink()
    with pytest.raises(DataError, match=r"split lists incomplete.*test\.lst missing"):
        load_vctk(root, progress=False)


def test_vctk_moving_a_line_between_split_lists_converts_again(tmp_path):
    root = make_vctk(tmp_path / "vctk", speakers=("p225",))
    (root / "train.lst").write_text("p225_001\np225_002\n")
    (root / "valid.lst").write_text("p225_003\n")
    (root / "test.lst").write_text("p225_004\np225_005\n")
    load_vctk(root, progress=False)
    # the last line of train.lst moves to the top of valid.lst: the lists joined are the same bytes
    (root / "train.lst").write_text("p225_001\n")
    (root / "valid.lst").write_text("p225_002\np225_003\n")
    ds = load_vctk(root, progress=False)
    assert ds.info["from_cache"] is False
    assert [Path(f).stem for f in ds.info["files"]["valid"]] == ["p225_002", "p225_003"]


def test_vctk_reads_the_ref_codes_list_files(tmp_path):
    root = make_vctk(tmp_path / "vctk")
    # the ref code's datasets/vctk/*_files_list.txt: one file name per line
    (root / "train_files_list.txt").write_text("".join(f"p22{s}_00{u}.wav\n" for s in (5, 6) for u in (1, 2, 3, 4)))
    (root / "valid_files_list.txt").write_text("p225_005.wav\n")
    (root / "test_files_list.txt").write_text("p226_005.wav\n")
    ds = load_vctk(root, progress=False)
    assert [Path(f).name for f in ds.info["files"]["valid"]] == ["p225_005.wav"]
    assert [Path(f).name for f in ds.info["files"]["test"]] == ["p226_005.wav"]
    assert len(ds.train) == 8


def test_vctk_without_wav48_names_the_expected_layout(tmp_path):
    (tmp_path / "vctk" / "txt").mkdir(parents=True)
    with pytest.raises(DataError, match=r"wav48/ folder missing under .*wav48/<speaker>/\*\.wav"):
        load_vctk(tmp_path / "vctk", progress=False)


# --------------------------------------------------------------------------- Blizzard

def test_blizzard_chapters_split_by_chapter(tmp_path):
    root = make_blizzard(tmp_path / "blizzard", chapters=6)
    ext = ".mp3" if mp3_available() else ".wav"
    assert len(list(root.rglob(f"*{ext}"))) == 6
    ds = load_blizzard(root, progress=False)
    check_speech_spec(ds, "blizzard", "8000 samples")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == split_counts(6, BLIZZARD_SPLIT) == (4, 1, 1)
    assert split_counts(1023 + 65 + 59, BLIZZARD_SPLIT) == BLIZZARD_SPLIT
    files = ds.info["files"]
    assert len(set(files["train"]) | set(files["valid"]) | set(files["test"])) == 6
    for split in ("train", "valid", "test"):
        for seq, rel in zip(ds.split(split), files[split]):
            decoded, rate = sf.read(str(root / rel), dtype="float64")
            assert rate == 16000 and seq.shape == (len(decoded) // 200, 200)
    assert ds.spec.metric_divisor(num_steps=40, num_sequences=1) == pytest.approx(1.0)  # 40*200 = 8000 values


def test_blizzard_follows_the_ref_codes_chapter_lists(tmp_path):
    root = make_blizzard(tmp_path / "blizzard", chapters=4)
    stems = sorted(p.stem for p in root.rglob("chapter*"))
    # the ref code's datasets/blizzard/*_file_list.txt name the converted tensors: <chapter>.wav.t7
    (root / "train_file_list.txt").write_text(f"{stems[0]}.wav.t7\n{stems[1]}.wav.t7\n")
    (root / "valid_file_list.txt").write_text(f"{stems[2]}.wav.t7\n")
    (root / "test_file_list.txt").write_text(f"{stems[3]}.wav.t7\n")
    ds = load_blizzard(root, progress=False)
    assert [Path(f).stem for f in ds.info["files"]["train"]] == stems[:2]
    assert [Path(f).stem for f in ds.info["files"]["test"]] == stems[3:]


# --------------------------------------------------------------------------- audio folder, G.722, Asterisk

def test_audio_folder_reads_g722_wav_and_flac_in_timit_conventions(tmp_path):
    root = make_g722_folder(tmp_path / "audio", n=8)
    sf.write(str(root / "a.wav"), speechlike(1700, 22050, seed=50), 22050)
    sf.write(str(root / "b.flac"), speechlike(1900, seed=51), 16000)
    ds = load_audio_folder(root, progress=False)
    check_speech_spec(ds, "audio_folder", "utterance")
    # 10 files: 20 % (2) to test, then 5 % of the remaining 8 (rounded, at least 1) to valid
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (7, 1, 2)
    all_files = sum(ds.info["files"].values(), [])
    assert sorted(all_files) == sorted(p.relative_to(root).as_posix() for p in root.rglob("*.*"))
    mean, std = ds.info["mean"], ds.info["std"]
    for split in ("train", "valid", "test"):
        for seq, rel in zip(ds.split(split), ds.info["files"][split]):
            if rel.endswith(".g722"):
                wave = g722_decode((root / rel).read_bytes())
                n = len(wave) // 200
                np.testing.assert_allclose(seq * std + mean, wave[: n * 200].reshape(n, 200), atol=1e-6)
            elif rel.endswith(".wav"):  # 22.05 kHz -> 16 kHz (up 320, down 441): 1234 samples = 6 frames
                wave = resample_poly(sf.read(str(root / rel))[0], 320, 441)
                assert len(wave) == 1234 and seq.shape == (6, 200)
                np.testing.assert_allclose(seq * std + mean, wave[:1200].reshape(6, 200), atol=1e-6)


def test_g722_roundtrip_is_the_raw_asterisk_format(tmp_path):
    wave = speechlike(3200, seed=3)
    data = g722_encode(wave)
    assert len(data) == 3200 // 2  # 64 kbit/s at 16 kHz: one byte per two samples, no header
    path = tmp_path / "x.g722"
    path.write_bytes(data)
    decoded = read_audio(path)
    assert len(decoded) == 3200
    # a lossy codec with a short delay: the decoded signal tracks the input closely
    lag = int(np.argmax([np.dot(decoded[k:], wave[: len(wave) - k]) for k in range(40)]))
    corr = np.corrcoef(decoded[lag:], wave[: len(wave) - lag])[0, 1]
    assert corr > 0.95


def test_g722_without_the_package_says_how_to_install_it(tmp_path, monkeypatch):
    path = tmp_path / "x.g722"
    path.write_bytes(g722_encode(speechlike(800)))
    monkeypatch.setitem(sys.modules, "G722", None)  # import G722 -> ImportError
    with pytest.raises(DataError, match=r"x\.g722: .*pip install pyro-srnn\[speech\]"):
        read_audio(path)


def test_asterisk_prompts_reads_only_g722_and_leaves_out_silence(tmp_path):
    root = make_g722_folder(tmp_path / "en_US_f_Allison", n=6)
    (root / "silence").mkdir()
    (root / "silence" / "1.g722").write_bytes(g722_encode(np.zeros(16000)))
    sf.write(str(root / "hello.wav"), speechlike(1600), 16000)  # another package's copy: not read
    ds = load_asterisk_prompts(root, progress=False)
    check_speech_spec(ds, "asterisk_prompts", "utterance")
    files = sum(ds.info["files"].values(), [])
    assert len(files) == 6 and all(f.endswith(".g722") and not f.startswith("silence/") for f in files)


def test_empty_folder_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"audio_folder: no audio files .* under .*empty"):
        load_audio_folder(tmp_path / "empty", progress=False)
    with pytest.raises(DataError, match=r"blizzard: no audio files under .*empty"):
        load_blizzard(tmp_path / "empty", progress=False)


@pytest.mark.skipif(not Path(speech.ASTERISK_PROMPTS_DIR).is_dir(),
                    reason="extra check on the installed Debian package; the reader is tested above on "
                           "G.722 files the tests encode themselves")
def test_installed_asterisk_prompts_decode_to_16k_speech():
    files = sorted(Path(speech.ASTERISK_PROMPTS_DIR).glob("*.g722"))[:3]
    for f in files:
        wave = read_audio(f)
        assert len(wave) == 2 * f.stat().st_size and 0.01 < np.abs(wave).max() <= 1.0


# --------------------------------------------------------------------------- listing

def test_datasets_command_lists_the_speech_sets(timit, tmp_path, monkeypatch, capsys):
    from pyro_srnn.cli import main

    monkeypatch.setenv("PYRO_SRNN_TIMIT", str(timit))
    monkeypatch.setenv("PYRO_SRNN_ASTERISK_PROMPTS", str(tmp_path / "nowhere"))
    monkeypatch.delenv("PYRO_SRNN_VCTK", raising=False)
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in ("timit", "perm_timit", "vctk", "blizzard", "audio_folder", "asterisk_prompts"):
        assert any(line.startswith(name + " ") for line in lines), name
    timit_line = next(i for i, line in enumerate(lines) if line.startswith("timit "))
    assert "present" in lines[timit_line] and str(timit) in lines[timit_line + 1]
    vctk_line = next(i for i, line in enumerate(lines) if line.startswith("vctk "))
    assert "missing" in lines[vctk_line] and "PYRO_SRNN_VCTK" in lines[vctk_line + 1]
    assert "how to get" in lines[vctk_line + 2]
    ast_line = next(i for i, line in enumerate(lines) if line.startswith("asterisk_prompts "))
    assert "missing" in lines[ast_line] and str(tmp_path / "nowhere") in lines[ast_line + 1]
    assert "apt-get install asterisk-core-sounds-en-g722" in lines[ast_line + 2]
    assert "pip install pyro-srnn[speech]" in lines[ast_line + 2]


@pytest.mark.skipif(not mp3_available(), reason="this libsndfile cannot write MP3 (the WAV path is tested above)")
def test_truncated_mp3_chapter_is_named(tmp_path):
    root = make_blizzard(tmp_path / "blizzard", chapters=3, samples=48000)
    chapter = sorted(root.rglob("*.mp3"))[1]
    chapter.write_bytes(chapter.read_bytes()[: chapter.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{chapter.name}: truncated audio file"):
        load_blizzard(root, progress=False)


def test_cli_trains_and_evaluates_on_a_timit_folder(tmp_path, capsys):
    import json

    from pyro_srnn.cli import main

    root = make_timit(tmp_path / "timit", n_train=6, n_test=2, samples=2437)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "timit", "--data-dir", str(root), "--model", "f-rnn", "--size", "tiny",
                 "--steps", "2", "--batch-size", "4", "--valid-every", "2", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["dataset"] == "timit" and summary["unit"] == "nats per utterance" and summary["steps"] == 2
    # evaluate finds the corpus again through the data directory saved in the checkpoint
    assert main(["evaluate", "--checkpoint", str(out / "best.pt")]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["value"] == pytest.approx(summary["value"], rel=1e-5)
    # samples are written back in the waveform's own scale (the normalisation is undone)
    from pyro_srnn.checkpoint import load_checkpoint

    medium = load_checkpoint(out / "best.pt")["medium"]
    assert medium["std"] > 0 and medium["sample_rate"] == 16000
    calls = {}
    import pyro_srnn.samples as samples

    real_write_wav = samples.write_wav

    def spy(frames, path, **kw):
        calls.update(kw)
        return real_write_wav(frames, path, **kw)

    samples.write_wav = spy
    try:
        assert main(["sample", "--checkpoint", str(out / "best.pt"), "--num", "1", "--steps", "3",
                     "--out", str(tmp_path / "s")]) == 0
    finally:
        samples.write_wav = real_write_wav
    assert calls["mean"] == medium["mean"] and calls["std"] == medium["std"]
    audio, rate = sf.read(str(next((tmp_path / "s").glob("*.wav"))))
    assert len(audio) == 3 * 200 and rate == 16000
