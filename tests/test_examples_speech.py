"""The speech example scripts, run with --smoke on miniature corpora in the real formats."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speech_corpora import make_blizzard, make_g722_folder, make_timit, make_vctk

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_SRNN_CACHE", str(tmp_path / "cache"))


CASES = {
    # example: (corpus builder, model used in the smoke run, unit of the reported metric)
    "timit": (lambda d: make_timit(d, n_train=10, n_test=3, samples=2437), "rnn-hier", "nats per utterance"),
    "perm_timit": (lambda d: make_timit(d, n_train=10, n_test=3, samples=2437), "f-rnn", "nats per utterance"),
    "vctk": (lambda d: make_vctk(d, per_speaker=5, samples_48k=7200), "f-srnn", "nats per audio sample"),
    "blizzard": (lambda d: make_blizzard(d, chapters=5, samples=2400), "f-rnn", "nats per 8000 samples"),
    "asterisk_prompts": (lambda d: make_g722_folder(d, n=10, samples=2400), "f-rnn", "nats per utterance"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_smoke_run_trains_evaluates_and_writes_wav_samples(name, tmp_path):
    build, model, unit = CASES[name]
    data = build(tmp_path / "data")
    out = tmp_path / "run"
    example = load_example(name)
    summary = example.main(["--data-dir", str(data), "--smoke", "--out", str(out), "--no-progress",
                            "--model", model])
    assert summary["dataset"] == name and summary["model"] == model and summary["smoke"]
    assert summary["steps"] == 3 and summary["split"] == "test" and summary["unit"] == unit
    assert summary["metric"] == ("neg_elbo" if model == "f-srnn" else "nll")
    assert math.isfinite(summary["value"]) and summary["value"] > 0
    assert (out / "best.pt").exists() and (out / "metrics.csv").exists()
    assert json.loads((out / "result.json").read_text())["value"] == pytest.approx(summary["value"])
    wavs = sorted((out / "samples").glob("sample_*.wav"))
    assert len(wavs) == 2 and [str(p) for p in wavs] == summary["samples"]
    for path in wavs:
        audio, rate = sf.read(str(path))
        # 2 steps of 200 samples, denormalised with the data set's mean/std, at 16 kHz
        assert rate == 16000 and audio.shape == (400,) and np.isfinite(audio).all()


@pytest.mark.parametrize("name, steps, batch", [("timit", 40_000, 32), ("perm_timit", 40_000, 32),
                                                ("vctk", 80_000, 128), ("blizzard", 160_000, 128)])
def test_examples_default_to_the_study_protocol(name, steps, batch):
    example = load_example(name)
    from _common import base_parser

    args = base_parser("x", example.STUDY).parse_args([])
    assert (args.steps, args.batch_size, args.size, args.estimator) == (steps, batch, "study", "meanfield")
    assert args.model == "rnn-hier" and not args.smoke
    # the header says what the script reproduces and the exact command
    assert f"python examples/{name}.py --data-dir" in example.__doc__


def test_study_size_rnn_hier_has_the_ref_codes_parameter_count():
    """TIMIT's default model at --size study is the ref code's RNN-hier: 17,275,736 parameters."""
    from pyro_srnn.data.speech import speech_spec
    from pyro_srnn.models import build_model

    model = build_model(load_example("timit").STUDY["model"], speech_spec("timit", "utterance"), "study")
    assert sum(p.numel() for p in model.parameters()) == 17_275_736


def test_example_script_runs_as_a_script():
    proc = subprocess.run([sys.executable, str(EXAMPLES / "vctk.py"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--smoke" in proc.stdout and "--data-dir" in proc.stdout and "80000" in proc.stdout


def test_example_reports_a_missing_corpus_clearly(tmp_path):
    from pyro_srnn.data import DataError

    with pytest.raises(DataError, match=r"TRAIN/ folder missing under"):
        load_example("timit").main(["--data-dir", str(tmp_path), "--smoke", "--out", str(tmp_path / "o")])
