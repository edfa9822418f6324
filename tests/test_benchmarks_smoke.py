"""The step benchmark's harness runs and checks itself (correctness only; speed is never asserted)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pyro
from pyro.poutine.util import is_validation_enabled
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_step  # noqa: E402
from _torch_losses import TORCH_LOSSES  # noqa: E402


def test_bench_step_runs_two_repetitions_of_a_tiny_model(tmp_path):
    out = tmp_path / "step.csv"
    frame = bench_step.run(["f-rnn"], ["midi"], size="tiny", reps=2, warmup=0, out=out, verbose=False)
    row = frame.iloc[0]
    assert row["status"] == "ok"
    assert row["pyro_ms"] > 0 and row["torch_ms"] > 0
    assert row["ratio"] == pytest.approx(row["pyro_ms"] / row["torch_ms"])
    assert row["loss_pyro"] == pytest.approx(row["loss_torch"], rel=1e-4)
    assert row["reps"] == 2
    assert row["paired_ratio_q1"] <= row["paired_ratio"] <= row["paired_ratio_q3"]
    saved = pd.read_csv(out)
    for column in ("model", "guide", "config", "pyro_ms", "torch_ms", "ratio", "paired_ratio", "target", "cpu",
                   "torch"):
        assert column in saved.columns
    assert (tmp_path / "step.png").stat().st_size > 0  # the plot of the table, beside it


def test_plot_draws_ratio_and_fixed_cost_panels(tmp_path):
    """A table with a target configuration and the micro one (no target: overhead bars) plots both."""
    rows = [dict(model=m, guide="none", config=c, status="ok", ratio=r, paired_ratio=r, paired_ratio_q1=r - 0.01,
                 paired_ratio_q3=r + 0.01, target=t, overhead_ms=o, cpu="AMD EPYC", threads=2)
            for m, c, r, t, o in [("f-rnn", "midi", 1.02, 1.05, 1.0), ("vrnn", "midi", 1.2, 1.15, 3.0),
                                  ("f-rnn", "micro", 1.4, float("nan"), 0.7)]]
    bench_step.plot(pd.DataFrame(rows), tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
    micro = pd.DataFrame(rows[2:]).assign(overhead_noval_ms=0.5, pyro_validation="always")  # --with-unvalidated
    bench_step.plot(micro, tmp_path / "micro.png")
    assert (tmp_path / "micro.png").stat().st_size > 0


def _validation_states(monkeypatch) -> list:
    """Whether Pyro's validation was on, per trace whose log-densities were computed, in order."""
    import pyro.poutine.trace_struct as trace_struct

    states = []
    original = trace_struct.Trace.compute_log_prob
    monkeypatch.setattr(trace_struct.Trace, "compute_log_prob",
                        lambda self, *a, **k: (states.append(trace_struct.is_validation_enabled()),
                                               original(self, *a, **k))[1])
    return states


def test_unvalidated_pyro_path_is_timed_beside_the_others(monkeypatch):
    """``--with-unvalidated`` adds the Pyro step with validation off as a third interleaved path; it
    really runs without Pyro's per-site checks, and the validated path (``--pyro-validation
    always``) still has them."""
    states = _validation_states(monkeypatch)
    frame = bench_step.run(["f-srnn"], ["midi"], size="tiny", reps=2, warmup=0, verbose=False,
                           with_unvalidated=True, pyro_validation="always")
    row = frame.iloc[0]
    assert row["status"] == "ok" and row["pyro_noval_ms"] > 0
    assert row["ratio_noval"] == pytest.approx(row["pyro_noval_ms"] / row["torch_ms"])
    assert True in states and False in states


def test_the_pyro_path_checks_its_first_step_only_by_default(monkeypatch):
    """As the trainer (``--pyro-validation first``): the first Pyro step (a warm-up one) runs Pyro's
    checks, the later ones do not, so the counted steady-state step reads nothing back."""
    states = _validation_states(monkeypatch)
    frame = bench_step.run(["f-rnn"], ["midi"], size="tiny", reps=3, warmup=1, verbose=False)
    row = frame.iloc[0]
    assert row["pyro_validation"] == "first" and row["host_reads_pyro"] == 0
    # the loss-agreement check (validation as the caller left it: on in the tests), the first step, the rest
    assert states[:2] == [True, True] and not any(states[2:]), states


def test_min_time_adds_repetitions_to_fast_steps():
    frame = bench_step.run(["f-rnn"], ["midi"], size="tiny", reps=2, warmup=0, verbose=False, min_time=0.2)
    row = frame.iloc[0]
    assert row["reps"] > 2  # a tiny step takes milliseconds: 0.2 s per path needs many more pairs
    assert row["reps"] * row["pyro_ms"] / 1e3 >= 0.1


def test_loss_check_catches_a_wrong_hand_written_loss():
    """The agreement assertion is live: a loss off by one nat is refused."""
    config = bench_step.CONFIGS["midi"]
    config = dict(config, batch=2, T=5)
    spec = bench_step.make_spec(config)
    model = bench_step.build_model("f-rnn", spec, "tiny")
    guide = bench_step.build_guide(None, model)
    batch = bench_step.synthetic_batch(config)
    elbo = bench_step.make_elbo("trace")(model, guide)
    good = TORCH_LOSSES[("f-rnn", "none")]
    lp, lt = bench_step.check_losses_agree(model, guide, elbo, good, batch, 1.0)
    assert lp == pytest.approx(lt, rel=1e-5)
    with pytest.raises(AssertionError, match="hand-written"):
        bench_step.check_losses_agree(model, guide, elbo, lambda *a: good(*a) + 1.0, batch, 1.0)


