"""Next-item losses for any module with ``forward(item_seq) -> (B, T, d)`` and ``score(h)``.

- ``ce``: full softmax cross-entropy over every item ("SASRec+").
- ``sampled``: softmax over the target and ``negatives`` items shared by the whole batch,
  drawn from a uniform or popularity proposal with logQ correction; accidental hits of the
  target are masked. Needs the module's item embedding ``item_emb``.
- ``bce``: the original SASRec loss, the target against ``negatives`` uniform negatives per
  position with binary cross-entropy.
Logits are computed only at real (non-padding) positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "sampled", "bce")


def sequence_loss(
    model: nn.Module,
    item_seq: torch.Tensor,
    targets: torch.Tensor,
    loss: str = "ce",
    negatives: int = 256,
    log_q: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean loss over the non-padding positions of ``targets`` (B, T).

    ``log_q`` (n_items,) is the log proposal probability of items 1..n_items for the sampled
    loss (uniform when ``None``).
    """
    hidden = model(item_seq)  # (B, T, d)
    keep = targets != 0  # (B, T)
    h = hidden[keep]  # (N, d)
    y = targets[keep]  # (N,) item ids 1..n
    if loss == "ce":
        return F.cross_entropy(model.score(h), y - 1)  # logits (N, n_items)
    weight = model.item_emb.weight  # (n_items + 1, d); row 0 is padding
    n_items = weight.shape[0] - 1
    if loss == "sampled":
        if log_q is None:
            neg = torch.randint(1, n_items + 1, (negatives,), generator=generator)  # (M,)
            correction = None
        else:
            neg = (
                torch.multinomial(log_q.exp(), negatives, replacement=True, generator=generator) + 1
            )
            correction = log_q[neg - 1]  # (M,)
        pos_logit = (h * weight[y]).sum(-1, keepdim=True)  # (N, 1)
        neg_logit = h @ weight[neg].t()  # (N, M)
        if correction is not None:
            pos_logit = pos_logit - log_q[y - 1].unsqueeze(1)
            neg_logit = neg_logit - correction
        neg_logit = neg_logit.masked_fill(neg.unsqueeze(0) == y.unsqueeze(1), -torch.inf)
        logits = torch.cat([pos_logit, neg_logit], dim=1)  # (N, 1 + M)
        return F.cross_entropy(logits, torch.zeros_like(y))
    if loss == "bce":
        neg = torch.randint(1, n_items + 1, (y.shape[0], negatives), generator=generator)  # (N, M)
        pos_logit = (h * weight[y]).sum(-1)  # (N,)
        neg_logit = (h.unsqueeze(1) * weight[neg]).sum(-1)  # (N, M)
        pos = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit))
        neg_mask = (neg != y.unsqueeze(1)).to(neg_logit.dtype)
        neg_loss = F.binary_cross_entropy_with_logits(
            neg_logit, torch.zeros_like(neg_logit), weight=neg_mask
        )
        return pos + neg_loss * negatives
    raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
