"""dnsrec-edge: DNS-Rec search, pruning, ONNX export, TVM compilation and on-device benchmarks.

The public Python API. Names are imported on first use so that ``import dnsrec_edge`` and
``dnsrec-edge --help`` stay fast (torch and TVM load only when needed).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "ArchSpec": "dnsrec_edge.models.archspec",
    "BlockSpec": "dnsrec_edge.models.archspec",
    "SASRec": "dnsrec_edge.models.sasrec",
    "Cost": "dnsrec_edge.cost.model",
    "CostModel": "dnsrec_edge.cost.model",
    "FlopsModel": "dnsrec_edge.cost.model",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'dnsrec_edge' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
