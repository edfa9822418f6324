"""Mixed precision: bf16 autocast on the network layers, densities in float32.

``--precision bf16`` (CUDA only) runs the expensive layers — every ``nn.Linear``,
``nn.LSTM``/``nn.GRU``/``nn.RNN`` and ``nn.Conv1d`` of the model and guide (and their
subclasses) — under ``torch.autocast(dtype=torch.bfloat16)``,
and casts each layer's outputs back to float32. Everything between layers therefore
runs in float32: activations, the clamps of :func:`~pyro_srnn.distributions.gaussian_params`,
the heads' ``distribution(params)`` and every ``log_prob`` that enters the ELBO. Layers that
multiply their own parameters (the MADE and LSTM low levels' ``einsum`` over positions, the cell of
``StepLSTM`` stepped by VRNN and Z-forcing) are not hooked and run in float32: slower, not less exact. The
likelihood and the KL are never computed in bf16 (bf16 has 8 bits of mantissa: a
summed log-likelihood of ~1e5 nats would lose whole nats); only the matrix products
are, which is where the time goes.

Implemented with forward hooks per layer (``register_forward_pre_hook`` enters the
autocast region, the forward hook leaves it, ``always_call=True`` so an exception
cannot leave autocast switched on), so no model code needs to know about precision.
bf16 needs no loss scaling (same exponent range as float32).

On CPU, bf16 is refused with a clear error (:func:`check_precision`): CPU bf16
autocast is slower than float32 on most CPUs and is not a supported training mode
here (oneDNN has no bf16 LSTM kernel on this project's CPUs at all).
:func:`install_bf16_autocast` itself accepts ``device_type="cpu"`` so that the
mechanism is tested without a GPU.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["PRECISIONS", "check_precision", "install_bf16_autocast", "AUTOCAST_LAYERS"]

PRECISIONS = ("fp32", "bf16")

#: layer types whose forward runs under bf16 autocast
AUTOCAST_LAYERS = (nn.Linear, nn.LSTM, nn.GRU, nn.RNN, nn.Conv1d)


def check_precision(precision: str, device: str | torch.device) -> None:
    """Raise ``ValueError`` for an unknown precision or bf16 off CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "bf16" and torch.device(device).type != "cuda":
        raise ValueError(
            f"--precision bf16 needs --device cuda (got device {str(device)!r}); on CPU train with --precision fp32"
        )


def _to_float32(value):
    if torch.is_tensor(value):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, tuple):
        return tuple(_to_float32(v) for v in value)
    if isinstance(value, list):
        return [_to_float32(v) for v in value]
    return value


class _Handles(list):
    """Removable hook handles: ``remove()`` restores plain float32."""

    def remove(self) -> None:
        for h in self:
            h.remove()
        self.clear()


def install_bf16_autocast(*modules: nn.Module, device_type: str = "cuda", layers=AUTOCAST_LAYERS) -> _Handles:
    """Run every layer of :data:`AUTOCAST_LAYERS` inside ``modules`` in bf16, outputs cast to float32.

    Each layer is hooked once even when several modules share it (a guide that
    reuses the model's layers). ``layers`` narrows the layer types (the CPU test uses
    ``nn.Linear`` only: oneDNN has no bf16 LSTM on most CPUs). Returns handles;
    ``handles.remove()`` undoes it.
    """
    handles = _Handles()
    seen: set[int] = set()
    for root in modules:
        for layer in root.modules():
            if not isinstance(layer, layers) or id(layer) in seen:
                continue
            seen.add(id(layer))
            stack: list = []

            def enter(module, args, _stack=stack):
                # a layer's region casts each weight once: no cache to keep (a CUDA graph capture
                # must not find casts cached outside it, torch.cuda.make_graphed_callables)
                ctx = torch.autocast(device_type=device_type, dtype=torch.bfloat16, cache_enabled=False)
                ctx.__enter__()
                _stack.append(ctx)

            def leave(module, args, output, _stack=stack):
                if _stack:
                    _stack.pop().__exit__(None, None, None)
                return _to_float32(output)

            handles.append(layer.register_forward_pre_hook(enter))
            handles.append(layer.register_forward_hook(leave, always_call=True))
    return handles
