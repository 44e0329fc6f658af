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

from dnsrec_edge.search.space import Choice, SearchSpace
from dnsrec_edge.search.supernet import Supernet
from dnsrec_edge.train.losses import linear_cross_entropy, linear_distillation


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


def _path_hidden(
    model: Supernet, choice: Choice, item_seq: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    with model.selected(choice):
        return model(item_seq)[keep]  # (N, d) at the real positions


def sandwich_step(
    model: Supernet,
    item_seq: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    n_random: int = 2,
) -> float:
    """One optimizer step of the sandwich rule; returns the largest path's cross-entropy.

    The losses run chunk by chunk over the catalogue (``linear_cross_entropy``,
    ``linear_distillation``): no (N, n_items) logits are kept.
    """
    space = model.space
    keep = targets != 0  # (B, T)
    y = targets[keep] - 1  # (N,) column of the true next item
    items = model.item_emb.weight[1:]
    optimizer.zero_grad(set_to_none=True)
    largest = _path_hidden(model, space.widest(), item_seq, keep)
    ce = linear_cross_entropy(largest, items, y)
    ce.backward()
    teacher = largest.detach()
    children = [smallest_choice(space)] + [random_choice(space, rng) for _ in range(n_random)]
    for choice in children:
        student = _path_hidden(model, choice, item_seq, keep)
        linear_distillation(student, items, teacher, items).backward()
    optimizer.step()
    return ce.item()
