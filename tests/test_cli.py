"""The command line contract: names, JSON summary line, exit codes, samples."""
import json
import subprocess
import sys

import pytest
import torch

from pyro_srnn.cli import main


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The command of the issue, as a user runs it: 30 steps of f-rnn on the Bach chorales."""
    out = tmp_path_factory.mktemp("run")
    proc = subprocess.run(
        [sys.executable, "-m", "pyro_srnn", "train", "--dataset", "bach_chorales", "--model", "f-rnn",
         "--steps", "30", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_train_prints_the_json_summary_last(trained_run):
    out, stdout = trained_run
    summary = last_json(stdout)
    assert {"dataset", "model", "guide", "split", "metric", "value", "unit", "steps"} <= set(summary)
    assert summary["dataset"] == "bach_chorales" and summary["model"] == "f-rnn"
    assert summary["metric"] == "nll" and summary["split"] == "test" and summary["steps"] == 30
    assert summary["unit"] == "nats per time step"
    # after 30 updates the model is far better than a coin per key (88 log 2 = 61 nats) but not perfect
    assert 3.0 < summary["value"] < 61.0
    assert (out / "best.pt").exists() and (out / "metrics.csv").exists() and (out / "curves.png").exists()


def test_evaluate_prints_the_json_summary(trained_run, capsys):
    out, _ = trained_run
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--split", "valid"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["split"] == "valid" and summary["metric"] == "nll" and summary["steps"] == 30
    assert summary["value"] > 0


def test_sample_writes_midi_and_a_piano_roll(trained_run, tmp_path, capsys):
    import pretty_midi

    out, _ = trained_run
    assert main(["sample", "--checkpoint", str(out / "best.pt"), "--num", "2", "--steps", "32",
                 "--out", str(tmp_path)]) == 0
    mids = sorted(tmp_path.glob("*.mid"))
    assert len(mids) == 2 and (tmp_path / "pianoroll.png").exists()
    pm = pretty_midi.PrettyMIDI(str(mids[0]))
    assert pm.instruments and all(21 <= n.pitch <= 108 for n in pm.instruments[0].notes)


@pytest.mark.parametrize("flag,name,listed", [
    ("--dataset", "no-such-data", "bach_chorales"),
    ("--model", "no-such-model", "f-rnn"),
    ("--guide", "no-such-guide", "none"),
])
def test_unknown_names_exit_2_with_the_valid_names(flag, name, listed, capsys):
    assert main(["train", flag, name]) == 2
    err = capsys.readouterr().err
    assert name in err and listed in err


def test_resume_without_a_checkpoint(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 1
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_guide_that_does_not_fit_is_refused_before_training(tmp_path, capsys):
    from pyro_srnn.models import guide_names

    latent_guides = [g for g in guide_names() if g != "none"]
    if not latent_guides:
        pytest.skip("no latent guide registered yet")
    assert main(["train", "--model", "f-rnn", "--guide", latent_guides[0], "--size", "tiny",
                 "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "does not fit model 'f-rnn'" in err and not (tmp_path / "latest.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_a_device_is_a_clear_error(capsys):
    assert main(["train", "--device", "cuda"]) == 1
    assert "no CUDA device" in capsys.readouterr().err


def test_models_and_datasets_listings(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "model  f-rnn" in out and "guide  none" in out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "bach_chorales" in out and "present" in out


def test_cli_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    common = ["train", "--size", "tiny", "--steps", "10", "--valid-every", "5", "--valid-max-batches", "1",
              "--no-progress", "--model-arg", "dropout=0.2"]
    assert main(common + ["--out", str(tmp_path / "straight"), "--pyro-validation", "always"]) == 0
    assert main(common + ["--out", str(tmp_path / "split"), "--stop-at", "5"]) == 0  # default: "first"
    assert last_json(capsys.readouterr().out)["steps"] == 5
    # Pyro's validation is a choice of this process, like --device: checked at every step, at the
    # first only, or (the second half) not at all, the result is the same
    assert main(["train", "--resume", "--out", str(tmp_path / "split"), "--no-progress", "--no-pyro-validation"]) == 0
    assert last_json(capsys.readouterr().out)["steps"] == 10
    from pyro_srnn.checkpoint import load_checkpoint

    a = load_checkpoint(tmp_path / "straight" / "latest.pt")
    b = load_checkpoint(tmp_path / "split" / "latest.pt")
    assert a["train_config"]["pyro_validation"] == "always" and b["train_config"]["pyro_validation"] == "off"
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])


def test_pyro_validation_choices_are_the_trainers_modes():
    from pyro_srnn.cli import build_parser
    from pyro_srnn.train import PYRO_VALIDATION_MODES, TrainConfig

    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    option = next(a for a in train._actions if "--pyro-validation" in a.option_strings)
    assert tuple(option.choices) == PYRO_VALIDATION_MODES and option.default == TrainConfig().pyro_validation
    args = train.parse_args(["--no-pyro-validation"])
    assert args.pyro_validation == "off"
