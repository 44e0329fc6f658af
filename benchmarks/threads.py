"""How thread counts change TVM and ONNX Runtime latency on this host (ml-1m baseline, batch 1).

Three questions, each answered for the ml-1m run's baseline SASRec (2 blocks, 1 head of 64,
FFN 64, 200 positions, 3,416 items) on ``--target host``:

- ``build_threads``: a default build made for 1 thread and one made for the host's cores,
  both run on 1 thread and, the second, on all cores (interleaved, per-call medians);
- ``alone``: each runtime on all cores in a run of its own (ONNX Runtime with and without
  its workers spinning between calls);
- ``together``: both in one process, alternating blocks of calls, ONNX Runtime spinning or
  not: what an in-process interleaved comparison measures on 2 busy cores.

Writes ``benchmarks/results/threads.json``::

    python benchmarks/threads.py
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dnsrec_edge.compile.build import compile as compile_model
from dnsrec_edge.compile.host import detect_host
from dnsrec_edge.export.onnx_export import export_onnx
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec

sys.path.insert(0, str(Path(__file__).parent))
from timing import interleaved  # noqa: E402  (benchmarks/timing.py)

RESULTS = Path(__file__).parent / "results" / "threads.json"
ARCH = ArchSpec(3416, 200, 64, (BlockSpec(1, 64, 64), BlockSpec(1, 64, 64)))


def medians(fns: dict[str, Callable[[], object]], rounds: int, per: int) -> dict[str, dict]:
    """Per function: median ms of single calls, and the median over blocks of ``per`` calls
    of a block's mean ms per call, the functions alternating block by block."""
    return {
        k: {"call_median_ms": v["median"], "block_mean_ms": v["block_mean"]}
        for k, v in interleaved(fns, rounds, per).items()
    }


def ort_call(onnx: Path, x: np.ndarray, threads: int, spin: bool) -> Callable[[], object]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    return functools.partial(session.run, None, {"item_seq": x})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import tvm

    from dnsrec_edge.compile.artifact import set_threads

    cores = detect_host().cores
    work = Path(tempfile.mkdtemp(prefix="dnsrec-threads-"))
    torch.manual_seed(0)
    onnx = export_onnx(SASRec(ARCH).eval(), work / "baseline.onnx", batch=1)
    x = np.random.default_rng(0).integers(1, ARCH.n_items + 1, size=(1, ARCH.max_len))
    x = x.astype(np.int64)
    builds = {
        n: compile_model(onnx, "host", work / f"t{n}", threads=n, quiet=True) for n in (1, cores)
    }

    def tvm_call(n: int) -> Callable[[], object]:
        vm = builds[n].load_vm()
        return functools.partial(vm["main"], tvm.runtime.tensor(x, tvm.cpu()), *builds[n].weights())

    set_threads(1)
    result = {"cores": cores, "arch": ARCH.to_dict(), "rounds": args.rounds, "per": args.per}
    result["build_threads"] = medians(
        {f"built_for_{n}_run_on_1": tvm_call(n) for n in builds}, args.rounds, args.per
    )
    set_threads(cores)
    many = tvm_call(cores)
    result["alone"] = {
        f"tvm_{cores}": medians({"tvm": many}, args.rounds, args.per)["tvm"],
        **{
            f"ort_{cores}_spin_{spin}": medians(
                {"ort": ort_call(onnx, x, cores, spin)}, args.rounds, args.per
            )["ort"]
            for spin in (True, False)
        },
    }
    result["together"] = {
        f"spin_{spin}": medians(
            {"ort": ort_call(onnx, x, cores, spin), "tvm": many}, args.rounds, args.per
        )
        for spin in (True, False)
    }
    result["load_average"] = os.getloadavg()
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
