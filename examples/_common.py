"""Shared runner of the example scripts: parse, train, evaluate, write samples.

Every example is ``python examples/<name>.py [--data-dir DIR] [--model NAME] [--steps N] [--smoke]``.
It trains with :class:`pyro_srnn.train.Trainer` under the study's protocol (SPEC §5: Adam 1e-3
cosine-decayed to 1e-6, clipping 0.5, KL annealing 0.2 + increment per update), evaluates the
best-validation checkpoint on the test split in the data set's unit, writes samples a person can
look at or hear (:func:`pyro_srnn.samples.write_samples`: ``.wav``, ``.mid`` + piano roll, pen
``.png``) and prints one JSON summary (also saved as ``OUT/result.json``).

``--smoke`` is a seconds-long run of the same code path: tiny model, 3 updates, at most a few
sequences per split, short samples. It exists so that tests can run every example on a miniature
corpus; its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from pyro_srnn.cli import positive_int, unknown_model_args

__all__ = ["base_parser", "run_example", "run_script", "SMOKE"]

#: what ``--smoke`` changes (the rest of the code path is the real one)
SMOKE = dict(size="tiny", steps=3, batch_size=4, max_sequences=(8, 2, 2), num_samples=2, sample_steps=2,
             valid_max_batches=1)


def base_parser(description: str, study_defaults: dict) -> argparse.ArgumentParser:
    """Arguments every example shares; defaults are the study's (``study_defaults``).

    ``study_defaults`` keys: ``model``, ``steps``, ``batch_size``, and optionally ``guide``,
    ``size`` (default ``"study"``), ``estimator`` (default ``"meanfield"``: the study's
    single-sample ELBO with analytic KL), ``valid_every``, ``num_samples``, ``sample_steps``, ``out``,
    ``model_args`` (architecture overrides of the study for its model at ``--size study``), and
    ``study_*`` entries (the study's reported figures, copied into the summary).
    """
    d = dict(study_defaults)
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=None,
                   help="where the corpus lies (default: the data set's environment variable or default path)")
    p.add_argument("--model", default=d.get("model", "f-rnn"), help="model name (pyro-srnn models)")
    p.add_argument("--guide", default=d.get("guide"), help="guide name (default: the model's own)")
    p.add_argument("--size", default=d.get("size", "study"), help="tiny, small, or study (SPEC §6)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model hyper-parameter (JSON value), repeatable")
    p.add_argument("--steps", type=positive_int, default=d.get("steps", 1500), help="number of updates")
    p.add_argument("--batch-size", type=positive_int, default=d.get("batch_size"),
                   help="sequences (chunks) per update")
    p.add_argument("--estimator", choices=["trace", "meanfield"], default=d.get("estimator", "meanfield"))
    p.add_argument("--valid-every", type=positive_int, default=d.get("valid_every", 1000))
    p.add_argument("--valid-max-batches", type=positive_int, default=d.get("valid_max_batches"))
    p.add_argument("--iwae", type=positive_int, default=None, metavar="K",
                   help="also report the importance-weighted bound with K samples (latent models)")
    p.add_argument("--num-samples", type=positive_int, default=d.get("num_samples", 4))
    p.add_argument("--sample-steps", type=positive_int, default=d.get("sample_steps", 80),
                   help="length of each sample in steps")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=d.get("out"), help="run directory (default runs/examples/<data set>-<model>)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--smoke", action="store_true",
                   help="seconds-long run (tiny model, 3 updates, few sequences); checks the code path only")
    return p


def _model_args(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            _usage_error(f"--model-arg expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _usage_error(message: str):
    """Bad arguments: one line on stderr, exit code 2 (as argparse's own errors)."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _check_model(model: str, model_args: dict) -> None:
    from pyro_srnn.models import model_names

    if model not in model_names():
        _usage_error(f"unknown model {model!r}; valid models: {', '.join(model_names())}")
    problem = unknown_model_args(model, model_args)
    if problem:
        _usage_error(problem)


def _trim(dataset, counts):
    """The first few sequences of each split (``--smoke``)."""
    from pyro_srnn.data.core import SequenceDataset

    train, valid, test = (dataset.split(s)[:n] for s, n in zip(("train", "valid", "test"), counts))
    return SequenceDataset(dataset.spec, train, valid, test, info=dict(dataset.info))


def _accepts(name: str, keyword: str) -> bool:
    """Whether the registered loader of data set ``name`` takes ``keyword``."""
    import inspect

    from pyro_srnn.data import DATASETS, ensure_registered

    ensure_registered()
    entry = DATASETS.get(name)
    return entry is not None and keyword in inspect.signature(entry.loader).parameters


def run_example(args: argparse.Namespace, *, dataset, model: str | None = None, study_defaults: dict | None = None,
                load_kwargs: dict | None = None, sample_kwargs: dict | None = None) -> dict:
    """Train ``model`` on ``dataset`` (a registered name or a SequenceDataset), evaluate, write samples.

    Returns the summary dict (also printed as one JSON line and saved to ``OUT/result.json``).
    """
    import torch

    from pyro_srnn.data import load_dataset, write_text_atomic
    from pyro_srnn.evaluate import evaluate_split
    from pyro_srnn.samples import medium_kwargs, write_samples
    from pyro_srnn.train import TrainConfig, Trainer, load_trained

    study_defaults = dict(study_defaults or {})
    model = model or args.model
    _check_model(model, _model_args(args.model_arg))  # before the data set loads
    if isinstance(dataset, str):
        name = dataset
        load_kwargs = dict(load_kwargs or {})
        if args.no_progress and _accepts(name, "progress"):
            load_kwargs.setdefault("progress", False)
        dataset = load_dataset(name, args.data_dir, **load_kwargs)
    else:
        name = dataset.spec.name
    size, steps, batch_size = args.size, args.steps, args.batch_size
    num_samples, sample_steps, valid_max_batches = args.num_samples, args.sample_steps, args.valid_max_batches
    valid_every = args.valid_every
    if args.smoke:
        dataset = _trim(dataset, SMOKE["max_sequences"])
        size, steps, batch_size = SMOKE["size"], SMOKE["steps"], SMOKE["batch_size"]
        num_samples, sample_steps = SMOKE["num_samples"], SMOKE["sample_steps"]
        valid_max_batches, valid_every = SMOKE["valid_max_batches"], SMOKE["steps"]
    out = Path(args.out or os.path.join("runs", "examples", f"{name}-{model}"))
    # the study's per-data-set architecture overrides apply to its own model at its own size only
    model_args = dict(study_defaults.get("model_args", {})) if (
        model == study_defaults.get("model") and size == "study") else {}
    model_args.update(_model_args(args.model_arg))
    config = TrainConfig(
        dataset=name, model=model, guide=args.guide, size=size, model_args=model_args,
        steps=steps, batch_size=batch_size, estimator=args.estimator, valid_every=valid_every,
        valid_max_batches=valid_max_batches, seed=args.seed, device=args.device, out=str(out),
        data_dir=args.data_dir, progress=not args.no_progress,
    )
    trainer = Trainer(config, dataset=dataset)
    trainer.fit()

    best, guide, _ = load_trained(out / "best.pt", device=args.device)
    result = evaluate_split(best, guide, dataset, "test", estimator=args.estimator, device=args.device,
                            seed=args.seed)
    summary = {"dataset": name, "model": model, "guide": guide.name, "size": size, "steps": trainer.step,
               "split": "test", "metric": result["metric"], "value": result["value"], "unit": result["unit"],
               "best_valid": trainer.best_valid, "smoke": bool(args.smoke),
               "study": {k: v for k, v in study_defaults.items() if k.startswith("study_")}}
    if args.iwae and best.has_latent:
        iw = evaluate_split(best, guide, dataset, "test", iwae=args.iwae, device=args.device, seed=args.seed)
        summary[iw["metric"]] = iw["value"]

    torch.manual_seed(args.seed)
    samples = best.generate(num_samples, sample_steps).cpu().numpy()
    kwargs = medium_kwargs(dataset.spec, dataset.info) if sample_kwargs is None else sample_kwargs
    paths = write_samples(samples, dataset.spec, out / "samples", **kwargs)
    summary["samples"] = [str(p) for p in paths]
    summary["out"] = str(out)
    # atomic: a finished run is one whose result.json exists and parses
    write_text_atomic(out / "result.json", json.dumps(summary, indent=2, default=_jsonable))
    print(json.dumps(summary, default=_jsonable))
    return summary


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


def run_script(main) -> None:
    """``if __name__ == "__main__"`` of an example: bad data ends with one clear line, exit code 1."""
    from pyro_srnn.data import DataError

    try:
        main()
    except DataError as e:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {e}")


def examples_dir() -> Path:
    return Path(__file__).resolve().parent


if str(examples_dir()) not in sys.path:  # so that examples import each other when run as scripts
    sys.path.insert(0, str(examples_dir()))
