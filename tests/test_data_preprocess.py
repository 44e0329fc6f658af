"""Preprocessing: de-duplication, k-core, stable time order, ids 1..N, leave-one-out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dnsrec_edge.data.preprocess import build_dataset
from dnsrec_edge.errors import DataError


def _frame(rows):
    return pd.DataFrame(rows, columns=["user", "item", "time"])


def test_real_ml100k_matches_the_published_5core(ml100k):
    assert (ml100k.n_users, ml100k.n_items, ml100k.n_interactions) == (943, 1349, 99287)
    lengths = ml100k.lengths()
    assert lengths.min() >= 5
    counts = np.bincount(np.concatenate(ml100k.sequences), minlength=ml100k.n_items + 1)
    assert counts[0] == 0 and counts[1:].min() >= 5  # every item survives the 5-core
    assert np.array_equal(counts, ml100k.item_counts)
    stats = ml100k.stats()
    assert stats["seq_len"]["max"] == 648 and stats["users"] == 943


def test_sequences_are_time_ordered(ml100k_raw, ml100k_small):
    raw = ml100k_raw[ml100k_raw["user"] <= 150]
    item_of = {orig: i for i, orig in enumerate(ml100k_small.item_ids) if i}
    user0 = ml100k_small.user_ids[0]
    rows = raw[raw["user"] == user0]
    rows = rows[rows["item"].isin(item_of)]
    expected = rows.sort_values("time", kind="stable")["item"].map(item_of).to_numpy()
    assert np.array_equal(ml100k_small.sequences[0], expected)


def test_duplicates_dropped_and_ties_keep_file_order():
    rows = [("a", "x", 1), ("a", "x", 1), ("a", "z", 2), ("a", "y", 2), ("a", "w", 0)]
    ds = build_dataset(_frame(rows), "t", min_count=0)
    names = [ds.item_ids[i] for i in ds.sequences[0]]
    assert names == ["w", "x", "z", "y"]  # duplicate (a, x, 1) dropped; z before y (file order)
    assert ds.n_items == 4 and sorted(ds.sequences[0].tolist()) == [1, 2, 3, 4]


def test_kcore_is_iterative():
    # item "rare" has 1 interaction; removing it leaves user "b" with 2, so "b" goes too.
    rows = [("a", i, t) for t, i in enumerate("pqr")]
    rows += [("b", "p", 5), ("b", "q", 6), ("b", "rare", 7)]
    rows += [("c", i, 10 + t) for t, i in enumerate("pqr")]
    ds = build_dataset(_frame(rows), "t", min_count=2)
    assert ds.n_users == 2 and ds.n_items == 3
    assert list(ds.user_ids) == ["a", "c"]


def test_fingerprint_depends_on_data_and_settings(ml100k_raw):
    frame = ml100k_raw[ml100k_raw["user"] <= 60]
    a = build_dataset(frame, "a", min_count=5)
    assert build_dataset(frame, "b", min_count=5).fingerprint == a.fingerprint
    assert build_dataset(frame, "a", min_count=3).fingerprint != a.fingerprint
    assert build_dataset(frame.iloc[:-50], "a", min_count=5).fingerprint != a.fingerprint


def test_nothing_left_after_kcore():
    rows = [("a", "x", 1), ("a", "y", 2), ("b", "x", 3)]
    with pytest.raises(DataError) as err:
        build_dataset(_frame(rows), "tiny", min_count=5)
    assert str(err.value) == (
        "no interactions are left in 'tiny' after the 5-core filter (2 users, 2 items before); "
        "lower --min-count or give more data"
    )
