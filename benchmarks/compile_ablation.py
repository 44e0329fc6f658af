"""Which change bought what: cumulative variants of the default CPU build vs ONNX Runtime.

Each variant is built from today's code with the later changes switched off (old register
tiles, no padded scoring weight, no padded attention scores; the first one also uses the
`x86_64-avx512` preset with its former 4 threads instead of `--target host`), and all of them
plus ONNX Runtime are timed in one interleaved run per model (batch 1, 1 thread). Every
variant must match ONNX Runtime within 1e-4. Writes benchmarks/results/compile_ablation.json.

    .venv/bin/python benchmarks/compile_ablation.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tvm
from tvm import relax

import dnsrec_edge.compile.schedules as S
from dnsrec_edge.compile import build as B
from dnsrec_edge.compile.artifact import set_threads
from dnsrec_edge.compile.onnx_io import load_onnx, static_shape
from dnsrec_edge.compile.targets import load_target
from dnsrec_edge.fsio import atomic_write_json

sys.path.insert(0, str(Path(__file__).parent))
from compile import MODELS, _export, _inputs  # noqa: E402  (benchmarks/compile.py)

RESULTS = Path(__file__).parent / "results" / "compile_ablation.json"
orig_tile, orig_mm, orig_rw = S._register_tile, S._schedule_matmul, B._cpu_rewrites


def old_tile(m, n, lanes, registers):
    """The former register tile: up to 4 rows, 1-2 vectors or narrower."""
    ji = S._largest_divisor(n, [2 * lanes, lanes, lanes // 2, lanes // 4]) if n >= lanes else n
    ii = S._largest_divisor(m, [4, 3, 2]) if m and m > 1 else 1
    return ii, ji


def no_pad_mm(sch, infos, target, threads, pad=False):
    return None if pad else orig_mm(sch, infos, target, threads, pad=False)


def _four_threads(name):
    return load_target(name).with_threads(4)


VARIANTS = [  # cumulative
    ("before: preset x86_64-avx512 (4 threads), old tiles", lambda: _four_threads("x86_64-avx512"), old_tile, no_pad_mm, lambda t: []),
    ("+ host target (usable cores, +bf16/vnni)", lambda: load_target("host"), old_tile, no_pad_mm, lambda t: []),
    ("+ whole-vector register tiles (up to 6 rows)", lambda: load_target("host"), orig_tile, no_pad_mm, lambda t: []),
    ("+ padded constant scoring weight", lambda: load_target("host"), orig_tile, no_pad_mm, orig_rw),
    ("+ pad_einsum on attention scores (= the default)", lambda: load_target("host"), orig_tile, orig_mm, orig_rw),
]  # fmt: skip


def main() -> None:
    dev = tvm.cpu()
    out = {}
    names = (
        sys.argv[1].split(",")
        if len(sys.argv) > 1
        else ["baseline", "subnet", "pipeline_baseline", "foreign"]
    )
    with tempfile.TemporaryDirectory(prefix="dnsrec-ablation-") as tmp:
        for name in names:
            _, path, n_items, max_len = _export(name, MODELS[name], Path(tmp))
            model = load_onnx(path)
            shape = static_shape(model, 1, max_len)
            x = _inputs(n_items, 1, max_len)
            set_threads(1)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            ref = session.run(None, {"item_seq": x})[0]
            fns = {"ort": lambda s=session, x=x: s.run(None, {"item_seq": x})}
            try:
                for label, target, tile, mm, rw in VARIANTS:
                    S._register_tile, S._schedule_matmul, B._cpu_rewrites = tile, mm, rw
                    tgt = target()
                    tt = tgt.tvm_target()
                    mod = B.schedule_module(
                        B.lower_to_tir(B.import_relax(model, shape), tt), tgt, tt
                    )
                    vm = relax.VirtualMachine(B.build_executable(mod, tt), dev)
                    xi = tvm.runtime.tensor(x, dev)
                    if np.abs(vm["main"](xi).numpy() - ref).max() > 1e-4:
                        raise SystemExit(f"{name}: variant '{label}' differs from ONNX Runtime")
                    fns[label] = lambda vm=vm, xi=xi: vm["main"](xi)
            finally:
                S._register_tile, S._schedule_matmul, B._cpu_rewrites = orig_tile, orig_mm, orig_rw
            samples = {k: [] for k in fns}
            for fn in fns.values():
                for _ in range(5):
                    fn()
            for _ in range(12):
                for k, fn in fns.items():
                    for _ in range(20):
                        t = time.perf_counter()
                        fn()
                        samples[k].append((time.perf_counter() - t) * 1e3)
            med = {k: float(np.median(v)) for k, v in samples.items()}
            out[name] = {
                k: {"ms": round(v, 4), "vs_ort": round(v / med["ort"], 3)} for k, v in med.items()
            }
            print(name, json.dumps({k: v["vs_ort"] for k, v in out[name].items()}), flush=True)
    atomic_write_json(RESULTS, {
        "note": "batch 1, 1 thread, one interleaved run per model on a shared 2-core machine; "
        "cumulative variants; untrained weights",
        "models": out,
    })  # fmt: skip
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
