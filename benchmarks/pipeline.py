"""The whole pipeline on this host: each stage's wall (and CPU) time and the final table.

Runs ``dnsrec_edge.pipeline`` (default: ml-1m, preset ``full``, budget latency=40%, benched on
this x86_64 host, plus an arm64 artifact), then runs it again to time a rerun that reuses
every finished stage. Writes ``benchmarks/results/pipeline.json``.

    .venv/bin/python benchmarks/pipeline.py                 # full ml-1m run (about 70 min on 2 cores)
    .venv/bin/python benchmarks/pipeline.py --quick         # ml-100k smoke run (minutes)

The run folder is kept (default ``runs/bench-<dataset>``): rerunning the script resumes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m", help="dataset name or file (default ml-1m)")
    parser.add_argument("--preset", default="full", help="full, short or smoke (default full)")
    parser.add_argument(
        "--budget",
        default="latency=40%",
        help="search budget (default latency=40%%, of the baseline)",
    )
    parser.add_argument("--target", default="x86_64", help="benched target (default x86_64)")
    parser.add_argument(
        "--artifact-target", action="append", default=None, help="also compile (default arm64)"
    )
    parser.add_argument("--run-dir", help="run folder (default runs/bench-<dataset>)")
    parser.add_argument("--calibration-dir", help="cost-model store (default the user store)")
    parser.add_argument("--threads", type=int, help="torch threads (default all cores)")
    parser.add_argument("--quick", action="store_true", help="ml-100k, preset smoke")
    parser.add_argument("--out", help="result JSON (default benchmarks/results/pipeline.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.preset = "ml-100k", "smoke"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from dnsrec_edge import pipeline
    from dnsrec_edge.pipeline.summaries import render_table

    run_dir = Path(args.run_dir or f"runs/bench-{Path(args.dataset).stem}")
    kwargs = {
        "target": args.target,
        "budget": args.budget,
        "artifact_targets": tuple(args.artifact_target or ["arm64"]),
        "out": run_dir,
        "preset": args.preset,
        "calibration_dir": args.calibration_dir,
        "threads": args.threads,
    }
    t0 = time.perf_counter()
    result = pipeline(args.dataset, **kwargs)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = pipeline(args.dataset, quiet=True, **kwargs)
    rerun = time.perf_counter() - t0
    print(render_table(result))
    print(f"first call {first:.0f} s, rerun {rerun:.1f} s (reused {len(again.reused())} stages)")

    summary = result.summary
    out = {
        "host": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "note": "shared machine: other jobs ran at the same time; CPU seconds are this "
            "process's threads (compile and bench child processes not included)",
        },
        "dataset": args.dataset,
        "preset": args.preset,
        "budget": args.budget,
        "target": args.target,
        "artifact_targets": list(kwargs["artifact_targets"]),
        "run_dir": str(run_dir),
        "stages": {
            name: {
                "wall_seconds": round(o.wall_seconds, 2),
                "cpu_seconds": None if o.cpu_seconds is None else round(o.cpu_seconds, 2),
                "reused_in_first_call": o.skipped,
            }
            for name, o in result.stages.items()
        },
        "total_stage_wall_seconds": round(sum(o.wall_seconds for o in result.stages.values()), 1),
        "first_call_seconds": round(first, 1),
        "rerun_seconds": round(rerun, 2),
        "rerun_reused": again.reused(),
        "models": summary["models"],
        "targets": summary["targets"],
    }
    path = Path(args.out) if args.out else RESULTS / "pipeline.json"
    if args.quick and not args.out:
        path = RESULTS / "pipeline-quick.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
