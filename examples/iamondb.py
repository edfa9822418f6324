"""IAM-OnDB on-line handwriting: (pen, dx, dy) steps, whole lines.

Reproduces the study's IAM-OnDB experiment (Dai et al. 2019, Table 4) from the real
``lineStrokes/`` XML tree and the forms lists ``train.txt`` / ``valid.txt`` (test: ``test.txt`` or the
remaining forms); dx, dy minus the train mean, divided by 56.04462; whole lines.

Run (the study's protocol, SPEC §5: batch 32, 20k updates, Adam 1e-3 cosine-decayed to 1e-6,
clipping 0.5, KL annealing from 0.2 by 5e-5 per update; model sizes of the study's handwriting configs)::

    python examples/iamondb.py --data-dir /data/iamondb --model f-srnn

Other models: ``--model rnn-hier`` (the study's best), ``f-rnn``, ``srnn-hier``, ``vrnn``, ``storn`` …
(``pyro-srnn models``). A seconds-long check of the whole code path: add ``--smoke``.

Metric: nats per handwriting line (summed over the line's steps,
averaged over lines). For orientation: Chung et al. (2015) report a log-likelihood of 1358
nats per line for RNN-GMM and ≥ 1384 for VRNN-GMM on IAM-OnDB (higher is better; their preprocessing
differs in detail).

Writes ``runs/examples/iamondb-<model>/``: checkpoints, ``metrics.csv``, ``result.json`` and samples
(pen-trajectory ``sample_NN.png``).
"""
from __future__ import annotations

from _common import base_parser, run_example, run_script

DATASET = "iamondb"
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
