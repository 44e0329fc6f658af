"""Selection on the front: the most probable in-budget architectures, scored with shared weights.

After the search, the ``k`` in-budget architectures the controllers find most probable (plus
the largest in budget at each depth and every architecture an epoch selected) are each scored
in hard mode with the supernet's weights on the validation users. Each keeps its predicted cost
and, when the caller can reach the target, its measured cost as a share of the baseline
measured in the same run. The most accurate architecture whose predicted cost fits the limit
and whose measured share (if any) fits the budget's share is the reference; among the fitting
points whose validation NDCG@10 is not below the reference's by more than one standard error of
the paired per-user difference (the same users, so most of the noise cancels), the one with the
highest predicted cost wins. Shared weights rank architectures of similar accuracy poorly, and
the most trained paths (the sandwich rule's smallest, every step) look better than they will be
after their own training; within that noise, the capacity the budget pays for is the better bet
for the subnet that is then trained with distillation. When no measured share fits, one within
``MEASURE_TOLERANCE`` (10 %) of it does: two timings of one file on a shared machine differ by
that much, and a search of an hour should not fail on 26 % measured against a 25 % budget.

Example::

    front = score_front(supernet, dataset, table, limit, max_len=50, k=8)
    best = pick(front)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from dnsrec_edge.data.dataset import Dataset
from dnsrec_edge.evaluate import evaluate, user_ndcg
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.search.constraint import CostTable
from dnsrec_edge.search.controllers import ArchController
from dnsrec_edge.search.space import Choice
from dnsrec_edge.search.supernet import Supernet

# measure(archs) -> each arch's measured latency as a share of the baseline's, same run
Measure = Callable[[list[ArchSpec]], list[float]]
MEASURE_TOLERANCE = 0.10  # a measured share this far over the budget's share still fits


@dataclass
class FrontPoint:
    """One scored architecture of the front."""

    choice: Choice
    log_prob: float
    cost: float  # predicted, in the budget's unit
    valid: dict[str, float]
    measured_share: float | None = None  # measured cost / the baseline's, when measured
    sources: list[str] = field(default_factory=list)  # "probable", "epoch 3", ...
    gap: float | None = None  # mean paired NDCG@10 difference to the most accurate fitting point
    gap_se: float | None = None  # its standard error
    user_ndcg: np.ndarray | None = field(default=None, repr=False, compare=False)

    def fits(self, limit: float, share: float | None, tolerance: float = 0.0) -> bool:
        """Predicted cost within ``limit`` and measured share (if any) within ``share``
        (times ``1 + tolerance``)."""
        if self.cost > limit:
            return False
        return (
            share is None
            or self.measured_share is None
            or self.measured_share <= share * (1.0 + tolerance)
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "user_ndcg"}


def hard_valid(
    model: Supernet,
    dataset: Dataset,
    choice: Choice,
    max_len: int,
    batch_size: int = 512,
    user_ranks: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Full-ranking validation metrics of the hard path ``choice`` with the shared weights
    (the model is left in the mode it was in); ``user_ranks`` as in :func:`evaluate`."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), model.selected(choice):
        valid = evaluate(
            model.predict,
            dataset,
            "valid",
            max_len,
            protocols=("full",),
            batch_size=batch_size,
            user_ranks=user_ranks,
        )["full"]
    model.train(was_training)
    return valid


def most_probable_in_budget(
    controller: ArchController, table: CostTable, limit: float, k: int = 1
) -> list[Choice]:
    """The ``k`` in-budget architectures of highest probability under the controllers, most
    probable first. Exhaustive over the space (every depth, every candidate pair per block),
    vectorised."""
    with torch.no_grad():
        logs = controller.log_probs()
        n_blocks, n_attn = logs.attn.shape
        n_ffn = logs.ffn.shape[1]
        # (N, A*F) log-probability of each candidate pair per block; pair p = a * F + f
        pair_lp = (logs.attn[:, :, None] + logs.ffn[:, None, :]).reshape(n_blocks, -1)
        depth_lp = logs.depth
    mid = table.mid.reshape(-1)  # (A*F,)
    scored: list[tuple[float, Choice]] = []
    for depth in range(1, n_blocks + 1):
        lp, cost = depth_lp[depth - 1].double().reshape(1), torch.zeros(1, dtype=torch.float64)
        for i in range(depth):  # grow the grid of all pair combinations of blocks 0..i
            block_cost = table.last_of(depth).reshape(-1) if i == depth - 1 else mid
            lp = (lp[:, None] + pair_lp[i].double()[None, :]).reshape(-1)
            cost = (cost[:, None] + block_cost[None, :]).reshape(-1)
        lp = lp.masked_fill(cost > limit, -float("inf"))
        top = torch.topk(lp, min(k, lp.numel()))
        for value, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            if value == -float("inf"):
                break
            pairs = np.unravel_index(index, (n_attn * n_ffn,) * depth)
            scored.append((value, Choice(depth, tuple(divmod(int(p), n_ffn) for p in pairs))))
    scored.sort(key=lambda pair: -pair[0])
    return [choice for _, choice in scored[:k]]


def score_front(
    model: Supernet,
    dataset: Dataset,
    table: CostTable,
    limit: float,
    max_len: int,
    k: int = 8,
    visited: Iterable[tuple[str, Choice]] = (),
    measure: Measure | None = None,
    batch_size: int = 512,
) -> list[FrontPoint]:
    """Score the ``k`` most probable in-budget architectures, the largest in budget at each
    depth and the ``visited`` ones (label, choice) in hard mode on the validation users;
    ``measure`` adds measured shares."""
    points: dict[Choice, FrontPoint] = {}
    candidates = [
        ("probable", c) for c in most_probable_in_budget(model.controller, table, limit, k)
    ] + [("largest", c) for c in table.largest_within(limit)]
    for label, choice in [*candidates, *visited]:
        if choice not in points:
            lp = model.controller.log_prob(choice)
            points[choice] = FrontPoint(choice, lp, table.of(choice), {})
        points[choice].sources.append(label)
    for point in points.values():
        ranks: dict[str, np.ndarray] = {}
        point.valid = hard_valid(model, dataset, point.choice, max_len, batch_size, ranks)
        point.user_ndcg = user_ndcg(ranks["full"])
    front = sorted(points.values(), key=lambda p: p.cost)
    if measure is not None:
        shares = measure([model.space.arch(p.choice) for p in front])
        for point, share in zip(front, shares, strict=True):
            point.measured_share = float(share)
    return front


def pick(front: list[FrontPoint], limit: float, share: float | None) -> FrontPoint | None:
    """The point that fits with the highest predicted cost among those within one paired
    standard error of the most accurate fitting one (validation NDCG@10; see the module
    docstring); points without per-user figures compete on NDCG@10 alone, ties going to the
    cheaper. Without a fitting point, the same among those whose measured share is within
    ``MEASURE_TOLERANCE``. Sets each fitting point's ``gap`` and ``gap_se``."""
    for tolerance in (0.0, MEASURE_TOLERANCE):
        fitting = [p for p in front if p.fits(limit, share, tolerance)]
        if not fitting:
            continue
        best = max(fitting, key=lambda p: (p.valid["ndcg@10"], -p.cost))
        if best.user_ndcg is None:
            return best
        tied = []
        for point in fitting:
            if point.user_ndcg is None:
                continue
            diff = point.user_ndcg - best.user_ndcg
            point.gap = float(diff.mean())
            point.gap_se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
            if point.gap >= -point.gap_se:
                tied.append(point)
        return max(tied, key=lambda p: (p.cost, p.valid["ndcg@10"]))
    return None
