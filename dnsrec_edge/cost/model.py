"""The ``CostModel`` interface and the exact analytic FLOPs model.

A cost model predicts what one ``predict`` call of an :class:`ArchSpec` costs on a target.
The search asks it for per-candidate costs; the calibrated per-target latency and energy
models (``cost/calibrated.py``) implement the same interface.

Example::

    model = FlopsModel(batch=1)
    cost = model.predict(arch, target=None)   # Cost(flops=..., latency_ms=None, energy_mj=None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from dnsrec_edge.cost.analysis import analyze
from dnsrec_edge.models.archspec import ArchSpec


@dataclass(frozen=True)
class Cost:
    """Predicted cost of one inference; a field is ``None`` where the model cannot say."""

    flops: float
    latency_ms: float | None = None
    energy_mj: float | None = None

    def get(self, kind: str) -> float:
        """The figure for a budget kind: ``flops``, ``latency`` or ``energy``."""
        value = {"flops": self.flops, "latency": self.latency_ms, "energy": self.energy_mj}[kind]
        if value is None:
            raise KeyError(kind)
        return value


class CostModel(Protocol):
    """Predicts the cost of an ArchSpec on a target; may learn from measurement records."""

    def predict(self, arch: ArchSpec, target: Any = None) -> Cost: ...

    def fit(self, records: list[dict[str, Any]]) -> Any: ...


@dataclass(frozen=True)
class FlopsModel:
    """Exact analytic FLOPs of ``SASRec.predict``; knows nothing of time or energy."""

    batch: int = 1
    seq_len: int | None = None

    def predict(self, arch: ArchSpec, target: Any = None) -> Cost:
        return Cost(flops=float(analyze(arch, self.batch, self.seq_len).flops))

    def fit(self, records: list[dict[str, Any]]) -> FlopsModel:
        """FLOPs need no fitting; returns itself."""
        return self
