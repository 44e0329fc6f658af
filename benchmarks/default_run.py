"""The README's main command on a fresh run folder, per seed: accuracy, latency ratios, time.

Runs ``dnsrec-edge pipeline --seed S --out runs/default-seedS`` (the embedded default:
ml-100k, the short preset, benched on this host, plus an arm64 artifact) one seed after
another, each in a fresh folder, and collects from each run: the baseline's and the subnet's
full-ranking HR@10 / NDCG@10 / MRR@10 (test), their TVM latency (median, p99, from ``bench``)
and their ONNX Runtime latency on the same ONNX files (interleaved, from ``bench``), the
subnet's architecture, and the wall time of the whole command. Results:
``benchmarks/results/default_run.json`` with per-seed figures and the mean ± std.

    python benchmarks/default_run.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipeline_runs import METRICS, run_figures, stats  # beside this script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def one_seed(seed: int, keep: bool, prefix: str) -> dict:
    run = ROOT / "runs" / f"{prefix}-seed{seed}"
    if run.exists() and not keep:
        shutil.rmtree(run)
    cmd = [str(ROOT / ".venv" / "bin" / "dnsrec-edge"), "--quiet", "pipeline", "--seed", str(seed)]
    cmd += ["--out", str(run)]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    fig = run_figures(run)
    entry = {
        "seed": seed,
        "wall_seconds": round(wall, 1),
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "baseline": {k: fig["baseline"]["full"][k] for k in METRICS},
        "dnsrec": {k: fig["dnsrec"]["full"][k] for k in METRICS},
        "arch": fig["dnsrec"]["arch"],
        "budget": fig["budget"],
        "front_measured_share": fig["front_measured_share"],
        "stage_seconds": fig["stage_seconds"],
        "ndcg_share": fig["ndcg_share"],
    }
    for runtime in ("tvm", "ort"):
        ms = fig["latency_ms"][runtime]
        entry[f"{runtime}_ms"] = {m: ms[m]["median"] for m in ("baseline", "dnsrec")}
        entry[f"{runtime}_share"] = fig[f"{runtime}_share"]
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--keep", action="store_true", help="resume existing run folders")
    parser.add_argument("--note", default="", help="how the machine was shared during the runs")
    parser.add_argument("--prefix", default="default", help="run folders runs/PREFIX-seedS")
    args = parser.parse_args()
    runs = [one_seed(s, args.keep, args.prefix) for s in args.seeds]
    result = {
        "command": f"dnsrec-edge pipeline --seed S --out runs/{args.prefix}-seedS",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "note": args.note,
        "seeds": runs,
        "summary": {
            key: stats([r[key] for r in runs])
            for key in ("ndcg_share", "tvm_share", "ort_share", "wall_seconds")
        }
        | {
            "baseline_ndcg@10": stats([r["baseline"]["ndcg@10"] for r in runs]),
            "dnsrec_ndcg@10": stats([r["dnsrec"]["ndcg@10"] for r in runs]),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / "default_run.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(RESULTS / "default_run.json")
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
