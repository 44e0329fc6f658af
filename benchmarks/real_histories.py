"""TVM builds against ONNX Runtime on every real test history of a dataset (run by hand).

For each ONNX file given (e.g. a pipeline run's ``stages/export/baseline.onnx`` and
``dnsrec.onnx``, trained weights), the default build for ``--target`` at each thread count and
ONNX Runtime score every test user's history (leave-one-out, batch 1); reported per build:
the largest absolute score difference, the rows whose top-10 differ beyond ties, and the
toolkit's comparison verdict (``dnsrec_edge.compare``: max abs diff <= 1e-4, top-10
identical up to ties). Writes ``benchmarks/results/real_histories.json``::

    python benchmarks/real_histories.py --dataset ml-1m \\
        --onnx baseline=runs/ml-1m-lat50-seed0/stages/export/baseline.onnx \\
        --onnx subnet=runs/ml-1m-lat50-seed0/stages/export/dnsrec.onnx
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "real_histories.json"


def check(name: str, onnx: Path, dataset, target: str, threads: int, work: Path) -> dict:
    """One build of ``onnx`` against ONNX Runtime on every test history of ``dataset``."""
    import onnxruntime as ort
    import tvm

    from dnsrec_edge.compare import compare_scores
    from dnsrec_edge.compile.build import compile as compile_model
    from dnsrec_edge.data.batching import eval_inputs

    built = compile_model(onnx, target, work / f"{name}-t{threads}", threads=threads, quiet=True)
    x = eval_inputs(dataset, "test", built.manifest["inputs"][0]["shape"][1])[0].numpy()
    vm, weights = built.load_vm(threads), built.weights()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    got = np.concatenate([vm["main"](tvm.runtime.tensor(r[None]), *weights).numpy() for r in x])
    ref = np.concatenate([session.run(None, {feed: r[None]})[0] for r in x])
    result = compare_scores(got, ref, reference="ONNX Runtime")
    return {
        "target": built.manifest["target"],
        "threads": threads,
        "rows": len(x),
        "max_abs_diff": float(np.max(np.abs(got - ref))),
        "top10_rows_differing_beyond_ties": result.topk_bad_rows,
        "ok": result.ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--onnx", action="append", required=True, help="NAME=PATH, repeatable")
    parser.add_argument("--target", default="host")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from dnsrec_edge.data.load import load_dataset
    from dnsrec_edge.fsio import atomic_write_json

    dataset = load_dataset(args.dataset, quiet=True)
    report = {"dataset": args.dataset, "command": " ".join(["python", *sys.argv]), "models": {}}
    with tempfile.TemporaryDirectory(prefix="dnsrec-real-") as tmp:
        for spec in args.onnx:
            name, path = spec.split("=", 1)
            report["models"][name] = [
                check(name, Path(path), dataset, args.target, int(t), Path(tmp))
                for t in args.threads.split(",")
            ]
            print(name, report["models"][name], flush=True)
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