def test_missing_hand_written_loss_is_reported_not_skipped(monkeypatch):
    monkeypatch.delitem(TORCH_LOSSES, ("f-rnn", "none"))
    frame = bench_step.run(["f-rnn"], ["midi"], size="tiny", reps=2, warmup=0, verbose=False)
    assert frame.iloc[0]["status"] == "missing hand-written loss"


def test_hier_timing_runs_both_low_levels_of_both_hier_models():
    """bench_scaling's hier part times both low-level forms of rnn-hier and srnn-hier, plus a wider
    LSTM variant (tiny, 1 update); each LSTM row carries MADE's speed-up over it."""
    import bench_scaling

    frame = bench_scaling.run_hier(steps=1, size="tiny", nll_steps=0, lstm_hidden=[12], made_hidden=[3], warmup=1)
    labels = (*bench_scaling.LOWS, "lstm-h12", "made-h3")
    assert set(zip(frame.model, frame.low_level)) == {(m, low) for m in bench_scaling.HIER for low in labels}
    assert (frame.update_s > 0).all() and (frame.low_level_s > 0).all()
    assert not frame.cuda_graph.any()  # the trainer's step as it runs here: eager off a GPU
    assert (frame.low_level_s < frame.update_s * 10).all()  # the low level alone is part of an update
    assert (frame.L == 88).all() and (frame.device == "cpu").all()
    for name, sub in frame.groupby("model"):
        sub = sub.set_index("low_level")
        made, lstm, wide = sub.loc["made"], sub.loc["lstm"], sub.loc["lstm-h12"]
        assert lstm.update_speedup == pytest.approx(lstm.update_s / made.update_s)
        assert wide.low_level_speedup == pytest.approx(wide.low_level_s / made.low_level_s)
        assert made.update_speedup != made.update_speedup  # NaN: MADE is the reference
        assert sub.loc["made-h3"].update_speedup != sub.loc["made-h3"].update_speedup
        assert wide.params > lstm.params  # the variant really is wider
        assert sub.loc["made-h3"].params < made.params  # tiny preset's MADE is 8 wide
        assert sub.target_met.isna().all()  # no NLLs (nll_steps=0): nothing to judge


def _hier_row(low, update_s, test_nll, device="cpu", model="m"):
    return {"model": model, "low_level": low, "device": device, "update_s": update_s, "low_level_s": update_s / 2,
            "test_nll": test_nll}


def test_equal_nll_pairs_each_lstm_with_the_fastest_made_within_two_percent():
    """Issue #8's hier target at equal NLL: an LSTM row is paired with the fastest MADE row (any width)
    of its model and device whose test NLL is within ±2 % of its own; target met at ≥ 10× per update."""
    import bench_scaling

    frame = pd.DataFrame([
        _hier_row("made", 1.0, 5.0), _hier_row("made-h4", 0.1, 8.0), _hier_row("made-h8", 0.2, 6.1),
        _hier_row("made-h6", 0.15, 6.05), _hier_row("lstm", 1.1, 10.9), _hier_row("lstm-h512", 2.0, 7.9),
        _hier_row("lstm-h1536", 3.0, 6.0), _hier_row("lstm-h256", 0.9, 7.95),
        _hier_row("made-h4", 0.001, float("nan"), device="cuda"), _hier_row("lstm-h512", 0.002, 7.9, device="cuda"),
        _hier_row("made-h5", 0.001, float("nan"), device="cuda"),  # no NLL on any device: not paired
    ])
    out = bench_scaling.compare_low_levels(frame).set_index(["low_level", "device"])
    preset = out.loc[("lstm", "cpu")]
    assert pd.isna(preset.equal_nll_made) and preset.target_met in (False,)  # no MADE within 10.9 ± 2 %
    assert preset.update_speedup == pytest.approx(1.1) and preset.test_nll_rel_diff == pytest.approx(-5.9 / 10.9)
    h512 = out.loc[("lstm-h512", "cpu")]
    assert h512.equal_nll_made == "made-h4" and h512.equal_nll_update_speedup == pytest.approx(20.0)
    assert h512.equal_nll_rel_diff == pytest.approx(0.1 / 7.9) and h512.target_met in (True,)
    wide = out.loc[("lstm-h1536", "cpu")]  # h6 and h8 both within 2 %: the faster one
    assert wide.equal_nll_made == "made-h6" and wide.equal_nll_update_speedup == pytest.approx(20.0)
    near = out.loc[("lstm-h256", "cpu")]  # an NLL match, but only 9× faster
    assert near.equal_nll_made == "made-h4" and near.target_met in (False,)
    # at least as good (≤ +2 %): the fastest MADE not worse (better by far counts: made-h4 for the preset LSTM)
    assert preset.as_good_made == "made-h4" and preset.as_good_update_speedup == pytest.approx(11.0)
    assert preset.as_good_rel_diff == pytest.approx(-2.9 / 10.9)
    assert wide.as_good_made == "made-h6" and h512.as_good_made == "made-h4"
    cuda = out.loc[("lstm-h512", "cuda")]  # paired on its own device only (no preset MADE timed there)
    assert cuda.equal_nll_made == "made-h4" and cuda.equal_nll_update_speedup == pytest.approx(2.0)
    filled = out.loc[("made-h4", "cuda")]  # timed on the GPU, NLL of the CPU's run of the same variant
    assert filled.test_nll == 8.0 and filled.nll_device == "cpu" and out.loc[("lstm-h512", "cuda")].nll_device == "cuda"
    assert pd.isna(out.loc[("made-h5", "cuda")].test_nll)
    assert cuda.target_met in (False,) and cuda.update_speedup != cuda.update_speedup
    for low in ("made", "made-h4", "made-h8"):
        assert pd.isna(out.loc[(low, "cpu")].target_met)  # NaN on MADE rows
    again = bench_scaling.compare_low_levels(bench_scaling.compare_low_levels(frame))
    assert list(again.columns) == list(bench_scaling.compare_low_levels(frame).columns)  # recomputed, not doubled


