"""Streaming recommendations: equivalence, step vs whole-sequence latency, memory, accuracy.

Writes ``benchmarks/results/streaming.json``:

- ``equivalence``: real ml-1m test histories replayed item by item through the ONNX step
  graph (ONNX Runtime), every step compared with a full recompute (``SASRec.predict`` over the
  same window): max abs difference and the share of steps with an identical top-10. The
  model is the ml-1m baseline shape, start-anchored, max_len 50 (a briefly trained checkpoint
  when ``--checkpoint`` names one, else untrained: the JSON says which), under both window
  rules (the session default ``keep = max_len // 2`` and ``keep = max_len - 1``).
- ``speed``: batch 1, one thread, for the ml-1m baseline shape (2 blocks, hidden 64, 1 head,
  FFN 256, 3,416 items), a small subnet shape (1 block, 1 head of 32, FFN 64) and the subnet
  the README's main command searched (one gated block, 4 heads of 16, FFN 128) at max_len
  50 and 200: a step (cache from a few pushes) and the whole-sequence model (a full history
  of max_len items), as TVM default builds for this host and under ONNX Runtime on the same
  ONNX files, in one interleaved run (rounds alternate step/full and TVM/ORT).
- ``memory``: cache bytes per user, and the peak RSS of a runtime-only process (torch made
  unimportable, ``TVM_USE_RUNTIME_LIB=1``) running a session of max_len pushes.
- ``emulated_arm64``: correctness only: the step cross-compiled for arm64, replayed on the
  emulated board (qemu-user) over RPC, every push compared with ONNX Runtime.
- ``cost``: the target's cost model (``cost/streaming.py`` for a step) beside the measured
  TVM latencies.
- ``accuracy``: both layouts, runs from ``--runs`` or trained here with ``--train``
  (``RECIPES``): ml-100k at max_len 50, 20 epochs, over ``--seeds``; ml-1m with the
  baseline's ml-1m recipe at max_len 200, cut to 30 epochs, one seed (a run takes 15-20
  min on one thread). ``start_anchored``/``left_padded`` at the top are ml-1m's.

    .venv/bin/python benchmarks/streaming.py --checkpoint RUN/model.pt --runs /tmp/streaming-runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "streaming.json"
SHAPES = {  # name -> (blocks as (heads, head_dim, ffn, gate_hidden))
    "ml-1m-baseline": ((1, 64, 256, 0), (1, 64, 256, 0)),
    "small-subnet": ((1, 32, 64, 0),),
    # the subnet the README's main command searched (seed 0: one gated block, 4 heads of 16,
    # FFN 128), over ml-1m's catalogue
    "searched-subnet": ((4, 16, 128, 16),),
}
N_ITEMS, HIDDEN = 3416, 64


def arch_of(name: str, max_len: int):
    from dnsrec_edge.models.archspec import ArchSpec, BlockSpec

    blocks = tuple(BlockSpec(h, d, f, g) for h, d, f, g in SHAPES[name])
    return ArchSpec(N_ITEMS, max_len, HIDDEN, blocks, positions="start_anchored")


def equivalence(checkpoint: Path | None, rows: int, steps: int, exact_rows: int) -> dict:
    import torch

    from dnsrec_edge.data.load import load_dataset
    from dnsrec_edge.export.streaming import (
        dataset_histories,
        export_streaming,
        validate_streaming,
    )
    from dnsrec_edge.models.sasrec import SASRec

    dataset = load_dataset("ml-1m", quiet=True)
    if checkpoint is not None:
        from dnsrec_edge.train.checkpoint import load_checkpoint

        model, meta = load_checkpoint(checkpoint)
        trained = f"briefly trained on ml-1m ({checkpoint})"
    else:
        torch.manual_seed(0)
        model, trained = SASRec(arch_of("ml-1m-baseline", 50)).eval(), "untrained"
    histories = dataset_histories(dataset, rows)
    out = {"model": trained, "arch": model.arch.to_dict(), "dataset": "ml-1m test histories"}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_streaming(model, Path(tmp) / "step.onnx")
        for label, keep, n_rows, n_steps in (
            ("keep_half", None, rows, steps),
            ("keep_last_max_len", model.arch.max_len - 1, exact_rows, model.arch.max_len + 20),
        ):
            t0 = time.perf_counter()
            rep = validate_streaming(path, model, histories[:n_rows], keep=keep, steps=n_steps)
            out[label] = {
                "histories": rep.histories,
                "steps": rep.steps,
                "keep": rep.keep,
                "steps_per_history_cap": n_steps,
                "max_abs_diff": rep.max_abs_diff,
                "top10_agreement": rep.top10_agreement,
                "top10_tied_steps": rep.tied_steps,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(label, out[label], flush=True)
    main = out["keep_half"]
    return {
        **{k: main[k] for k in ("histories", "steps", "max_abs_diff", "top10_agreement")},
        **out,
    }


def _ort(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def build(name: str, max_len: int, folder: Path, target: str) -> dict:
    """Export + compile the step and whole-sequence models of one shape; the timing closures."""
    import torch
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from dnsrec_edge.compile.build import compile as compile_model
    from dnsrec_edge.compile.streaming import reference_step
    from dnsrec_edge.export.onnx_export import export_onnx
    from dnsrec_edge.export.streaming import export_streaming, streaming_layout
    from dnsrec_edge.models.sasrec import SASRec

    torch.manual_seed(0)
    model = SASRec(arch_of(name, max_len)).eval()
    full_onnx = export_onnx(model, folder / f"{name}-{max_len}-full.onnx", batch=1)
    step_onnx = export_streaming(model, folder / f"{name}-{max_len}-step.onnx")
    full_art = compile_model(full_onnx, target, folder / f"{name}-{max_len}-full", quiet=True)
    step_art = compile_model(step_onnx, target, folder / f"{name}-{max_len}-step", quiet=True)
    import onnx

    layout = streaming_layout(model, 1, 0)
    feeds, _ = reference_step(onnx.load(str(step_onnx)), layout)
    history = np.random.default_rng(1).integers(1, N_ITEMS + 1, size=(1, max_len))
    dev = tvm.cpu()
    vms = {
        "step": VirtualMachine(tvm.runtime.load_module(str(step_art.library)), dev),
        "full": VirtualMachine(tvm.runtime.load_module(str(full_art.library)), dev),
    }
    tvm_args = {
        "step": [tvm.runtime.tensor(feeds[i["name"]], dev) for i in step_art.manifest["inputs"]],
        "full": [tvm.runtime.tensor(history, dev)],
    }
    ort_sessions = {"step": _ort(step_onnx), "full": _ort(full_onnx)}
    ort_feeds = {"step": feeds, "full": {"item_seq": history}}
    return {
        "vms": vms,
        "tvm_args": tvm_args,
        "ort": ort_sessions,
        "ort_feeds": ort_feeds,
        "cache_bytes_per_user": layout["cache_bytes_per_user"],
        "step_artifact": step_art.path,
        "kernels": {"step": step_art.manifest["kernels"], "full": full_art.manifest["kernels"]},
    }


def time_tvm(vm, args, number: int, repeat: int) -> list[float]:
    import tvm

    ev = vm.time_evaluator("main", tvm.cpu(), number=number, repeat=repeat, min_repeat_ms=0)
    return [float(s) * 1e3 for s in ev(*args).results]


def time_ort(session, feeds, number: int, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            session.run(None, feeds)
        out.append((time.perf_counter() - t0) * 1e3 / number)
    return out


def speed(folder: Path, target: str, rounds: int, number: int, repeat: int) -> tuple[dict, dict]:
    from dnsrec_edge.compile.artifact import set_threads

    set_threads(1)
    built = {}
    for name in SHAPES:
        for max_len in (50, 200):
            t0 = time.perf_counter()
            built[(name, max_len)] = build(name, max_len, folder, target)
            print(f"built {name} L={max_len} in {time.perf_counter() - t0:.0f} s", flush=True)
    samples = {
        key: {(k, rt): [] for k in ("step", "full") for rt in ("tvm", "ort")} for key in built
    }
    ratios = {key: {"tvm": [], "ort": []} for key in built}  # step/full within each round
    for r in range(rounds):  # interleaved: every model, step/full and TVM/ORT in turn
        for key, b in built.items():
            order = [("step", "tvm"), ("full", "tvm"), ("step", "ort"), ("full", "ort")]
            if r % 2:
                order.reverse()
            got = {}
            for kind, rt in order:
                if rt == "tvm":
                    s = time_tvm(b["vms"][kind], b["tvm_args"][kind], number, repeat)
                else:
                    s = time_ort(b["ort"][kind], b["ort_feeds"][kind], number, repeat)
                samples[key][(kind, rt)] += s
                got[(kind, rt)] = statistics.median(s)
            for rt in ("tvm", "ort"):
                ratios[key][rt].append(got[("step", rt)] / got[("full", rt)])
        print(f"round {r + 1}/{rounds} done", flush=True)
    result: dict = {}
    for (name, max_len), s in samples.items():
        med = {k: statistics.median(v) for k, v in s.items()}
        rr = ratios[(name, max_len)]
        result.setdefault(name, {})[str(max_len)] = {
            "step_ms": {"tvm": med[("step", "tvm")], "ort": med[("step", "ort")]},
            "full_ms": {"tvm": med[("full", "tvm")], "ort": med[("full", "ort")]},
            "step_over_full": {  # median over rounds of each round's ratio
                "tvm": statistics.median(rr["tvm"]),
                "ort": statistics.median(rr["ort"]),
            },
            "step_over_full_rounds": rr,
            "tvm_over_ort": {
                "step": med[("step", "tvm")] / med[("step", "ort")],
                "full": med[("full", "tvm")] / med[("full", "ort")],
            },
            "kernels": built[(name, max_len)]["kernels"],
        }
    return result, built


RSS_CODE = """
import sys, json
sys.modules["torch"] = None  # a board has no torch: make sure nothing needs it
from dnsrec_edge.compile.session import StreamingSession
session = StreamingSession.from_artifact(sys.argv[1], threads=1)
for i in range(session.max_len):
    session.push(1 + (i * 7919) % session.n_items)
