"""VCTK: 109 speakers of read English, wav48 resampled to 16 kHz, 200-sample frames.

What it reproduces: the study's VCTK column (Lai, Dai, Yang & Yoo 2019, Table 4): test
log-likelihood in nats per audio sample (the ref code's unit), RNN-hier by default. The split is
the study's when its lists lie in the data directory (``train_files_list.txt`` … from the ref
code's ``speech/datasets/vctk/``, or ``train.lst`` …), else a seeded 35,393 / 4,424 / 4,425 split.
(The study's figures are not in this repository's reference texts, so none is quoted here.)

Study protocol (SPEC §5–6): batch 128, 80k updates, Adam 1e-3 → 1e-6 cosine, clipping 0.5,
KL annealing 0.2 + 5e-5 per update, study-size model (the ref code trained it on 4 GPUs).

Command (the CSTR VCTK Corpus; a GPU):

    python examples/vctk.py --data-dir /path/to/VCTK-Corpus --device cuda

Seconds-long check of the code path on a miniature ``wav48/<speaker>/*.wav`` folder:

    python examples/vctk.py --data-dir /path/to/mini_vctk --smoke --out /tmp/vctk-smoke
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import base_parser, run_example, run_script  # noqa: E402

STUDY = dict(model="rnn-hier", steps=80_000, batch_size=128, estimator="meanfield", valid_every=2000)


def main(args=None) -> dict:
    args = base_parser(__doc__.splitlines()[0], STUDY).parse_args(args)
    return run_example(args, dataset="vctk", study_defaults=STUDY)


if __name__ == "__main__":
    run_script(main)
