"""MuseData (Boulanger-Lewandowski pickle): polyphonic music, 88-key rolls.

Reproduces the study's MuseData experiment (Dai et al. 2019, Table 4) from the published
``MuseData.pickle`` (its own train/valid/test split), chunks of 100 steps.

Run (the study's protocol, SPEC §5: batch 16, 20k updates, Adam 1e-3 cosine-decayed to 1e-6,
clipping 0.5, KL annealing from 0.2 by 1e-4 per update; model sizes of the study's MIDI configs)::

    python examples/muse.py --data-dir "/data/MuseData.pickle" --model f-srnn

Other models: ``--model rnn-hier`` (the study's best), ``f-rnn``, ``srnn-hier``, ``vrnn``, ``storn`` …
(``pyro-srnn models``). A seconds-long check of the whole code path: add ``--smoke``.

Metric: nats per time step (the sum over the 88 keys of a step,
averaged over scored steps). For orientation: Boulanger-Lewandowski et al. (2012, Table 1) report
5.60 nats per time step for RNN-NADE on MuseData (negative log-likelihood).

Writes ``runs/examples/muse-<model>/``: checkpoints, ``metrics.csv``, ``result.json`` and samples
(``sample_NN.mid`` + ``pianoroll.png``).
"""
from __future__ import annotations

from _common import base_parser, run_example, run_script

DATASET = "muse"
#: the study's hyper-parameters for MIDI data (SPEC §5, §6)
STUDY = dict(model="f-srnn", steps=20000, batch_size=16, size="study")


def build_parser():
    parser = base_parser(__doc__.splitlines()[0], STUDY)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    return run_example(args, dataset=DATASET, study_defaults=STUDY)


if __name__ == "__main__":
    run_script(main)