def test_hier_rows_of_another_model_size_neither_replace_nor_pair_with_the_study_rows(tmp_path):
    """A tiny plumbing run saved into the same CSV keeps the study's rows of the same variant and
    device, and each size is compared (and has NLLs filled) only within itself."""
    import bench_scaling
    from bench_step import save_merged

    study = [dict(_hier_row("made", 1.0, 5.0), size="study"), dict(_hier_row("lstm", 12.0, 5.1), size="study"),
             dict(_hier_row("made", 2.0, 5.0, device="cuda"), size="study")]
    tiny = [dict(_hier_row("made", 0.01, 60.0), size="tiny"), dict(_hier_row("lstm", 0.02, 61.0), size="tiny"),
            dict(_hier_row("lstm", 0.03, float("nan"), device="cuda"), size="tiny")]
    csv = tmp_path / "scaling_hier.csv"
    save_merged(pd.DataFrame(study), csv, bench_scaling.HIER_KEYS)
    merged = save_merged(pd.DataFrame(tiny), csv, bench_scaling.HIER_KEYS)
    assert len(merged) == 6
    out = bench_scaling.compare_low_levels(merged).set_index(["low_level", "device", "size"])
    assert out.loc[("lstm", "cpu", "study")].update_speedup == pytest.approx(12.0)
    assert out.loc[("lstm", "cpu", "study")].target_met in (True,)  # MADE 5.0 within 2 % of 5.1, 12×
    assert out.loc[("lstm", "cpu", "tiny")].update_speedup == pytest.approx(2.0)
    assert out.loc[("lstm", "cpu", "tiny")].equal_nll_made == "made"
    assert out.loc[("lstm", "cuda", "tiny")].test_nll == 61.0  # filled from its own size's CPU row


def test_equal_nll_pairs_join_only_runs_of_the_same_loss_normalisation():
    """NLLs trained with the loss normalised per key (rows without ``loss_units_per_step``: before
    SPEC §5's per-88-key-step normalisation) are never paired with NLLs of the current one."""
    import bench_scaling
    from pyro_srnn.data.bach import SPEC
    from pyro_srnn.train import loss_units_per_step

    assert (bench_scaling.LOSS_UNITS, bench_scaling.OLD_LOSS_UNITS) == (loss_units_per_step(SPEC), SPEC.step_dim)
    frame = pd.DataFrame([
        dict(_hier_row("made", 1.0, 5.0)), dict(_hier_row("made-h4", 0.1, 8.0)),  # the old protocol
        dict(_hier_row("made-h5", 0.1, 8.05), loss_units_per_step=1),
        dict(_hier_row("lstm-h512", 2.0, 7.9), loss_units_per_step=1),
        dict(_hier_row("lstm-h256", 2.0, 7.95), loss_units_per_step=88),
    ])
    out = bench_scaling.compare_low_levels(frame).set_index("low_level")
    assert out.loc["lstm-h512"].equal_nll_made == "made-h5"  # not made-h4, nearer but per key
    assert out.loc["lstm-h256"].equal_nll_made == "made-h4"
    assert out.loc["lstm-h512"].update_speedup == pytest.approx(2.0)  # timing needs no NLL: any preset MADE
    assert pd.isna(out.loc["lstm-h512"].test_nll_rel_diff)  # the preset MADE's NLL is of the other protocol


def test_timing_again_keeps_the_saved_nll_and_no_train_trains_nothing(tmp_path, monkeypatch):
    """A variant timed again without a new NLL (``--nll-steps 0``, or ``--no-nll-train`` where no run
    finished) keeps the NLL its saved row had — of either loss normalisation — instead of erasing it;
    ``--no-nll-train`` reads finished runs and CSV NLLs and trains nothing."""
    import bench_scaling

    def timing(name, label, model_args, dataset, size, batch, steps, warmup=3, device="cpu"):
        return {"model": name, "low_level": label, "device": device, "size": size, "update_s": 0.5,
                "low_level_s": 0.25}

    monkeypatch.setattr(bench_scaling, "hier_timing", timing)
    saved = pd.DataFrame([
        {"model": "rnn-hier", "low_level": "made", "device": "cpu", "size": "tiny", "update_s": 1.0,
         "test_nll": 5.0, "valid_nll_best": 5.1, "nll_updates": 2, "nll_device": "cuda", "loss_units_per_step": 1,
         "run": "runs/bench_hier/rnn-hier-tiny-made-2u-seed0-cuda"},
        {"model": "rnn-hier", "low_level": "lstm", "device": "cpu", "size": "tiny", "update_s": 2.0,
         "test_nll": 9.0, "valid_nll_best": 9.1, "nll_updates": 2, "run": "runs/old-lstm"},  # per key (old)
        {"model": "rnn-hier", "low_level": "made", "device": "cpu", "size": "study", "update_s": 1.0,
         "test_nll": 4.0},  # another size: not this row's
    ])
    for nll_steps, train in ((0, True), (2, False)):
        frame = bench_scaling.run_hier(1, models=("rnn-hier",), size="tiny", nll_steps=nll_steps, runs=tmp_path,
                                       saved=saved, train_nll=train, warmup=0).set_index("low_level")
        assert frame.loc["made"].update_s == 0.5 and frame.loc["made"].test_nll == 5.0  # timed anew, NLL kept
        assert frame.loc["made"].nll_device == "cuda" and frame.loc["made"].loss_units_per_step == 1
        assert frame.loc["lstm"].test_nll == 9.0 and frame.loc["lstm"].run == "runs/old-lstm"
        assert frame.loc["lstm"].loss_units_per_step == 88
    assert not list(tmp_path.iterdir())  # nothing trained
    seeds = pd.DataFrame([dict(saved.iloc[0], run="runs/bench_hier/rnn-hier-tiny-made-2u-seed10")])
    assert bench_scaling.saved_nll(seeds, "rnn-hier", "made", "tiny", 2, 1) is None  # seed 1 is not seed 10
    assert bench_scaling.saved_nll(seeds.drop(columns="size").assign(size=None), "rnn-hier", "made", "study", 2,
                                   10) is not None  # a row without a size is the study's


