"""Resource budgets: ``flops=25%``, ``flops=30M``, ``latency=1.5ms``, ``energy=2mJ``.

A ``%`` budget is a share of the full supernet's cost (max depth, widest candidates) under the
same cost model; any other value is absolute. Latency and energy come from the target's
calibrated cost model, so they need a target.

Example::

    budget = parse_budget("latency=1.5ms")    # Budget(kind="latency", value=1.5, relative=False)
    limit = budget.limit(reference=4.2)       # 1.5 (ms); a 25% budget would give 1.05
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dnsrec_edge.errors import BudgetError

KINDS = ("flops", "latency", "energy")
UNITS = {
    "flops": {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9},
    "latency": {"ms": 1.0, "us": 1e-3, "s": 1e3},
    "energy": {"mj": 1.0, "uj": 1e-3, "j": 1e3},
}
ACCEPTED = "flops=25% (share of the full supernet), flops=30M, latency=1.5ms or energy=2mJ"
_PATTERN = re.compile(r"^\s*([a-z]+)\s*=\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z%]*)\s*$")


@dataclass(frozen=True)
class Budget:
    """A budget kind and value; ``value`` is a fraction if ``relative``, else in base units
    (FLOPs, milliseconds, millijoules)."""

    kind: str
    value: float
    relative: bool

    def limit(self, reference: float) -> float:
        """The absolute limit, given the full supernet's cost ``reference`` for ``%`` budgets."""
        return self.value * reference if self.relative else self.value

    @property
    def unit(self) -> str:
        return {"flops": "FLOPs", "latency": "ms", "energy": "mJ"}[self.kind]

    def __str__(self) -> str:
        if self.relative:
            return f"{self.kind}={self.value * 100:g}%"
        return f"{self.kind}={self.value:g}{'' if self.kind == 'flops' else self.unit}"


def parse_budget(text: str) -> Budget:
    """Parse ``KIND=VALUE``; a ``BudgetError`` names the accepted forms."""
    match = _PATTERN.match(text.lower())
    if not match:
        raise BudgetError(f"cannot parse budget '{text}'; use {ACCEPTED}")
    kind, number, unit = match.groups()
    if kind not in KINDS:
        raise BudgetError(
            f"unknown budget kind '{kind}' in '{text}'; use one of {', '.join(KINDS)} as in "
            f"{ACCEPTED}"
        )
    value = float(number)
    if value <= 0:
        raise BudgetError(f"budget '{text}' must be positive; use {ACCEPTED}")
    if unit == "%":
        if value > 100:
            raise BudgetError(
                f"budget '{text}' is over 100% of the full supernet; use at most 100%"
            )
        return Budget(kind, value / 100.0, relative=True)
    if unit == "" and kind != "flops":
        raise BudgetError(f"budget '{text}' needs a unit; use {ACCEPTED}")
    scale = UNITS[kind].get(unit)
    if scale is None:
        units = ", ".join(u or "(none)" for u in UNITS[kind]) + ", %"
        raise BudgetError(
            f"unknown unit '{unit}' for a {kind} budget in '{text}'; use one of {units} as in "
            f"{ACCEPTED}"
        )
    return Budget(kind, value * scale, relative=False)
