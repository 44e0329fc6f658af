"""Training batches and leave-one-out evaluation inputs on real data."""

from __future__ import annotations

import numpy as np
import torch

from dnsrec_edge.data.batching import count_batches, eval_inputs, seen_items, train_batches


def test_train_batches_cover_each_user_once(ml100k_small):
    ds, max_len = ml100k_small, 40
    seen_rows = []
    for item_seq, targets in train_batches(ds, max_len, 32, rng=3):
        assert item_seq.shape == targets.shape and item_seq.shape[1] <= max_len
        assert item_seq.dtype == targets.dtype == torch.int64
        # the last column is real for the longest row (trimmed to the longest sequence)
        assert (item_seq[:, 0] != 0).any()
        for row_in, row_out in zip(item_seq.numpy(), targets.numpy(), strict=True):
            real = row_in != 0
            assert np.array_equal(real, row_out != 0)  # left padding, same positions
            assert np.array_equal(row_in[real][1:], row_out[real][:-1])  # next item
            seen_rows.append(tuple(row_out[real]))
    assert len(seen_rows) == ds.n_users
    assert count_batches(ds, max_len, 32) == -(-ds.n_users // 32)
    expected = {tuple(s[:-2][1:][-max_len:]) for s in ds.sequences}
    assert set(seen_rows) == expected  # training never sees the valid/test items


def test_train_batches_are_seeded(ml100k_small):
    a = [x.numpy().tolist() for x, _ in train_batches(ml100k_small, 30, 16, rng=1)]
    b = [x.numpy().tolist() for x, _ in train_batches(ml100k_small, 30, 16, rng=1)]
    c = [x.numpy().tolist() for x, _ in train_batches(ml100k_small, 30, 16, rng=2)]
    assert a == b and a != c


def test_user_subset_and_no_trim(ml100k_small):
    batches = list(train_batches(ml100k_small, 25, 8, rng=0, users=[0, 1, 2], trim=False))
    assert len(batches) == 1 and batches[0][0].shape == (3, 25)


def test_eval_inputs_leave_one_out(ml100k_small):
    ds = ml100k_small
    seq, tgt = eval_inputs(ds, "valid", 20)
    assert seq.shape == (ds.n_users, 20)
    s0 = ds.sequences[0]
    assert tgt[0] == s0[-2] and seq[0, -1] == s0[-3]
    seq, tgt = eval_inputs(ds, "test", 20)
    assert tgt[0] == s0[-1] and seq[0, -1] == s0[-2]
    assert np.array_equal(seq[0].numpy(), s0[:-1][-20:])
    items, offsets = seen_items(ds, "test")
    assert np.array_equal(items[offsets[0] : offsets[1]], s0[:-1])  # full history, not truncated


def test_crop_trains_on_earlier_windows(ml100k_small):
    ds, max_len = ml100k_small, 20
    long_users = [u for u in range(ds.n_users) if len(ds.sequences[u]) - 2 > max_len + 1]
    last = {tuple(ds.sequences[u][:-2][-max_len:]) for u in long_users}
    rows = [
        tuple(row[row != 0])
        for _, targets in train_batches(ds, max_len, 64, rng=0, users=long_users, crop=1.0)
        for row in targets.numpy()
    ]
    assert len(rows) == len(long_users) and all(len(r) == max_len for r in rows)
    assert not set(rows) & last  # every window ends before the most recent training item
    histories = [ds.sequences[u][:-2].tobytes() for u in long_users]
    for r in rows:  # each window is a contiguous piece of some user's history
        assert any(np.array(r, dtype=np.int64).tobytes() in h for h in histories)


def test_holdout_decides_who_trains_on_the_validation_item(ml100k_small):
    ds, max_len = ml100k_small, 50
    holdout = np.arange(ds.n_users) % 2 == 0  # even users keep their validation item out
    last_target = {}
    for item_seq, targets in train_batches(ds, max_len, 16, rng=0, holdout=holdout):
        for row_in, row_out in zip(item_seq.numpy(), targets.numpy(), strict=True):
            real = row_out[row_out != 0]
            last_target[tuple(row_in[row_in != 0])] = real[-1]  # keyed by the user's window
    for u in range(ds.n_users):
        seq = ds.sequences[u]
        cut = -2 if holdout[u] else -1
        key = tuple(seq[:cut][-(max_len + 1) :][:-1])
        assert last_target[key] == seq[cut - 1], u  # never the test item, valid only if not held
    assert count_batches(ds, max_len, 16, holdout=holdout) == count_batches(ds, max_len, 16)
