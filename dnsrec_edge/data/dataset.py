"""``Dataset``: per-user, time-ordered item sequences with ids 1..n_items (0 = padding)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """A preprocessed interaction dataset.

    ``sequences[u]`` is user ``u``'s full history (int64 item ids, oldest first); the last item
    is the test target and the second-last the validation target (leave-one-out).
    ``item_counts[i]`` counts the interactions with item ``i`` (index 0, padding, is 0).
    ``fingerprint`` is the sha256 of the sequences and the preprocessing settings.
    """

    name: str
    n_items: int
    sequences: list[np.ndarray]
    item_counts: np.ndarray
    fingerprint: str
    settings: dict[str, Any] = field(default_factory=dict)
    user_ids: np.ndarray | None = None  # original user id of each sequence
    item_ids: np.ndarray | None = None  # original item id of ids 1..n_items (index 0 unused)

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def subset(self, users: np.ndarray) -> Dataset:
        """The same dataset restricted to ``users`` (indices into ``sequences``), e.g. the
        users whose validation item is held out; item ids, counts and fingerprint are kept."""
        users = np.asarray(users, dtype=np.int64)
        return Dataset(
            self.name,
            self.n_items,
            [self.sequences[u] for u in users],
            self.item_counts,
            self.fingerprint,
            self.settings,
            None if self.user_ids is None else self.user_ids[users],
            self.item_ids,
        )

    def lengths(self) -> np.ndarray:
        """Sequence length per user, ``(n_users,)``."""
        return np.fromiter((len(s) for s in self.sequences), dtype=np.int64, count=self.n_users)

    def stats(self) -> dict[str, Any]:
        """Users, items, interactions, density and sequence-length percentiles."""
        lengths = self.lengths()
        pct = (5, 25, 50, 75, 95, 99)
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "density": self.n_interactions / max(1, self.n_users * self.n_items),
            "seq_len": {
                "min": int(lengths.min()),
                "mean": float(lengths.mean()),
                **{f"p{p}": float(np.percentile(lengths, p)) for p in pct},
                "max": int(lengths.max()),
            },
            "min_count": self.settings.get("min_count"),
            "fingerprint": self.fingerprint,
        }
