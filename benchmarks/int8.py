"""int8 vs float32 for trained ml-1m models: size, latency (TVM and ONNX Runtime), accuracy.

For each checkpoint (``--model NAME=RUN/model.pt``, trained on ml-1m): the float32 export
and the ``export --quantize int8`` file (ONNX Runtime's static QDQ tools, calibrated on
validation histories), both at static batch 1; TVM default builds of both for ``--target``
(default ``host``); then, in one interleaved run at batch 1 on ``--threads`` threads, the
four runtimes' median and p99 latency on real ml-1m test histories. Accuracy is the export
check's: full-ranking test NDCG@10 (seen items excluded) of every test user under ONNX
Runtime, and the mean top-10 overlap of int8 with float32. ``--emulate`` also cross-compiles
each int8 file for arm64 and runs it on the emulated board (correctness only: the board's
scores against the host's ONNX Runtime scores of the same file).

Writes ``benchmarks/results/int8.json``::

    {"ml-1m": {"<model>": {"fp32": {"bytes", "artifact_bytes", "tvm_ms", "ort_ms", "ndcg@10"},
                           "int8": {...}, "top10_overlap"}}}

    .venv/bin/python benchmarks/int8.py --model baseline=RUN/model.pt --model subnet=RUN2/model.pt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from timing import interleaved  # noqa: E402  (benchmarks/timing.py)

RESULTS = Path(__file__).parent / "results" / "int8.json"


def artifact_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def on_emulated_board(int8_onnx: Path, folder: Path) -> dict:
    """Cross-compile for arm64 and bench on the emulated board: the board's scores of the
    artifact's reference input against the host's ONNX Runtime scores of the same file."""
    from dnsrec_edge.bench.emulate import EmulatedBoard
    from dnsrec_edge.bench.run import benchmark
    from dnsrec_edge.compile.build import compile as compile_model

    art = compile_model(int8_onnx, "arm64", folder / f"{int8_onnx.stem}-arm64", quiet=True)
    board = EmulatedBoard("arm64", quiet=True).start()
    try:
        report = benchmark(art.path, rpc=board.address, repeat=2, number=1, record=False).to_dict()
    finally:
        board.stop()
    return {
        "what": "correctness only (emulated timings say nothing about a board)",
        "max_abs_diff_vs_host_ort": report.get("max_abs_diff"),
        "top10_match": report.get("top10_match"),
    }


def bench_model(name: str, ckpt: Path, dataset, work: Path, args) -> dict:
    import onnxruntime as ort
    import tvm

    from dnsrec_edge.compile.artifact import set_threads
    from dnsrec_edge.compile.build import compile as compile_model
    from dnsrec_edge.data.batching import eval_inputs
    from dnsrec_edge.export.checkpoint import export_checkpoint

    paths, reports, arts = {}, {}, {}
    for precision in ("fp32", "int8"):
        t0 = time.perf_counter()
        paths[precision], reports[precision] = export_checkpoint(
            ckpt, work / f"{name}-{precision}.onnx", batch=1, dataset=dataset,
            quantize=None if precision == "fp32" else "int8",
        )  # fmt: skip
        export_s = time.perf_counter() - t0
        arts[precision] = compile_model(  # built for the thread count it is timed at
            paths[precision],
            args.target,
            work / f"{name}-{precision}",
            quiet=True,
            threads=args.threads,
        )
        print(f"{name} {precision}: exported in {export_s:.0f} s, compiled", flush=True)
    q = reports["int8"].quantized
    max_len = arts["fp32"].manifest["inputs"][0]["shape"][1]
    x = eval_inputs(dataset, "test", max_len)[0].numpy()
    rows = x[np.random.default_rng(0).choice(len(x), args.rows, replace=False)]

    set_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    fns, cursor = {}, {"i": 0}

    def pick() -> int:  # every call times the next test history
        cursor["i"] = (cursor["i"] + 1) % len(rows)
        return cursor["i"]

    inputs = [tvm.runtime.tensor(r[None], tvm.cpu()) for r in rows]
    for precision in ("fp32", "int8"):
        session = ort.InferenceSession(
            str(paths[precision]), options, providers=["CPUExecutionProvider"]
        )
        vm, w = arts[precision].load_vm(args.threads), arts[precision].weights()
        fns[f"ort_{precision}"] = lambda s=session: s.run(
            ["scores"], {"item_seq": rows[(i := pick()) : i + 1]}
        )
        fns[f"tvm_{precision}"] = lambda vm=vm, w=w: vm["main"](inputs[pick()], *w)
    times = interleaved(fns, args.rounds, args.per_round)
    out: dict = {}
    for precision in ("fp32", "int8"):
        out[precision] = {
            "bytes": paths[precision].stat().st_size,
            "artifact_bytes": artifact_bytes(arts[precision].path),
            "tvm_ms": times[f"tvm_{precision}"]["median"],
            "tvm_p99_ms": times[f"tvm_{precision}"]["p99"],
            "ort_ms": times[f"ort_{precision}"]["median"],
            "ort_p99_ms": times[f"ort_{precision}"]["p99"],
            "ndcg@10": q["ndcg_fp32"] if precision == "fp32" else q["ndcg_int8"],
        }
    out["top10_overlap"] = q["top10_overlap"]
    out["ratios"] = {
        "bytes": out["int8"]["bytes"] / out["fp32"]["bytes"],
        "artifact_bytes": out["int8"]["artifact_bytes"] / out["fp32"]["artifact_bytes"],
        "tvm_ms": out["int8"]["tvm_ms"] / out["fp32"]["tvm_ms"],
        "ort_ms": out["int8"]["ort_ms"] / out["fp32"]["ort_ms"],
        "ndcg@10": q["ndcg_ratio"],
    }
    out["arch"] = arts["fp32"].manifest["archspec"]
    out["test_users"] = q["users"]
    out["checkpoint"] = str(ckpt)
    out["target"] = arts["fp32"].manifest["target"]
    if args.emulate:
        out["emulated_arm64"] = on_emulated_board(paths["int8"], work)
    print(name, json.dumps({k: out[k] for k in ("fp32", "int8", "ratios")}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--target", default="host")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=200, help="test histories timed")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--emulate", action="store_true", help="int8 arm64 on the emulated board")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from dnsrec_edge.data.load import load_dataset
    from dnsrec_edge.fsio import atomic_write_json

    dataset = load_dataset(args.dataset, quiet=True)
    result = {
        "host": platform.machine(),
        "load_before": os.getloadavg(),
        "settings": {
            "batch": 1,
            "threads": args.threads,
            "rounds": args.rounds,
            "per_round": args.per_round,
            "rows": args.rows,
            "target": args.target,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        },  # fmt: skip
        args.dataset: {},
    }
    with tempfile.TemporaryDirectory(prefix="dnsrec-int8-") as tmp:
        for spec in args.model:
            name, _, ckpt = spec.partition("=")
            result[args.dataset][name] = bench_model(name, Path(ckpt), dataset, Path(tmp), args)
            atomic_write_json(args.out, result)  # each model as it lands
    result["load_after"] = os.getloadavg()
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
