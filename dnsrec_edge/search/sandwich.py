"""Sandwich-rule weight steps with in-place distillation (BigNAS / OFA) for the supernet warm-up.

One step trains the largest path (max depth, widest candidates) on the true next items, then
the smallest path (depth 1, narrowest) and ``n_random`` uniformly drawn paths on the largest
path's softened predictions (KL over the full catalogue, the largest path's logits detached),
each in hard mode, and applies the summed gradients once. Every path then trains on its own
and learns from the strongest one, so a path's accuracy under the shared weights predicts its
accuracy after training, which is what the search's controllers and the selection rely on.

Example::

    loss = sandwich_step(supernet, item_seq, targets, optimizer, rng, n_random=2)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dnsrec_edge.search.space import Choice, SearchSpace
from dnsrec_edge.search.supernet import Supernet


def smallest_choice(space: SearchSpace) -> Choice:
    """Depth 1 with the narrowest attention and FFN candidates."""
    return Choice(1, ((space.n_attn - 1, space.n_ffn - 1),))


def random_choice(space: SearchSpace, rng: np.random.Generator) -> Choice:
    """A uniformly drawn depth and, per block, a uniformly drawn candidate pair."""
    depth = int(rng.integers(1, space.max_depth + 1))
    blocks = tuple(
        (int(rng.integers(space.n_attn)), int(rng.integers(space.n_ffn))) for _ in range(depth)
    )
    return Choice(depth, blocks)


def _path_logits(
    model: Supernet, choice: Choice, item_seq: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    with model.selected(choice):
        return model.score(model(item_seq)[keep])  # (N, n_items) at the real positions


def sandwich_step(
    model: Supernet,
    item_seq: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    n_random: int = 2,
) -> float:
    """One optimizer step of the sandwich rule; returns the largest path's cross-entropy."""
    space = model.space
    keep = targets != 0  # (B, T)
    y = targets[keep] - 1  # (N,) column of the true next item
    optimizer.zero_grad(set_to_none=True)
    logits = _path_logits(model, space.widest(), item_seq, keep)
    ce = F.cross_entropy(logits, y)
    ce.backward()
    teacher = F.log_softmax(logits.detach(), dim=-1)
    children = [smallest_choice(space)] + [random_choice(space, rng) for _ in range(n_random)]
    for choice in children:
        student = F.log_softmax(_path_logits(model, choice, item_seq, keep), dim=-1)
        F.kl_div(student, teacher, log_target=True, reduction="batchmean").backward()
    optimizer.step()
    return ce.item()
