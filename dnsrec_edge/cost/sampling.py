"""Space-filling samples of architectures for calibration measurements.

A Latin hypercube (scipy ``qmc``, optimised for low discrepancy) over depth and, per block,
heads, FFN width, gate width and attention kind, optionally also over item count and
sequence length, so the measured points spread through the search space rather than
sitting on its corners. The smallest and largest architectures are added so the fit
interpolates across the whole space.

Example::

    space = SearchSpace(n_items=(1000, 10000), max_len=(50, 100, 200))
    archs = sample_archs(space, 40, seed=0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dnsrec_edge.errors import CalibrationError
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec


@dataclass(frozen=True)
class SearchSpace:
    """Ranges sampled for calibration; item count is log-uniform between its two ends."""

    n_items: tuple[int, int] = (1000, 10000)
    max_len: tuple[int, ...] = (50, 100, 200)
    hidden: int = 64
    max_depth: int = 4
    head_dim: int = 16
    max_heads: int = 4
    ffn: tuple[int, int, int] = (32, 256, 16)  # low, high, step
    gate_hidden: tuple[int, ...] = (0, 16, 32)
    attention: tuple[str, ...] = ("softmax", "linear")

    @property
    def ffn_choices(self) -> tuple[int, ...]:
        low, high, step = self.ffn
        return tuple(range(low, high + 1, step))

    @property
    def dims(self) -> int:
        return 3 + 4 * self.max_depth  # n_items, max_len, depth, then 4 per block

    def arch(self, u: list[float]) -> ArchSpec:
        """The architecture at a point ``u`` of the unit hypercube (``dims`` coordinates)."""
        lo, hi = self.n_items
        n_items = round(math.exp(math.log(lo) + u[0] * (math.log(hi) - math.log(lo))))
        max_len = _pick(self.max_len, u[1])
        depth = _pick(tuple(range(1, self.max_depth + 1)), u[2])
        blocks = []
        for i in range(depth):
            h, f, g, a = u[3 + 4 * i : 7 + 4 * i]
            blocks.append(
                BlockSpec(
                    heads=_pick(tuple(range(1, self.max_heads + 1)), h),
                    head_dim=self.head_dim,
                    ffn=_pick(self.ffn_choices, f),
                    gate_hidden=_pick(self.gate_hidden, g),
                    attention=_pick(self.attention, a),
                )
            )
        return ArchSpec(n_items, max_len, self.hidden, tuple(blocks))

    def extremes(self) -> list[ArchSpec]:
        """The smallest and the largest architecture of the space."""
        low = [0.0] * self.dims
        high = [1.0 - 1e-9] * self.dims
        return [self.arch(low), self.arch(high)]


def parse_space(items: str, lens: str) -> SearchSpace:
    """A SearchSpace from the CLI's ``--items LOW:HIGH`` and ``--lens L1,L2,...``."""
    try:
        low, high = (int(v) for v in items.split(":"))
        lengths = tuple(int(v) for v in lens.split(","))
    except ValueError:
        raise CalibrationError(
            f"--items '{items}' / --lens '{lens}' are not LOW:HIGH and L1,L2,... integers "
            "(e.g. --items 1000:300000 --lens 50,200)"
        ) from None
    if not 2 <= low <= high or not lengths or min(lengths) < 1:
        raise CalibrationError(
            f"--items needs 2 <= LOW <= HIGH (got {items}) and --lens positive lengths (got {lens})"
        )
    return SearchSpace(n_items=(low, high), max_len=lengths)


def _pick(choices: tuple, u: float):
    return choices[min(int(u * len(choices)), len(choices) - 1)]


def sample_archs(
    space: SearchSpace, n: int, seed: int = 0, include_extremes: bool = True
) -> list[ArchSpec]:
    """``n`` distinct architectures from a Latin hypercube over ``space`` (extremes first)."""
    from scipy.stats import qmc

    out: list[ArchSpec] = space.extremes()[:n] if include_extremes else []
    seen = {a.to_json() for a in out}
    sampler = qmc.LatinHypercube(d=space.dims, optimization="random-cd", seed=seed)
    while len(out) < n:
        for u in sampler.random(max(n - len(out), 2)):
            arch = space.arch(list(u))
            if arch.to_json() not in seen:
                seen.add(arch.to_json())
                out.append(arch)
            if len(out) == n:
                break
    return out
