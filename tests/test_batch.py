"""The study's chunking convention, padding/masking, and deterministic batching."""
import numpy as np
import pytest
import torch

from pyro_srnn.data import BatchSampler, chunk_sequences, collate, iterate_batches


def seq(n, L=3, start=0):
    return (np.arange(start, start + n * L, dtype=np.float32).reshape(n, L))


def test_targets_are_inputs_shifted_by_one_and_first_step_never_scored():
    s = seq(5)
    (chunk,) = chunk_sequences([s], chunk_len=None)
    np.testing.assert_array_equal(chunk.inputs, s[:-1])
    np.testing.assert_array_equal(chunk.targets, s[1:])
    # the first step of the sequence is an input only, never a target
    assert not any((chunk.targets == s[0]).all(axis=1))


def test_length_one_sequence_gives_no_chunk():
    assert chunk_sequences([seq(1)], chunk_len=4) == []
    assert len(chunk_sequences([seq(1), seq(2)], chunk_len=4)) == 1


def test_length_not_a_multiple_of_the_chunk_keeps_a_masked_partial_chunk():
    s = seq(11)  # 10 (input, target) pairs → chunks of 4, 4, 2
    chunks = chunk_sequences([s], chunk_len=4)
    assert [len(c) for c in chunks] == [4, 4, 2]
    np.testing.assert_array_equal(chunks[1].inputs[0], s[4])  # state reset: chunk 2 starts at pair 4
    np.testing.assert_array_equal(chunks[2].targets, s[9:11])
    batch = collate(chunks, num_steps=4)
    assert batch.inputs.shape == (3, 4, 3)
    assert batch.mask.tolist() == [[True] * 4, [True] * 4, [True, True, False, False]]
    assert torch.all(batch.targets[2, 2:] == 0)
    assert batch.num_scored_steps == 10


def test_every_target_scored_exactly_once_across_chunks():
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 2)).astype(np.float32) for n in (1, 2, 7, 13)]
    chunks = chunk_sequences(seqs, chunk_len=5)
    assert sum(len(c) for c in chunks) == sum(len(s) - 1 for s in seqs)
    for i, s in enumerate(seqs):
        got = np.concatenate([c.targets for c in chunks if c.seq_id == i] or [np.zeros((0, 2))])
        np.testing.assert_array_equal(got, s[1:])


def test_whole_sequence_batching_pads_to_the_longest():
    batch = collate(chunk_sequences([seq(3), seq(6)], chunk_len=None))
    assert batch.inputs.shape == (2, 5, 3)
    assert batch.mask.sum(1).tolist() == [2, 5]
    assert batch.seq_ids.tolist() == [0, 1]


def test_stream_batching_never_scores_the_first_step_of_a_sequence():
    a, b = seq(4), seq(3, start=100)
    chunks = chunk_sequences([a, b], chunk_len=3, stream=True)
    batch = collate(chunks, num_steps=3)
    scored_targets = batch.targets[batch.mask]
    assert not any(torch.equal(t, torch.from_numpy(b[0])) for t in scored_targets)
    # the stream has 6 pairs, one (a[-1] -> b[0]) is not scored
    assert batch.num_scored_steps == (len(a) - 1) + (len(b) - 1)


def test_bad_sequences_are_refused_with_the_index():
    with pytest.raises(ValueError, match="sequence 1 .*NaN"):
        chunk_sequences([seq(3), np.full((3, 3), np.nan, np.float32)], chunk_len=2)
    with pytest.raises(ValueError, match="L=2, expected L=3"):
        chunk_sequences([seq(3), np.zeros((4, 2), np.float32)], chunk_len=2, step_dim=3)


def test_sampler_is_a_pure_function_of_seed_and_step():
    chunks = chunk_sequences([seq(n) for n in range(2, 30)], chunk_len=4)
    s1, s2 = BatchSampler(chunks, 8, seed=3), BatchSampler(chunks, 8, seed=3)
    for step in (0, 5, 17, 40):
        np.testing.assert_array_equal(s1.indices(step), s2.indices(step))
    assert not np.array_equal(BatchSampler(chunks, 8, seed=4).indices(0), s1.indices(0))
    # one epoch visits distinct chunks
    seen = np.concatenate([s1.indices(k) for k in range(s1.batches_per_epoch)])
    assert len(set(seen.tolist())) == len(seen)


def test_rank_shards_partition_the_global_batch():
    chunks = chunk_sequences([seq(n) for n in range(2, 30)], chunk_len=4)
    full = BatchSampler(chunks, 8, seed=1)
    shards = [BatchSampler(chunks, 8, seed=1, rank=r, world_size=2) for r in range(2)]
    for step in (0, 3, 11):
        union = np.concatenate([s.indices(step) for s in shards])
        np.testing.assert_array_equal(union, full.indices(step))


def test_sampler_refuses_empty_split():
    with pytest.raises(ValueError, match="empty"):
        BatchSampler([], 4)


def test_evaluation_batches_cover_every_chunk_in_order():
    chunks = chunk_sequences([seq(n) for n in (3, 9, 4)], chunk_len=3)
    batches = list(iterate_batches(chunks, 2))
    assert sum(b.batch_size for b in batches) == len(chunks)
    assert torch.cat([b.seq_ids for b in batches]).tolist() == [c.seq_id for c in chunks]


def test_stream_batching_ignores_zero_length_sequences_like_whole_sequences():
    a, b = seq(5), seq(4, start=100)
    empty = np.zeros((0, 3), np.float32)
    for seqs in ([a, b, empty], [empty, a, empty, b], [a, empty, empty, b, empty]):
        whole = collate(chunk_sequences(seqs, chunk_len=3), num_steps=3)
        streamed = collate(chunk_sequences(seqs, chunk_len=3, stream=True), num_steps=3)
        # both modes score the same targets: every step but the first of each non-empty sequence
        assert whole.num_scored_steps == streamed.num_scored_steps == (len(a) - 1) + (len(b) - 1)
        assert torch.equal(streamed.targets[streamed.mask], whole.targets[whole.mask])
    assert chunk_sequences([empty], chunk_len=3, stream=True) == []
