"""The one rule for comparing a model's scores with a reference: export, compile and bench.

Scores agree with the reference when every row's max abs difference is <= ``atol`` and every
row's top-``k`` list (best first) is the reference's, except for ties: when every score of a
row is within ``noise`` (that row's own max abs difference) of the reference, a correct top-k
can only swap items whose reference scores lie within ``2 * noise`` of each other (exactly
equal when the scores agree exactly, e.g. an all-padding row of an untrained model). Such a
list is a valid top-k and counts as a tie; any larger gap is a mismatch. A row beyond the
tolerance has no ties (its error is no noise): any change of its top-k is listed too.

Column ``i`` of a score row is item id ``i + 1`` (id 0 is padding), so messages name item ids.

Example::

    result = compare_scores(got, ref, atol=1e-4, k=10, reference="ONNX Runtime")
    if not result.ok:
        raise OutputMismatch("; ".join(result.mismatches))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TOLERANCE = 1e-4  # max abs difference from the reference
TOPK = 10


@dataclass
class Comparison:
    """Outcome of :func:`compare_scores`; ``mismatches`` lists every failure, one sentence each."""

    max_abs_diff: float
    k: int
    rows: int
    tied_rows: int = 0  # rows whose top-k lists differ only by ties within the row's error
    topk_bad_rows: int = 0  # rows whose top-k lists differ by more than ties
    mismatches: list[str] = field(default_factory=list)
    noise: np.ndarray | None = None  # (rows,) the error within which a row's swaps are ties

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def topk_match(self) -> bool:
        """The top-k lists agree, up to ties (the max abs difference may still be too large)."""
        return self.topk_bad_rows == 0 and not any("shape" in m for m in self.mismatches)

    def summary(self, limit: int = 5) -> str:
        """The first ``limit`` mismatches, and how many more there are."""
        text = "; ".join(self.mismatches[:limit])
        more = len(self.mismatches) - limit
        return text + (f"; and {more} more" if more > 0 else "")


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` best scores per row, best first (stable on exact ties)."""
    return np.argsort(-scores, axis=-1, kind="stable")[:, :k]


def differing_rows(
    ref: np.ndarray, idx: np.ndarray, ref_idx: np.ndarray, noise: np.ndarray
) -> tuple[list[int], int]:
    """Rows whose top-k column indices ``idx`` differ from ``ref_idx`` by more than ties, and
    how many rows differ only by ties (reference gaps within ``2 * noise[row]`` at each rank)."""
    bad, ties = [], 0
    for row in np.flatnonzero((idx != ref_idx).any(axis=1)):
        gap = np.abs(ref[row, idx[row]] - ref[row, ref_idx[row]])
        if (gap <= 2 * noise[row]).all():
            ties += 1
        else:
            bad.append(int(row))
    return bad, ties


def compare_scores(
    got: np.ndarray,
    ref: np.ndarray,
    *,
    atol: float = TOLERANCE,
    k: int = TOPK,
    reference: str = "the reference",
    name: str = "scores",
) -> Comparison:
    """Compare scores ``got`` with ``ref`` (any leading axes are rows, the last is items)."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return Comparison(
            float("inf"),
            k,
            0,
            mismatches=[f"{name} shape {got.shape} != {reference}'s {ref.shape}"],
        )
    width = ref.shape[-1] if ref.ndim else 1
    got = got.reshape(-1, width).astype(np.float64)
    ref = ref.reshape(-1, width).astype(np.float64)
    k = min(k, width)
    diff = np.abs(got - ref).max(axis=1) if got.size else np.zeros(len(got))  # (rows,)
    diff = np.where(np.isnan(diff), np.inf, diff)
    result = Comparison(float(diff.max()) if diff.size else 0.0, k, len(ref))
    for row in np.flatnonzero(~(diff <= atol)):
        result.mismatches.append(f"row {row}: {name} max abs diff {diff[row]:.3g} > {atol:g}")
    got_top, ref_top = topk_indices(got, k), topk_indices(ref, k)
    result.noise = np.where(diff <= atol, diff, 0.0)
    bad, result.tied_rows = differing_rows(ref, got_top, ref_top, result.noise)
    result.topk_bad_rows = len(bad)
    for row in bad:
        result.mismatches.append(
            f"row {row}: top-{k} items {(got_top[row] + 1).tolist()} != {reference}'s "
            f"{(ref_top[row] + 1).tolist()}"
        )
    return result
