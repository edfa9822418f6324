"""Asterisk English prompts: real studio speech that installs offline (558 G.722 files, 24.5 min).

Not in the study: a freely installable stand-in for TIMIT when the LDC corpus is not at hand.
One speaker (Allison Smith), 16 kHz, read under the TIMIT conventions (global train mean/std,
200-sample frames, 40-step chunks, nats per utterance); split 20 % test, then 5 % of the rest to
valid, seeded (424 / 22 / 112 prompts); the ``silence/`` prompts are left out.
Numbers from it are comparable between models of this zoo, not with the study's TIMIT figures.

Install the data (Debian/Ubuntu) and the G.722 decoder:

    apt-get install asterisk-core-sounds-en-g722
    pip install pyro-srnn[speech]

Command (TIMIT's protocol: batch 32, Adam 1e-3 → 1e-6 cosine, clipping 0.5; 5k updates because
the corpus is ~1/13 of TIMIT):

    python examples/asterisk_prompts.py --model rnn-hier --size small --steps 5000

Seconds-long check of the code path (reads the installed prompts, or any folder of .g722 files):

    python examples/asterisk_prompts.py --smoke --out /tmp/asterisk-smoke
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import base_parser, run_example, run_script  # noqa: E402

STUDY = dict(model="rnn-hier", size="small", steps=5_000, batch_size=32, estimator="meanfield", valid_every=500)


def main(args=None) -> dict:
    args = base_parser(__doc__.splitlines()[0], STUDY).parse_args(args)
    return run_example(args, dataset="asterisk_prompts", study_defaults=STUDY)


if __name__ == "__main__":
    run_script(main)
