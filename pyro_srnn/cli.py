"""Command line: ``pyro-srnn {train,evaluate,sample,models,datasets}`` (also ``python -m pyro_srnn``).

``train`` and ``evaluate`` end by printing one JSON object on the last stdout line:
``{"dataset", "model", "guide", "split", "metric", "value", "unit", "steps", ...}``.
Unknown data set, model or guide names exit with code 2 and list the valid names.

``train --resume`` continues the run saved in ``OUT/latest.pt`` with the saved settings; only what is
about this process may change (:data:`RESUME_MAY_CHANGE`). Any other flag given on the command line
must equal the saved value, otherwise the command stops with one error naming the flag.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
from pathlib import Path

EXIT_USAGE = 2
DEFAULT_STEPS = 3000

#: ``train`` options that may differ from the saved run on ``--resume``: they are about this process
#: (where it runs, what it prints, where it stops or writes, where it finds the data), not the run
RESUME_MAY_CHANGE = frozenset({"steps", "stop_at", "out", "no_progress", "device", "pyro_validation",
                               "cuda_graph", "data_dir", "eval_split", "resume"})
#: ``train`` options whose TrainConfig field has another name
_CONFIG_FIELD = {"model_arg": "model_args"}


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (counts of updates, sequences, batches, samples)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _float_in(low: float, high: float = math.inf, *, low_open: bool = False):
    """argparse type: a finite number in [low, high] (or (low, high] with ``low_open``)."""
    where = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if math.isfinite(high) else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {where}, got {text!r}") from None
        if not (math.isfinite(value) and (value > low if low_open else value >= low) and value <= high):
            raise argparse.ArgumentTypeError(f"must be a finite number {where}, got {text}")
        return value

    parse.__name__ = "number"  # argparse names the type in its own messages
    return parse


def _fail(message: str, code: int = 1) -> int:
    print(f"pyro-srnn: error: {message}", file=sys.stderr)
    return code


def _unknown(kind: str, name: str, valid: list[str]) -> int:
    return _fail(f"unknown {kind} {name!r}; valid {kind}s:\n  " + "\n  ".join(valid), EXIT_USAGE)


def _emit(summary: dict) -> None:
    print(json.dumps(summary, sort_keys=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-srnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")

    t = sub.add_parser("train", help="train a model (defaults: f-rnn on bach_chorales, CPU)")
    t.add_argument("--dataset", default="bach_chorales")
    t.add_argument("--model", default="f-rnn")
    t.add_argument("--guide", default=None, help="guide name (default: the model's own)")
    t.add_argument("--size", default="small", help="model size: tiny, small, or study (the study's config); "
                        "NAME@F scales every layer width by F, e.g. study@0.5")
    t.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model hyper-parameter (JSON value), repeatable")
    t.add_argument("--steps", type=positive_int, default=None,
                   help=f"total number of updates, the cosine horizon (default {DEFAULT_STEPS})")
    t.add_argument("--batch-size", type=positive_int, default=None,
                   help="default: the study's batch size of the domain")
    t.add_argument("--lr", type=_float_in(0.0, low_open=True), default=1e-3)
    t.add_argument("--estimator", choices=["trace", "meanfield"], default="trace",
                   help="Trace_ELBO, or TraceMeanField_ELBO (analytic KL, the study's estimator)")
    t.add_argument("--anneal", choices=["linear", "none", "sigmoid"], default="linear")
    t.add_argument("--anneal-start", type=_float_in(0.0, 1.0, low_open=True), default=0.2)  # poutine.scale: > 0
    t.add_argument("--anneal-increment", type=_float_in(0.0), default=None)
    t.add_argument("--valid-every", type=positive_int, default=250)
    t.add_argument("--valid-max-batches", type=positive_int, default=None)
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    # the modes of pyro_srnn.train.PYRO_VALIDATION_MODES, spelt out: the parser imports no torch (tested equal)
    t.add_argument("--pyro-validation", choices=["always", "first", "off"], default="first",
                   help="Pyro's shape and per-site NaN/inf checks (each value check is a host-device sync on a "
                        "GPU): every step, the first training step and validation pass only (default), or never; "
                        "in every mode loss and gradients are checked each step, and a non-finite one is "
                        "re-run with the checks on to name the site")
    t.add_argument("--no-pyro-validation", dest="pyro_validation", action="store_const", const="off",
                   help="the same as --pyro-validation off")
    t.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="capture each step's loss, backward and clipping in a CUDA graph and replay it, so Pyro's "
                        "Python runs once (1.4-5.8x faster steps on an H200); batches padded to the chunk length. "
                        "Default: on wherever it can be (CUDA, one process, --pyro-validation not always); "
                        "--no-cuda-graph: eager steps")
    t.add_argument("--out", default=None, help="run directory (default runs/<dataset>-<model>)")
    t.add_argument("--resume", action="store_true",
                   help="continue from OUT/latest.pt with its saved settings; only --steps, --stop-at, --out, "
                        "--device, --data-dir, --[no-]pyro-validation, --[no-]cuda-graph, --no-progress and "
                        "--eval-split may differ, any other flag given must equal the saved value")
    t.add_argument("--stop-at", type=positive_int, default=None, help="stop after this update (resume later)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data-dir", default=None)
    t.add_argument("--stream", action="store_true", help="the study's concatenated-stream batching")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--eval-split", default="test", choices=["valid", "test"])

    e = sub.add_parser("evaluate", help="evaluate a checkpoint in the data set's units")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--split", default="test", choices=["train", "valid", "test"])
    e.add_argument("--iwae", type=positive_int, default=None, metavar="K",
                   help="importance-weighted bound with K samples")
    e.add_argument("--estimator", choices=["trace", "meanfield"], default=None)
    e.add_argument("--device", default="cpu")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--batch-size", type=positive_int, default=64)

    s = sub.add_parser("sample", help="draw sequences from a trained model")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--num", type=positive_int, default=4)
    s.add_argument("--steps", type=positive_int, default=100, help="length of each sample in steps")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")

    sub.add_parser("models", help="list every registered model and guide")
    sub.add_parser("datasets", help="list the data sets, where they read from and whether they are present")
    return parser


def _parse_model_args(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--model-arg expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def accepted_model_args(name: str) -> list[str]:
    """The hyper-parameters ``--model-arg`` may set for registered model ``name``: the keyword
    parameters of its constructors (up to :class:`SequenceModel`, while each passes ``**kwargs`` on)
    and of its ``build_output`` (where the simplified SRNNs send the rest)."""
    from .models import MODELS
    from .models.base import SequenceModel

    def keywords(fn, skip):
        params = inspect.signature(fn).parameters.values()
        names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip}
        return names, any(p.kind is p.VAR_KEYWORD for p in params)

    cls = MODELS[name].cls
    accepted = set()
    for klass in cls.__mro__:
        if klass is SequenceModel:
            break
        if not issubclass(klass, SequenceModel):
            continue  # a mixin
        if "__init__" in klass.__dict__:
            names, passes_on = keywords(klass.__dict__["__init__"], {"self", "spec"})
            accepted |= names
            if not passes_on:
                break
    if callable(getattr(cls, "build_output", None)):
        accepted |= keywords(cls.build_output, {"self", "spec"})[0]
    return sorted(accepted)


def unknown_model_args(name: str, model_args: dict) -> str | None:
    """The error message for ``--model-arg`` keys that model ``name`` does not take (None: all fine)."""
    accepted = accepted_model_args(name)
    unknown = sorted(set(model_args) - set(accepted))
    if not unknown:
        return None
    return (f"--model-arg: model {name!r} has no argument {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(accepted)}")


class ResumeConflict(ValueError):
    """A flag given with ``--resume`` that contradicts the saved run's configuration."""


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _resumed_config(path: Path, given, steps: int | None, explicit: set[str] = frozenset()):
    """The saved run's TrainConfig, with what is about this process (:data:`RESUME_MAY_CHANGE`) from
    ``given``. A flag in ``explicit`` (given on the command line) whose value differs from the saved
    one raises :class:`ResumeConflict`; flags left out take the saved values."""
    from dataclasses import fields

    from .checkpoint import CheckpointError, load_checkpoint
    from .data.core import DataSpec
    from .train import TrainConfig, study_batch_size, study_increment

    state = load_checkpoint(path)
    saved = dict(state["train_config"])
    unknown = sorted(set(saved) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise CheckpointError(f"{path}: the saved configuration has settings this version does not know: "
                              f"{', '.join(unknown)}")
    # settings saved as None ("the default") compare by the value the run used
    spec = DataSpec(**state["model_config"]["spec"])
    used = {"guide": state["guide_config"]["name"], "batch_size": study_batch_size(spec),
            "anneal_increment": study_increment(spec.domain)}
    conflicts = []
    for dest in sorted(explicit - RESUME_MAY_CHANGE):
        key = _CONFIG_FIELD.get(dest, dest)
        value, before = getattr(given, key), saved.get(key, getattr(TrainConfig(), key))
        if before is None and value is not None:
            before = used.get(key)
        if value != before:
            conflicts.append(f"{_flag(dest)} {value!r} (saved: {before!r})")
    if conflicts:
        raise ResumeConflict(f"--resume continues the run saved in {path} with its own settings, but "
                             f"{'; '.join(conflicts)}; leave {'this flag' if len(conflicts) == 1 else 'these flags'} "
                             f"out to resume, or train into a new --out")
    saved.update(out=given.out, stop_at=given.stop_at, progress=given.progress, device=given.device,
                 pyro_validation=given.pyro_validation, cuda_graph=given.cuda_graph)
    if "data_dir" in explicit:  # the corpus may lie elsewhere on this machine
        saved["data_dir"] = given.data_dir
    if steps is not None:
        saved["steps"] = steps
    return TrainConfig(**saved)


def explicit_options(argv: list[str]) -> set[str]:
    """The destinations of the options given on the command line ``argv`` (not left at their default):
    ``argv`` parsed again with every sub-command's defaults suppressed."""
    bare = build_parser()
    for action in bare._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for option in sub._actions:
                    option.default = argparse.SUPPRESS
    return set(vars(bare.parse_args(argv))) - {"command"}


def cmd_train(args) -> int:
    from .data import DATASETS, ensure_registered, write_text_atomic
    from .models import GUIDES, MODELS, model_names, guide_names
    from .graphs import GraphCaptureError
    from .train import TrainConfig, Trainer, TrainingDiverged
    from .checkpoint import CheckpointError
    from .evaluate import evaluate_split

    ensure_registered()
    model_names()  # registers the models
    if args.dataset not in DATASETS:
        return _unknown("data set", args.dataset, sorted(DATASETS))
    if args.model not in MODELS:
        return _unknown("model", args.model, model_names())
    if args.guide is not None and args.guide not in GUIDES:
        return _unknown("guide", args.guide, guide_names())
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return _fail("--device cuda: no CUDA device is available on this machine")
    out = args.out or os.path.join("runs", f"{args.dataset}-{args.model}")
    if args.resume and not Path(out, "latest.pt").exists():
        return _fail(f"--resume: no checkpoint to resume from at {Path(out, 'latest.pt')}")
    try:
        model_args = _parse_model_args(args.model_arg)
    except ValueError as e:
        return _fail(str(e), EXIT_USAGE)
    config = TrainConfig(
        dataset=args.dataset, model=args.model, guide=args.guide, size=args.size, model_args=model_args,
        steps=DEFAULT_STEPS if args.steps is None else args.steps, batch_size=args.batch_size, lr=args.lr,
        estimator=args.estimator, anneal=args.anneal,
        anneal_start=args.anneal_start, anneal_increment=args.anneal_increment, valid_every=args.valid_every,
        valid_max_batches=args.valid_max_batches, seed=args.seed, device=args.device, out=out,
        data_dir=args.data_dir, stream=args.stream, stop_at=args.stop_at, progress=not args.no_progress,
        precision=args.precision, pyro_validation=args.pyro_validation, cuda_graph=args.cuda_graph,
    )
    if args.resume:  # continue the saved run: its own configuration, except what is about this process
        try:
            config = _resumed_config(Path(out, "latest.pt"), config, steps=args.steps,
                                     explicit=getattr(args, "explicit", set()))
        except ResumeConflict as e:
            return _fail(str(e), EXIT_USAGE)
        except CheckpointError as e:
            return _fail(str(e))
    if config.model not in MODELS:  # a resumed run names its own model
        return _unknown("model", config.model, model_names())
    problem = unknown_model_args(config.model, config.model_args)
    if problem:
        return _fail(problem, EXIT_USAGE)
    from .distributed import distributed_context

    trainer = None
    try:
        with distributed_context(config.device) as dist_ctx:
            trainer = Trainer(config, dist=dist_ctx)
            if args.resume:
                trainer.resume()
            trainer.fit()
    except (CheckpointError, TrainingDiverged, GraphCaptureError) as e:
        return _fail(str(e))
    except (ValueError, FileNotFoundError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C: the trainer checkpointed its last finished update
        if trainer is None or trainer.is_main:
            print(f"pyro-srnn: interrupted; {_checkpoint_step(Path(out, 'latest.pt'), config.steps)}",
                  file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it
    if not trainer.is_main:
        return 0
    summary = {"dataset": config.dataset, "model": config.model, "guide": trainer.guide.name,
               "split": None, "metric": None, "value": None, "unit": None, "steps": trainer.step,
               "out": str(trainer.out),
               # the clipped loss's normalisation (SPEC §5): runs from before it was per study unit lack it
               "loss_units_per_step": trainer.loss_units_per_step}
    if trainer.step >= config.steps:  # finished: evaluate the best checkpoint on the test split
        from .train import load_trained

        model, guide, _ = load_trained(trainer.out / "best.pt", device=config.device)
        result = evaluate_split(model, guide, trainer.dataset, args.eval_split, estimator=config.estimator,
                                device=config.device, seed=config.seed)
        summary.update({k: result[k] for k in ("split", "metric", "value", "unit")})
        summary["best_valid"] = trainer.best_valid
        summary["checkpoint"] = str(trainer.out / "best.pt")
        write_text_atomic(Path(trainer.out, "result.json"), json.dumps(summary, indent=2))
    _emit(summary)
    return 0


def _checkpoint_step(latest: Path, steps: int) -> str:
    """What an interrupted run left: the update ``latest.pt`` holds (read back: an interrupt may have
    left it at an earlier one) and how to continue."""
    from .checkpoint import CheckpointError, load_checkpoint

    try:
        step = load_checkpoint(latest)["step"]
    except CheckpointError:
        return "no checkpoint was written yet"
    return f"{latest} holds update {step} of {steps}: continue with --resume --out {latest.parent}"


def cmd_evaluate(args) -> int:
    from .checkpoint import CheckpointError
    from .data import load_dataset
    from .evaluate import evaluate_split
    from .train import load_trained

    try:
        model, guide, state = load_trained(args.checkpoint, device=args.device)
    except CheckpointError as e:
        return _fail(str(e))
    cfg = state["train_config"]
    try:
        dataset = load_dataset(cfg["dataset"], args.data_dir or cfg.get("data_dir"))
        result = evaluate_split(model, guide, dataset, args.split, estimator=args.estimator or cfg["estimator"],
                                iwae=args.iwae, device=args.device, batch_size=args.batch_size,
                                seed=cfg.get("seed", 0))
    except (ValueError, FileNotFoundError) as e:
        return _fail(str(e))
    summary = {"dataset": cfg["dataset"], "model": model.name, "guide": guide.name, "split": args.split,
               "metric": result["metric"], "value": result["value"], "unit": result["unit"],
               "steps": int(state["step"]), "checkpoint": str(args.checkpoint)}
    if args.iwae:
        summary["iwae_samples"] = args.iwae
    _emit(summary)
    return 0


def cmd_sample(args) -> int:
    import torch

    from .checkpoint import CheckpointError
    from .samples import write_samples
    from .train import load_trained

    try:
        model, guide, state = load_trained(args.checkpoint, device=args.device)
    except CheckpointError as e:
        return _fail(str(e))
    torch.manual_seed(args.seed)
    x = model.generate(args.num, args.steps).cpu().numpy()
    paths = write_samples(x, model.spec, Path(args.out), **state.get("medium", {}))
    for p in paths:
        print(p)
    return 0


def cmd_models(args) -> int:
    from .models import GUIDES, MODELS, model_names, guide_names

    for name in model_names():
        entry = MODELS[name]
        kind = "latent" if entry.cls.has_latent else "deterministic"
        print(f"model  {name:<16} {kind:<13} default guide: {entry.cls.default_guide:<10} {entry.description}")
    for name in guide_names():
        print(f"guide  {name:<16} {GUIDES[name].description}")
    return 0


def cmd_datasets(args) -> int:
    from .data import DATASETS, ensure_registered
    from .data.core import resolve_data_dir

    ensure_registered()
    for name in sorted(DATASETS):
        entry = DATASETS[name]
        location = resolve_data_dir(entry, None)
        try:
            present = entry.available(location)
        except Exception:  # a probe must never crash the listing
            present = False
        where = location or entry.source
        env = f" (env {entry.env_var})" if entry.env_var else ""
        print(f"{name:<16} {'present' if present else 'missing':<8} {entry.description}")
        print(f"{'':<16} reads from: {where}{env}")
        if not present:
            print(f"{'':<16} how to get: {entry.how_to_get}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["train"]
    args = parser.parse_args(argv)
    if args.command == "train":  # what --resume checks against the saved run
        args.explicit = explicit_options(argv)
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample, "models": cmd_models,
                "datasets": cmd_datasets}
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    return handlers[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
