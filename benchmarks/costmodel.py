"""Cost-model accuracy on a target's measurement records (run by hand; never asserted in tests).

Reports, on the records of the target's newest board:
- held-out error (5-fold cross-validation over architectures) of the calibrated model, the
  roofline prior and the best FLOPs-only fit, and feature ablations;
- a learning curve: one fixed held-out set of architectures, the prior's error on it, then the
  error of fits (``CalibratedModel.fit``, as ``calibrate`` makes them) on growing training
  sets, averaged over several random orders of the training pool; with ``--start T`` also the
  curve of fits that start from target T's existing model (a new board or build flavour:
  how many records it needs to reach 95 % within +-10 %);
- the noise floor: how far single measurement rounds lie from their median over rounds;
- the time one prediction takes.

    .venv/bin/python benchmarks/costmodel.py --target x86_64            # -> results/costmodel.json
    .venv/bin/python benchmarks/costmodel.py --target x86_64 --quick    # smoke run
    .venv/bin/python benchmarks/costmodel.py --target x86_64-avx512 \
        --calibration-dir /path/to/store --start x86_64 --out results/costmodel-host.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace
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
    load_cost_model,
    repeatability,
    select_records,
)
from dnsrec_edge.cost.records import load_records, merge_duplicates
from dnsrec_edge.errors import CalibrationError
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


def learning_curve(
    facts: TargetFacts,
    records: list[dict],
    statistic: str,
    sizes: list[int],
    heldout_share: float,
    seed: int,
    orders: int = 10,
    start: CalibratedModel | None = None,
) -> dict:
    """Errors on one fixed held-out set of architectures: the prior's (or ``start``'s) with no
    records, then of ``fit`` on the first n of the training pool, for ``orders`` random orders
    of the pool (mean and range of the share within +-10 %)."""
    merged = merge_duplicates(records, statistic)
    rng = random.Random(seed)
    rng.shuffle(merged)
    n_held = max(1, round(heldout_share * len(merged)))
    held, pool = merged[:n_held], merged[n_held:]
    measured = np.array([r["latency_ms"][statistic] for r in held])
    archs = [ArchSpec.from_dict(r["arch"]) for r in held]
    # the start model's exact lookups are of its own board: price with its coefficients only
    base = replace(start, lookup={}) if start else CalibratedModel.prior(facts)

    def errors(model: CalibratedModel) -> dict:
        predicted = np.array([model.predict(a).latency_ms for a in archs])
        return error_stats(measured, predicted)

    curve = [{"records": 0, "model": "start" if start else "roofline prior", **errors(base)}]
    for n in sizes:
        if n > len(pool):
            break
        runs = []
        for k in range(orders):
            train = random.Random(seed * 1000 + k).sample(pool, n)
            try:
                runs.append(errors(CalibratedModel.prior(facts).fit(train, start=start)))
            except CalibrationError:  # too few records for a fit from the prior
                break
        if not runs:
            continue
        within = [r["within10"] for r in runs]
        curve.append(
            {
                "records": n,
                "model": "fitted from start" if start else "fitted",
                "orders": len(runs),
                "within10": round(float(np.mean(within)), 4),
                "within10_range": [min(within), max(within)],
                "mape": round(float(np.mean([r["mape"] for r in runs])), 3),
                "n": runs[0]["n"],
            }
        )
    return {"heldout_archs": n_held, "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="x86_64")
    parser.add_argument("--calibration-dir", default=None)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer sizes, no ablations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--start", default=None, help="also fit from this target's existing model (transfer)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "costmodel.json"))
    args = parser.parse_args()

    facts = TargetFacts.of(args.target)
    records = load_records(facts.name, args.calibration_dir)
    chosen, note = select_records(records)
    model = CalibratedModel.prior(facts).fit(records, seed=args.seed)
    data = fit_data(chosen, model.statistic, model.cache_mb, model.lanes)
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
    result["cache_mb"] = model.cache_mb
    sizes = [MIN_RECORDS, 20] if args.quick else [MIN_RECORDS, 16, 20, 24, 30, 40]
    result["learning_curve"] = learning_curve(
        facts, chosen, model.statistic, sizes, 0.25, args.seed
    )
    if args.start:  # the same held-out set, fits starting from the start target's model
        start = load_cost_model(args.start)
        small = [1, 2, 3, 4, 5, 6, 8, 10] if not args.quick else [1, 2, 5]
        result["transfer"] = {
            "start": {
                "target": start.target,
                "board": start.meta.get("board"),
                "source": start.meta.get("source"),
            },
            **learning_curve(
                facts, chosen, model.statistic, small + sizes, 0.25, args.seed, start=start
            ),
        }
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
