"""JSB Chorales (Boulanger-Lewandowski pickle): four-part chorales, 88-key rolls.

The JSB Chorales benchmark from ``JSB Chorales.pickle`` (its own split), chunks of 100 steps, under
the study's MIDI protocol (the study itself used Muse and Nottingham).

Run (the study's protocol, SPEC §5: batch 16, 20k updates, Adam 1e-3 cosine-decayed to 1e-6,
clipping 0.5, KL annealing from 0.2 by 1e-4 per update; model sizes of the study's MIDI configs)::

    python examples/jsb_chorales.py --data-dir "/data/JSB Chorales.pickle" --model f-srnn

Other models: ``--model rnn-hier`` (the study's best), ``f-rnn``, ``srnn-hier``, ``vrnn``, ``storn`` …
(``pyro-srnn models``). A seconds-long check of the whole code path: add ``--smoke``.

Metric: nats per time step (the sum over the 88 keys of a step,
averaged over scored steps). For orientation (SPEC §8): Pyro's DMM example reaches a test NLL of
6.87 nats per time step (Krishnan et al. report 6.93); Boulanger-Lewandowski et al. (2012) report 5.56
for RNN-NADE.

Writes ``runs/examples/jsb_chorales-<model>/``: checkpoints, ``metrics.csv``, ``result.json`` and samples
(``sample_NN.mid`` + ``pianoroll.png``).
"""
from __future__ import annotations

from _common import base_parser, run_example, run_script

DATASET = "jsb_chorales"
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
