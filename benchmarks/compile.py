"""Benchmark TVM builds against PyTorch eager and ONNX Runtime on this host (`--target host`).

For the ml-1m baseline SASRec, a small searched subnet, a gated subnet, the README pipeline's
ml-100k-sized baseline, a SASRec ONNX file this toolkit did not write (``torch.onnx.export``,
``dynamo=False``) and the baseline and subnet of ``benchmarks/search.py``'s ml-1m runs, at batch
1 and 64: latency medians measured side by side in one interleaved run per thread count (TVM's
default build for that thread count, as ``compile --threads N`` makes it, and ONNX Runtime on
the same ONNX file with ``intra_op_num_threads`` the same; each runtime in a process of its
own, one running at a time, so neither's thread pool competes with the other's), the per-kernel profile of both (TVM: the VM call
instrument, ONNX Runtime: its own profiler), compile (and, with ``--trials``, tuning) time,
and a check that TVM's scores match ONNX Runtime's on the benchmark inputs. Writes
benchmarks/results/compile.json.

    .venv/bin/python benchmarks/compile.py              # full run, default builds
    .venv/bin/python benchmarks/compile.py --trials 128 # also tuned builds (a trial count)
    .venv/bin/python benchmarks/compile.py --minutes 5  # ... or a time budget per model and batch
    .venv/bin/python benchmarks/compile.py --minutes 5 --threads 2  # ... tuned for 2 threads
    .venv/bin/python benchmarks/compile.py --quick      # smoke run (tiny model, batch 1)

Weights are untrained (seeded): latency does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dnsrec_edge.compile.artifact import set_threads
from dnsrec_edge.compile.build import compile as compile_model
from dnsrec_edge.compile.host import detect_host
from dnsrec_edge.compile.profile import profile_onnxruntime, profile_tvm
from dnsrec_edge.export.onnx_export import export_onnx
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.models.sasrec import SASRec

sys.path.insert(0, str(Path(__file__).parent))
from timing import Worker, interleaved, interleaved_processes  # noqa: E402  (benchmarks/timing.py)

RESULTS = Path(__file__).parent / "results" / "compile.json"
TARGET = "host"
# ml-1m after 5-core filtering has 3,416 items.
MODELS = {
    # the ml-1m baseline recipe: 2 blocks, hidden 64, 1 head, FFN 256, max_len 200
    "baseline": ArchSpec(3416, 200, 64, (BlockSpec(1, 64, 256), BlockSpec(1, 64, 256))),
    # a small searched subnet: 1 block, 2 heads x 16, FFN 128
    "subnet": ArchSpec(3416, 200, 64, (BlockSpec(2, 16, 128),)),
    # a DNS-Rec-style pruned subnet with the data-aware gates kept
    "subnet_gated": ArchSpec(
        3416, 200, 64, (BlockSpec(2, 16, 128, gate_hidden=16), BlockSpec(2, 16, 64, gate_hidden=16))
    ),
    # the README's default pipeline baseline (ml-100k sized): 1 head of 64, FFN 64, max_len 50
    "pipeline_baseline": ArchSpec(1349, 50, 64, (BlockSpec(1, 64, 64), BlockSpec(1, 64, 64))),
    "foreign": "foreign",  # ForeignSASRec below, exported by torch.onnx.export directly
    # the models of benchmarks/search.py's ml-1m runs (benchmarks/results/search.json): the full
    # preset's baseline (1 head of 64, FFN 64) and the subnet picked at latency=50%, seed 0
    "run_baseline": ArchSpec(3416, 200, 64, (BlockSpec(1, 64, 64), BlockSpec(1, 64, 64))),
    "run_subnet": ArchSpec(3416, 200, 64, (BlockSpec(4, 16, 64, gate_hidden=16),)),
}
QUICK = {"tiny": ArchSpec(500, 50, 32, (BlockSpec(2, 16, 64), BlockSpec(2, 16, 64)))}


class _ForeignBlock(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.h = heads
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x, mask):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.h) + mask  # (B, nh, T, T)
        y = torch.softmax(att, dim=-1) @ v  # (B, nh, T, hs)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(torch.relu(self.fc1(self.ln2(x))))


class ForeignSASRec(nn.Module):
    """A SASRec as one writes it without this toolkit: packed QKV, an additive float causal
    mask, every position through every block, scores against the transposed embedding."""

    def __init__(self, n_items=3416, max_len=200, d=64, heads=1, ffn=256, blocks=2):
        super().__init__()
        self.n_items = n_items
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos = nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(_ForeignBlock(d, heads, ffn) for _ in range(blocks))
        self.ln, self.d = nn.LayerNorm(d), d

    def forward(self, seq):
        b, t = seq.shape
        x = self.item(seq) * math.sqrt(self.d) + self.pos(torch.arange(t))
        x = x * (seq > 0).unsqueeze(-1).float()
        mask = torch.triu(torch.full((t, t), -1e9), diagonal=1).view(1, 1, t, t)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)[:, -1, :] @ self.item.weight.t()  # (B, n_items + 1)

    predict = forward


def _export(name: str, arch, work: Path):
    torch.manual_seed(0)
    if arch == "foreign":
        model = ForeignSASRec().eval()
        path = work / f"{name}.onnx"
        torch.onnx.export(
            model,
            (torch.randint(1, model.n_items + 1, (1, 200)),),
            str(path),
            input_names=["item_seq"],
            output_names=["scores"],
            dynamic_axes={"item_seq": {0: "batch"}, "scores": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        return model, path, model.n_items, 200
    model = SASRec(arch).eval()
    return model, export_onnx(model, work / f"{name}.onnx"), arch.n_items, arch.max_len


def cpu_name() -> str:
    return detect_host().model or "unknown"


def interleaved_medians(fns: dict, rounds: int, per_round: int) -> dict[str, float]:
    """Median ms per call of each function, measured in alternating blocks."""
    return {k: v["median"] for k, v in interleaved(fns, rounds, per_round).items()}


def _inputs(n_items: int, batch: int, max_len: int) -> np.ndarray:
    """ml-1m-like histories: item ids, each row left-padded to a random length."""
    rng = np.random.default_rng(0)
    x = rng.integers(1, n_items + 1, (batch, max_len)).astype(np.int64)
    for row in range(batch):
        x[row, : rng.integers(0, max_len - 1)] = 0
    return x


def _match(got: np.ndarray, ref: np.ndarray) -> dict:
    top = lambda s: np.argsort(-s, axis=-1, kind="stable")[:, :10]  # noqa: E731
    return {
        "max_abs_diff": float(np.max(np.abs(got - ref))),
        "top10_identical": bool((top(got) == top(ref)).all()),
    }


def bench_model(name, arch, batches, tuning: dict, work: Path, rounds: int, threads_list) -> dict:
    """``tuning``: ``compile``'s tuning keywords (``trials`` or ``minutes``); empty: none."""
    import onnxruntime as ort
    import tvm
    from tvm.runtime.vm import VirtualMachine

    model, onnx_path, n_items, max_len = _export(name, arch, work)
    out = {}
    for batch in batches:
        key = f"b{batch}"
        # one default build per thread count, as `compile --threads N` makes it (a build for
        # 2 cores pays thread-pool launches that a 1-thread run gains nothing from)
        builds, compile_s = {}, 0.0
        for threads in threads_list:
            t0 = time.perf_counter()
            builds[threads] = compile_model(
                onnx_path,
                TARGET,
                work / f"{name}-{key}-default-t{threads}",
                batch=batch,
                threads=threads,
                quiet=True,
            )
            compile_s = time.perf_counter() - t0
        # tuned: the budget is spent once, timing candidates at the first thread count (tune
        # for another with --threads); the builds for the other thread counts apply the same
        # database (records apply whatever the thread count) without tuning again
        t0 = time.perf_counter()
        tuned_builds = {}
        for threads in threads_list if tuning else ():
            tuned_builds[threads] = compile_model(
                onnx_path,
                TARGET,
                work / f"{name}-{key}-tuned-t{threads}",
                batch=batch,
                threads=threads,
                tune=not tuned_builds,
                **(tuning if not tuned_builds else {}),
                tuning_db=work / f"db-{name}-{key}",
                quiet=True,
            )
        tuned_compile_s = time.perf_counter() - t0
        # the tuning run's record (a default build's when not tuning)
        tuned = (tuned_builds if tuning else builds)[threads_list[0]].manifest["tuning"]

        x = _inputs(n_items, batch, max_len)
        xt = torch.from_numpy(x)
        per = 20 if batch == 1 else 3
        # PyTorch eager on its own and on one thread: with 2 OpenMP threads on 2 busy shared
        # cores it ran 100x slower here (barrier waits), which measures contention, not torch.
        torch.set_num_threads(1)
        with torch.no_grad():
            torch_ms = interleaved_medians({"torch": lambda xt=xt: model.predict(xt)}, rounds, per)[
                "torch"
            ]
        per_threads, profiles, match = {}, {}, None
        for threads in threads_list:
            default = builds[threads]
            set_threads(threads)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(
                str(onnx_path), options, providers=["CPUExecutionProvider"]
            )
            dvm = default.load_vm()
            xi = tvm.runtime.tensor(x, tvm.cpu())
            dw = default.weights()  # weight files, if the build has any
            ref = session.run(None, {"item_seq": x})[0]
            match = _match(dvm["main"](xi, *dw).numpy(), ref)
            workers = {
                "ort": Worker(x, threads, work, onnx=onnx_path),
                "tvm_default": Worker(x, threads, work, artifact=default.path),
            }
            if tuning:
                workers["tvm_tuned"] = Worker(x, threads, work, artifact=tuned_builds[threads].path)
            try:
                timed = interleaved_processes(workers, rounds, per)
            finally:
                for worker in workers.values():
                    worker.close()
            per_threads[threads] = {k: v["median"] for k, v in timed.items()}
            prof_vm = VirtualMachine(tvm.runtime.load_module(str(default.library)), tvm.cpu())
            profiles[str(threads)] = {
                "tvm_default": profile_tvm(prof_vm, x, threads, weights=tuple(dw)).to_dict(8),
                "onnxruntime": profile_onnxruntime(onnx_path, x, threads).to_dict(8),
            }
        best = min(per_threads, key=lambda t: per_threads[t]["tvm_default"])
        res = per_threads[best]
        ratio = lambda r, k: round(r[k] / r["ort"], 3) if k in r else None  # noqa: E731
        out[key] = {
            "torch_ms": round(torch_ms, 4),
            "torch_threads": 1,
            "ort_ms": round(res["ort"], 4),
            "tvm_default_ms": round(res["tvm_default"], 4),
            "tvm_tuned_ms": round(res["tvm_tuned"], 4) if "tvm_tuned" in res else None,
            "tvm_threads": best,
            "by_threads": {
                str(t): {
                    **{k: round(v, 4) for k, v in r.items()},
                    "default_vs_ort": ratio(r, "tvm_default"),
                    "tuned_vs_ort": ratio(r, "tvm_tuned"),
                }
                for t, r in per_threads.items()
            },
            "default_vs_ort": ratio(res, "tvm_default"),
            "tuned_vs_ort": ratio(res, "tvm_tuned"),
            "matches_onnxruntime": match,
            "trials": tuned["trials"],
            "measured_candidates": tuned.get("measured", 0),
            "tune_seconds": tuned["seconds"],
            "tuned_threads": threads_list[0] if tuning else None,
            "tuned_kernels_from_db": tuned["scheduled_funcs"],
            # per thread count: the whole-model check of the tuned build against the default
            "tuning_kept": {
                str(t): {k: b.manifest["tuning"].get(k) for k in ("kept", "whole_model_ms")}
                for t, b in tuned_builds.items()
            },
            "compile_seconds": round(compile_s, 1),
            "tuned_compile_seconds": round(tuned_compile_s, 1) if tuning else 0.0,
            "tuning_budget": tuning,
            "target": default.manifest["target"],
            "kernels": default.manifest["kernels"],
            "profile": profiles,
        }
        brief = {k: v for k, v in out[key].items() if k not in ("profile", "by_threads")}
        brief["by_threads"] = {t: r["default_vs_ort"] for t, r in out[key]["by_threads"].items()}
        print(name, key, json.dumps(brief), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, batch 1, 16 trials")
    parser.add_argument(
        "--trials", type=int, default=0, help="MetaSchedule trials per model and batch (0: none)"
    )
    parser.add_argument(
        "--minutes", type=float, default=0, help="or a tuning time budget per model and batch"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}"
    )
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument(
        "--threads",
        default="",
        help="comma-separated thread counts (default: 1 and the usable cores); with a tuning "
        "budget, tuning times its candidates at the first",
    )
    args = parser.parse_args()
    models = QUICK if args.quick else {k: MODELS[k] for k in args.models.split(",")}
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]
    trials = 16 if args.quick and args.trials else args.trials
    tuning = {"minutes": args.minutes} if args.minutes else {"trials": trials} if trials else {}
    cpu = detect_host()
    threads_list = (
        [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, cpu.cores})
    )
    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory(prefix="dnsrec-bench-") as tmp:
        for name, arch in models.items():
            results[name] = bench_model(
                name, arch, batches, tuning, Path(tmp), 3 if args.quick else args.rounds,
                threads_list,
            )  # fmt: skip
    report = {
        "host": {
            "cpu": cpu.model,
            "cores": cpu.cores,
            "target": TARGET,
            "target_resolved": next(iter(next(iter(results.values())).values()))["target"],
            "features": list(cpu.features),
        },
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "note": "medians of interleaved runs (TVM and ONNX Runtime alternating, same ONNX file, "
        "same thread count) on a machine shared with other jobs: compare ratios within one run. "
        "Weights are untrained (seeded); latency does not depend on them. 'profile' is per "
        "thread count: TVM kernels timed one by one with their real arguments (the rest is "
        "'vm overhead'), ONNX Runtime from its own profiler (the rest is 'session overhead').",
        "command": " ".join([".venv/bin/python", "benchmarks/compile.py", *sys.argv[1:]]),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "models": results,
        "archs": {
            k: (v.to_dict() if isinstance(v, ArchSpec) else "benchmarks/compile.py:ForeignSASRec")
            for k, v in models.items()
        },
    }
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
