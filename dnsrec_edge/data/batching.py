"""Mini-batches for next-item training and the leave-one-out evaluation inputs.

Sequences are LEFT-padded with 0 so the most recent item is last. Training uses each user's
history minus its last two items (validation and test targets). Training batches are
length-bucketed and trimmed to the longest real sequence in the batch, so short histories
do not pay for ``max_len`` positions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from dnsrec_edge.data.dataset import Dataset

BUCKET_BATCHES = 32  # users are sorted by length within groups of this many batches


def left_pad(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Stack the last ``width`` items of each row, left-padded with 0: ``(len(rows), width)``."""
    out = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        row = row[-width:]
        if len(row):
            out[r, width - len(row) :] = row
    return out


def train_batches(
    dataset: Dataset,
    max_len: int,
    batch_size: int,
    rng: np.random.Generator | int = 0,
    users: Sequence[int] | np.ndarray | None = None,
    trim: bool = True,
    crop: float = 0.0,
    holdout: np.ndarray | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(item_seq, targets)`` int64 tensors ``(B, T)``, ``T <= max_len``.

    ``targets[b, t]`` is the item that follows ``item_seq[b, :t+1]`` (0 at padding).
    Users are shuffled by ``rng`` (a Generator or a seed), grouped by length within
    buckets of ``BUCKET_BATCHES`` batches, and the batch order is shuffled again.
    ``trim=False`` pads every batch to ``max_len``. A user whose training history is longer
    than ``max_len + 1`` contributes its most recent window, or, with probability ``crop``,
    a window ending at a uniformly drawn earlier point (so older history is trained on too).
    ``holdout`` (bool per user; default all True) marks the users whose validation item is
    held out; the others train on it too (their history up to the test item).
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    pool = np.arange(dataset.n_users) if users is None else np.asarray(users, dtype=np.int64)
    cut = _train_cut(dataset, holdout)  # (n_users,) -2 or -1
    lengths = np.minimum(dataset.lengths()[pool] + cut[pool] - 1, max_len)  # training positions
    pool, lengths = pool[lengths > 0], lengths[lengths > 0]
    perm = rng.permutation(len(pool))
    pool, lengths = pool[perm], lengths[perm]
    batches = []
    group = batch_size * BUCKET_BATCHES
    for start in range(0, len(pool), group):
        chunk = slice(start, start + group)
        by_len = np.argsort(-lengths[chunk], kind="stable")
        members = pool[chunk][by_len]
        batches += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    for b in rng.permutation(len(batches)):
        members = batches[b]
        train = [_window(dataset.sequences[u][: cut[u]], max_len, crop, rng) for u in members]
        width = max_len if not trim else min(max_len, max(len(s) - 1 for s in train))
        item_seq = left_pad([s[:-1] for s in train], width)  # (B, T)
        targets = left_pad([s[1:] for s in train], width)  # (B, T)
        yield torch.from_numpy(item_seq), torch.from_numpy(targets)


def _window(train: np.ndarray, max_len: int, crop: float, rng: np.random.Generator) -> np.ndarray:
    """The last ``max_len + 1`` items, or with probability ``crop`` an earlier such window."""
    extra = len(train) - (max_len + 1)
    if extra <= 0 or crop <= 0 or rng.random() >= crop:
        return train
    end = len(train) - int(rng.integers(1, extra + 1))
    return train[:end]


def _train_cut(dataset: Dataset, holdout: np.ndarray | None) -> np.ndarray:
    """Per user, where the training history ends: -2 (validation item held out) or -1."""
    if holdout is None:
        return np.full(dataset.n_users, -2, dtype=np.int64)
    return np.where(np.asarray(holdout, dtype=bool), -2, -1).astype(np.int64)


def count_batches(
    dataset: Dataset,
    max_len: int,
    batch_size: int,
    users: Sequence[int] | np.ndarray | None = None,
    holdout: np.ndarray | None = None,
) -> int:
    """How many batches :func:`train_batches` yields (users without a training pair are skipped)."""
    pool = np.arange(dataset.n_users) if users is None else np.asarray(users, dtype=np.int64)
    cut = _train_cut(dataset, holdout)
    n = int((dataset.lengths()[pool] + cut[pool] > 1).sum())
    return -(-n // batch_size)


def eval_inputs(
    dataset: Dataset, part: str = "valid", max_len: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-out inputs ``(item_seq (U, max_len), target (U,))`` for ``part``.

    valid: history[:-2] -> history[-2]; test: history[:-1] -> history[-1].
    """
    cut = _cut(part)
    history = [s[:cut] for s in dataset.sequences]
    target = np.fromiter((s[cut] for s in dataset.sequences), dtype=np.int64, count=dataset.n_users)
    return torch.from_numpy(left_pad(history, max_len)), torch.from_numpy(target)


def seen_items(dataset: Dataset, part: str = "valid") -> tuple[np.ndarray, np.ndarray]:
    """Every item a user saw before the ``part`` target, as CSR ``(items, offsets (U+1,))``."""
    cut = _cut(part)
    history = [s[:cut] for s in dataset.sequences]
    offsets = np.zeros(dataset.n_users + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(h) for h in history])
    return np.concatenate(history).astype(np.int64), offsets


def _cut(part: str) -> int:
    if part == "valid":
        return -2
    if part == "test":
        return -1
    raise ValueError(f"part must be 'valid' or 'test', not {part!r}")
