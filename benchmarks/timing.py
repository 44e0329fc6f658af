"""Interleaved latency sampling shared by the benchmarks: every function is timed in
alternating blocks, so drift of a shared machine lands on all of them alike."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int = 5
) -> dict[str, dict[str, float]]:
    """Median and p99 ms per call of each function, measured in alternating blocks, and
    ``block_mean``: the median over blocks of a block's mean ms per call (what a burst of
    slow calls, hidden from the per-call median, costs)."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    blocks: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(per_round):
                t = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t) * 1e3)
            blocks[name].append(float(np.mean(samples[name][-per_round:])))
    return {
        k: {
            "median": float(np.median(v)),
            "p99": float(np.percentile(v, 99)),
            "block_mean": float(np.median(blocks[k])),
        }
        for k, v in samples.items()
    }
