"""Data-parallel training under ``torchrun`` with ``torch.distributed``.

``torchrun --nproc_per_node N -m pyro_srnn train ...`` sets ``WORLD_SIZE``/``RANK``;
each rank then reads its contiguous shard of every global batch, gradients are
summed across ranks (the loss is normalised by the *global* number of scored
values, so N ranks compute exactly the update one process would on the union of
their shards), and only rank 0 writes checkpoints, metrics and samples. Backend:
gloo on CPU, NCCL on CUDA. Without ``torchrun`` everything is a no-op.

Per update there are two collectives: one small all-reduce of ``[values, steps, loss,
reconstruction]`` (the global counts used for the normalisation, and the global sums
that rank 0 logs; a non-finite loss on any rank therefore stops every rank), and one
all-reduce of all gradients in a single flat buffer. Every rank then applies the same
clipping and Adam step to the same summed gradient, so parameters stay identical
without broadcasting them. Validation is sharded too — batch ``i`` of the validation
split on rank ``i mod N``, its noise seeded from ``(seed, i)``, the sum all-reduced — so
every rank gets the same value and agrees on the best step; ``--resume`` makes
every rank load rank 0's ``latest.pt`` (the batch of a step is a pure function of
``(seed, step)``, so each rank resumes on its own shard). Parameters start equal (every
rank initialises them from the one seed); the noise of each update (latent draws,
dropout) is seeded from ``(seed, rank, step)`` (:func:`derived_seed`),
so the ranks draw independently of each other — as one process draws for every row of
its batch — and a resumed rank draws what it would have drawn without the interruption.

Checked by ``tests/test_distributed.py``: two gloo processes launched by ``torchrun``,
interrupted and resumed, end with the parameters of one process trained on the
union of their shards (to 1e-6; a deterministic model); with a latent model the two
ranks draw different noise, and an interrupted, resumed run ends where an uninterrupted
one does.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DistContext", "distributed_context", "derived_seed"]


def derived_seed(*keys: int) -> int:
    """A seed for the noise of one piece of work, e.g. ``(seed, rank, step)``: distinct keys give
    independent streams (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def reduce_gradients(self, params) -> None:
        """Sum the gradients of ``params`` across ranks, in one flat buffer.

        A parameter that a rank's shard left without a gradient (``None``: unused there, as
        data-dependent code can do) counts as zero on that rank; it gets the summed gradient
        on every rank if any rank had one — what one process on the union of the shards would
        have — and stays ``None`` where no rank had one. The buffer carries one presence count
        per parameter, so every rank sends a buffer of the same size (buffers of different
        sizes would make the collective fail, or hang under NCCL).
        """
        if not self.active:
            return
        params = list(params)
        if not params:
            return
        present = [p.grad is not None for p in params]
        first = params[0].detach()
        counts = (first.new_ones(len(params)) if all(present)  # made on the device: no copy
                  else first.new_tensor(present, dtype=first.dtype))
        flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else p.detach().new_zeros(p.numel())
                          for p in params] + [counts])
        self.all_reduce_sum(flat)
        # a rank with every gradient copies the sums into them and needs no counts (no read back)
        anywhere = present if all(present) else (flat[-len(params):] > 0).tolist()
        offset = 0
        for p, here, somewhere in zip(params, present, anywhere):
            n = p.numel()
            piece = flat[offset : offset + n].view_as(p)
            if here:
                p.grad.copy_(piece)
            elif somewhere:
                p.grad = piece.clone()
            offset += n


@contextlib.contextmanager
def distributed_context(device: str = "cpu"):
    """Initialise the process group when launched by torchrun; yields a :class:`DistContext`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield DistContext()
        return
    rank = int(os.environ["RANK"])
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        # one GPU per process, chosen by torchrun's LOCAL_RANK (NCCL refuses two ranks on one device)
        if torch.device(device).index is not None:
            raise ValueError(f"--device {device}: under torchrun give --device cuda; each process trains on "
                             "the GPU of its LOCAL_RANK (restrict them with CUDA_VISIBLE_DEVICES)")
        local_rank, visible = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local_rank >= visible:
            raise ValueError(f"torchrun started process {local_rank} on this machine, which has {visible} "
                             f"visible GPU(s): use --nproc_per_node {visible} or fewer with --device cuda")
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group(backend=backend)
    try:
        yield DistContext(rank=rank, world_size=world_size)
    finally:
        torch.distributed.destroy_process_group()
