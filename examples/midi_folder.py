"""Any folder of MIDI files: 88-key rolls on the files' own beat grid, the study's MIDI protocol.

Reads every ``.mid``/``.midi`` under ``--data-dir`` with pretty_midi (drum tracks skipped), at
``--steps-per-quarter`` steps per quarter note of each file's tempo map (default 2: eighth notes) or a
fixed ``--step-seconds``; split by file, seeded 60/20/20 % (see ``pyro_srnn.data.music``); chunks of
100 steps.

Run (the study's protocol, SPEC §5: batch 16, 20k updates, Adam 1e-3 cosine-decayed to 1e-6,
clipping 0.5, KL annealing from 0.2 by 1e-4 per update; model sizes of the study's MIDI configs)::

    python examples/midi_folder.py --data-dir /data/my_midi --model f-srnn

Other models: ``--model rnn-hier`` (the study's best), ``f-rnn``, ``srnn-hier``, ``vrnn``, ``storn`` …
(``pyro-srnn models``). A seconds-long check of the whole code path: add ``--smoke``.

Metric: nats per time step (the sum over the 88 keys of a step, averaged over scored steps). There
is no published figure for your own folder; compare models with each other.

Writes ``runs/examples/midi_folder-<model>/``: checkpoints, ``metrics.csv``, ``result.json`` and
samples (``sample_NN.mid`` + ``pianoroll.png``).
"""
from __future__ import annotations

from _common import base_parser, run_example, run_script

DATASET = "midi_folder"
#: the study's hyper-parameters for MIDI data (SPEC §5, §6)
STUDY = dict(model="f-srnn", steps=20000, batch_size=16, size="study")


def build_parser():
    parser = base_parser(__doc__.splitlines()[0], STUDY)
    parser.add_argument("--steps-per-quarter", type=int, default=2, help="time steps per quarter note")
    parser.add_argument("--step-seconds", type=float, default=None,
                        help="a fixed time step in seconds instead of the beat grid")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    load = dict(steps_per_quarter=args.steps_per_quarter, step_seconds=args.step_seconds)
    return run_example(args, dataset=DATASET, study_defaults=STUDY, load_kwargs=load)


if __name__ == "__main__":
    run_script(main)
