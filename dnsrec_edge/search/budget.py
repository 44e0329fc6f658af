"""Resource budgets: ``latency=25%``, ``flops=25%``, ``flops=30M``, ``latency=1.5ms``, ``energy=2mJ``,
``step-latency=0.05ms``.

A ``%`` budget is a share of the trained **baseline**'s cost on the target: ``latency=25%`` is a
quarter of the baseline's latency (measured when the target is reachable, else predicted by
the target's cost model), ``flops=25%`` a quarter of its FLOPs. ``%supernet`` (e.g.
``flops=25%supernet``) spells the older share of the full supernet (max depth, widest
candidates). Any other value is absolute. Latency and energy come from the target's cost
model, so they need a target. ``step-latency`` is the latency of one streaming step (one new
interaction with the key/value cache kept, ``models/streaming.py``), priced by the target's
cost model through ``cost/streaming.py``; a search under it builds a start-anchored supernet,
so the subnet it picks can stream.

Example::

    budget = parse_budget("latency=25%")    # Budget("latency", 0.25, relative_to="baseline")
    limit = budget.limit(reference=4.2)      # 1.05 (ms): a quarter of the baseline's 4.2 ms
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dnsrec_edge.errors import BudgetError

KINDS = ("flops", "latency", "energy", "step-latency")
RELATIVE_TO = ("baseline", "supernet")
UNITS = {
    "flops": {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9},
    "latency": {"ms": 1.0, "us": 1e-3, "s": 1e3},
    "energy": {"mj": 1.0, "uj": 1e-3, "j": 1e3},
}
UNITS["step-latency"] = UNITS["latency"]
ACCEPTED = (
    "latency=25% (share of the baseline), flops=25%supernet (share of the full supernet), "
    "flops=30M, latency=1.5ms, energy=2mJ or step-latency=0.05ms (one streaming step)"
)
_PATTERN = re.compile(
    r"^\s*([a-z-]+)\s*=\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*%?[a-z]*)\s*$"
)


@dataclass(frozen=True)
class Budget:
    """A budget kind and value; ``value`` is a fraction of the ``relative_to`` model's cost
    (``"baseline"`` or ``"supernet"``), or, when ``relative_to`` is ``None``, absolute in base
    units (FLOPs, milliseconds, millijoules)."""

    kind: str
    value: float
    relative_to: str | None = None

    @property
    def relative(self) -> bool:
        return self.relative_to is not None

    def limit(self, reference: float) -> float:
        """The absolute limit, given the reference model's cost for ``%`` budgets."""
        return self.value * reference if self.relative else self.value

    @property
    def metric(self) -> str:
        """The :class:`~dnsrec_edge.cost.model.Cost` field it limits: a step's latency is a
        latency (of the step model)."""
        return "latency" if self.kind == "step-latency" else self.kind

    @property
    def streaming(self) -> bool:
        """True for a budget on one streaming step (the search builds a start-anchored space)."""
        return self.kind == "step-latency"

    @property
    def unit(self) -> str:
        return {"flops": "FLOPs", "latency": "ms", "energy": "mJ"}[self.metric]

    def to_dict(self) -> dict:
        """``{"kind", "value", "relative_to", "text", "unit"}`` (plain data for run files)."""
        return {
            "text": str(self),
            "kind": self.kind,
            "value": self.value,
            "relative": self.relative,
            "relative_to": self.relative_to,
            "unit": self.unit,
        }

    def __str__(self) -> str:
        if self.relative:
            suffix = "%supernet" if self.relative_to == "supernet" else "%"
            return f"{self.kind}={self.value * 100:g}{suffix}"
        return f"{self.kind}={self.value:g}{'' if self.kind == 'flops' else self.unit}"


def budget_from_dict(d: dict) -> Budget:
    """Read a budget written by :meth:`Budget.to_dict`, or by a run folder from before
    ``relative_to`` existed (where every ``%`` budget was a share of the full supernet)."""
    relative_to = d.get("relative_to")
    if relative_to is None and d.get("relative"):
        relative_to = "supernet"
    return Budget(d["kind"], float(d["value"]), relative_to)


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
    if unit.startswith("%"):
        relative_to = unit[1:] or "baseline"
        if relative_to not in RELATIVE_TO:
            raise BudgetError(
                f"unknown reference '{relative_to}' in '{text}'; a share is of the baseline "
                f"('{kind}=25%') or of the full supernet ('{kind}=25%supernet')"
            )
        if relative_to == "supernet" and value > 100:
            raise BudgetError(
                f"budget '{text}' is over 100% of the full supernet; use at most 100%"
            )
        return Budget(kind, value / 100.0, relative_to)
    if unit == "" and kind != "flops":
        raise BudgetError(f"budget '{text}' needs a unit; use {ACCEPTED}")
    scale = UNITS[kind].get(unit)
    if scale is None:
        units = ", ".join(u or "(none)" for u in UNITS[kind]) + ", %"
        raise BudgetError(
            f"unknown unit '{unit}' for a {kind} budget in '{text}'; use one of {units} as in "
            f"{ACCEPTED}"
        )
    return Budget(kind, value * scale)
