"""Small reusable ``nn.Module`` blocks shared by the models and guides."""
from __future__ import annotations

import torch
from torch import nn

from .distributions import gaussian_params

__all__ = ["MLP", "ForwardRNN", "BackwardRNN", "GaussianLayer", "reverse_padded"]


class MLP(nn.Sequential):
    """Linear layers with a nonlinearity between them (none after the last)."""

    def __init__(self, in_dim: int, hidden: list[int] | tuple[int, ...], out_dim: int,
                 activation=nn.ReLU, dropout: float = 0.0):
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), activation()]
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


class ForwardRNN(nn.Module):
    """Optional input embedding, then a multi-layer LSTM run over the whole sequence at once.

    With inputs ``x_{t-1}`` (``SequenceBatch.inputs``) its output at ``t`` is ``d_t``,
    a summary of ``x_{<t}`` within the chunk (the state is reset at every chunk).
    """

    def __init__(self, in_dim: int, hidden: int, num_layers: int = 1, embed: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, embed), nn.ReLU()) if embed else None
        self.lstm = nn.LSTM(embed or in_dim, hidden, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout) if dropout else None
        self.hidden = hidden

    def forward(self, x: torch.Tensor, state=None):
        if self.embed is not None:
            x = self.embed(x)
        out, state = self.lstm(x, state)
        if self.dropout is not None:
            out = self.dropout(out)
        return out, state


def reverse_padded(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Reverse each row's valid prefix in time (padding stays at the end).

    The prefix ends at the row's last True: a mask with holes (the unscored first target
    of each sequence in stream batching) marks real steps inside the prefix.
    """
    if mask is None:
        return x.flip(1)
    T = x.shape[1]
    lengths = torch.where(mask.any(1), T - mask.flip(1).to(torch.uint8).argmax(1), 0)
    t = torch.arange(T, device=x.device).expand(x.shape[0], T)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


class BackwardRNN(nn.Module):
    """LSTM run from the last valid step to the first: its output at ``t`` summarises ``x_{≥t}``."""

    def __init__(self, in_dim: int, hidden: int, num_layers: int = 1):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=num_layers, batch_first=True)
        self.hidden = hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out, _ = self.lstm(reverse_padded(x, mask))
        return reverse_padded(out, mask)


class GaussianLayer(nn.Module):
    """Features → ``(loc, scale)`` of a diagonal Gaussian, clamped as in the ref code."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None):
        super().__init__()
        self.net = (MLP(in_dim, [hidden], 2 * out_dim) if hidden else nn.Linear(in_dim, 2 * out_dim))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_params(self.net(h))
