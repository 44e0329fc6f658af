"""Closing the loop: measure a searched architecture and compare with its budget and prediction.

Takes the ``arch.json`` of a latency-budget search, compiles the architecture for the target,
measures it as calibration does (records go to the store, so the next fit includes them) and
reports measured vs predicted vs budget. Run by hand; never asserted in tests.

    .venv/bin/dnsrec-edge search -d ml-100k -b latency=0.6ms -t x86_64 --max-len 50 -o /tmp/s
    .venv/bin/python benchmarks/budget_loop.py --arch /tmp/s/arch.json --budget-ms 0.6 --threads 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dnsrec_edge.bench.calibrate import measure_architecture
from dnsrec_edge.cost.calibrated import load_cost_model
from dnsrec_edge.cost.check import check_against_budget
from dnsrec_edge.models.archspec import ArchSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True, help="arch.json of the searched architecture")
    parser.add_argument("--budget-ms", type=float, required=True)
    parser.add_argument("--target", default="x86_64")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration-dir", default=None)
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "budget_loop.json")
    )
    args = parser.parse_args()

    arch = ArchSpec.load(args.arch)
    model = load_cost_model(args.target, args.calibration_dir)
    measured = measure_architecture(
        arch,
        args.target,
        threads=args.threads,
        rounds=1 if args.quick else args.rounds,
        statistic=model.statistic,
        calibration_dir=args.calibration_dir,
    )
    check = check_against_budget(
        arch, args.target, measured, args.budget_ms, "latency", args.calibration_dir
    )
    result = {
        "arch": arch.to_dict(),
        "statistic": model.statistic,
        "threads": args.threads,
        **check.to_dict(),
        "summary": check.summary(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(check.summary())


if __name__ == "__main__":
    main()
