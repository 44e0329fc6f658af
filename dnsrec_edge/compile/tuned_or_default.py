"""Keep a tuned build only where it is faster as a whole model than the default build.

Tuning records replace a default schedule where the kernel measured faster on its own, but
kernels that each won alone can lose together (on a 2-core host records tuned at 1 thread made
the ml-1m baseline's 2-thread build 16 % slower). So where the build runs on this host, the
tuned and the default executables are timed end to end on the reference input, interleaved,
and the faster one is kept; the manifest records both latencies and which was kept.

The timing runs in a fresh process (``python -m dnsrec_edge.compile.tuned_or_default``): timed
inside a process that had just tuned, the ml-1m baseline's default 2-thread build measured
0.420 ms against 0.255 ms in a process of its own, and the slower tuned build was kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dnsrec_edge.errors import CompileError

# Interleaved rounds x calls per round of the end-to-end comparison (about 0.1 s at batch 1).
ROUNDS, CALLS = 15, 10


def whole_model_ms(
    executables: dict[str, Any], inputs: np.ndarray, weights: Sequence[np.ndarray], threads: int
) -> dict[str, float]:
    """Median ms per call of each executable on this host's CPU with ``threads`` threads, the
    executables' calls interleaved round by round, timed in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="dnsrec-whole-model-") as tmp:
        folder = Path(tmp)
        for name, executable in executables.items():
            executable.export_library(str(folder / f"{name}.so"))
        np.save(folder / "input.npy", inputs)
        for i, weight in enumerate(weights):
            np.save(folder / f"weight{i}.npy", weight)
        argv = [sys.executable, "-m", __name__, tmp, str(threads), str(len(weights))]
        done = subprocess.run([*argv, *executables], capture_output=True, text=True)
        if done.returncode != 0:
            raise CompileError(
                "timing the tuned build against the default one failed "
                f"({(done.stderr.strip().splitlines() or ['no output'])[-1][:200]})"
            )
        return json.loads(done.stdout.strip().splitlines()[-1])


def faster(timings: dict[str, float]) -> str:
    """The name with the lowest latency; ``tuned`` on a tie (it was asked for)."""
    return min(timings, key=lambda name: (timings[name], name != "tuned"))


def _time_libraries(folder: Path, threads: int, n_weights: int, names: list[str]) -> dict:
    """What :func:`whole_model_ms` returns, for the libraries it wrote into ``folder``."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from dnsrec_edge.compile.artifact import set_threads
    from dnsrec_edge.timing import time_calls

    set_threads(threads)
    dev = tvm.cpu()
    arrays = [np.load(folder / "input.npy", allow_pickle=False)]
    arrays += [np.load(folder / f"weight{i}.npy", allow_pickle=False) for i in range(n_weights)]
    args = [tvm.runtime.tensor(a, dev) for a in arrays]
    vms = {n: VirtualMachine(tvm.runtime.load_module(str(folder / f"{n}.so")), dev) for n in names}
    calls = {name: (lambda vm=vm: vm["main"](*args)) for name, vm in vms.items()}
    timed = time_calls(calls, threads, repeat=ROUNDS, number=CALLS)
    return {name: round(t["median_ms"], 5) for name, t in timed.items()}


if __name__ == "__main__":
    folder, threads, n_weights, *names = sys.argv[1:]
    print(json.dumps(_time_libraries(Path(folder), int(threads), int(n_weights), names)))