def test_hier_nll_runs_each_variant_with_its_model_args(tmp_path):
    """The NLL comparison trains every variant through the CLI with its model arguments and reads
    the test NLL back; a finished run is reused."""
    import bench_scaling
    from pyro_srnn.checkpoint import load_checkpoint

    variants = bench_scaling.low_level_variants([12])
    rows = bench_scaling.hier_nll(["rnn-hier"], variants, "tiny", 2, 0, tmp_path, jobs=2)
    assert {r["low_level"] for r in rows} == set(variants)
    for row in rows:
        assert row["test_nll"] > 0 and row["device"] == "cpu"
        config = json.loads((Path(row["run"]) / "result.json").read_text())
        assert row["test_nll"] == config["value"]
    wide = next(Path(r["run"]) for r in rows if r["low_level"] == "lstm-h12")
    assert wide.name == "rnn-hier-tiny-lstm-h12-2u-seed0"
    hparams = load_checkpoint(wide / "best.pt")["model_config"]["hparams"]
    assert (hparams["low"], hparams["low_hidden"]) == ("lstm", 12)
    mtime = (wide / "result.json").stat().st_mtime
    bench_scaling.hier_nll(["rnn-hier"], variants, "tiny", 2, 0, tmp_path, jobs=2)
    assert (wide / "result.json").stat().st_mtime == mtime


def test_hier_nll_reads_a_run_finished_on_another_device_instead_of_training(tmp_path):
    """A variant finished on the GPU only is read for the CPU rows (column nll_device), not trained
    again; the device's own run wins over another device's; unfinished runs do not count."""
    import bench_scaling

    def finished(label, suffix, value, **result):
        run = tmp_path / f"rnn-hier-tiny-{label}-2u-seed0{suffix}"
        run.mkdir()
        result = {"value": value, "best_valid": value + 0.1, "loss_units_per_step": 1, **result}
        (run / "result.json").write_text(json.dumps(result))
        return run

    finished("made", "", 5.0)
    finished("made", "-cuda", 5.5)
    wide = finished("lstm-h12", "-cuda", 7.0)
    finished("lstm", "", 9.0)
    (tmp_path / "rnn-hier-tiny-made-h3-2u-seed0").mkdir()  # started, never finished: not a result
    (tmp_path / "rnn-hier-tiny-made-h3-2u-seed0-cuda").mkdir()
    assert bench_scaling.finished_nll_run(tmp_path, "rnn-hier", "made-h3", "tiny", 2, 0) is None
    finished("made-h4", "-cuda", 6.0, loss_units_per_step=None)  # the loss normalised per key: not this protocol
    finished("made-h5", "", 6.0, loss_units_per_step=88)
    for label in ("made-h4", "made-h5"):
        assert bench_scaling.finished_nll_run(tmp_path, "rnn-hier", label, "tiny", 2, 0) is None
    variants = bench_scaling.low_level_variants([12])
    rows = {r["low_level"]: r for r in bench_scaling.hier_nll(["rnn-hier"], variants, "tiny", 2, 0, tmp_path, jobs=1)}
    assert rows["lstm-h12"]["nll_device"] == "cuda" and rows["lstm-h12"]["device"] == "cpu"
    assert rows["lstm-h12"]["test_nll"] == 7.0 and rows["lstm-h12"]["run"] == str(wide)
    assert rows["made"]["nll_device"] == "cpu" and rows["made"]["test_nll"] == 5.0  # its own device's run
    assert not list(tmp_path.glob("*/train.log"))  # nothing was trained


def test_hier_nll_takes_the_nll_of_a_variant_from_the_saved_csv_instead_of_training(tmp_path):
    """On a fresh machine (no run directories) a variant whose NLL the saved CSV holds, for the same
    size, updates and seed, is read from it; a different seed, size or update count does not count."""
    import bench_scaling

    def row(label, nll, device="cpu", nll_device="cuda", updates=2, size="tiny", seed=0, units=1):
        return {"model": "rnn-hier", "low_level": label, "device": device, "size": size, "update_s": 1.0,
                "nll_device": nll_device, "nll_updates": updates, "valid_nll_best": nll + 0.1, "test_nll": nll,
                "run": f"runs/bench_hier/rnn-hier-{size}-{label}-{updates}u-seed{seed}-{nll_device}",
                "loss_units_per_step": units}

    saved = pd.DataFrame([row("made", 5.0), row("lstm", 9.0, device="cuda", nll_device=None),
                          row("lstm-h12", 7.0), row("made-h3", 8.0, seed=1), row("made-h4", 8.0, updates=3),
                          row("made-h5", 8.0, size="study"), row("made-h6", 8.0, units=None),
                          row("made-h7", 8.0, units=88)])
    variants = bench_scaling.low_level_variants([12])
    rows = {r["low_level"]: r for r in bench_scaling.hier_nll(["rnn-hier"], variants, "tiny", 2, 0, tmp_path,
                                                               jobs=1, saved=saved)}
    assert set(rows) == set(variants)
    assert rows["lstm-h12"] == {"model": "rnn-hier", "low_level": "lstm-h12", "device": "cpu", "nll_device": "cuda",
                                "nll_updates": 2, "valid_nll_best": 7.1, "test_nll": 7.0,
                                "run": "runs/bench_hier/rnn-hier-tiny-lstm-h12-2u-seed0-cuda", "loss_units_per_step": 1}
    assert rows["lstm"]["nll_device"] == "cuda"  # a row from before the column: trained where it was timed
    assert not list(tmp_path.iterdir())  # nothing was trained
    for label in ("made-h3", "made-h4", "made-h5", "made-h6", "made-h7"):  # other seed, updates, size, normalisation
        assert bench_scaling.saved_nll(saved, "rnn-hier", label, "tiny", 2, 0) is None
    assert bench_scaling.saved_nll(None, "rnn-hier", "made", "tiny", 2, 0) is None


