"""Figures of a finished ``dnsrec-edge pipeline`` run folder, for the benchmarks that drive it.

``run_figures(run)`` reads the stages' ``done.json`` files: both models' test metrics (full
ranking and pop100), size, training time, the subnet's architecture, the search's budget and
time, and the bench stage's latency of both models under TVM and under ONNX Runtime on the same
ONNX files (median and p99, batch 1), with the subnet's shares of the baseline.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

METRICS = ("hr@10", "ndcg@10", "mrr@10")
STAGES = ("baseline", "search", "prune", "finetune", "export", "compile", "bench")
# runtime -> (key of the bench stage's latency, its median and p99 statistics)
RUNTIMES = {
    "tvm": ("latency_ms", "median", "p99"),
    "ort": ("ort_latency_ms", "median_ms", "p99_ms"),
}


def done(run: Path, stage: str) -> dict:
    """The whole ``done.json`` of one finished stage (its result is under ``"result"``)."""
    return json.loads((run / "stages" / stage / "done.json").read_text())


def _model(result: dict) -> dict:
    test = result["test"]
    return {
        **{
            p: {k: test[p][k] for k in METRICS if k in test[p]}
            for p in ("full", "pop100")
            if p in test
        },
        "params": result["params"],
        "flops": result["flops"],
        "train_seconds": result["train_seconds"],
        "epochs": result["epochs"],
        "best_epoch": result["best_epoch"],
        "arch": result["arch"],
    }


def run_figures(run: Path) -> dict:
    """The figures of the finished pipeline run folder ``run``."""
    base, sub = done(run, "baseline")["result"], done(run, "finetune")["result"]
    search, bench = done(run, "search")["result"], done(run, "bench")["result"]
    entry = {
        "run": str(run),
        "baseline": _model(base),
        "dnsrec": _model(sub),
        "budget": search["budget"],
        "front_measured_share": search.get("measured_share"),
        "search_seconds": search["search_seconds"],
        "warmup_reused": search.get("warmup_reused", False),
        "stage_seconds": {s: done(run, s).get("wall_seconds") for s in STAGES},
        # this process's CPU time per stage: comparable when runs share the machine
        "stage_cpu_seconds": {s: done(run, s).get("cpu_seconds") for s in STAGES},
        "warmup_cpu_seconds": search.get("warmup_cpu_seconds"),  # a reused warm-up's cost
        "latency_ms": {},
    }
    entry["ndcg_share"] = sub["test"]["full"]["ndcg@10"] / base["test"]["full"]["ndcg@10"]
    for runtime, (key, median, p99) in RUNTIMES.items():
        figures = {
            m: {"median": bench[m][key][median], "p99": bench[m][key][p99]}
            for m in ("baseline", "dnsrec")
        }
        entry["latency_ms"][runtime] = figures
        entry[f"{runtime}_share"] = figures["dnsrec"]["median"] / figures["baseline"]["median"]
    return entry


def cpu_time_ratio(entry: dict) -> float | None:
    """Search (with a reused warm-up's cost) plus prune plus fine-tune over the baseline's
    training, in CPU seconds; None when a stage kept no CPU time."""
    cpu = entry["stage_cpu_seconds"]
    parts = [cpu[k] for k in ("baseline", "search", "prune", "finetune")]
    if any(v is None for v in parts):
        return None
    return (sum(parts[1:]) + (entry.get("warmup_cpu_seconds") or 0.0)) / parts[0]


def stats(values: list[float]) -> dict:
    """Mean, standard deviation (None for one value), min and max."""
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
    }
