"""Run CUDA artifacts on this machine's GPU beside PyTorch eager on the same GPU.

Each artifact goes through :func:`dnsrec_edge.benchmark` on the local GPU (checksums, the
stored ONNX Runtime reference checked within 1e-4 with the same top-10, then timed); the
PyTorch checkpoint it was exported from is timed on the same GPU with the same input, one
after the other in one run. Needs a GPU, a TVM with its CUDA runtime (a runtime-only TVM
install is enough: ``TVM_USE_RUNTIME_LIB=1``) and torch with CUDA.

    python benchmarks/cuda_run.py --pair baseline-b1=ART_DIR,CHECKPOINT ... --out cuda.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dnsrec_edge.bench.run import benchmark
from dnsrec_edge.train.checkpoint import load_checkpoint


def torch_ms(checkpoint: Path, inputs: np.ndarray, repeat: int, number: int) -> dict:
    """Median and p99 milliseconds per call of ``predict`` on the GPU, over ``repeat`` samples."""
    model, _ = load_checkpoint(checkpoint)
    model = model.cuda().eval()
    x = torch.from_numpy(inputs).cuda()
    samples = []
    with torch.no_grad():
        for _ in range(10):
            model.predict(x)
        torch.cuda.synchronize()
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                model.predict(x)
            torch.cuda.synchronize()
            samples.append((time.perf_counter() - start) * 1e3 / number)
    return {"median": statistics.median(samples), "p99": float(np.percentile(samples, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", action="append", required=True, help="NAME=ART_DIR,CHECKPOINT")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--number", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "models": {}}
    for pair in args.pair:
        name, _, paths = pair.partition("=")
        art, checkpoint = (Path(p) for p in paths.split(","))
        report = benchmark(
            art, record=False, repeat=args.repeat, number=args.number, energy="model"
        ).to_dict()
        inputs = np.load(art / "reference_input.npy")
        eager = torch_ms(checkpoint, inputs, args.repeat, args.number)
        tvm_ms = report["latency_ms"]
        results["models"][name] = {
            "target": report["target"],
            "batch": report["batch"],
            "max_abs_diff_vs_ort": report["max_abs_diff"],
            "top10_match": report["top10_match"],
            "tvm_ms": {"median": tvm_ms["median"], "p99": tvm_ms["p99"]},
            "torch_ms": eager,
            "tvm_vs_torch": round(tvm_ms["median"] / eager["median"], 3),
        }
        print(name, json.dumps(results["models"][name]), flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\n{results['gpu']}\n| model | TVM ms (p99) | torch ms (p99) | TVM/torch | diff |")
    for name, r in results["models"].items():
        print(
            f"| {name} | {r['tvm_ms']['median']:.3f} ({r['tvm_ms']['p99']:.3f}) | "
            f"{r['torch_ms']['median']:.3f} ({r['torch_ms']['p99']:.3f}) | {r['tvm_vs_torch']} "
            f"| {r['max_abs_diff_vs_ort']:.1e} |"
        )


if __name__ == "__main__":
    main()