@pytest.mark.parametrize("config_name", ["midi", "speech"])
@pytest.mark.parametrize("name", bench_step.model_names())
@pytest.mark.parametrize("holes", [False, True])
def test_every_model_has_a_hand_written_loss_equal_to_its_pyro_loss(name, config_name, holes):
    """The overhead benchmark can time every registered model: its hand-written torch loss exists
    and equals the package's Pyro loss (same modules, same noise) at a tiny size — also on a batch
    with an unscored step inside a row (stream batching's hole) and trailing padding."""
    config = dict(bench_step.CONFIGS[config_name], batch=2, T=4, L=6)
    spec = bench_step.make_spec(config)
    model = bench_step.build_model(name, spec, "tiny")
    guide = bench_step.build_guide(None, model)
    loss = TORCH_LOSSES.get((name, guide.name))
    assert loss is not None, f"no hand-written loss for ({name}, {guide.name})"
    elbo = bench_step.make_elbo("trace")(model, guide)
    kl_scale = 0.5 if model.has_latent else 1.0
    batch = bench_step.synthetic_batch(config)
    if holes:
        batch.mask[0, 1] = batch.mask[1, 3] = False
    lp, lt = bench_step.check_losses_agree(model, guide, elbo, loss, batch, kl_scale)
    assert lp == pytest.approx(lt, rel=1e-5)


def test_save_merged_replaces_rerun_rows_and_keeps_the_others(tmp_path):
    path = tmp_path / "results.csv"
    bench_step.save_merged(pd.DataFrame({"model": ["a", "b"], "domain": ["midi", "midi"], "t": [1.0, 2.0]}), path,
                           ["model", "domain"])
    merged = bench_step.save_merged(pd.DataFrame({"model": ["b", "c"], "domain": ["midi", "midi"], "t": [3.0, 4.0]}),
                                    path, ["model", "domain"])
    saved = pd.read_csv(path)
    assert sorted(zip(saved.model, saved.t)) == [("a", 1.0), ("b", 3.0), ("c", 4.0)]
    assert len(merged) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temporary file left behind


def test_reduced_speech_config_is_the_half_width_study_model_except_per_value_models():
    speech, midi = bench_step.CONFIGS["speech"], bench_step.CONFIGS["midi"]
    assert bench_step.preset_size("vrnn", speech) == "speech@0.5"
    assert bench_step.preset_size("rnn-hier", speech) == bench_step.preset_size("srnn-flat", speech) == "small"
    assert bench_step.preset_size("rnn-hier", midi) == bench_step.preset_size("vrnn", midi) == "midi"
    assert {bench_step.preset_size(n, c, quick=True) for n in ("vrnn", "rnn-flat") for c in (speech, midi)} \
        == {"small", "small@0.5"}
    assert bench_step.preset_size("rnn-flat", speech, quick=True) == "small@0.5"


def test_quick_runs_give_the_per_value_models_fewer_values():
    """--quick must stay under 3 minutes on 2 cores (issue #8): flat and hier models, an LSTM step per
    value or position, run over fewer steps than in the full run; the others keep the configuration's."""
    for config in (bench_step.CONFIGS["midi"], bench_step.CONFIGS["speech"]):
        full = {n: bench_step.model_config(n, config)["T"] for n in ("vrnn", "rnn-hier", "srnn-flat")}
        quick = {n: bench_step.model_config(n, config, quick=True)["T"] for n in ("vrnn", "rnn-hier", "srnn-flat")}
        assert full["vrnn"] == quick["vrnn"] == full["rnn-hier"] == config["T"]
        assert quick["rnn-hier"] < full["rnn-hier"] and 2 <= quick["srnn-flat"] < full["srnn-flat"]


def test_bench_mixture_checks_the_three_densities_agree_and_times_them(tmp_path):
    import bench_mixture

    out = tmp_path / "mixture.csv"
    frame = bench_mixture.main(["--batch", "2", "--T", "3", "--L", "4", "--components", "3", "--reps", "2",
                                "--out", str(out)])
    assert set(frame.density) == {"torch_msf", "normal_mixture", "hand_written"}
    assert (frame.fwd_bwd_ms > 0).all() and len(pd.read_csv(out)) == 3
    with pytest.raises(SystemExit):  # one component is no mixture: refused, nothing written
        bench_mixture.main(["--components", "1", "--out", str(tmp_path / "none.csv")])
    assert not (tmp_path / "none.csv").exists()


