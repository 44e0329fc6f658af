"""What a second block costs: subnets of one and two blocks against the ml-1m baseline shape.

At ml-1m's shape (3,416 items, length 200, hidden 64) ``SASRec.predict`` runs a one-block
model's only block at the last position (its keys and values still cover the sequence), while
a two-block model runs its first block, attention over 200 x 200 scores included, at every
position. This measures, in one interleaved run at batch 1 on this host, the TVM build
(``--target host``) and ONNX Runtime on the same ONNX file for the baseline of
``benchmarks/search.py`` (2 x 1 head of 64, FFN 64), the narrowest one- and two-block
subnets of the search space (heads of 16, FFN 64, with and without the data-aware gates) and
two-block subnets whose first block uses causal linear attention, as a share of the
baseline's latency: which depths a latency budget can admit. Weights are untrained (seeded):
latency does not depend on them. Results: ``benchmarks/results/depth_cost.json``.

    .venv/bin/python benchmarks/depth_cost.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from dnsrec_edge.compile.artifact import set_threads
from dnsrec_edge.compile.build import compile as compile_model
from dnsrec_edge.compile.host import detect_host
from dnsrec_edge.export.onnx_export import export_onnx
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.archspec import BlockSpec as B
from dnsrec_edge.models.sasrec import SASRec

sys.path.insert(0, str(Path(__file__).parent))
from timing import interleaved  # noqa: E402  (benchmarks/timing.py)

RESULTS = Path(__file__).parent / "results" / "depth_cost.json"
N_ITEMS, MAX_LEN, HIDDEN = 3416, 200, 64
MODELS = {
    "baseline": (B(1, 64, 64), B(1, 64, 64)),
    "one_block_4x16_gated": (B(4, 16, 64, 16),),
    "one_block_1x16": (B(1, 16, 64),),
    "two_blocks_1x16_gated": (B(1, 16, 64, 16), B(1, 16, 64, 16)),
    "two_blocks_1x16": (B(1, 16, 64), B(1, 16, 64)),
    "two_blocks_2x16_gated": (B(2, 16, 64, 16), B(2, 16, 64, 16)),
    "two_blocks_linear_first_1x16": (B(1, 16, 64, 0, "linear"), B(1, 16, 64)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import onnxruntime as ort
    import tvm

    work = Path(tempfile.mkdtemp(prefix="depth-cost-"))
    rng = np.random.default_rng(0)
    x = rng.integers(1, N_ITEMS + 1, (1, MAX_LEN)).astype(np.int64)
    x[0, :50] = 0  # a history of 150 items
    set_threads(args.threads)
    fns, checks, target = {}, {}, None
    for name, blocks in MODELS.items():
        torch.manual_seed(0)
        model = SASRec(ArchSpec(N_ITEMS, MAX_LEN, HIDDEN, blocks)).eval()
        path = export_onnx(model, work / f"{name}.onnx")
        art = compile_model(path, "host", work / name, batch=1, quiet=True)
        target = art.manifest["target"]
        vm, xi, w = art.load_vm(args.threads), tvm.runtime.tensor(x, tvm.cpu()), art.weights()
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        ref = session.run(None, {"item_seq": x})[0]
        checks[name] = float(np.abs(vm["main"](xi, *w).numpy() - ref).max())
        fns[f"{name}/tvm"] = lambda vm=vm, xi=xi, w=w: vm["main"](xi, *w)
        fns[f"{name}/ort"] = lambda s=session: s.run(None, {"item_seq": x})
        print(f"built {name} (max abs diff from ONNX Runtime {checks[name]:.1e})", flush=True)
    times = interleaved(fns, args.rounds, 20)
    rows = {}
    for name, blocks in MODELS.items():
        row = {"blocks": [vars(b) for b in blocks], "max_abs_diff": checks[name]}
        for runtime in ("tvm", "ort"):
            t, base = times[f"{name}/{runtime}"], times[f"baseline/{runtime}"]
            row[runtime] = {
                "median_ms": round(t["median"], 4),
                "p99_ms": round(t["p99"], 4),
                "share": round(t["median"] / base["median"], 3),
            }
        rows[name] = row
        print(
            f"{name:30s} TVM {row['tvm']['median_ms']:.3f} ms ({row['tvm']['share']:.2f}x)  "
            f"ONNX Runtime {row['ort']['median_ms']:.3f} ms ({row['ort']['share']:.2f}x)"
        )
    atomic_write_json(
        args.out,
        {
            "host": detect_host().model,
            "target": target,
            "threads": args.threads,
            "batch": 1,
            "shape": {"n_items": N_ITEMS, "max_len": MAX_LEN, "hidden": HIDDEN},
            "models": rows,
        },
    )


if __name__ == "__main__":
    main()
