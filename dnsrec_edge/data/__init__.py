"""Datasets: registry and fetch, readers, preprocessing, leave-one-out batching.

``Dataset`` and ``load_dataset`` are imported on first use, so that importing a submodule
(e.g. the readers' format list for the CLI) does not load pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"Dataset": "dnsrec_edge.data.dataset", "load_dataset": "dnsrec_edge.data.load"}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dnsrec_edge.data' has no attribute '{name}'")
    return getattr(importlib.import_module(_LAZY[name]), name)
