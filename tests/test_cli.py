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
    assert summary["loss_units_per_step"] == 1  # the clipped loss per 88-key step (SPEC §5)
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


def test_ctrl_c_checkpoints_the_last_update_and_the_run_resumes_from_it(tmp_path):
    """A real SIGINT to ``pyro-srnn train``: the update under way finishes, ``latest.pt`` holds it,
    the command exits 130 with one line saying how to continue (no traceback), and ``--resume`` does."""
    import signal
    import time

    from pyro_srnn.checkpoint import load_checkpoint

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "pyro_srnn", "train", "--size", "tiny", "--steps", "100000",
                             "--valid-every", "5", "--valid-max-batches", "1", "--no-progress", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "latest.pt").exists():  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    step = load_checkpoint(out / "latest.pt")["step"]
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert f"holds update {step} of 100000: continue with --resume" in stderr and step >= 5
    assert main(["train", "--resume", "--out", str(out), "--stop-at", str(step + 2), "--no-progress"]) == 0
    assert load_checkpoint(out / "latest.pt")["step"] == step + 2


def test_pyro_validation_choices_are_the_trainers_modes():
    from pyro_srnn.cli import build_parser
    from pyro_srnn.train import PYRO_VALIDATION_MODES, TrainConfig

    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    option = next(a for a in train._actions if "--pyro-validation" in a.option_strings)
    assert tuple(option.choices) == PYRO_VALIDATION_MODES and option.default == TrainConfig().pyro_validation
    args = train.parse_args(["--no-pyro-validation"])
    assert args.pyro_validation == "off"


