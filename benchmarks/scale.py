"""Cost against catalogue size and sequence length, float32 and int8, at batch 1 on this host.

For each catalogue size (``--items``) and sequence length (``--lens``): the ml-1m baseline
shape (2 blocks, hidden 64, 1 head, FFN 256) with random weights over a synthetic catalogue,
exported at static batch 1 (float32), quantized with ``export/quantize.py`` (int8,
calibrated on synthetic histories whose item popularity follows a Zipf curve, exponent 1, as
MovieLens' roughly does; random weights, so no accuracy is measured here: ``int8.py`` does
that on trained models), compiled with TVM default schedules for ``--target``. Then, in one
interleaved run per row, TVM and ONNX Runtime latency (median, p99) on ``--threads`` threads;
the artifact's bytes; the resident memory a runtime-only process adds by loading and running
the artifact (peak RSS while running minus the RSS of the idle process with the TVM runtime
imported); and the target cost model's prediction (float32 rows; it has no precision feature)
beside the figure it predicts, the fastest of ``CALLS`` single calls in TVM's timing loop
(``tvm_call_min_ms``), and its error (``predicted_error_pct``).

Writes ``benchmarks/results/scale.json`` (``{"rows": [{"n_items", "max_len", "precision",
"tvm_ms", "ort_ms", "p99_ms", "artifact_bytes", "added_rss_bytes", "predicted_ms"}]}``) and
``benchmarks/results/scale.png``.

    .venv/bin/python benchmarks/scale.py --items 1000 10000 100000 --lens 50 200 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from timing import interleaved  # noqa: E402  (benchmarks/timing.py)

RESULTS = Path(__file__).parent / "results"
CALLS = 100  # single calls timed for the figure the cost model predicts
RSS_CODE = r"""
import json, sys
sys.modules["torch"] = None  # a board has no torch
import numpy as np
import tvm
from tvm.runtime.vm import VirtualMachine
def status(key):
    return next(int(ln.split()[1]) * 1024 for ln in open("/proc/self/status") if ln.startswith(key))
from dnsrec_edge.compile.artifact import load_artifact
import dnsrec_edge.compile.weights  # (imported before the idle figure)
idle = status("VmRSS:")
art = load_artifact(sys.argv[1], verify=False)  # checked when it was built
lib = tvm.runtime.load_module(str(art.library))
vm = VirtualMachine(lib, tvm.cpu())
x = tvm.runtime.tensor(np.load(sys.argv[2]), tvm.cpu())
weights = art.weights()  # weight files, mapped
for _ in range(20):
    vm["main"](x, *weights)
