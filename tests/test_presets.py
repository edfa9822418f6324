"""Model sizes: the named presets and ``NAME@F``, the same architecture with every width scaled."""
from __future__ import annotations

import pytest
import torch

from pyro_srnn.data.core import DataSpec
from pyro_srnn.models import MODELS, build_guide, build_model, model_names
from pyro_srnn.models.base import WIDTH_KEYS, scale_widths

SPEECH = DataSpec("s", 200, "gaussian", "speech", 40)


def count(model, guide):
    return sum(p.numel() for m in (model, guide) for p in m.parameters())


@pytest.mark.parametrize("name", model_names())
def test_half_width_study_speech_model_keeps_the_architecture_with_about_a_quarter_of_the_weights(name):
    cls = MODELS[name].cls
    full, half = cls.preset("study", SPEECH), cls.preset("study@0.5", SPEECH)
    assert full.keys() == half.keys()
    scaled = [k for k in full if k in WIDTH_KEYS and isinstance(full[k], int)]
    assert scaled, f"{name}: no width was scaled"
    for k in full:
        assert half[k] == (round(full[k] / 2) if k in scaled else full[k]), k
    big = build_model(name, SPEECH, "study")
    small = build_model(name, SPEECH, "study@0.5")
    ratio = count(small, build_guide(None, small)) / count(big, build_guide(None, big))
    # weights grow with width² (plus width × L terms): half width keeps 25-40 % of them
    assert 0.2 < ratio < 0.4, ratio


def test_scaled_widths_round_and_stay_positive_and_other_hyper_parameters_are_kept():
    hp = dict(hidden=5, embed=None, num_layers=2, num_components=20, d_leak=50, dropout=0.5, low="lstm")
    assert scale_widths(hp, 0.1) == dict(hp, hidden=1)
    assert scale_widths(hp, 2.0) == dict(hp, hidden=10)


@pytest.mark.parametrize("size", ["study@", "study@0", "study@-1", "study@nan", "study@inf", "study@half"])
def test_a_bad_width_factor_is_one_clear_error(size):
    with pytest.raises(ValueError, match="width factor after '@' must be a positive number"):
        build_model("f-rnn", SPEECH, size)


def test_an_unknown_size_names_the_sizes_there_are():
    with pytest.raises(ValueError, match="has no size 'huge'.*tiny"):
        build_model("f-rnn", SPEECH, "huge@0.5")


def test_cli_trains_at_a_scaled_size(tmp_path, capsys):
    from pyro_srnn.cli import main

    argv = ["train", "--model", "f-rnn", "--size", "tiny@2", "--steps", "2", "--valid-every", "2",
            "--valid-max-batches", "1", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 0
    ckpt = torch.load(tmp_path / "latest.pt", weights_only=True)
    hidden = MODELS["f-rnn"].cls.PRESETS["tiny"]["hidden"]
    assert ckpt["model_config"]["hparams"]["hidden"] == 2 * hidden
