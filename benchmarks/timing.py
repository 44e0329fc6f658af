"""Interleaved latency sampling shared by the benchmarks: every function is timed in
alternating blocks, so drift of a shared machine lands on all of them alike. A function runs
in this process (:func:`interleaved`) or, each runtime in a process of its own so that no
runtime's thread pool competes with another's for the cores, in a :class:`Worker`
(:func:`interleaved_processes`)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Pause between two workers' blocks: the last one's spinning pool threads go to sleep first.
SETTLE_S = 0.05


def call_times(fn: Callable[[], object], n: int) -> list[float]:
    """The ms of each of ``n`` calls of ``fn``, one after another."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int = 5
) -> dict[str, dict[str, float]]:
    """Median and p99 ms per call of each function, measured in alternating blocks, and
    ``block_mean``: the median over blocks of a block's mean ms per call (what a burst of
    slow calls, hidden from the per-call median, costs)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    blocks = {k: functools.partial(call_times, fn) for k, fn in fns.items()}
    return _alternate(blocks, rounds, per_round, 0.0)


class Worker:
    """``benchmarks/call_worker.py`` in a process of its own: one model under one runtime
    (``onnx`` under ONNX Runtime, or ``artifact``, a TVM build) on ``threads`` threads."""

    def __init__(self, x: np.ndarray, threads: int, work: Path, *, onnx=None, artifact=None):
        inputs = work / f"input-{x.shape[0]}x{x.shape[1]}.npy"
        np.save(inputs, x)
        model = ["--onnx", str(onnx)] if onnx is not None else ["--artifact", str(artifact)]
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("call_worker.py")), *model,
             "--input", str(inputs), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"call_worker.py failed to load {model[1]}")

    def __call__(self, n: int) -> list[float]:
        """The ms of ``n`` calls, made in the worker."""
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def interleaved_processes(
    workers: dict[str, Worker], rounds: int, per_round: int
) -> dict[str, dict[str, float]]:
    """What :func:`interleaved` reports, each function timed in its own :class:`Worker`; only
    one worker runs at a time, with :data:`SETTLE_S` between blocks."""
    return _alternate(workers, rounds, per_round, SETTLE_S)


def _alternate(
    blocks: dict[str, Callable[[int], list[float]]], rounds: int, per_round: int, settle: float
) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {k: [] for k in blocks}
    means: dict[str, list[float]] = {k: [] for k in blocks}
    for _ in range(rounds):
        for name, run in blocks.items():
            time.sleep(settle)
            times = run(per_round)
            samples[name] += times
            means[name].append(float(np.mean(times)))
    return {
        k: {
            "median": float(np.median(v)),
            "p99": float(np.percentile(v, 99)),
            "block_mean": float(np.median(means[k])),
        }
        for k, v in samples.items()
    }
