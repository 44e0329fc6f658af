"""Keep a tuned build only where it is faster as a whole model than the default build.

Tuning records replace a default schedule where the kernel measured faster on its own, but
kernels that each won alone can lose together (on a 2-core host five minutes of tuning made
the ml-1m baseline's 2-thread build 11 % slower). So where the build runs on this host, the
tuned and the default executables are timed end to end on the reference input, interleaved,
and the faster one is kept; the manifest records both latencies and which was kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Interleaved rounds x calls per round of the end-to-end comparison (about 0.1 s at batch 1).
ROUNDS, CALLS = 15, 10


def whole_model_ms(
    executables: dict[str, Any], inputs: np.ndarray, weights: Sequence[np.ndarray], threads: int
) -> dict[str, float]:
    """Median ms per call of each executable on this host's CPU with ``threads`` threads,
    the executables' calls interleaved round by round."""
    import tvm
    from tvm import relax

    from dnsrec_edge.compile.artifact import set_threads
    from dnsrec_edge.export.ort_timing import time_calls

    set_threads(threads)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(inputs, dev), *(tvm.runtime.tensor(w, dev) for w in weights)]
    vms = {name: relax.VirtualMachine(exe, dev) for name, exe in executables.items()}
    calls = {name: (lambda vm=vm: vm["main"](*args)) for name, vm in vms.items()}
    timed = time_calls(calls, threads, repeat=ROUNDS, number=CALLS)
    return {name: round(t["median_ms"], 5) for name, t in timed.items()}


def faster(timings: dict[str, float]) -> str:
    """The name with the lowest latency; ``tuned`` on a tie (it was asked for)."""
    return min(timings, key=lambda name: (timings[name], name != "tuned"))
