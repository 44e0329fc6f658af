"""Kernel-by-kernel profiles of a TVM build and of ONNX Runtime on the same ONNX file.

TVM 0.27's Relax VM has no built-in profiler, so :func:`profile_tvm` uses the VM's call
instrument: one run records every call (its symbol and a copy of its arguments), then each
kernel is timed on its own with those arguments. What the kernels do not account for (VM
allocations, reshapes, argument checks) is reported as ``vm overhead``: the end-to-end median
minus the kernels' sum. :func:`profile_onnxruntime` reads ONNX Runtime's own profile
(``SessionOptions.enable_profiling``). Both return :class:`KernelProfile`.

    vm = artifact.load_vm(threads=1)
    prof = profile_tvm(vm, x)          # x: (B, L) int64
    print(prof.top(10))
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

VM_OVERHEAD = "vm overhead"


@dataclass
class KernelProfile:
    """Per-kernel time of one inference: ``kernels`` maps name -> (µs per inference, calls)."""

    runtime: str  # "tvm" or "onnxruntime"
    total_us: float  # median end-to-end latency of one inference
    threads: int
    kernels: dict[str, tuple[float, int]] = field(default_factory=dict)

    def top(self, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` costliest kernels, with their share of the end-to-end time."""
        rows = sorted(self.kernels.items(), key=lambda kv: -kv[1][0])[:n]
        return [
            {
                "kernel": name,
                "us": round(us, 2),
                "calls": calls,
                "share": round(us / self.total_us, 3) if self.total_us else None,
            }
            for name, (us, calls) in rows
        ]

    def to_dict(self, n: int = 10) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "threads": self.threads,
            "total_us": round(self.total_us, 2),
            "kernel_calls": sum(c for _, c in self.kernels.values() if c),
            "top": self.top(n),
        }


def _median_us(fn, repeat: int, number: int) -> float:
    """Median µs of single calls: on a shared machine a preempted call is an outlier, not
    part of the kernel's time (the mean of a batch of calls would count it)."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeat * number):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    return float(np.median(samples))


def profile_tvm(
    vm, inputs: np.ndarray, threads: int = 1, repeat: int = 15, weights: tuple = ()
) -> KernelProfile:
    """Profile the ``main`` of a Relax VM (CPU) on ``inputs`` (then the artifact's
    ``weights``), kernel by kernel.

    The VM keeps the instrument afterwards: pass one made for profiling."""
    import tvm

    dev = tvm.cpu()
    x = tvm.runtime.tensor(np.ascontiguousarray(inputs), dev)
    calls: list[tuple[str, Any, list]] = []

    def instrument(func, symbol, before_run, _ret, *args):
        if before_run and not symbol.startswith("vm.builtin."):
            kept = [a.copyto(dev) if isinstance(a, tvm.runtime.Tensor) else a for a in args]
            calls.append((symbol, func, kept))
        return 0

    number = 20 if inputs.shape[0] == 1 else 2
    total = _median_us(lambda: vm["main"](x, *weights), repeat, number)  # no instrument yet
    vm.set_instrument(instrument)  # (it stays set: this VM is for profiling only from here)
    vm["main"](x, *weights)
    kernels: dict[str, tuple[float, int]] = {}
    for symbol, func, args in calls:
        us = _median_us(lambda f=func, a=args: f(*a), max(repeat // 3, 3), number)
        prev_us, prev_n = kernels.get(symbol, (0.0, 0))
        kernels[symbol] = (prev_us + us, prev_n + 1)
    rest = total - sum(us for us, _ in kernels.values())
    kernels[VM_OVERHEAD] = (max(rest, 0.0), 0)
    return KernelProfile("tvm", total, threads, kernels)


def profile_onnxruntime(
    onnx_path: str | Path, inputs: np.ndarray, threads: int = 1, runs: int = 50
) -> KernelProfile:
    """ONNX Runtime's own per-node profile of ``onnx_path`` on ``inputs`` (µs per inference)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = {name: np.ascontiguousarray(inputs)}
    number = 20 if inputs.shape[0] == 1 else 2
    total = _median_us(lambda: session.run(None, feed), 15, number)

    with tempfile.TemporaryDirectory(prefix="dnsrec-ortprof-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        prof_session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        for _ in range(runs + 5):
            prof_session.run(None, feed)
        path = prof_session.end_profiling()
        events = json.loads(Path(path).read_text(encoding="utf-8"))
    sums: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        key = f"{event['args'].get('op_name', '?')}:{event['name'][: -len('_kernel_time')]}"
        sums.setdefault(key, []).append(float(event["dur"]))
    kernels = {}
    for key, durs in sums.items():
        durs = durs[-runs:]  # the measured runs (the session's first runs are warm-up)
        kernels[key] = (float(np.median(durs)), 1)  # median: preempted runs are outliers
    rest = total - sum(us for us, _ in kernels.values())
    kernels[VM_OVERHEAD.replace("vm", "session")] = (max(rest, 0.0), 0)
    return KernelProfile("onnxruntime", total, threads, kernels)