def test_scaling_main_writes_hier_rows_by_device_and_the_plot(tmp_path):
    """The hier part of bench_scaling's command line writes its CSV (keyed by model, low level,
    device and size: a re-run replaces its own rows only) and the plot, with and without NLL rows."""
    import bench_scaling

    (tmp_path / "scaling_hier.csv").write_text(
        "model,low_level,device,update_s,low_level_s,test_nll\nrnn-hier,made,cuda,0.01,0.002,5.0\n")
    bench_scaling.main(["--part", "hier", "--size", "tiny", "--nll-steps", "0", "--steps", "1",
                        "--hier-models", "rnn-hier", "--lstm-hidden", "12", "--out", str(tmp_path)])
    saved = pd.read_csv(tmp_path / "scaling_hier.csv")
    assert set(zip(saved.low_level, saved.device)) == {("made", "cuda"), ("made", "cpu"), ("lstm", "cpu"),
                                                       ("lstm-h12", "cpu")}
    assert saved.set_index(["low_level", "device"])["size"].to_dict() == {
        ("made", "cuda"): "study", ("made", "cpu"): "tiny", ("lstm", "cpu"): "tiny", ("lstm-h12", "cpu"): "tiny"}
    assert (tmp_path / "scaling.png").stat().st_size > 0
    (tmp_path / "scaling.png").unlink()
    bench_scaling.plot(None, pd.read_csv(Path(bench_scaling.HERE) / "results" / "scaling_hier.csv"),
                       tmp_path / "scaling.png")  # the committed rows, NLL included
    assert (tmp_path / "scaling.png").stat().st_size > 0


def test_the_nll_panel_plots_the_current_loss_normalisation_only():
    """Rows of runs that clipped the loss per key (loss_units_per_step 88, or no column: older rows)
    are not comparable with today's and stay out of the NLL-against-time panel."""
    import bench_scaling

    rows = pd.DataFrame([_hier_row("made", 0.1, 5.0), _hier_row("lstm", 1.0, 5.1), _hier_row("made-h3", 0.1, 9.0),
                         _hier_row("lstm-h8", 1.0, float("nan"))])
    assert bench_scaling.plotted_nll_rows(rows).empty  # no column: the per-key protocol
    rows["loss_units_per_step"] = [bench_scaling.LOSS_UNITS, bench_scaling.LOSS_UNITS, bench_scaling.OLD_LOSS_UNITS,
                                   bench_scaling.LOSS_UNITS]
    assert list(bench_scaling.plotted_nll_rows(rows).low_level) == ["made", "lstm"]
    assert bench_scaling.plotted_nll_rows(rows.drop(columns="test_nll")).empty


def test_nll_filled_across_devices_into_columns_read_back_empty_from_a_csv(tmp_path):
    """A CSV whose nll_device and run columns are empty reads back as float NaN columns; filling the
    NLL of a GPU row from the CPU row of its variant must still write the device and run there."""
    import bench_scaling

    frame = pd.DataFrame([_hier_row("made-h3", 0.1, 10.0), _hier_row("made-h3", 0.001, float("nan"), device="cuda"),
                          _hier_row("lstm", 0.002, 10.1, device="cuda")]).assign(nll_device=float("nan"),
                                                                                 run=float("nan"))
    frame.to_csv(tmp_path / "rows.csv", index=False)
    filled = bench_scaling.fill_nll_across_devices(pd.read_csv(tmp_path / "rows.csv"))
    assert filled.loc[1, "test_nll"] == 10.0 and filled.loc[1, "nll_device"] == "cpu"
    assert list(filled.nll_device) == ["cpu", "cpu", "cuda"]
    compared = bench_scaling.compare_low_levels(pd.read_csv(tmp_path / "rows.csv"))
    assert compared.loc[2, "equal_nll_made"] == "made-h3" and compared.loc[2, "equal_nll_update_speedup"] == 2.0


def test_scaling_compare_part_recomputes_the_comparisons_from_the_csv_without_timing(tmp_path):
    import bench_scaling

    pd.DataFrame([_hier_row("made", 1.0, 5.0, model="rnn-hier"), _hier_row("made-h3", 0.1, 10.0, model="rnn-hier"),
                  _hier_row("lstm", 2.0, 10.1, model="rnn-hier")]).assign(params=[3, 1, 2]).to_csv(
        tmp_path / "scaling_hier.csv", index=False)
    bench_scaling.main(["--part", "compare", "--out", str(tmp_path)])
    saved = pd.read_csv(tmp_path / "scaling_hier.csv").set_index("low_level")
    assert len(saved) == 3 and saved.loc["made", "update_s"] == 1.0  # nothing re-timed
    assert saved.loc["lstm", "equal_nll_made"] == "made-h3" and saved.loc["lstm", "equal_nll_update_speedup"] == 20.0
    assert bool(saved.loc["lstm", "target_met"]) and (tmp_path / "scaling.png").stat().st_size > 0


def test_equal_nll_speedup_compares_the_lstm_run_with_made_at_the_same_nll(tmp_path):
    """MADE's updates to the LSTM's best validation NLL (its first curve point at or below it) against
    the LSTM's whole run, each at its own device's update time; NaN where MADE never gets there."""
    import bench_scaling

    def run(name, steps, valid):
        path = tmp_path / name
        path.mkdir()
        pd.DataFrame({"step": steps, "loss_per_value": 1.0, "valid": valid}).to_csv(path / "metrics.csv", index=False)
        return str(path)

    lstm = run("lstm", [500, 1000, 1500, 2000], [12.0, 11.5, 11.2, 11.3])
    made = run("made", [25, 50, 75, 100], [13.0, 11.3, 11.1, 9.0])
    frame = pd.DataFrame({"model": ["m"] * 4, "low_level": ["made", "lstm", "made", "lstm"],
                          "device": ["cpu", "cpu", "cuda", "cuda"], "update_s": [0.5, 1.0, 0.01, 0.02],
                          "nll_updates": 2000, "run": [None, lstm, None, lstm]})
    out = bench_scaling.time_to_lstm_nll(frame, {("m", 88): bench_scaling.validation_curve(Path(made))})
    cpu, cuda = out.iloc[1], out.iloc[3]
    assert cpu.lstm_best_valid == 11.2 and cpu.made_reaches_at == 75
    assert cpu.equal_nll_speedup == pytest.approx(2000 * 1.0 / (75 * 0.5))
    assert cuda.equal_nll_speedup == pytest.approx(2000 * 0.02 / (75 * 0.01))  # each device's own times
    assert out.iloc[0].equal_nll_speedup != out.iloc[0].equal_nll_speedup  # NaN on MADE rows
    never = bench_scaling.time_to_lstm_nll(frame, {("m", 88): pd.Series([13.0, 12.5], index=[25, 50])})
    other = bench_scaling.time_to_lstm_nll(frame, {("m", 1): bench_scaling.validation_curve(Path(made))})
    assert other.equal_nll_speedup.isna().all()  # a curve of another loss normalisation is no match
    assert never.iloc[1].made_reaches_at != never.iloc[1].made_reaches_at  # not reached: NaN, not a guess


