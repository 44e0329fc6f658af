"""Round-robin latency of several calls in one run, for any runtime: one round of each call,
then the next round, so a shared machine's drift lands on all of them alike
(``export/ort_timing.py`` times ONNX Runtime sessions with it, ``bench/host_latency.py`` TVM
builds, ``compile/tuned_or_default.py`` a tuned build against the default one).

Example::

    stats = time_calls({"a": run_a, "b": run_b}, threads=1)
    stats["b"]["median_ms"] / stats["a"]["median_ms"]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np


def time_calls(
    calls: Mapping[str, Callable[[], object]],
    threads: int,
    repeat: int = 30,
    number: int = 20,
    warmup: int = 5,
) -> dict[str, dict[str, float]]:
    """Per call: ``median_ms``, ``p99_ms``, ``mean_ms`` over ``repeat`` rounds of ``number``
    calls each, the calls interleaved round by round (``threads`` is only recorded)."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            t0 = time.perf_counter()
            for _ in range(number):
                call()
            samples[name].append((time.perf_counter() - t0) / number * 1e3)
    return {
        name: {
            "median_ms": float(np.median(v)),
            "p99_ms": float(np.percentile(v, 99)),
            "mean_ms": float(np.mean(v)),
            "threads": threads,
        }
        for name, v in samples.items()
    }
