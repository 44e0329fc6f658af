"""Local x86_64 bench of a baseline and a pruned artifact, side by side, with the ratio.

Runs ``dnsrec_edge.benchmark`` (in-process board, ``--local``) on both artifacts in
alternating rounds so both see the same machine load, and reports the median over rounds of
each round's median latency, the ratio, throughput and library sizes. Writes
``benchmarks/results/bench_local.json``. Nothing is recorded in the calibration store.

    .venv/bin/python benchmarks/bench_local.py BASELINE_ARTIFACT PRUNED_ARTIFACT
    .venv/bin/python benchmarks/bench_local.py --quick      # builds two tiny artifacts first

Artifacts come from ``dnsrec-edge compile`` or a pipeline run
(``<run>/stages/compile/x86_64/{baseline,dnsrec}``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

from dnsrec_edge.bench.run import benchmark

RESULTS = Path(__file__).parent / "results" / "bench_local.json"


def tiny_pair(folder: Path) -> tuple[Path, Path]:
    """A tiny two-block SASRec and a one-block, narrower 'pruned' one, compiled for x86_64."""
    import torch

    from dnsrec_edge.compile.build import compile as compile_model
    from dnsrec_edge.export.onnx_export import export_onnx
    from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
    from dnsrec_edge.models.sasrec import SASRec

    specs = {
        "baseline": ArchSpec(500, 50, 32, (BlockSpec(2, 16, 64), BlockSpec(2, 16, 64))),
        "pruned": ArchSpec(500, 50, 32, (BlockSpec(1, 16, 32),)),
    }
    out = []
    for name, spec in specs.items():
        torch.manual_seed(0)
        onnx_path = export_onnx(SASRec(spec).eval(), folder / f"{name}.onnx")
        out.append(compile_model(onnx_path, "x86_64", folder / name, quiet=True).path)
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", nargs="?", type=Path, help="baseline artifact folder")
    parser.add_argument("pruned", nargs="?", type=Path, help="pruned artifact folder")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per artifact")
    parser.add_argument("--repeat", type=int, default=50, help="timed samples per round")
    parser.add_argument("--number", type=int, default=20, help="calls per sample")
    parser.add_argument("--threads", type=int, default=1, help="TVM worker threads")
    parser.add_argument("--quick", action="store_true", help="tiny artifacts, 2 short rounds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.rounds, args.repeat, args.number = 2, 10, 5
            if args.baseline is None:
                args.baseline, args.pruned = tiny_pair(Path(tmp))
        if args.baseline is None or args.pruned is None:
            parser.error("give BASELINE and PRUNED artifact folders (or --quick)")
        arts = {"baseline": args.baseline, "pruned": args.pruned}
        medians: dict[str, list[float]] = {k: [] for k in arts}
        reports = {}
        for _ in range(args.rounds):
            for name, path in arts.items():
                r = benchmark(
                    path,
                    threads=args.threads,
                    warmup=20,
                    repeat=args.repeat,
                    number=args.number,
                    energy="model",
                    record=False,
                )
                medians[name].append(r.latency_ms()["median"])
                reports[name] = r.to_dict()
    result = {
        "host": platform.processor() or platform.machine(),
        "settings": {k: getattr(args, k) for k in ("rounds", "repeat", "number", "threads")},
        "note": "medians over rounds of each round's median; rounds alternate the artifacts",
    }
    for name in arts:
        d = reports[name]
        result[name] = {
            "artifact": str(arts[name]),
            "archspec": d["archspec"],
            "median_ms": statistics.median(medians[name]),
            "round_medians_ms": medians[name],
            "p99_ms_last_round": d["latency_ms"]["p99"],
            "library_bytes": d["library_bytes"],
            "throughput_per_s_last_round": d["throughput_per_s"],
            "max_abs_diff": d["max_abs_diff"],
            "top10_match": d["top10_match"],
        }
    result["ratio_median_pruned_over_baseline"] = (
        result["pruned"]["median_ms"] / result["baseline"]["median_ms"]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name in arts:
        print(
            f"{name:>8}: median {result[name]['median_ms']:.4f} ms "
            f"(rounds {', '.join(f'{m:.4f}' for m in medians[name])})"
        )
    print(
        f"   ratio: {result['ratio_median_pruned_over_baseline']:.3f} (pruned / baseline); "
        f"wrote {args.out}"
    )


if __name__ == "__main__":
    main()
