"""HR@K, NDCG@K and MRR@K under full ranking and 100-negative sampled protocols.

Protocols (one forward pass per batch serves all of them):
- ``full``: the target is ranked against every item; items the user saw before the target
  are excluded (``exclude_seen``), the target itself never is.
- ``uni100``: against 100 negatives drawn uniformly without replacement (SASRec paper).
- ``pop100``: against 100 negatives drawn without replacement with probability
  proportional to item popularity (DNS-Rec authors' protocol).
Sampled negatives never include the target and, with ``exclude_seen``, no seen item. They
depend only on ``seed``, the user index and the item (a counter-based hash), so every model
and every batch size sees the same negatives. Ties count against the target (a model that
scores everything equally gets rank last, not first). NaN or infinite scores raise
:class:`~dnsrec_edge.errors.NonFiniteScores` rather than ranking every target last.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Sequence

import numpy as np
import torch

from dnsrec_edge.data.batching import eval_inputs, seen_items
from dnsrec_edge.data.dataset import Dataset
from dnsrec_edge.errors import CheckpointMismatch, NonFiniteScores
from dnsrec_edge.progress import track

PROTOCOLS = ("full", "uni100", "pop100")
N_NEGATIVES = 100

ScoresFn = Callable[[torch.Tensor], torch.Tensor]


def evaluate(
    scores_fn: ScoresFn,
    dataset: Dataset,
    part: str = "test",
    max_len: int = 200,
    protocols: Sequence[str] = PROTOCOLS,
    k: int = 10,
    exclude_seen: bool = True,
    seed: int = 0,
    batch_size: int = 256,
    quiet: bool = True,
    trim: bool = False,
    user_ranks: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """Leave-one-out metrics of ``scores_fn`` on ``part`` ("valid" or "test").

    ``scores_fn(item_seq (B, max_len) int64) -> (B, n_items)`` scores (column j = item j+1),
    e.g. ``model.predict`` (a module's bound method is switched to eval mode while it runs and
    gets its inputs on the module's device),
    an ONNX Runtime or TVM wrapper. Returns ``{protocol: {"hr@k", "ndcg@k", "mrr@k"}}``.
    ``trim=True`` batches users of similar history length and passes ``(B, T)`` inputs with
    ``T <= max_len`` (the longest history in the batch): same results for models that accept
    any length (SASRec), much less padding work.
    """
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; choose from {PROTOCOLS}")
    item_seq, target = eval_inputs(dataset, part, max_len)
    seen, offsets = seen_items(dataset, part)
    lengths = np.minimum(np.diff(offsets), max_len)  # real positions per input row
    order = np.argsort(lengths, kind="stable") if trim else np.arange(dataset.n_users)
    log_pop = torch.from_numpy(np.log(dataset.item_counts[1:].astype(np.float64).clip(min=1e-12)))
    sums = {p: np.zeros(3) for p in protocols}
    if user_ranks is not None:
        user_ranks.update({p: np.zeros(dataset.n_users, dtype=np.int64) for p in protocols})
    owner = getattr(scores_fn, "__self__", None)
    was_training = isinstance(owner, torch.nn.Module) and owner.training
    weight = next(owner.parameters(), None) if isinstance(owner, torch.nn.Module) else None
    device = None if weight is None else weight.device
    if was_training:
        owner.eval()
    try:
        batches = [order[i : i + batch_size] for i in range(0, dataset.n_users, batch_size)]
        for users in track(batches, f"evaluate {part}", quiet=quiet):
            rows = torch.from_numpy(users)
            width = max(1, int(lengths[users].max())) if trim else max_len
            inputs = item_seq[rows, max_len - width :]
            with torch.no_grad():
                scores = scores_fn(inputs if device is None else inputs.to(device))
            scores = torch.as_tensor(scores).float().cpu()
            _check_shape(scores, len(users), dataset)  # (B, n)
            _check_finite(scores, users, part)
            tgt = target[rows] - 1  # (B,) score column of the target
            excluded = _seen_mask(seen, offsets, users, dataset.n_items, tgt)  # (B, n)
            if not exclude_seen:
                excluded.zero_()
            for p in protocols:
                if p == "full":
                    ranks = _rank_full(scores, tgt, excluded)
                else:
                    weights = None if p == "uni100" else log_pop
                    ranks = _rank_sampled(scores, tgt, excluded, seed, users, weights)
                sums[p] += _metric_sums(ranks, k)
                if user_ranks is not None:
                    user_ranks[p][users] = ranks.numpy()
    finally:
        if was_training:
            owner.train()
    n = dataset.n_users
    return {
        p: {f"hr@{k}": float(s[0] / n), f"ndcg@{k}": float(s[1] / n), f"mrr@{k}": float(s[2] / n)}
        for p, s in sums.items()
    }


def _check_finite(scores: torch.Tensor, users: np.ndarray, part: str) -> None:
    """NonFiniteScores for NaN or infinite scores: they would rank as nonsense, not fail."""
    bad = ~torch.isfinite(scores).all(dim=1)  # (B,)
    if bad.any():
        first = int(users[int(bad.numpy().argmax())])
        raise NonFiniteScores(
            f"the model returned NaN or infinite scores on the {part} inputs of "
            f"{int(bad.sum())} of {len(users)} users in a batch (first: user index {first}); "
            "its weights are damaged or its training diverged: retrain it (e.g. with a lower --lr)"
        )


def _check_shape(scores: torch.Tensor, rows: int, dataset: Dataset) -> None:
    if scores.shape != (rows, dataset.n_items):
        raise CheckpointMismatch(
            f"the model returned scores of shape {tuple(scores.shape)} but dataset "
            f"'{dataset.name}' needs ({rows}, {dataset.n_items}); evaluate it on the dataset it was trained on"
        )


def _seen_mask(
    seen: np.ndarray, offsets: np.ndarray, users: np.ndarray, n_items: int, tgt: torch.Tensor
) -> torch.Tensor:
    """``(B, n_items)`` bool: items seen before the target, the target itself left out."""
    lens = offsets[users + 1] - offsets[users]
    rows = np.repeat(np.arange(len(users)), lens)
    # position of every seen item in ``seen``: each user's offset plus 0..len-1
    first = np.repeat(offsets[users] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    cols = seen[first + np.arange(lens.sum())] - 1
    mask = torch.zeros(len(users), n_items, dtype=torch.bool)
    mask[torch.from_numpy(rows), torch.from_numpy(cols)] = True
    mask[torch.arange(len(users)), tgt] = False
    return mask


def _rank_full(scores: torch.Tensor, tgt: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """0-based rank of the target among all non-excluded items (ties counted against it)."""
    scores = scores.masked_fill(excluded, -torch.inf)
    t = scores.gather(1, tgt[:, None])  # (B, 1)
    above = (scores > t).sum(1)
    ties = ((scores == t) & ~excluded).sum(1) - 1  # minus the target itself
    return above + ties


def _rank_sampled(
    scores: torch.Tensor,
    tgt: torch.Tensor,
    excluded: torch.Tensor,
    seed: int,
    users: np.ndarray,
    log_weights: torch.Tensor | None,
) -> torch.Tensor:
    """0-based rank of the target among ``N_NEGATIVES`` sampled negatives."""
    forbidden = excluded.clone()
    forbidden[torch.arange(len(tgt)), tgt] = True
    neg, valid = sample_negatives(seed, users, forbidden, log_weights)
    cand = scores.gather(1, neg)  # (B, 100)
    t = scores.gather(1, tgt[:, None])  # (B, 1)
    return ((cand > t) & valid).sum(1) + ((cand == t) & valid).sum(1)


def sample_negatives(
    seed: int,
    users: np.ndarray,
    forbidden: torch.Tensor,
    log_weights: torch.Tensor | None = None,
    n: int = N_NEGATIVES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score columns of ``n`` negatives per row, without replacement, and their validity mask.

    Row ``r`` belongs to user index ``users[r]``; ``forbidden`` (B, n_items) marks columns
    never drawn; ``log_weights`` (n_items,) makes draws proportional to ``exp(log_weights)``
    (uniform when ``None``). Weighted sampling without replacement by exponential keys
    (Efraimidis-Spirakis): the negatives are the top keys ``log(u) / w`` over allowed items.
    A row with fewer than ``n`` allowed items gets ``valid`` False on the missing ones.
    """
    n_items = forbidden.shape[1]
    users = np.asarray(users).astype(np.uint64)
    keys = torch.from_numpy(np.log(_uniform(seed, users, n_items)))  # (B, n_items) float64, < 0
    if log_weights is not None:
        keys = keys * torch.exp(-log_weights.double())  # log(u) / w
    keys = keys.masked_fill(forbidden, -torch.inf)
    top, neg = keys.topk(min(n, n_items), dim=1)  # (B, n)
    return neg, top > -torch.inf


def _uniform(seed: int, users: np.ndarray, n_items: int) -> np.ndarray:
    """Uniform (0, 1) numbers ``(len(users), n_items)`` from a splitmix64 hash of (seed, user, item)."""
    with np.errstate(over="ignore"):
        x = users[:, None] * np.uint64(n_items) + np.arange(n_items, dtype=np.uint64)[None, :]
        x = x + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def user_ndcg(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """NDCG@k of each user from its 0-based target rank (one relevant item: 1/log2(rank + 2))."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)


def _metric_sums(ranks: torch.Tensor, k: int) -> np.ndarray:
    """Sums of HR@k, NDCG@k and MRR@k over a batch of 0-based ranks."""
    r = ranks.double()
    hit = r < k
    ndcg = torch.where(hit, 1.0 / torch.log2(r + 2.0), 0.0)
    mrr = torch.where(hit, 1.0 / (r + 1.0), 0.0)
    return np.array([hit.sum().item(), ndcg.sum().item(), mrr.sum().item()])


class _CallableModule(types.ModuleType):
    """``dnsrec_edge.evaluate`` is both this module and the public function: once the module
    is imported, the package attribute ``evaluate`` is the module, so calling it calls
    :func:`evaluate`."""

    def __call__(self, *args, **kwargs) -> dict[str, dict[str, float]]:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
