"""F-RNN: an LSTM over past steps with a fully factorised output (SPEC §2).

    d_t = LSTM(embed(x_{t-1}), d_{t-1})                        (state reset per chunk)
    p(x_t | x_<t) = Π_i p(x_{t,i} | d_t)                        (one output head)

The whole chunk is one observed site ``"x"``; the LSTM runs over all steps at once.
References: Dai et al. 2019 (F-RNN baseline); Chung et al. 2015 (RNN baseline of VRNN).
"""
from __future__ import annotations

from ..heads import make_head
from ..nn import ForwardRNN
from .base import SequenceModel, register_model


@register_model("f-rnn", "LSTM over past steps, fully factorised output: p(x_t|x_<t) = Π_i p(x_t,i | d_t)")
class FRNN(SequenceModel):
    PRESETS = {
        "tiny": dict(hidden=16, num_layers=1, embed=16, dropout=0.0),
        "small": dict(hidden=256, num_layers=1, embed=128, dropout=0.0),
        # study configurations (ref code, SPEC §6)
        "speech": dict(hidden=750, num_layers=2, embed=512, dropout=0.0, num_components=20),
        # MIDI: LSTM 256, embedding 256 (0.57M); handwriting: 2-layer LSTM 256, embedding 128 (0.93M)
        "midi": dict(hidden=256, num_layers=1, embed=256, dropout=0.5),
        "handwriting": dict(hidden=256, num_layers=2, embed=128, dropout=0.5, num_components=5),
    }

    def __init__(self, spec, hidden=256, num_layers=1, embed=None, dropout=0.0, num_components=None):
        super().__init__(spec, hidden=hidden, num_layers=num_layers, embed=embed, dropout=dropout,
                         num_components=num_components)
        self.rnn = ForwardRNN(spec.step_dim, hidden, num_layers, embed=embed, dropout=dropout)
        self.head = make_head(spec.family, hidden, spec.step_dim, num_components)

    def step_distribution(self, batch):
        return self.head(self.rnn(batch.inputs)[0])

    def forward(self, batch, kl_scale: float = 1.0):
        self.check_batch(batch)
        self.observe_chunk(batch, self.step_distribution(batch))

    def generate(self, num_sequences, num_steps, first_step=None):
        return self.generate_by_steps(self.rnn, lambda d: self.head(d).sample(), num_sequences, num_steps,
                                      first_step)
