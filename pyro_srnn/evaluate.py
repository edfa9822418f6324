"""Evaluation in the study's units (SPEC §4).

Deterministic models: the exact negative log-likelihood (``metric = "nll"``).
Latent models: the negative ELBO (``"neg_elbo"``, an upper bound on the NLL), or
with ``iwae=K`` the negative importance-weighted bound (``"neg_iwae_K"``, tighter).
Values are in nats per the data set's unit (per time step, per utterance, per audio
sample, per 8000 samples or per line), summed over chunks in the study's chunking.
Evaluation runs in eval mode (no dropout), with the KL at full weight, under a fixed
seed that does not disturb the training RNG.
"""
from __future__ import annotations

from collections import Counter

import torch

from .data import chunk_sequences, iterate_batches
from .data.core import DataSpec, SequenceDataset
from .distributed import DistContext, derived_seed
from .infer import iwae_log_likelihood, make_elbo

__all__ = ["evaluate_chunks", "evaluate_split", "metric_name"]


def metric_name(has_latent: bool, iwae: int | None = None) -> str:
    if not has_latent:
        return "nll"
    return f"neg_iwae_{iwae}" if iwae else "neg_elbo"


def evaluate_chunks(model, guide, chunks, spec: DataSpec, *, estimator: str = "trace", iwae: int | None = None,
                    batch_size: int = 64, device="cpu", max_batches: int | None = None, seed: int = 0,
                    dist: DistContext | None = None) -> dict:
    """The metric over ``chunks`` in batches of ``batch_size`` (the first ``max_batches`` only, if given).

    With an active ``dist`` (data-parallel training), batch ``i`` is evaluated by rank
    ``i mod world_size`` under a seed of its own, ``derived_seed(seed, i)``, and the sum is
    all-reduced: every rank returns the same value, whatever the number of ranks, for a
    fraction of the work. A single process draws all batches' noise from one stream seeded
    with ``seed``.
    """
    if not chunks:
        raise ValueError(f"{spec.name}: nothing to evaluate (empty split, or only length-1 sequences)")
    was_training = model.training, guide.training
    model.eval()
    guide.eval()
    elbo = make_elbo(estimator)
    sharded = dist is not None and dist.active
    # a sequence counts for the fraction of its scored steps evaluated: ``max_batches`` may cut one
    # short, and a per-sequence unit must not count a part of an utterance as a whole one
    scored_of = Counter()
    for chunk in chunks:
        scored_of[chunk.seq_id] += len(chunk) if chunk.scored is None else int(chunk.scored.sum())
    steps, seen = 0, Counter()
    total = torch.zeros((), dtype=torch.float64, device=device)
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for i, batch in enumerate(iterate_batches(chunks, batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            # host data, read before the batch moves to the device; every rank counts every batch
            steps += batch.num_scored_steps
            for seq_id, scored in zip(batch.seq_ids.tolist(), batch.mask.sum(1).tolist()):
                seen[seq_id] += scored
            if sharded:
                if i % dist.world_size != dist.rank:
                    continue
                torch.manual_seed(derived_seed(seed, i))
            batch = batch.to(device)
            if iwae and model.has_latent:
                log_likelihood = iwae_log_likelihood(model, guide, batch, iwae).sum()
            else:
                log_likelihood = -elbo.differentiable_loss(model, guide, batch)
            # summed on the device and read once at the end (each read is a GPU synchronisation)
            total = total + log_likelihood.double()
    if sharded:
        dist.all_reduce_sum(total)
    total = float(total)
    model.train(was_training[0])
    guide.train(was_training[1])
    sequences = sum(n / scored_of[s] for s, n in seen.items() if scored_of[s])
    divisor = spec.metric_divisor(steps, sequences)
    return {
        "metric": metric_name(model.has_latent, iwae if model.has_latent else None),
        "value": -total / divisor,
        "unit": f"nats per {spec.metric_unit}",
        "total_log_likelihood": total,
        "scored_steps": steps,
        "sequences": sequences,
    }


def evaluate_split(model, guide, dataset: SequenceDataset, split: str = "test", **kwargs) -> dict:
    chunks = chunk_sequences(dataset.split(split), dataset.spec.chunk_len, step_dim=dataset.spec.step_dim)
    result = evaluate_chunks(model, guide, chunks, dataset.spec, **kwargs)
    result["split"] = split
    return result
