"""Interactions -> ``Dataset``: de-duplication, k-core, stable time order, ids 1..N.

Steps, in order:
1. drop repeated ``(user, item, time)`` rows (the first is kept);
2. k-core: repeatedly drop users and items with fewer than ``min_count`` interactions;
3. drop users with fewer than 3 interactions (leave-one-out needs a training item, a
   validation item and a test item);
4. order each user's interactions by time; ties keep file order (stable);
5. number items 1..N and users 0..U-1 in sorted order of their original ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from dnsrec_edge.data.dataset import Dataset
from dnsrec_edge.errors import DataError

log = logging.getLogger(__name__)

MIN_SEQUENCE = 3  # train + valid + test


def build_dataset(
    frame: pd.DataFrame,
    name: str,
    min_count: int = 5,
    source: dict[str, Any] | None = None,
    quiet: bool = False,
) -> Dataset:
    """Preprocess a ``user``/``item``/``time`` frame (rows in file order) into a ``Dataset``."""
    if min_count < 0:
        raise DataError(f"min_count must be >= 0 (got {min_count}); use 0 or 1 to keep every item")
    n_rows = len(frame)
    frame = frame.drop_duplicates(["user", "item", "time"], keep="first")
    dropped = n_rows - len(frame)
    user_codes, user_ids = pd.factorize(frame["user"], sort=True)
    item_codes, item_ids = pd.factorize(frame["item"], sort=True)
    time = frame["time"].to_numpy()
    pos = np.arange(len(frame))
    keep = _kcore(user_codes, item_codes, min_count, len(user_ids), len(item_ids))
    user_len = np.bincount(user_codes[keep], minlength=len(user_ids))
    keep &= user_len[user_codes] >= MIN_SEQUENCE
    if not keep.any():
        raise DataError(
            f"no interactions are left in '{name}' after the {min_count}-core filter "
            f"({len(user_ids)} users, {len(item_ids)} items before); lower --min-count or give more data"
        )
    user_codes, item_codes, time, pos = user_codes[keep], item_codes[keep], time[keep], pos[keep]
    # Re-number the kept users and items densely, preserving sorted original order.
    kept_users, user_codes = np.unique(user_codes, return_inverse=True)
    kept_items, item_codes = np.unique(item_codes, return_inverse=True)
    order = np.lexsort((pos, time, user_codes))  # by user, then time, ties in file order
    items = (item_codes[order] + 1).astype(np.int64)
    bounds = np.flatnonzero(np.diff(user_codes[order])) + 1
    sequences = np.split(items, bounds)
    n_items = len(kept_items)
    counts = np.bincount(items, minlength=n_items + 1).astype(np.int64)
    settings = {"min_count": int(min_count), "min_sequence": MIN_SEQUENCE}
    log.log(
        logging.DEBUG if quiet else logging.INFO,
        "%s: %d rows, %d duplicates dropped, %d users x %d items kept (%d-core)",
        name,
        n_rows,
        dropped,
        len(sequences),
        n_items,
        min_count,
    )
    item_labels = np.concatenate([[None], np.asarray(item_ids)[kept_items]]).astype(object)
    return Dataset(
        name=name,
        n_items=n_items,
        sequences=sequences,
        item_counts=counts,
        fingerprint=fingerprint(sequences, n_items, settings),
        settings={**settings, "source": source or {}},
        user_ids=np.asarray(user_ids)[kept_users],
        item_ids=item_labels,
    )


def _kcore(users: np.ndarray, items: np.ndarray, k: int, n_users: int, n_items: int) -> np.ndarray:
    """Mask of the rows kept by the iterative ``k``-core filter on users and items."""
    keep = np.ones(len(users), dtype=bool)
    while k > 1:
        u_count = np.bincount(users[keep], minlength=n_users)
        i_count = np.bincount(items[keep], minlength=n_items)
        new = keep & (u_count[users] >= k) & (i_count[items] >= k)
        if new.sum() == keep.sum():
            break
        keep = new
    return keep


def fingerprint(sequences: list[np.ndarray], n_items: int, settings: dict[str, Any]) -> str:
    """sha256 of the item sequences, the item count and the preprocessing settings."""
    digest = hashlib.sha256(b"dnsrec-edge-dataset-1\n")
    digest.update(json.dumps({"n_items": n_items, **settings}, sort_keys=True).encode())
    lengths = np.fromiter((len(s) for s in sequences), dtype="<i8", count=len(sequences))
    digest.update(lengths.tobytes())
    digest.update(np.concatenate(sequences).astype("<i8").tobytes())
    return digest.hexdigest()