def test_resume_keeps_the_saved_run_and_refuses_contradicting_flags(tmp_path, capsys):
    """A resumed run reports and trains its own model; a flag that contradicts it is one clear error."""
    out = str(tmp_path / "run")
    common = ["--no-progress", "--valid-every", "2", "--valid-max-batches", "1"]
    assert main(["train", "--model", "f-srnn", "--size", "tiny", "--steps", "4", "--stop-at", "2",
                 "--out", out] + common) == 0
    assert last_json(capsys.readouterr().out)["model"] == "f-srnn"
    # --model f-rnn is the parser's default: given explicitly, it still contradicts the saved f-srnn
    for flags, named in [(["--model", "vrnn"], ["--model 'vrnn' (saved: 'f-srnn')"]),
                         (["--model", "f-rnn"], ["--model 'f-rnn' (saved: 'f-srnn')"]),
                         (["--lr", "0.01", "--batch-size", "3"], ["--lr 0.01 (saved: 0.001)",
                                                                  "--batch-size 3 (saved: 16)"]),
                         (["--guide", "mean-field"], ["--guide 'mean-field' (saved: 'srnn-posterior')"]),
                         (["--size", "small", "--model-arg", "dropout=0.5"],
                          ["--size 'small' (saved: 'tiny')", "--model-arg {'dropout': 0.5} (saved: {})"]),
                         (["--valid-every", "3"], ["--valid-every 3 (saved: 2)"])]:
        assert main(["train", "--resume", "--out", out, "--no-progress"] + flags) == 2, flags
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("pyro-srnn: error: --resume"), err
        assert all(n in err for n in named), err
        assert captured.out == ""
    # flags equal to the saved ones — also to the value a default (None) stood for: f-srnn's guide,
    # the chorales' study batch 16 and MIDI's increment — and those about this process are fine
    assert main(["train", "--resume", "--out", out, "--model", "f-srnn", "--size", "tiny", "--stop-at", "3",
                 "--steps", "4", "--guide", "srnn-posterior", "--batch-size", "16",
                 "--anneal-increment", "1e-4"] + common) == 0
    partial = last_json(capsys.readouterr().out)
    assert partial["model"] == "f-srnn" and partial["steps"] == 3 and partial["metric"] is None
    # without --model the summary still names the saved run's model, not the parser's default f-rnn
    assert main(["train", "--resume", "--out", out, "--no-progress"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["model"] == "f-srnn" and summary["dataset"] == "bach_chorales" and summary["steps"] == 4
    assert summary["metric"] == "neg_elbo"
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["model"] == "f-srnn" and saved["steps"] == 4


def test_explicit_options_are_the_ones_on_the_command_line():
    from pyro_srnn.cli import explicit_options

    assert explicit_options(["train"]) == set()
    assert explicit_options(["train", "--model", "f-rnn", "--no-pyro-validation", "--model-arg", "a=1",
                             "--no-cuda-graph", "--resume"]) == {"model", "pyro_validation", "model_arg",
                                                                 "cuda_graph", "resume"}


def test_unknown_model_argument_lists_the_accepted_ones(tmp_path, capsys):
    assert main(["train", "--model", "f-rnn", "--size", "tiny", "--model-arg", "foo=1", "--model-arg", "hidden=8",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "model 'f-rnn' has no argument 'foo'" in err and "hidden, num_components, num_layers" in err
    assert not (tmp_path / "latest.pt").exists()


def test_accepted_model_arguments_are_accepted_by_every_model():
    """Each argument the error lists builds the model (value: the tiny preset's, else the default),
    and one not listed is refused by the constructor too: the list is the constructors' own."""
    import inspect

    from pyro_srnn.cli import accepted_model_args
    from pyro_srnn.data.bach import SPEC
    from pyro_srnn.models import MODELS, build_model, model_names

    def default_of(cls, key):
        for klass in cls.__mro__:
            for method in ("__init__", "build_output"):
                fn = klass.__dict__.get(method)
                param = inspect.signature(fn).parameters.get(key) if fn is not None else None
                if param is not None and param.default is not param.empty:
                    return param.default
        raise LookupError(f"{cls.__name__}: no default for {key!r}")

    for name in model_names():
        cls = MODELS[name].cls
        preset = cls.preset("tiny", SPEC)
        accepted = accepted_model_args(name)
        assert "hidden" in accepted, name
        assert set(preset) <= set(accepted), name
        for key in accepted:
            build_model(name, SPEC, "tiny", **{key: preset[key] if key in preset else default_of(cls, key)})
        with pytest.raises(TypeError, match="unexpected keyword argument 'no_such_arg'"):
            build_model(name, SPEC, "tiny", no_such_arg=1)


@pytest.mark.parametrize("argv, flag", [
    (["train", "--valid-every", "0"], "--valid-every"),
    (["train", "--steps", "0"], "--steps"),
    (["train", "--steps", "-5"], "--steps"),
    (["train", "--steps", "ten"], "--steps"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--valid-max-batches", "0"], "--valid-max-batches"),
    (["train", "--stop-at", "0"], "--stop-at"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--anneal-start", "1.5"], "--anneal-start"),
    (["train", "--anneal-start", "0"], "--anneal-start"),  # poutine.scale refuses a scale of 0
    (["train", "--anneal-increment", "-1e-4"], "--anneal-increment"),
    (["evaluate", "--checkpoint", "x.pt", "--iwae", "0"], "--iwae"),
    (["sample", "--checkpoint", "x.pt", "--out", "o", "--num", "0"], "--num"),
])
def test_out_of_range_numbers_are_usage_errors(argv, flag, capsys):
    from pyro_srnn.cli import build_parser

    with pytest.raises(SystemExit) as exit_:  # parsing only: a regression must not start a training run
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"argument {flag}:" in errors[0] and "Traceback" not in err, err


def test_resume_from_a_corrupt_checkpoint_is_one_error(tmp_path, capsys):
    (tmp_path / "latest.pt").write_bytes(b"not a checkpoint")
    assert main(["train", "--resume", "--out", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    # (the message quotes torch.load's own, which may run over several lines)
    assert err.startswith("pyro-srnn: error: cannot load checkpoint") and "latest.pt" in err
    assert "Traceback" not in err
