"""Evaluation: vectorised metrics against a plain reference, seen-item exclusion, sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dnsrec_edge.errors import CheckpointMismatch
from dnsrec_edge.evaluate import evaluate, sample_negatives


def _id_scores(n_items):
    """Score item j+1 by -j: item 1 best, item n worst (target rank is then known)."""
    base = -torch.arange(n_items, dtype=torch.float32)
    return lambda seq: base.expand(seq.shape[0], -1).clone()


def _reference_full(ds, part, exclude_seen, k=10):
    """Per-user loop: the rank of the target under ``_id_scores``, then HR/NDCG/MRR."""
    cut = -2 if part == "valid" else -1
    hr = ndcg = mrr = 0.0
    for seq in ds.sequences:
        target, history = int(seq[cut]), set(seq[:cut].tolist())
        better = range(1, target)  # items scored above the target
        rank = sum(1 for i in better if not (exclude_seen and i in history))
        if rank < k:
            hr, ndcg, mrr = hr + 1, ndcg + 1 / math.log2(rank + 2), mrr + 1 / (rank + 1)
    n = ds.n_users
    return {"hr@10": hr / n, "ndcg@10": ndcg / n, "mrr@10": mrr / n}


@pytest.mark.parametrize("exclude_seen", [True, False])
@pytest.mark.parametrize("part", ["valid", "test"])
def test_full_ranking_matches_reference(ml100k_small, part, exclude_seen):
    got = evaluate(
        _id_scores(ml100k_small.n_items),
        ml100k_small,
        part,
        max_len=20,
        protocols=("full",),
        exclude_seen=exclude_seen,
        batch_size=37,
    )["full"]
    want = _reference_full(ml100k_small, part, exclude_seen)
    assert got == pytest.approx(want, abs=1e-12)
    assert want["hr@10"] > 0  # the reference is not trivially zero


def test_oracle_and_constant_scores(ml100k_small):
    ds = ml100k_small
    targets = torch.tensor([s[-1] for s in ds.sequences])
    calls = iter(range(0, ds.n_users, 64))

    def oracle(seq):
        start = next(calls)
        scores = torch.zeros(seq.shape[0], ds.n_items)
        scores[torch.arange(seq.shape[0]), targets[start : start + seq.shape[0]] - 1] = 1.0
        return scores

    result = evaluate(oracle, ds, "test", max_len=10, batch_size=64)
    for protocol in ("full", "uni100", "pop100"):
        assert result[protocol] == {"hr@10": 1.0, "ndcg@10": 1.0, "mrr@10": 1.0}
    flat = evaluate(lambda s: torch.zeros(s.shape[0], ds.n_items), ds, "test", max_len=10)
    assert all(v == 0.0 for m in flat.values() for v in m.values())  # ties count against


def test_seen_items_are_never_sampled_and_sampling_is_batch_independent(ml100k_small):
    ds = ml100k_small
    seen_sets = [set(s[:-1].tolist()) for s in ds.sequences]
    calls = iter(range(0, ds.n_users, 50))

    def seen_first(seq):  # seen items above the target, the rest below
        start = next(calls)
        scores = torch.full((seq.shape[0], ds.n_items), -1.0)
        for r in range(seq.shape[0]):
            user = start + r
            scores[r, [i - 1 for i in seen_sets[user]]] = 2.0
            scores[r, ds.sequences[user][-1] - 1] = 1.0
        return scores

    result = evaluate(seen_first, ds, "test", max_len=10, batch_size=50)
    assert result["full"]["hr@10"] == result["uni100"]["hr@10"] == result["pop100"]["hr@10"] == 1.0
    calls = iter(range(0, ds.n_users, 50))
    included = evaluate(seen_first, ds, "test", max_len=10, batch_size=50, exclude_seen=False)
    assert included["full"]["hr@10"] == 0.0 and included["uni100"]["hr@10"] < 0.9
    a = evaluate(_id_scores(ds.n_items), ds, "test", max_len=10, batch_size=16, seed=4)
    b = evaluate(_id_scores(ds.n_items), ds, "test", max_len=10, batch_size=150, seed=4)
    c = evaluate(_id_scores(ds.n_items), ds, "test", max_len=10, batch_size=150, seed=5)
    assert a == b and a["uni100"] != c["uni100"]


def test_pop_sampling_follows_popularity(ml100k):
    counts = torch.from_numpy(ml100k.item_counts[1:]).double()
    forbidden = torch.zeros(400, ml100k.n_items, dtype=torch.bool)
    forbidden[:, 0] = True
    neg, valid = sample_negatives(0, np.arange(400), forbidden, counts.log())
    assert valid.all() and neg.shape == (400, 100)
    assert (neg != 0).all()
    for row in neg[:20]:
        assert len(set(row.tolist())) == 100  # without replacement
    freq = torch.bincount(neg.flatten(), minlength=ml100k.n_items).double()
    top = counts.argsort(descending=True)
    assert freq[top[:50]].mean() > 5 * freq[top[-500:]].mean()
    uniform, _ = sample_negatives(0, np.arange(400), forbidden)
    ufreq = torch.bincount(uniform.flatten(), minlength=ml100k.n_items).double()
    assert ufreq[top[:50]].mean() < 2 * ufreq[top[-500:]].mean()


def test_few_allowed_items(ml100k_small):
    forbidden = torch.ones(2, 30, dtype=torch.bool)
    forbidden[:, :5] = False
    neg, valid = sample_negatives(0, np.arange(2), forbidden)
    assert valid.sum(1).tolist() == [5, 5] and set(neg[0][valid[0]].tolist()) == set(range(5))


def test_popularity_baseline_on_ml100k(ml100k):
    pop = torch.from_numpy(ml100k.item_counts[1:]).float()
    result = evaluate(lambda s: pop.expand(s.shape[0], -1), ml100k, "test", max_len=50)
    assert 0.3 < result["uni100"]["hr@10"] < 0.7  # MostPop is far above random (0.099)
    assert result["full"]["hr@10"] < result["uni100"]["hr@10"]
    assert result["pop100"]["hr@10"] < result["uni100"]["hr@10"]


def test_wrong_score_width(ml100k_small):
    with pytest.raises(CheckpointMismatch) as err:
        evaluate(
            lambda s: torch.zeros(s.shape[0], 7), ml100k_small, "test", max_len=10, batch_size=256
        )
    assert str(err.value) == (
        f"the model returned scores of shape (150, 7) but dataset 'ml-100k-small' needs "
        f"(150, {ml100k_small.n_items}); evaluate it on the dataset it was trained on"
    )


def test_trimmed_evaluation_equals_padded(ml100k_small):
    from dnsrec_edge.models.archspec import ArchSpec
    from dnsrec_edge.models.sasrec import SASRec

    torch.manual_seed(0)
    model = SASRec(ArchSpec.uniform(ml100k_small.n_items, 60, 16, 2, 1)).eval()
    padded = evaluate(model.predict, ml100k_small, "valid", max_len=60, batch_size=32)
    trimmed = evaluate(model.predict, ml100k_small, "valid", max_len=60, batch_size=32, trim=True)
    for protocol, values in padded.items():
        assert trimmed[protocol] == pytest.approx(values, abs=1e-9)
