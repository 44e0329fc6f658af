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
    "load_dataset": "dnsrec_edge.data.load",
    "Dataset": "dnsrec_edge.data.dataset",
    "train_baseline": "dnsrec_edge.train.trainer",
    "train_model": "dnsrec_edge.train.trainer",
    "TrainConfig": "dnsrec_edge.train.config",
    "evaluate": "dnsrec_edge.evaluate",
    "evaluate_checkpoint": "dnsrec_edge.train.evaluation",
    "load_checkpoint": "dnsrec_edge.train.checkpoint",
    "save_checkpoint": "dnsrec_edge.train.checkpoint",
    "compile": "dnsrec_edge.compile.build",
    "load_artifact": "dnsrec_edge.compile.artifact",
    "Artifact": "dnsrec_edge.compile.artifact",
    "Target": "dnsrec_edge.compile.targets",
    "load_target": "dnsrec_edge.compile.targets",
    "list_targets": "dnsrec_edge.compile.targets",
    "Supernet": "dnsrec_edge.search.supernet",
    "search": "dnsrec_edge.search.run",
    "retrain": "dnsrec_edge.search.retrain",
    "parse_budget": "dnsrec_edge.search.budget",
    "SearchConfig": "dnsrec_edge.search.loop",
    "SearchSpace": "dnsrec_edge.search.space",
    "export_onnx": "dnsrec_edge.export.onnx_export",
    "validate_onnx": "dnsrec_edge.export.validate",
    "materialize": "dnsrec_edge.prune.materialize",
    "prune_baseline": "dnsrec_edge.prune.baseline",
    "prune_run": "dnsrec_edge.prune.run",
    "export_checkpoint": "dnsrec_edge.export.checkpoint",
    "export_streaming": "dnsrec_edge.export.streaming",
    "StreamingStep": "dnsrec_edge.models.streaming",
    "StreamingSession": "dnsrec_edge.compile.session",
    "CalibratedModel": "dnsrec_edge.cost.calibrated",
    "load_cost_model": "dnsrec_edge.cost.calibrated",
    "load_records": "dnsrec_edge.cost.records",
    "append_measurement": "dnsrec_edge.cost.records",
    "calibrate": "dnsrec_edge.bench.calibrate",
    "check_against_budget": "dnsrec_edge.cost.check",
    "measure_architecture": "dnsrec_edge.bench.calibrate",
    "pipeline": "dnsrec_edge.pipeline.run",
    "PipelineResult": "dnsrec_edge.pipeline.run",
    "benchmark": "dnsrec_edge.bench.run",
    "BenchReport": "dnsrec_edge.bench.report",
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
