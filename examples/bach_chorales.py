"""Bach chorales from the music21 corpus (offline): 88-key rolls at quarter notes.

The embedded default data set: the four-part Riemenschneider chorales shipped with music21,
transposed to C major / C minor, repeats expanded (see ``pyro_srnn.data.bach``), chunks of 100 steps.
No download; the corpus is converted once and cached.

Run (the study's protocol, SPEC §5: batch 16, 20k updates, Adam 1e-3 cosine-decayed to 1e-6,
clipping 0.5, KL annealing from 0.2 by 1e-4 per update; model sizes of the study's MIDI configs)::

    python examples/bach_chorales.py --model f-srnn

Other models: ``--model rnn-hier`` (the study's best), ``f-rnn``, ``srnn-hier``, ``vrnn``, ``storn`` …
(``pyro-srnn models``). A seconds-long check of the whole code path: add ``--smoke``.

Metric: nats per time step (the sum over the 88 keys of a step,
averaged over scored steps). No published figure uses this exact conversion; the closest is JSB
Chorales (Pyro's DMM: 6.87 nats per time step), which differs in repertoire, split and repeats.

Writes ``runs/examples/bach_chorales-<model>/``: checkpoints, ``metrics.csv``, ``result.json`` and samples
(``sample_NN.mid`` + ``pianoroll.png``).
"""
from __future__ import annotations

from _common import base_parser, run_example, run_script

DATASET = "bach_chorales"
#: the study's hyper-parameters for MIDI data (SPEC §5, §6)
STUDY = dict(model="f-srnn", steps=20000, batch_size=16, size="study")


def build_parser():
    parser = base_parser(__doc__.splitlines()[0], STUDY)
    parser.add_argument("--max-pieces", type=int, default=None,
                        help="convert only the first N corpus files (0: all) (default: all 371)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    return run_example(args, dataset=DATASET, study_defaults=STUDY, load_kwargs=dict(max_pieces=args.max_pieces))


if __name__ == "__main__":
    run_script(main)
