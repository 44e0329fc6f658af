"""Losses: logits only at real positions, equal to the full computation; all three losses learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dnsrec_edge.data.batching import train_batches
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.train.losses import (
    distilled_loss,
    linear_cross_entropy,
    linear_distillation,
    sequence_loss,
)


@pytest.fixture
def model_and_batch(ml100k_small):
    torch.manual_seed(0)
    model = SASRec(ArchSpec.uniform(ml100k_small.n_items, 30, 16, 1, 1), dropout=0.0)
    users = ml100k_small.lengths().argsort()[::10]  # short and long histories
    item_seq, targets = next(train_batches(ml100k_small, 30, 16, rng=0, users=users))
    return model, item_seq, targets


def test_ce_equals_masked_full_softmax(model_and_batch):
    model, item_seq, targets = model_and_batch
    logits = model.score(model(item_seq))  # (B, T, n) at every position
    keep = targets != 0
    want = F.cross_entropy(logits[keep], targets[keep] - 1)
    got = sequence_loss(model, item_seq, targets, "ce")
    assert torch.allclose(got, want, atol=1e-6)
    assert (~keep).any()  # the batch has padding that was skipped


def test_sampled_masks_accidental_hits(model_and_batch):
    model, item_seq, targets = model_and_batch
    n = model.arch.n_items
    # With every item as a "negative", the uniform sampled softmax over [target, all others]
    # equals the full softmax: the target's duplicate among the negatives is masked.
    gen = torch.Generator().manual_seed(0)
    sampled = sequence_loss(model, item_seq, targets, "sampled", negatives=20 * n, generator=gen)
    full = sequence_loss(model, item_seq, targets, "ce")
    assert sampled > full  # duplicates add mass, never the target itself
    assert torch.isfinite(sampled)


@pytest.mark.parametrize(
    ("loss", "extra"),
    [
        ("ce", {}),
        ("sampled", {"negatives": 64}),
        ("bce", {"negatives": 1}),
        ("sampled-pop", {"negatives": 64}),
    ],
)
def test_each_loss_decreases(model_and_batch, ml100k_small, loss, extra):
    model, item_seq, targets = model_and_batch
    log_q = None
    if loss == "sampled-pop":
        counts = torch.from_numpy(ml100k_small.item_counts[1:]).double()
        log_q = (counts / counts.sum()).log().float()
        loss = "sampled"
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    values = []
    for _ in range(15):
        value = sequence_loss(model, item_seq, targets, loss, log_q=log_q, generator=gen, **extra)
        opt.zero_grad()
        value.backward()
        opt.step()
        values.append(value.item())
    assert values[-1] < 0.8 * values[0]


def test_unknown_loss(model_and_batch):
    model, item_seq, targets = model_and_batch
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        sequence_loss(model, item_seq, targets, "mse")


def test_fused_cross_entropy_matches_autograd():
    torch.manual_seed(0)
    h = torch.randn(700, 16, requires_grad=True)  # more rows than one chunk
    w = torch.randn(300, 16, requires_grad=True)
    target = torch.randint(0, 300, (700,))
    (3 * linear_cross_entropy(h, w, target)).backward()
    fused = (h.grad.clone(), w.grad.clone())
    h.grad = w.grad = None
    (3 * F.cross_entropy(h @ w.t(), target)).backward()
    assert torch.allclose(fused[0], h.grad, atol=1e-6) and torch.allclose(
        fused[1], w.grad, atol=1e-6
    )


def test_fused_cross_entropy_under_bf16_autocast_stays_close_to_float32():
    torch.manual_seed(0)
    h = torch.randn(700, 16, requires_grad=True)
    w = (0.3 * torch.randn(300, 16)).requires_grad_()
    target = torch.randint(0, 300, (700,))
    exact = linear_cross_entropy(h, w, target)
    exact.backward()
    grads = (h.grad.clone(), w.grad.clone())
    h.grad = w.grad = None
    with torch.autocast("cpu", torch.bfloat16):
        low = linear_cross_entropy(h, w, target)
    low.backward()
    assert low.dtype == torch.float32 and h.grad.dtype == torch.float32
    assert abs(low.item() - exact.item()) < 1e-2 * exact.item()
    assert not torch.equal(h.grad, grads[0])  # the matmuls really ran in bfloat16
    for got, want in zip((h.grad, w.grad), grads, strict=True):
        assert (got - want).norm() < 2e-2 * want.norm()


def test_distilled_loss_mixes_cross_entropy_and_the_teachers_soft_scores(model_and_batch):
    model, item_seq, targets = model_and_batch
    torch.manual_seed(1)
    teacher = SASRec(model.arch, dropout=0.0).eval()
    model.eval()
    keep = targets != 0
    logits = model.score(model(item_seq)[keep])
    t_logits = teacher.score(teacher(item_seq)[keep])
    ce = F.cross_entropy(logits, targets[keep] - 1)
    temp = 2.0
    kl = F.kl_div(
        F.log_softmax(logits / temp, -1),
        F.log_softmax(t_logits / temp, -1),
        log_target=True,
        reduction="batchmean",
    )
    got = distilled_loss(model, teacher, item_seq, targets, 0.3, temp)
    assert float(got) == pytest.approx(float(0.7 * ce + 0.3 * temp**2 * kl), rel=1e-5)
    assert float(distilled_loss(model, teacher, item_seq, targets, 0.0, temp)) == pytest.approx(
        float(ce), rel=1e-6
    )
    # a student that is its own teacher has nothing left to learn from it
    alone = distilled_loss(model, model, item_seq, targets, 1.0, temp)
    assert abs(float(alone)) < 1e-5


@pytest.mark.parametrize("temp, ce", [(1.0, 0.4), (2.0, 0.4), (1.0, 0.0), (2.0, 1.0)])
def test_chunked_distillation_matches_the_materialised_loss_and_gradients(temp, ce):
    torch.manual_seed(0)
    n, d, items = 600, 8, 50  # more rows than one chunk
    h = torch.randn(n, d, requires_grad=True)
    w = torch.randn(items, d, requires_grad=True)
    t_h, t_w = torch.randn(n, d), torch.randn(items, d)
    target = torch.randint(0, items, (n,))
    logits = h @ w.t()
    kl = F.kl_div(
        F.log_softmax(logits / temp, -1),
        F.log_softmax(t_h @ t_w.t() / temp, -1),
        log_target=True,
        reduction="batchmean",
    )
    kd = (1 - ce) * temp**2
    want = ce * F.cross_entropy(logits, target) + kd * kl
    want.backward()
    grads = (h.grad.clone(), w.grad.clone())
    h.grad = w.grad = None
    got = linear_distillation(h, w, t_h, t_w, target, ce, kd, temp)
    (2 * got).backward()
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    for g, ref in zip((h.grad, w.grad), grads, strict=True):
        torch.testing.assert_close(g, 2 * ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="target"):
        linear_distillation(h, w, t_h, t_w, ce_weight=0.5)