def test_made_curve_run_trains_the_first_updates_of_the_schedule_and_is_reused(tmp_path):
    import bench_scaling
    from pyro_srnn.checkpoint import load_checkpoint

    run = bench_scaling.made_curve_run("rnn-hier", "tiny", steps=6, updates=2, every=1, seed=0, runs=tmp_path)
    assert run.name == "rnn-hier-tiny-made-6u-first2-valid1-seed0-units1"  # the loss per 88-key step
    curve = bench_scaling.validation_curve(run)
    assert list(curve.index) == [1, 2] and (curve > 0).all()
    state = load_checkpoint(run / "latest.pt")
    assert state["step"] == 2 and state["train_config"]["steps"] == 6  # the 6-update schedule, stopped at 2
    mtime = (run / "metrics.csv").stat().st_mtime
    assert bench_scaling.made_curve_run("rnn-hier", "tiny", 6, 2, 1, 0, tmp_path) == run
    assert (run / "metrics.csv").stat().st_mtime == mtime


def test_made_curve_keeps_the_equal_nll_columns_of_models_run_before(tmp_path):
    """Re-running --made-curve for one hier model recomputes the other model's columns from its own
    curve on disk instead of dropping them."""
    import bench_scaling

    results, runs = tmp_path / "results", tmp_path / "runs"
    common = ["--part", "hier", "--size", "tiny", "--nll-steps", "4", "--steps", "1", "--made-curve", "1", "2",
              "--jobs", "2", "--runs", str(runs), "--out", str(results)]
    bench_scaling.main(common + ["--hier-models", "rnn-hier"])
    bench_scaling.main(common + ["--hier-models", "srnn-hier"])
    saved = pd.read_csv(results / "scaling_hier.csv")
    lstm = saved[saved.low_level == "lstm"].set_index("model")
    assert set(lstm.index) == {"rnn-hier", "srnn-hier"}
    assert lstm.lstm_best_valid.notna().all()  # both models keep their equal-NLL columns


def test_host_reads_are_counted_per_path():
    """The step benchmark counts tensor reads back to the host (GPU synchronisations) per path: none
    in the hand-written loss, none in the package's trace loss with Pyro's validation off, some
    with it on (Pyro's NaN/inf checks)."""
    frame = bench_step.run(["f-srnn"], ["midi"], size="tiny", reps=1, warmup=0, verbose=False, with_unvalidated=True,
                           pyro_validation="always")
    row = frame.iloc[0]
    assert row["host_reads_torch"] == 0 and row["host_reads_pyro_noval"] == 0
    assert row["host_reads_pyro"] > 0


def test_micro_config_reports_the_fixed_cost_and_counts_tensor_ops():
    """``--configs micro`` (Pyro's fixed cost per step) has no ratio target, reports
    ``overhead_ms = pyro_ms − torch_ms``, and counts tensor operations per path (forward and
    backward). For a model with one observed site the Pyro path adds only a handful of operations
    to the hand-written loss's (the plate's index, the mask, the sums Pyro keeps per site) —
    counted, so a regression that adds work per site shows here, without timing anything."""
    import math

    frame = bench_step.run(["f-rnn"], ["micro"], reps=2, warmup=0, verbose=False, with_unvalidated=True,
                           pyro_validation="always")
    row = frame.iloc[0]
    assert row["status"] == "ok" and row["size"] == "tiny"
    assert math.isnan(row["target"]) and not row["over_target"]
    assert row["overhead_ms"] == pytest.approx(row["pyro_ms"] - row["torch_ms"])
    assert row["overhead_noval_ms"] == pytest.approx(row["pyro_noval_ms"] - row["torch_ms"])
    assert row["ops_torch"] > 20
    assert 0 < row["ops_pyro_noval"] - row["ops_torch"] <= 16, (row["ops_pyro_noval"], row["ops_torch"])
    assert row["ops_pyro"] > row["ops_pyro_noval"]  # Pyro's validation: NaN/inf checks are tensor ops too


