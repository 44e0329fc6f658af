"""Benchmark TVM builds against PyTorch eager and ONNX Runtime on this x86_64 host.

For the baseline SASRec and a smaller DNS-Rec-like subnet, at batch 1 and 64: latency medians
measured side by side in one interleaved run (PyTorch eager, ONNX Runtime, TVM default build,
TVM tuned), plus compile and tuning time. Writes benchmarks/results/compile.json.

    .venv/bin/python benchmarks/compile.py              # full run
    .venv/bin/python benchmarks/compile.py --quick      # smoke run (tiny model, few trials)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dnsrec_edge.compile.artifact import set_threads
from dnsrec_edge.compile.build import compile as compile_model
from dnsrec_edge.export.onnx_export import export_onnx
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec

RESULTS = Path(__file__).parent / "results" / "compile.json"
# ml-1m after 5-core filtering has 3,416 items; baseline: hidden 64, 2 blocks, 4 heads, FFN 256.
MODELS = {
    "baseline": ArchSpec(3416, 200, 64, (BlockSpec(4, 16, 256), BlockSpec(4, 16, 256))),
    # a DNS-Rec-style pruned subnet: fewer heads, narrower FFNs, data-aware gates kept
    "subnet": ArchSpec(
        3416, 200, 64, (BlockSpec(2, 16, 128, gate_hidden=16), BlockSpec(2, 16, 64, gate_hidden=16))
    ),
}
QUICK = {"tiny": ArchSpec(500, 50, 32, (BlockSpec(2, 16, 64), BlockSpec(2, 16, 64)))}


def host_target() -> str:
    """The widest x86_64 preset this CPU runs."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx512f" in flags:
        return "x86_64-avx512"
    if " avx2" in flags:
        return "x86_64-avx2"
    return "x86_64"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def interleaved_medians(fns: dict, rounds: int, per_round: int) -> dict[str, float]:
    """Median ms per call of each function, measured in alternating blocks."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm up
        for _ in range(5):
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(per_round):
                t = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t) * 1e3)
    return {k: float(np.median(v)) for k, v in samples.items()}


def bench_model(name, arch, batches, trials, work: Path, rounds: int, tune_batches=(1, 64)) -> dict:
    import onnxruntime as ort
    import tvm

    torch.manual_seed(0)
    model = SASRec(arch).eval()
    onnx_path = export_onnx(model, work / f"{name}.onnx")
    target = host_target()
    out = {}
    for batch in batches:
        key = f"b{batch}"
        t0 = time.perf_counter()
        default = compile_model(
            onnx_path, target, work / f"{name}-{key}-default", batch=batch, quiet=True
        )
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        tuned = (
            default
            if batch not in tune_batches
            else compile_model(
                onnx_path,
                target,
                work / f"{name}-{key}-tuned",
                batch=batch,
                tune=True,
                trials=trials,
                tuning_db=work / f"db-{name}-{key}",
                quiet=True,
            )
        )
        tuned_compile_s = time.perf_counter() - t0

        rng = np.random.default_rng(0)
        x = rng.integers(1, arch.n_items + 1, (batch, arch.max_len)).astype(np.int64)
        xt = torch.from_numpy(x)
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count()
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        # PyTorch eager on its own and on one thread: with 2 OpenMP threads on 2 busy shared
        # cores it ran 100x slower here (barrier waits), which measures contention, not torch.
        torch.set_num_threads(1)
        with torch.no_grad():
            torch_ms = interleaved_medians(
                {"torch": lambda xt=xt: model.predict(xt)}, rounds, 20 if batch == 1 else 3
            )["torch"]
        fns = {
            "torch": lambda xt=xt: model.predict(xt),
            "ort": lambda s=session, x=x: s.run(None, {"item_seq": x}),
        }
        per_threads = {}
        for threads in sorted({1, os.cpu_count()}):
            set_threads(threads)
            dvm, tvm_ = default.load_vm(), tuned.load_vm()
            xi = tvm.runtime.tensor(x, tvm.cpu())
            fns_t = {
                **fns,
                "tvm_default": lambda vm=dvm, xi=xi: vm["main"](xi),
                "tvm_tuned": lambda vm=tvm_, xi=xi: vm["main"](xi),
            }
            with torch.no_grad():
                per_threads[threads] = interleaved_medians(fns_t, rounds, 20 if batch == 1 else 3)
        best = min(per_threads, key=lambda t: per_threads[t]["tvm_default"])
        res = per_threads[best]
        out[key] = {
            "torch_ms": round(torch_ms, 4),
            "torch_threads": 1,
            "torch_interleaved_ms": round(res["torch"], 4),
            "ort_ms": round(res["ort"], 4),
            "tvm_default_ms": round(res["tvm_default"], 4),
            "tvm_tuned_ms": round(res["tvm_tuned"], 4) if tuned is not default else None,
            "tvm_threads": best,
            "by_tvm_threads": {
                str(t): {k: round(v, 4) for k, v in r.items()} for t, r in per_threads.items()
            },
            "default_vs_ort": round(res["tvm_default"] / res["ort"], 3),
            "tuned_vs_ort": round(res["tvm_tuned"] / res["ort"], 3)
            if tuned is not default
            else None,
            "trials": tuned.manifest["tuning"]["trials"],
            "tune_seconds": tuned.manifest["tuning"]["seconds"],
            "tuned_kernels_from_db": tuned.manifest["tuning"]["scheduled_funcs"],
            "compile_seconds": round(compile_s, 1),
            "tuned_compile_seconds": round(tuned_compile_s, 1),
        }
        print(name, key, json.dumps(out[key]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, batch 1, 16 trials")
    parser.add_argument(
        "--trials", type=int, default=128, help="MetaSchedule trials per model and batch"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--models", default="baseline,subnet", help="comma-separated: baseline, subnet"
    )
    parser.add_argument(
        "--tune-batches", default="1,64", help="batch sizes to tune (others: default build only)"
    )
    args = parser.parse_args()
    models = QUICK if args.quick else {k: MODELS[k] for k in args.models.split(",")}
    tune_batches = {int(b) for b in args.tune_batches.split(",") if b}
    batches = [1] if args.quick else [1, 64]
    trials = 16 if args.quick else args.trials
    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory(prefix="dnsrec-bench-") as tmp:
        for name, arch in models.items():
            results[name] = bench_model(
                name, arch, batches, trials, Path(tmp), 3 if args.quick else 10, tune_batches
            )
    report = {
        "host": {"cpu": cpu_name(), "cores": os.cpu_count(), "target": host_target()},
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "note": "medians of interleaved runs on a shared machine; compare ratios within one run",
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "models": results,
        "archs": {k: v.to_dict() for k, v in models.items()},
    }
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
