"""Cost-model accuracy on a target's measurement records (run by hand; never asserted in tests).

Reports, on the records of the target's newest board:
- held-out error (5-fold cross-validation over architectures) of the calibrated model, the
  roofline prior and the best FLOPs-only fit, and feature ablations;
- a learning curve: one fixed held-out set of architectures, the prior's error on it, then the
  error of fits on growing training sets (adding records improves a poor prior);
- the noise floor: how far single measurement rounds lie from their median over rounds;
- the time one prediction takes.

    .venv/bin/python benchmarks/costmodel.py --target x86_64            # -> results/costmodel.json
    .venv/bin/python benchmarks/costmodel.py --target x86_64 --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from dnsrec_edge.cost.calibrated import (
    FEATURES,
    MIN_RECORDS,
    CalibratedModel,
    TargetFacts,
    cross_validate,
    error_stats,
    fit_data,
    nnls_relative,
    prior_coefficients,
    repeatability,
    select_records,
)
from dnsrec_edge.cost.records import load_records
from dnsrec_edge.models.archspec import ArchSpec

MATMUL = [f for f in FEATURES if "gemm" in f or "gemv" in f]
# Each ablation merges feature columns (summed) into one, to show what each split buys.
ABLATIONS = {
    "all matmuls as one feature": {"matmul": MATMUL},
    "no vector/scalar split": {
        "gemm": [f for f in MATMUL if f.startswith("gemm")],
        "gemv": [f for f in MATMUL if f.startswith("gemv")],
    },
    "no 16/8-column tile split": {
        "gemm": ["gemm_gflop", "gemm8_gflop"],
        "gemv": ["gemv_gflop", "gemv8_gflop"],
    },
    "no gemv/gemm split": {
        "vector": ["gemm_gflop", "gemv_gflop", "gemm8_gflop", "gemv8_gflop"],
        "scalar": ["gemm_scalar_gflop", "gemv_scalar_gflop"],
        "scalar_par": ["gemm_scalar_par_gflop", "gemv_scalar_par_gflop"],
    },
    "no thread-pool split": {
        "gemm_scalar": ["gemm_scalar_gflop", "gemm_scalar_par_gflop"],
        "gemv_scalar": ["gemv_scalar_gflop", "gemv_scalar_par_gflop"],
        "elementwise": ["softmax_par_gflop", "other_gflop"],
    },
    "without kernels and overhead": {"overhead": [], "kernels": []},
}


def ablation(x: np.ndarray, y: np.ndarray, merges: dict[str, list[str]]) -> dict:
    """Cross-validated error with some feature columns merged (an empty list drops one)."""
    merged = {f for group in merges.values() for f in group}
    merged |= {name for name, group in merges.items() if not group}
    cols = [x[:, FEATURES.index(f)] for f in FEATURES if f not in merged]
    for group in merges.values():
        if group:
            cols.append(x[:, [FEATURES.index(f) for f in group]].sum(axis=1))
    return error_stats(y, cross_validate(np.stack(cols, axis=1), y))


def learning_curve(facts: TargetFacts, data, sizes: list[int], heldout_share: float, seed: int):
    """Errors on one fixed held-out set: the prior's, then fits on the first n training records."""
    order = list(range(len(data.latency)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(heldout_share * len(order)))
    held, pool = order[:n_held], order[n_held:]
    y_held = data.latency[held]
    poor = prior_coefficients(facts)
    out = [
        {
            "records": 0,
            "model": "roofline prior",
            **error_stats(y_held, data.x[held] @ np.array([poor[f] for f in FEATURES])),
        }
    ]
    for n in sizes:
        if n > len(pool):
            break
        train = pool[:n]
        coef = nnls_relative(data.x[train], data.latency[train])
        out.append({"records": n, "model": "fitted", **error_stats(y_held, data.x[held] @ coef)})
    return {"heldout_archs": n_held, "curve": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="x86_64")
    parser.add_argument("--calibration-dir", default=None)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer sizes, no ablations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "costmodel.json"))
    args = parser.parse_args()

    facts = TargetFacts.of(args.target)
    records = load_records(facts.name, args.calibration_dir)
    chosen, note = select_records(records)
    model = CalibratedModel.prior(facts).fit(records, seed=args.seed)
    data = fit_data(chosen, model.statistic)
    result = {
        "target": facts.name,
        "board": model.meta["board"],
        "threads": model.meta.get("threads"),
        "records": len(chosen),
        "architectures": len(data.latency),
        "latency_range_ms": [float(data.latency.min()), float(data.latency.max())],
        "note": note.strip("; ") or None,
        "heldout": model.meta["heldout"],
        "prior_heldout": model.meta["prior_heldout"],
        "flops_only_heldout": model.meta["flops_only_heldout"],
        "repeatability": repeatability(data.records),
        "coefficients": model.coefficients,
    }
    if not args.quick:
        result["ablations"] = {
            name: ablation(data.x, data.latency, merges) for name, merges in ABLATIONS.items()
        }
    sizes = [MIN_RECORDS, 20] if args.quick else [MIN_RECORDS, 16, 20, 24, 30, 40]
    result["learning_curve"] = learning_curve(facts, data, sizes, 0.25, args.seed)
    archs = [ArchSpec.from_dict(r["arch"]) for r in data.records[:20]]
    t0 = time.perf_counter()
    for arch in archs:
        model.predict(arch)
    result["predict_us"] = round(1e6 * (time.perf_counter() - t0) / len(archs), 1)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