def test_compare_revisions_times_two_revisions_side_by_side(tmp_path):
    """``benchmarks/compare_revisions.sh BASE`` checks out BASE beside the working tree, times the
    micro configuration of both with the working tree's benchmark scripts, and writes one row per
    model and revision (here: one model, one round, HEAD against the working tree)."""
    import os
    import shutil
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("needs the git checkout of the repository")
    out = tmp_path / "compare.csv"
    env = dict(os.environ, PYTHON=sys.executable, MODELS="f-rnn", MIN_TIME="0", REPS="2", OUT=str(out),
               TMPDIR=str(tmp_path))
    proc = subprocess.run(["bash", str(root / "benchmarks" / "compare_revisions.sh"), "HEAD", "", "1"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = pd.read_csv(out)
    assert list(table["revision"]) == ["HEAD", "working-tree"] and set(table["model"]) == {"f-rnn"}
    assert (table["ops_torch"] > 0).all() and (table["overhead_ms"].notna()).all()
    # the temporary checkout is removed again
    listed = subprocess.run(["git", "worktree", "list"], cwd=root, capture_output=True, text=True).stdout
    assert str(tmp_path) not in listed


def test_optimizer_benchmark_checks_the_implementations_agree(tmp_path):
    """``bench_optimizer.py`` times Adam's default, foreach and fused updates on a model's
    parameters after checking that they make the same updates."""
    import bench_optimizer

    out = tmp_path / "opt.csv"
    frame = bench_optimizer.main(["--config", "micro", "--size", "tiny", "--models", "f-rnn", "--reps", "2",
                                  "--out", str(out)])
    row = pd.read_csv(out).iloc[0]
    assert row["model"] == "f-rnn" and row["tensors"] > 0 and len(frame) == 1
    assert row["default_ms"] > 0 and row["fused_ms"] > 0
    assert row["fused_speedup"] == pytest.approx(row["default_ms"] / row["fused_ms"])


def _micro_f_srnn():
    """F-SRNN (tiny) at the micro configuration, seeded: (elbo module, its parameters, a batch)."""
    config = bench_step.CONFIGS["micro"]
    pyro.set_rng_seed(0)
    model = bench_step.build_model("f-srnn", bench_step.make_spec(config), "tiny")
    elbo = bench_step.make_elbo("trace")(model, bench_step.build_guide(None, model))
    return elbo, [p for p in elbo.parameters() if p.requires_grad], bench_step.synthetic_batch(config)


def _one_step_params(step: str) -> list:
    elbo, params, batch = _micro_f_srnn()
    loss_fn = lambda b, s: elbo(b, kl_scale=s)  # noqa: E731
    torch.manual_seed(1)
    optimizer = bench_step.make_optimizer(params, lr=1e-3)
    if step == "written out":  # the trainer's step: loss / values, backward, clip at 0.5, Adam
        (loss_fn(batch, 0.5) / batch.num_scored_values).backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        optimizer.step()
    else:
        import bench_graphs

        bench_graphs.static_step(loss_fn, params, optimizer, batch, 0.5, batch.num_scored_values)
    return [p.detach().clone() for p in params]


def test_the_step_bench_graphs_captures_is_the_benchmarked_step():
    """The step bench_step times and bench_graphs captures (``static_step``: nothing read back) updates
    the parameters exactly as the trainer's step written out, here on the CPU; only the capture itself
    needs a GPU."""
    runner, static = _one_step_params("written out"), _one_step_params("static")
    initial = [p.detach().clone() for p in _micro_f_srnn()[1]]
    assert len(runner) == len(static) == len(initial) > 0
    assert all(torch.equal(a, b) for a, b in zip(runner, static))
    assert not all(torch.equal(a, b) for a, b in zip(runner, initial))  # the step moved them


def test_bench_graphs_says_it_needs_cuda_and_measures_nothing(tmp_path, capsys):
    import bench_graphs

    out = tmp_path / "graphs.csv"
    with pytest.raises(SystemExit) as stop:
        bench_graphs.main(["--device", "cpu", "--models", "f-rnn", "--out", str(out)])
    assert stop.value.code == 2 and "needs a CUDA device" in capsys.readouterr().err
    assert not out.exists()


def test_bench_graphs_rows_on_a_cpu_have_the_eager_times_and_the_failed_capture():
    """The measurement's plumbing without a GPU: both paths' eager steps are timed (same model, so the
    same loss scale), the capture is recorded as what stopped it, and no graph ratio is made up."""
    import bench_graphs

    rows = bench_graphs.measure("f-rnn", reps=1, warmup=0, device="cpu")
    assert is_validation_enabled()  # measured with it off, as the trainer's later steps; restored
    assert [r["path"] for r in rows] == ["pyro", "torch", "trainer"]
    for r in rows:
        assert r["eager_ms"] > 0 and r["capture"] != "ok" and "graph_ms" not in r and "ratio_graph" not in r
    for r in rows[:2]:
        assert r["ratio_eager"] == pytest.approx(rows[0]["eager_ms"] / rows[1]["eager_ms"])
    assert rows[0]["loss_eager"] == pytest.approx(rows[1]["loss_eager"], rel=0.05)
    # the trainer's step: its loss is per value (the others' per batch), and --cuda-graph refused off CUDA
    assert rows[2]["loss_eager"] == pytest.approx(rows[0]["loss_eager"] / (16 * 100 * 88), rel=0.05)
    assert "--cuda-graph needs --device cuda" in rows[2]["capture"]


def test_bench_graphs_replots_a_saved_table_without_a_gpu(tmp_path):
    """The plot beside ``bench_graphs_cuda.csv`` is redrawn from the CSV alone (``--replot``), rows of a
    failed capture (no graph columns) included."""
    import bench_graphs
    import pandas as pd

    rows = [dict(model="f-rnn", path="pyro", eager_ms=6.7, graph_ms=2.3, ratio_eager=0.96, ratio_graph=0.98, gpu="X"),
            dict(model="f-rnn", path="torch", eager_ms=7.0, graph_ms=2.4, ratio_eager=0.96, ratio_graph=0.98, gpu="X"),
            dict(model="f-rnn", path="trainer", eager_ms=6.8, graph_ms=3.2, gpu="X"),
            dict(model="vrnn", path="pyro", eager_ms=120.0, ratio_eager=0.77, capture="RuntimeError: …", gpu="X"),
            dict(model="vrnn", path="trainer", eager_ms=141.8, capture="RuntimeError: …", gpu="X")]
    csv = tmp_path / "graphs.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    assert bench_graphs.main(["--replot", str(csv)]) is None  # no CUDA needed
    png = csv.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
