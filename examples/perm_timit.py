"""Perm-TIMIT: TIMIT with one fixed permutation of the 200 samples inside every frame.

What it reproduces: the study's Perm-TIMIT column (Lai, Dai, Yang & Yoo 2019, Table 4; nats per
utterance). Permuting within frames destroys the local order, so a model must discover the
intra-step correlations itself; the study's RNN-hier for Perm-TIMIT uses a masked-MLP ("nade")
low-level model: frame LSTM 512, embedding 256, 3-layer masked MLP of width 64 (ref code), which
is the default here (``--size study``; 13.26M parameters in this zoo's per-position masked MLP,
where the ref code's version has 17.09M). The permutation is
``numpy.random.RandomState(123456).permutation(200)`` (the ref code used ``torch.randperm`` under
``torch.manual_seed(123456)``; see :func:`pyro_srnn.data.speech.perm_timit_permutation`).
(The study's figures are not in this repository's reference texts, so none is quoted here.)

Study protocol (SPEC §5–6): as TIMIT: batch 32, 40k updates, Adam 1e-3 → 1e-6 cosine, clipping 0.5.

Command (TIMIT from the LDC, LDC93S1; a GPU):

    python examples/perm_timit.py --data-dir /path/to/TIMIT --device cuda

Seconds-long check of the code path on a miniature TIMIT-shaped folder:

    python examples/perm_timit.py --data-dir /path/to/mini_timit --smoke --out /tmp/perm-smoke

Samples are written in the permuted domain (``.wav`` of permuted frames): they sound like noise
unless un-permuted, which is the point of the data set.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import base_parser, run_example, run_script  # noqa: E402

STUDY = dict(model="rnn-hier", steps=40_000, batch_size=32, estimator="meanfield", valid_every=1000,
             model_args=dict(hidden=512, embed=256, low="made", low_hidden=64, low_layers=3))


def main(args=None) -> dict:
    args = base_parser(__doc__.splitlines()[0], STUDY).parse_args(args)
    return run_example(args, dataset="perm_timit", study_defaults=STUDY)


if __name__ == "__main__":
    run_script(main)
