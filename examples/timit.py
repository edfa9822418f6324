"""TIMIT: raw 16 kHz speech waveform density, 200-sample frames (the study's speech benchmark).

What it reproduces: the TIMIT column of the study (Lai, Dai, Yang & Yoo 2019, "Re-examination of
the role of latent variables in sequence modeling", Table 4): test log-likelihood in nats per
utterance, summed over 40-step (8000-sample) chunks with the state reset at every chunk. The
default model is RNN-hier (an LSTM over frames with an LSTM inside each frame, 17.28M parameters),
the study's best TIMIT model; ``--model srnn-hier`` / ``f-rnn`` / ``f-srnn`` / ``rnn-flat`` /
``srnn-flat`` give its other rows. SPEC §8: with an autoregressive within-step output the plain RNN
beats every SRNN. (The study's figures are not in this repository's reference texts, so none is
quoted here; compare ``value`` with the paper's table.)

Study protocol (SPEC §5–6): Adam 1e-3 cosine-decayed to 1e-6, clipping 0.5, batch 32, 40k updates,
KL annealing 0.2 + 5e-5 per update (latent models), TraceMeanField_ELBO, study-size model.

Command (TIMIT from the LDC, LDC93S1; a GPU; the study's full run):

    python examples/timit.py --data-dir /path/to/TIMIT --device cuda

Seconds-long check of the code path (any TIMIT-shaped folder, e.g. the miniature one the tests write):

    python examples/timit.py --data-dir /path/to/mini_timit --smoke --out /tmp/timit-smoke

Writes OUT/best.pt, metrics.csv, curves.png, result.json and OUT/samples/sample_*.wav (16 kHz).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import base_parser, run_example, run_script  # noqa: E402

STUDY = dict(model="rnn-hier", steps=40_000, batch_size=32, estimator="meanfield", valid_every=1000)


def main(args=None) -> dict:
    args = base_parser(__doc__.splitlines()[0], STUDY).parse_args(args)
    return run_example(args, dataset="timit", study_defaults=STUDY)


if __name__ == "__main__":
    run_script(main)
