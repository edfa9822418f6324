"""Every example script, run as a script: bad input ends with one clear line on stderr, no traceback.

The scripts' ``__main__`` goes through :func:`_common.run_script`, which turns a
:class:`~pyro_srnn.data.DataError` into ``<script>.py: error: <message>`` and exit code 1 (a
``SystemExit`` with a message); bad model arguments are usage errors (exit code 2) before any data loads.
"""
from __future__ import annotations

import importlib
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_"))


@pytest.fixture(autouse=True)
def _examples_importable(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_SRNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_the_examples_are_found():
    assert {"bach_chorales", "iamondb", "muse", "timit", "vctk"} <= set(SCRIPTS) and len(SCRIPTS) >= 16


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_main_reports_bad_data_in_one_line(name, tmp_path, monkeypatch):
    """Run as ``__main__`` with a data set that cannot load (every loader goes through
    ``pyro_srnn.data.load_dataset``, here one that refuses): exit with one line naming the problem."""
    import pyro_srnn.data
    from pyro_srnn.data import DataError

    missing = tmp_path / "missing"

    def refuse(dataset, data_dir=None, **kwargs):
        raise DataError(f"{data_dir}: no such folder")

    monkeypatch.setattr(pyro_srnn.data, "load_dataset", refuse)
    script = EXAMPLES / f"{name}.py"
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [str(script), "--data-dir", str(missing), "--smoke", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    # a string code: Python prints it (one line) to stderr and exits with status 1
    assert exit_.value.code == f"{name}.py: error: {missing}: no such folder"
    assert not out.exists()


def test_script_with_a_missing_corpus_exits_1_with_one_line(tmp_path):
    """The real thing, end to end in a fresh interpreter: a missing IAM-OnDB folder."""
    missing = tmp_path / "missing"
    proc = subprocess.run([sys.executable, str(EXAMPLES / "iamondb.py"), "--data-dir", str(missing), "--smoke",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"iamondb.py: error: {missing}: no such folder")


@pytest.mark.parametrize("argv, message", [
    (["--model-arg", "foo=1"], "model 'f-rnn' has no argument 'foo'; it accepts: dropout, embed, hidden"),
    (["--model", "no-such-model"], "unknown model 'no-such-model'; valid models: "),
])
def test_example_refuses_bad_model_arguments_before_loading_data(argv, message, tmp_path, monkeypatch, capsys):
    import pyro_srnn.data

    def must_not_load(*args, **kwargs):
        raise AssertionError("the data set loaded before the arguments were checked")

    monkeypatch.setattr(pyro_srnn.data, "load_dataset", must_not_load)
    monkeypatch.setattr(sys, "argv", ["muse.py"])
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module("muse").main(["--model", "f-rnn", "--smoke", "--out", str(tmp_path / "o")] + argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("muse.py: error: ") and message in err, err


def test_example_counts_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module("muse").build_parser().parse_args(["--valid-every", "0"])
    assert exit_.value.code == 2 and "argument --valid-every: must be >= 1, got 0" in capsys.readouterr().err
