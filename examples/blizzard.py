"""Blizzard 2013: one reader's audiobooks (~300 h), chapters at 16 kHz, 200-sample frames.

What it reproduces: the study's Blizzard column (Lai, Dai, Yang & Yoo 2019, Table 4): test
log-likelihood in nats per 8000 audio samples (0.5 s), RNN-hier by default. The split is by
chapter: the ref code's chapter lists when they lie in the data directory
(``train_file_list.txt`` …), else seeded 1,023 / 65 / 59. (The study's figures are not in this
repository's reference texts, so none is quoted here.)

Study protocol (SPEC §5–6): batch 128, 160k updates, Adam 1e-3 → 1e-6 cosine, clipping 0.5,
KL annealing 0.2 + 5e-5 per update, study-size model. The converted corpus is ~70 GB of float32:
convert on a machine with that much memory and disk.

Command (Blizzard Challenge 2013 data, Lessac_Blizzard2013_CatherineByers_train/unsegmented):

    python examples/blizzard.py --data-dir /path/to/unsegmented --device cuda

Seconds-long check of the code path on a miniature folder of chapter .mp3/.wav files:

    python examples/blizzard.py --data-dir /path/to/mini_blizzard --smoke --out /tmp/blizzard-smoke
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import base_parser, run_example, run_script  # noqa: E402

STUDY = dict(model="rnn-hier", steps=160_000, batch_size=128, estimator="meanfield", valid_every=4000)


def main(args=None) -> dict:
    args = base_parser(__doc__.splitlines()[0], STUDY).parse_args(args)
    return run_example(args, dataset="blizzard", study_defaults=STUDY)


if __name__ == "__main__":
    run_script(main)