# VmHWM, not ru_maxrss: the latter keeps the forking parent's high-water mark across exec
print(json.dumps({"idle_rss_bytes": idle, "peak_rss_bytes": status("VmHWM:")}))
"""


def zipf_histories(n_items: int, max_len: int, rows: int, seed: int = 0) -> np.ndarray:
    """Left-padded histories of random lengths, items drawn with popularity ~ 1 / rank."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1)
    p /= p.sum()
    out = np.zeros((rows, max_len), dtype=np.int64)
    for r in range(rows):
        n = int(rng.integers(max(1, max_len // 4), max_len + 1))
        out[r, max_len - n :] = rng.choice(n_items, size=n, p=p) + 1
    return out


def added_rss(artifact: Path, x: np.ndarray, folder: Path) -> dict:
    np.save(folder / "x.npy", x)
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    done = subprocess.run(
        [sys.executable, "-c", RSS_CODE, str(artifact), str(folder / "x.npy")],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return got | {"added_rss_bytes": got["peak_rss_bytes"] - got["idle_rss_bytes"]}


def time_both(art, onnx_path: Path, x: np.ndarray, args) -> dict[str, dict[str, float]]:
    """TVM (the artifact) and ONNX Runtime (the file) on the rows of ``x``, interleaved."""
    import onnxruntime as ort
    import tvm

    from dnsrec_edge.compile.artifact import set_threads

    set_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    vm = art.load_vm(args.threads)
    weights = art.weights()
    xs = [tvm.runtime.tensor(r[None], tvm.cpu()) for r in x]
    cursor = {"i": 0}

    def pick() -> int:  # every call runs the next history
        cursor["i"] = (cursor["i"] + 1) % len(x)
        return cursor["i"]

    times = interleaved(
        {
            "tvm": lambda: vm["main"](xs[pick()], *weights),
            "ort": lambda: session.run(["scores"], {"item_seq": x[(i := pick()) : i + 1]}),
        },
        args.rounds,
        args.per_round,
    )
    # the cost model's figure, timed as calibration times it: the fastest of single calls in
    # TVM's own timing loop (no Python call in between)
    calls = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=CALLS, min_repeat_ms=0)
    times["tvm"]["call_min"] = 1e3 * min(calls(xs[0], *weights).results)
    return times


def rows_of(n_items: int, max_len: int, work: Path, args) -> Iterator[dict]:
    """One row per precision, each yielded as soon as it is measured."""
    import torch

    from dnsrec_edge.compile.build import compile as compile_model
    from dnsrec_edge.cost.calibrated import load_cost_model
    from dnsrec_edge.export.onnx_export import export_onnx
    from dnsrec_edge.export.quantize import quantize_onnx
    from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
    from dnsrec_edge.models.sasrec import SASRec

    arch = ArchSpec(n_items, max_len, 64, (BlockSpec(1, 64, 256), BlockSpec(1, 64, 256)))
    torch.manual_seed(0)
    model = SASRec(arch).eval()
    folder = work / f"{n_items}-{max_len}"
    folder.mkdir()
    paths = {"fp32": export_onnx(model, folder / "fp32.onnx", batch=1)}
    del model
    x = zipf_histories(n_items, max_len, 64, seed=1)
    prediction = load_cost_model(args.target).predict(arch).latency_ms
    for precision in args.precisions:
        t0 = time.perf_counter()
        if precision == "int8":
            paths["int8"] = quantize_onnx(
                paths["fp32"], folder / "int8.onnx", zipf_histories(n_items, max_len, 64)
            )
        art = compile_model(  # built for the thread count it is timed at
            paths[precision], args.target, folder / precision, quiet=True, threads=args.threads
        )
        build_s = time.perf_counter() - t0
        times = time_both(art, paths[precision], x, args)
        rss = added_rss(art.path, x[:1], folder)
        measured = {
            "n_items": n_items,
            "max_len": max_len,
            "precision": precision,
            "tvm_ms": times["tvm"]["median"],
            "ort_ms": times["ort"]["median"],
            "p99_ms": times["tvm"]["p99"],
            "ort_p99_ms": times["ort"]["p99"],
            "onnx_bytes": paths[precision].stat().st_size,
            "artifact_bytes": sum(f.stat().st_size for f in art.path.iterdir()),
            "added_rss_bytes": rss["added_rss_bytes"],
            "idle_rss_bytes": rss["idle_rss_bytes"],
            "tvm_call_min_ms": times["tvm"]["call_min"],
            "predicted_ms": prediction if precision == "fp32" else None,
            "predicted_error_pct": (
                round(100 * (prediction / times["tvm"]["call_min"] - 1), 1)
                if precision == "fp32"
                else None
            ),
            "build_seconds": round(build_s, 1),
        }
        print(json.dumps(measured), flush=True)
        yield measured


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    lens = sorted({r["max_len"] for r in rows})
    for precision, style in (("fp32", "-"), ("int8", "--")):
        for length in lens:
            sel = sorted(
                (r for r in rows if r["precision"] == precision and r["max_len"] == length),
                key=lambda r: r["n_items"],
            )
            if not sel:
                continue
            n = [r["n_items"] for r in sel]
            label = f"{precision}, L {length}"
            axes[0].plot(n, [r["tvm_ms"] for r in sel], style, marker="o", label=f"TVM {label}")
            axes[0].plot(n, [r["ort_ms"] for r in sel], style, marker="x", alpha=0.5,
                         label=f"ORT {label}")  # fmt: skip
            axes[1].plot(n, [r["artifact_bytes"] / 2**20 for r in sel], style, marker="o",
                         label=label)  # fmt: skip
            axes[2].plot(n, [r["added_rss_bytes"] / 2**20 for r in sel], style, marker="o",
                         label=label)  # fmt: skip
    for ax, title in zip(
        axes,
        ("latency, batch 1 (ms)", "artifact (MiB)", "added resident memory (MiB)"),
        strict=True,
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("catalogue size (items)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--lens", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--target", default="host")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    parser.add_argument("--append", action="store_true", help="add rows to an existing --out")
    args = parser.parse_args()

    from dnsrec_edge.cost.calibrated import load_cost_model
    from dnsrec_edge.fsio import atomic_write_json

    cost_model = load_cost_model(args.target)

    result = {
        "host": platform.machine(),
        "load_before": os.getloadavg(),
        "settings": {
            "batch": 1,
            "threads": args.threads,
            "target": args.target,
            "rounds": args.rounds,
            "per_round": args.per_round,
            "model": "ml-1m baseline shape (2 blocks, hidden 64, 1 head, FFN 256), random weights",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "cost_model": {
                "target": cost_model.target,
                "kind": cost_model.kind,
                "threads": cost_model.meta.get("threads"),
                "source": cost_model.meta.get("source"),
            },
        },  # fmt: skip
        "rows": [],
        "failed": [],
    }
    if args.append and args.out.exists():
        old = json.loads(args.out.read_text())
        result["rows"], result["failed"] = old["rows"], old.get("failed", [])
        result["settings"]["command"] = (
            old["settings"]["command"] + " ; " + result["settings"]["command"]
        )
    with tempfile.TemporaryDirectory(prefix="dnsrec-scale-") as tmp:
        for n_items in args.items:
            for max_len in args.lens:
                try:
                    for measured in rows_of(n_items, max_len, Path(tmp), args):
                        result["rows"].append(measured)
                        atomic_write_json(args.out, result)  # rows as they land
                except Exception as err:  # a size that does not build here is a result too
                    failure = {"n_items": n_items, "max_len": max_len, "error": str(err)[:300]}
                    result["failed"].append(failure)
                    print(json.dumps(failure), flush=True)
                    atomic_write_json(args.out, result)
    result["load_after"] = os.getloadavg()
    atomic_write_json(args.out, result)
    plot(result["rows"], args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
