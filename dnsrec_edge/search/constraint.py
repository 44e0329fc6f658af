"""Resource constraint: per-candidate cost tables, the mixture's expected cost, the penalty.

``SASRec.predict`` runs every block over the whole sequence except the last, which runs at the
last position only, so a block costs one amount in the middle of the stack and another as the
last block (and a compiled last block of a deeper stack also slices the attention mask, which a
lone block does not). :meth:`CostTable.build` asks a :class:`CostModel` for small ArchSpecs
and takes differences (``r``: the widest block)::

    alone[a, f] = C([b(a, f)])                         depth 1, with the fixed parts
    mid[a, f]   = C([b(a, f), r, r]) - C([r, r])        in the middle of a stack
    last[a, f]  = C([r, b(a, f)]) - mid[r]              last of a deeper stack, fixed parts in

so ``C([b]) = alone[b]`` and ``C([b_1 .. b_d]) = sum_{i<d} mid[b_i] + last[b_d]`` for d >= 2,
exact for any cost model that adds up per block (the analytic FLOPs model, the linear
calibrated models). The expected cost of the mixture is
``sum_d beta_d * (sum_{i<d} E[mid_i] + E[last or alone]_d)`` with ``E`` over each block's
attention and FFN weights.

Penalty rule (dynamic, the default): the architecture loss is
``task + lam * depth_factor * E[cost] / budget`` where ``depth_factor = preferred depth / N``
(the paper's scaling of the pressure with the currently preferred depth) and ``lam`` follows
dual ascent on the budget as a target, ``E[cost] = budget``:
``lam <- lam + step * (E[cost] / budget - 1)`` after every architecture step. It rises while
the mixture is over budget and falls when under, and may turn negative: an architecture well
under budget leaves accuracy unused, so the pressure then pulls towards the budget instead of
leaving the controllers stuck on the cheap side (a one-sided rule, clipped at 0, lets the
search collapse to the cheapest architecture: the weights of the paths the controllers
favour train faster, so the task gradient rarely pulls back). Hard selection still takes an
in-budget architecture. ``fixed`` keeps ``lam`` constant (the authors' 0.01-style weight),
the ablation.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dnsrec_edge.cost.model import CostModel
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.search.controllers import MixWeights
from dnsrec_edge.search.space import Choice, SearchSpace

log = logging.getLogger(__name__)

PENALTY_MODES = ("dynamic", "fixed")


@dataclass
class CostTable:
    """Per-candidate costs of one budget kind; ``alone``/``mid``/``last`` are (A, F) tensors."""

    space: SearchSpace
    kind: str
    alone: torch.Tensor
    mid: torch.Tensor
    last: torch.Tensor

    @classmethod
    def build(
        cls,
        space: SearchSpace,
        cost_model: CostModel,
        kind: str = "flops",
        target: Any = None,
        extra: Sequence[ArchSpec] = (),
    ) -> CostTable:
        """Query ``cost_model`` for one- to three-block ArchSpecs of every candidate pair.

        A cost model that measures (one with ``predict_many``) measures them, and ``extra``
        (e.g. the budget's baseline), in one interleaved run first, so drift of a shared
        machine stays out of the differences; a negative difference (measurement noise) is
        clipped to zero.
        """

        def arch_of(*blocks: BlockSpec) -> ArchSpec:
            return ArchSpec(space.n_items, space.max_len, space.hidden, blocks)

        def cost(*blocks: BlockSpec) -> float:
            return float(cost_model.predict(arch_of(*blocks), target).get(kind))

        r = space.block(0, 0)
        if hasattr(cost_model, "predict_many"):
            pairs = itertools.product(range(space.n_attn), range(space.n_ffn))
            blocks = [space.block(a, f) for a, f in pairs]
            archs = [arch_of(r, r), arch_of(r, r, r), *(arch_of(b) for b in blocks)]
            if space.max_depth > 1:
                archs += [arch_of(b, r, r) for b in blocks] + [arch_of(r, b) for b in blocks]
            cost_model.predict_many([*extra, *archs], target)
        ref_pair = cost(r, r)
        ref_mid = cost(r, r, r) - ref_pair
        alone = torch.zeros(space.n_attn, space.n_ffn, dtype=torch.float64)
        mid, last = torch.zeros_like(alone), torch.zeros_like(alone)
        for a, f in itertools.product(range(space.n_attn), range(space.n_ffn)):
            b = space.block(a, f)
            alone[a, f] = cost(b)
            if space.max_depth > 1:
                mid[a, f] = cost(b, r, r) - ref_pair
                last[a, f] = cost(r, b) - ref_mid
        return cls(space, kind, alone, mid.clamp(min=0.0), last.clamp(min=0.0))

    def last_of(self, depth: int) -> torch.Tensor:
        """(A, F) cost of the last block with the fixed parts, for a stack of ``depth``."""
        return self.alone if depth == 1 else self.last

    def of(self, choice: Choice) -> float:
        """Cost of a hard choice."""
        *body, tail = choice.blocks
        return float(sum(self.mid[b] for b in body) + self.last_of(choice.depth)[tail])

    def expected(self, w: MixWeights) -> torch.Tensor:
        """Differentiable expected cost of the mixture (a 0-d tensor)."""
        dtype = w.attn.dtype
        mid, last, alone = (t.to(dtype) for t in (self.mid, self.last, self.alone))
        e_mid = torch.einsum("na,af,nf->n", w.attn, mid, w.ffn)  # (N,) block i in the middle
        e_last = torch.einsum("na,af,nf->n", w.attn, last, w.ffn)  # (N,) block i last, i >= 1
        e_last = torch.cat([(w.attn[0] @ alone @ w.ffn[0]).reshape(1), e_last[1:]])  # depth 1
        before = torch.cumsum(e_mid, 0) - e_mid  # (N,) sum of the blocks before block i
        return (w.depth * (before + e_last)).sum()

    def reference(self) -> float:
        """Cost of the full supernet (max depth, widest candidates): what ``%`` budgets scale."""
        return self.of(self.space.widest())

    def cheapest_choice(self, depth: int) -> Choice:
        """The cheapest architecture of ``depth`` blocks (blocks are independent)."""
        n_ffn = self.space.n_ffn
        mid_pair = divmod(int(self.mid.argmin()), n_ffn)
        last_pair = divmod(int(self.last_of(depth).argmin()), n_ffn)
        return Choice(depth, (mid_pair,) * (depth - 1) + (last_pair,))

    def cheapest(self) -> tuple[Choice, float]:
        """The cheapest architecture in the space and its cost (the shallowest on a tie)."""
        depths = range(1, self.space.max_depth + 1)
        best = min((self.cheapest_choice(d) for d in depths), key=self.of)
        return best, self.of(best)

    def cheapest_of_depth(self, depth: int) -> float:
        """Cost of the cheapest architecture of ``depth`` blocks."""
        return self.of(self.cheapest_choice(depth))

    def deepest_within(self, limit: float) -> int:
        """The largest depth whose cheapest architecture costs at most ``limit`` (at least 1)."""
        fits = [d for d in range(1, self.space.max_depth + 1) if self.cheapest_of_depth(d) <= limit]
        return max(fits, default=1)

    def largest_within(self, limit: float) -> list[Choice]:
        """Per depth, the architecture of highest cost within ``limit``: the most capacity the
        budget buys at that depth (depths with none in budget are left out)."""
        best: dict[int, tuple[float, Choice]] = {}
        for choice in self.choices():
            cost = self.of(choice)
            if cost <= limit and cost > best.get(choice.depth, (-float("inf"), None))[0]:
                best[choice.depth] = (cost, choice)
        return [best[depth][1] for depth in sorted(best)]

    def choices(self) -> itertools.chain:
        """Every architecture of the space (all depths, all candidate pairs per block)."""
        pairs = list(itertools.product(range(self.space.n_attn), range(self.space.n_ffn)))
        return itertools.chain.from_iterable(
            (Choice(d, blocks) for blocks in itertools.product(pairs, repeat=d))
            for d in range(1, self.space.max_depth + 1)
        )


@dataclass
class Penalty:
    """Weight of the expected-cost term; dual ascent (``dynamic``) or constant (``fixed``)."""

    mode: str = "dynamic"
    lam: float = 0.01
    step: float = 0.05

    def __post_init__(self) -> None:
        if self.mode not in PENALTY_MODES:
            raise ValueError(f"penalty mode {self.mode!r} is not one of {PENALTY_MODES}")

    def term(self, ratio: torch.Tensor, depth_factor: float) -> torch.Tensor:
        """Penalty for an expected cost ``ratio`` = E[cost] / budget (differentiable)."""
        return self.lam * depth_factor * ratio

    def update(self, ratio: float) -> None:
        """Dual ascent towards ``ratio == 1`` (no-op when fixed)."""
        if self.mode == "dynamic":
            self.lam += self.step * (ratio - 1.0)


def depth_factor(w: MixWeights) -> float:
    """Preferred depth (argmax of beta) over the maximum depth."""
    return (int(w.depth.argmax()) + 1) / w.depth.numel()
