"""One runtime in a process of its own, timing calls on request (``timing.Worker`` drives it).

Loads one model (``--onnx`` under ONNX Runtime, or ``--artifact``, a TVM build), the input
array ``--input`` (.npy), runs ``--warmup`` calls, prints ``ready`` and then answers each line
``N`` on stdin with one JSON list: the milliseconds of N calls. An empty line or EOF ends it.
Not run by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from timing import call_times  # beside this script (it runs as one)


def _ort(onnx: Path, x: np.ndarray, threads: int) -> Callable[[], object]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def _tvm(artifact: Path, x: np.ndarray, threads: int) -> Callable[[], object]:
    import tvm

    from dnsrec_edge.compile.artifact import load_artifact

    built = load_artifact(artifact)
    vm = built.load_vm(threads)
    weights = built.weights()
    xi = tvm.runtime.tensor(x, tvm.cpu())
    return lambda: vm["main"](xi, *weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--onnx", type=Path)
    model.add_argument("--artifact", type=Path)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    x = np.load(args.input, allow_pickle=False)
    call = _ort(args.onnx, x, args.threads) if args.onnx else _tvm(args.artifact, x, args.threads)
    for _ in range(args.warmup):
        call()
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        print(json.dumps(call_times(call, int(line))), flush=True)


if __name__ == "__main__":
    main()
