"""Hershey script-font lines (offline, Hershey-Fonts==2.1.0): synthetic handwriting.

An IAM-OnDB-shaped set that installs offline: 40 lines of *Alice's Adventures in Wonderland* drawn
in the Hershey script fonts with seeded slant, scale and jitter (~1,200 steps and ~100 pen-ups a
line), split by sentence (see ``pyro_srnn.data.handwriting``). Needs
``pip install pyro-srnn[handwriting]``.

Run (the study's protocol, SPEC §5: batch 32, 20k updates, Adam 1e-3 cosine-decayed to 1e-6,
clipping 0.5, KL annealing from 0.2 by 5e-5 per update; model sizes of the study's handwriting configs)::

    python examples/hershey.py --model f-srnn

Other models: ``--model rnn-hier`` (the study's best), ``f-rnn``, ``srnn-hier``, ``vrnn``, ``storn`` …
(``pyro-srnn models``). A seconds-long check of the whole code path: add ``--smoke``.

Metric: nats per handwriting line (summed over the line's steps,
averaged over lines). No published figure exists; machine-drawn lines are far more regular than
IAM-OnDB, so expect much higher log-likelihoods.

Writes ``runs/examples/hershey-<model>/``: checkpoints, ``metrics.csv``, ``result.json`` and samples
(pen-trajectory ``sample_NN.png``).
"""
from __future__ import annotations

from _common import base_parser, run_example, run_script

DATASET = "hershey"
#: the study's hyper-parameters for handwriting (SPEC §5, §6)
STUDY = dict(model="f-srnn", steps=20000, batch_size=32, size="study")


def build_parser():
    parser = base_parser(__doc__.splitlines()[0], STUDY)
    parser.add_argument("--variants", type=int, default=4, help="renderings per sentence and font")
    parser.add_argument("--max-sentences", type=int, default=None, help="use only the first N sentences")
    parser.add_argument("--spacing", type=float, default=7.0,
                        help="pen points every SPACING font units (cap height 100); larger: shorter lines")
    return parser


def main(argv: list[str] | None = None) -> dict:
    from pyro_srnn.data import load_dataset

    args = build_parser().parse_args(argv)
    dataset = load_dataset(DATASET, args.data_dir, variants=args.variants, max_sentences=args.max_sentences,
                           spacing=args.spacing)
    # samples are drawn in normalised units; the pen plot maps them back to the data's units
    return run_example(args, dataset=dataset, study_defaults=STUDY)


if __name__ == "__main__":
    run_script(main)