heavy = [m for m in ("torch", "onnx", "tvm.relax") if sys.modules.get(m) is not None]
# VmHWM, not ru_maxrss: the latter keeps the forking parent's high-water mark across exec
hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM"))
print(json.dumps({"peak_rss_bytes": hwm * 1024, "pushes": session.max_len, "heavy_modules": heavy}))
"""


def memory(built: dict) -> dict:
    out = {"cache_bytes_per_user": {}, "peak_rss_bytes": {}}
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    for (name, max_len), b in built.items():
        key = f"{name}/{max_len}"
        out["cache_bytes_per_user"][key] = b["cache_bytes_per_user"]
        done = subprocess.run(
            [sys.executable, "-c", RSS_CODE, str(b["step_artifact"])],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        out["peak_rss_bytes"][key] = json.loads(done.stdout.strip().splitlines()[-1])
    out["note"] = (
        "peak RSS of a runtime-only process (TVM_USE_RUNTIME_LIB=1, torch unimportable) that "
        "loads the step artifact and pushes max_len items; cache = k and v of every block, float32"
    )
    return out


def emulated_arm64(folder: Path, pushes: int) -> dict:
    """Correctness only: the ml-1m baseline step (max_len 50) cross-compiled for arm64,
    replayed on the emulated board over RPC, every push compared with ONNX Runtime."""
    import torch

    from dnsrec_edge.bench.emulate import EmulatedBoard
    from dnsrec_edge.board import rpc as rpc_mod
    from dnsrec_edge.compare import compare_scores
    from dnsrec_edge.compile.build import compile as compile_model
    from dnsrec_edge.compile.session import StreamingSession
    from dnsrec_edge.export.streaming import export_streaming
    from dnsrec_edge.models.sasrec import SASRec

    torch.manual_seed(0)
    model = SASRec(arch_of("ml-1m-baseline", 50)).eval()
    onnx_path = export_streaming(model, folder / "arm64-step.onnx")
    artifact = compile_model(onnx_path, "arm64", folder / "arm64-step", quiet=True)
    board = EmulatedBoard("arm64", quiet=True).start()
    try:
        remote = rpc_mod.connect(board.address)
        facts = rpc_mod.board_facts(remote) or {}
        on_board = StreamingSession.from_artifact(artifact, remote=remote)
        reference = StreamingSession.from_onnx(onnx_path)
        items = np.random.default_rng(0).integers(1, N_ITEMS + 1, size=pushes)
        worst, same = 0.0, 0
        for item in items:
            a, b = on_board.push(int(item)), reference.push(int(item))
            check = compare_scores(on_board.last_scores, reference.last_scores)
            if not check.ok:
                raise SystemExit(f"emulated arm64 disagrees with ONNX Runtime: {check.summary()}")
            worst = max(worst, check.max_abs_diff)
            same += a.items.tolist() == b.items.tolist()
    finally:
        board.stop()
    return {
        "what": "correctness only (emulated timings say nothing about a board)",
        "model": "ml-1m-baseline shape, max_len 50, untrained",
        "board": {k: facts.get(k) for k in ("arch", "emulated", "emulator", "tvm_version")},
        "pushes": pushes,
        "reprimes": on_board.reprimes,
        "max_abs_diff_vs_ort": worst,
        "top10_identical_pushes": same,
    }


def cost_predictions(speed: dict, target: str) -> dict:
    """The target's cost model on a step (cost/streaming.py) and a whole sequence, beside the
    measured TVM medians of ``speed``."""
    from dnsrec_edge.cost.calibrated import load_cost_model
    from dnsrec_edge.cost.streaming import analyze_step, predict_step

    model = load_cost_model(target)
    out: dict = {"target": target, "model": model.describe().splitlines()[0]}
    for name, by_len in speed.items():
        if name not in SHAPES:  # e.g. the "command" entry
            continue
        for length, measured in by_len.items():
            arch = arch_of(name, int(length))
            step, full = predict_step(model, arch), model.predict(arch)
            out[f"{name}/{length}"] = {
                "step_flops": analyze_step(arch).flops,
                "full_flops": full.flops,
                "step_ms": {
                    "predicted": step.latency_ms,
                    "measured_tvm": measured["step_ms"]["tvm"],
                },
                "full_ms": {
                    "predicted": full.latency_ms,
                    "measured_tvm": measured["full_ms"]["tvm"],
                },
            }
    return out


# dataset -> (train options, seeds): ml-100k as the training defaults at max_len 50; ml-1m
# with benchmarks/baseline.py's ml-1m recipe at max_len 200, cut to 30 epochs (patience 10)
RECIPES = {
    "ml-100k": (["--max-len", "50", "--epochs", "20"], None),
    "ml-1m": (
        ["--max-len", "200", "--epochs", "30", "--patience", "10", "--valid-share", "0.1",
         "--ema", "0.998", "--ffn", "256", "--precision", "bf16"],
        1,
    ),
}  # fmt: skip


def accuracy(runs: Path, train: bool, seeds: int) -> dict:
    """Test metrics (full ranking) of both layouts, per dataset, over seeds."""
    out: dict = {}
    for name, (options, recipe_seeds) in RECIPES.items():
        part: dict = {
            "settings": f"dnsrec-edge train --dataset {name} {' '.join(options)} --threads 1 "
            "--positions LAYOUT --seed S; test, full ranking, seen items excluded",
        }
        for layout in ("start_anchored", "left_padded"):
            per_seed = []
            for seed in range(recipe_seeds or seeds):
                folder = runs / f"{name}-{layout}-s{seed}"
                if not (folder / "metrics.json").exists():
                    if not train:
                        continue
                    subprocess.run(
                        [
                            str(Path(sys.executable).with_name("dnsrec-edge")), "--quiet",
                            "train", "--dataset", name, *options, "--positions", layout,
                            "--seed", str(seed), "--threads", "1", "--out", str(folder),
                            "--force",
                        ],
                        check=True,
                    )  # fmt: skip
                metrics = json.loads((folder / "metrics.json").read_text())
                test = metrics["metrics"]["test"]["full"]
                per_seed.append(
                    {"seed": seed, "ndcg@10": test["ndcg@10"], "hr@10": test["hr@10"],
                     "best_epoch": metrics["best_epoch"]}
                )  # fmt: skip
            if per_seed:
                part[layout] = {
                    "ndcg@10": statistics.mean(s["ndcg@10"] for s in per_seed),
                    "hr@10": statistics.mean(s["hr@10"] for s in per_seed),
                    "ndcg@10_std": statistics.pstdev(s["ndcg@10"] for s in per_seed),
                    "seeds": per_seed,
                }
        if "start_anchored" in part and "left_padded" in part:
            part["ndcg@10_ratio"] = (
                part["start_anchored"]["ndcg@10"] / part["left_padded"]["ndcg@10"]
            )
        out[name] = part
    # the schema: the ml-1m comparison at the top level
    for layout in ("start_anchored", "left_padded"):
        if layout in out["ml-1m"]:
            out[layout] = out["ml-1m"][layout]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="start-anchored ml-1m checkpoint")
    parser.add_argument("--rows", type=int, default=1000, help="ml-1m histories replayed")
    parser.add_argument("--steps", type=int, default=120, help="items replayed per history")
    parser.add_argument("--exact-rows", type=int, default=100, help="histories, keep=max_len-1")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/streaming-runs"))
    parser.add_argument("--train", action="store_true", help="train missing accuracy runs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--target", default="x86_64-avx512", help="TVM target of the speed runs")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--number", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--skip", nargs="*", default=[], help="parts to skip (keep old values)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    result = {
        "host": platform.machine(),
        "cpu": next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in ln
            ),
            "",
        ),
        "load_before": os.getloadavg(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if "equivalence" not in args.skip:
        result["equivalence"] = equivalence(args.checkpoint, args.rows, args.steps, args.exact_rows)
    if "speed" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            result["speed"], built = speed(
                Path(tmp), args.target, args.rounds, args.number, args.repeat
            )
            result["speed_settings"] = {
                "target": args.target,
                "threads": 1,
                "batch": 1,
                "rounds": args.rounds,
                "number": args.number,
                "repeat": args.repeat,
                "note": "step_ms/full_ms: medians of all samples; step_over_full: median over "
                "rounds of each round's ratio; rounds alternate models, step/full and TVM/ORT; "
                "TVM default schedules (no tuning); full = the whole-sequence model on a "
                "history of max_len items; step = one push on a cache after a few pushes; ORT "
                "on the same ONNX files (numpy in and out, so the caches are copied per call)",
            }
            if "memory" not in args.skip:
                result["memory"] = memory(built)
    if "cost" not in args.skip and ("speed" in result or "speed" in old):
        result["cost"] = cost_predictions(result.get("speed") or old["speed"], args.target)
    if "emulated_arm64" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            result["emulated_arm64"] = emulated_arm64(Path(tmp), pushes=120)
    if "accuracy" not in args.skip:
        result["accuracy"] = accuracy(args.runs, args.train, args.seeds)
    parts = ("equivalence", "speed", "speed_settings", "memory", "cost", "emulated_arm64")
    parts += ("accuracy",)
    for key in parts:
        if key in result:  # measured now: say how (speed: in its settings)
            if key != "speed":
                result[key]["command"] = result["command"]
        elif key in old:  # kept from an earlier run (with its own command)
            result[key] = old[key]
    del result["command"]
    result["load_after"] = os.getloadavg()
    from dnsrec_edge.fsio import atomic_write_json

    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
