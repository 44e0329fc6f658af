"""Closing the loop: compare a selected architecture's measured cost with its budget and prediction.

Example::

    check = check_against_budget(arch, "x86_64", measured_ms=3.1, budget_ms=3.0)
    print(check.summary())   # latency 3.10 ms measured, 2.95 ms predicted (+5.1 %), budget 3.00 ms: ...
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dnsrec_edge.cost.calibrated import load_cost_model
from dnsrec_edge.errors import BudgetError
from dnsrec_edge.models.archspec import ArchSpec

TOLERANCE = 0.10  # a miss under 10 % counts as "near"


@dataclass(frozen=True)
class BudgetCheck:
    """Measured vs predicted vs budget for one architecture on one target."""

    target: str
    kind: str  # "latency" (ms) or "energy" (mJ)
    budget: float
    predicted: float
    measured: float
    model_kind: str  # "measured" or "prior"

    @property
    def meets(self) -> bool:
        return self.measured <= self.budget

    @property
    def miss_pct(self) -> float:
        """How far the measurement is over (+) or under (-) the budget, in percent."""
        return 100.0 * (self.measured / self.budget - 1.0)

    @property
    def prediction_error_pct(self) -> float:
        """Prediction error relative to the measurement, in percent."""
        return 100.0 * (self.predicted / self.measured - 1.0)

    @property
    def verdict(self) -> str:
        if self.meets:
            return "meets the budget"
        return (
            "misses by less than 10 %" if self.miss_pct < 100 * TOLERANCE else "misses the budget"
        )

    def summary(self) -> str:
        unit = "ms" if self.kind == "latency" else "mJ"
        return (
            f"{self.kind} {self.measured:.3f} {unit} measured, {self.predicted:.3f} {unit} predicted "
            f"({self.prediction_error_pct:+.1f} %, {self.model_kind} model), budget "
            f"{self.budget:.3f} {unit} ({self.miss_pct:+.1f} %): {self.verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "meets": self.meets,
            "miss_pct": round(self.miss_pct, 3),
            "prediction_error_pct": round(self.prediction_error_pct, 3),
            "verdict": self.verdict,
        }


def check_against_budget(
    arch: ArchSpec,
    target: Any,
    measured: float,
    budget: float,
    kind: str = "latency",
    calibration_dir: str | Path | None = None,
) -> BudgetCheck:
    """Compare a measured ``kind`` cost (ms or mJ) of ``arch`` with its budget and prediction."""
    if kind not in ("latency", "energy"):
        raise BudgetError(f"budget kind '{kind}' is not latency or energy")
    if not budget > 0 or not measured > 0:
        raise BudgetError(f"budget ({budget}) and measurement ({measured}) must be positive")
    model = load_cost_model(target, calibration_dir)
    cost = model.predict(arch)
    return BudgetCheck(
        model.target, kind, float(budget), cost.get(kind), float(measured), model.kind
    )
