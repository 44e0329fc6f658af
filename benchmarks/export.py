"""Export benchmark: baseline SASRec vs pruned DNS-Rec subnet under ONNX Runtime and PyTorch.

Both models are exported to ONNX (dynamic batch) and timed side by side in one run, calls
interleaved: ONNX Runtime and PyTorch ``predict`` at batch 1 and batch 64, medians and
subnet/baseline ratios, plus parameters, FLOPs (batch 1), ONNX file size, the pruning
equivalence (materialised subnet vs the hard-selected supernet) and the ONNX Runtime vs
PyTorch difference. Results are merged into benchmarks/results/export.json under the dataset
(or ``--name``).

    python benchmarks/export.py --quick          # untrained models of the ml-1m shapes
    python benchmarks/export.py --baseline runs/base/model.pt --run runs/search --dataset ml-1m

``--quick`` times freshly initialised models (3,706 items, max_len 200, hidden 64): latency
does not depend on trained weights, but the figures are labelled untrained.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from dnsrec_edge.cost.analysis import analyze
from dnsrec_edge.export.onnx_export import export_onnx
from dnsrec_edge.export.validate import dataset_inputs, synthetic_inputs, validate_onnx
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.prune.materialize import materialize
from dnsrec_edge.search.space import Choice, SearchSpace
from dnsrec_edge.search.supernet import Supernet
from dnsrec_edge.train.checkpoint import load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("bench.export")
BATCHES = (1, 64)


def quick_models(n_items: int, max_len: int, seed: int = 0):
    """Untrained baseline (2 blocks, 1 head, d=64, FFN 64) and a subnet of the default space."""
    torch.manual_seed(seed)
    baseline = SASRec(ArchSpec.uniform(n_items, max_len, 64, depth=2, heads=1, ffn=64)).eval()
    supernet = Supernet(SearchSpace(n_items=n_items, max_len=max_len)).eval()
    choice = Choice(2, ((1, 1), (2, 2)))  # 2 heads + FFN 128, then 1 head + FFN 64 (gated)
    return baseline, supernet, supernet.space.arch(choice), None


def load_models(baseline_ckpt: Path, run_dir: Path | None, subnet_ckpt: Path | None):
    """``(baseline, supernet or subnet, arch or None, recorded pruning diff or None)``."""
    baseline, _ = load_checkpoint(baseline_ckpt)
    if run_dir is not None:
        supernet, _ = load_checkpoint(run_dir / "supernet.pt")
        return baseline, supernet, ArchSpec.load(run_dir / "arch.json"), None
    subnet, meta = load_checkpoint(subnet_ckpt)
    plan = (meta.get("extra") or {}).get("prune_plan") or {}
    return baseline, subnet, None, plan.get("equivalence", {}).get("max_abs_diff")


def latency(fns: dict, inputs: np.ndarray, repeat: int, warmup: int = 5) -> dict[str, float]:
    """Median ms per call of each fn on ``inputs``, calls interleaved round by round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn(inputs)
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(inputs)
            times[name].append(1e3 * (time.perf_counter() - t0))
    return {name: statistics.median(t) for name, t in times.items()}


def _torch_fn(model: SASRec):
    def run(x: np.ndarray):
        with torch.no_grad():
            return model.predict(torch.from_numpy(x))

    return run


def _ort_fn(path: Path, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"item_seq": x})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="untrained models of --n-items shapes")
    parser.add_argument("--baseline", type=Path, help="trained baseline SASRec checkpoint")
    parser.add_argument("--run", type=Path, help="search run folder (supernet.pt + arch.json)")
    parser.add_argument("--subnet", type=Path, help="pruned subnet checkpoint (prune's model.pt)")
    parser.add_argument("--dataset", default="ml-1m", help="dataset name (real histories)")
    parser.add_argument("--n-items", type=int, default=3706, help="--quick: item count")
    parser.add_argument("--max-len", type=int, default=200, help="--quick: sequence length")
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per model and case")
    parser.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads")
    parser.add_argument("--out", type=Path, default=RESULTS / "export.json")
    parser.add_argument("--name", help="key of this run in --out (default: the dataset)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    if args.quick:
        baseline, source, arch, prune_diff = quick_models(args.n_items, args.max_len)
        histories = synthetic_inputs(args.n_items, args.max_len, rows=256, seed=1)
        weights, inputs = "untrained (fresh initialisation; latency only)", "synthetic"
        subnet_source = "fixed choice of the default search space (no search run)"
    else:
        if args.baseline is None or (args.run is None) == (args.subnet is None):
            parser.error("pass --baseline and one of --run / --subnet (or --quick)")
        from dnsrec_edge.data.load import load_dataset

        baseline, source, arch, prune_diff = load_models(args.baseline, args.run, args.subnet)
        data = load_dataset(args.dataset, quiet=True)
        histories = dataset_inputs(data, baseline.arch.max_len, rows=1024)
        weights, inputs = "trained", "test histories"
        subnet_source = str(args.run or args.subnet)

    if isinstance(source, SASRec):  # an already pruned subnet: its recorded equivalence
        subnet = source
    else:
        subnet, plan = materialize(source, arch, inputs=histories)
        prune_diff = plan["equivalence"]["max_abs_diff"]
    models = {"baseline": baseline, "subnet": subnet}

    entry: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: export_onnx(m, Path(tmp) / f"{name}.onnx") for name, m in models.items()}
        reports = {n: validate_onnx(paths[n], m, histories) for n, m in models.items()}
        onnx_diff = max(r.max_abs_diff for r in reports.values())
        for name, m in models.items():
            entry[name] = {
                "arch": m.arch.to_dict(),
                "params": sum(p.numel() for p in m.parameters()),
                "flops": analyze(m.arch, batch=1).flops,
                "onnx_bytes": paths[name].stat().st_size,
                "ort_rows_checked": reports[name].rows,
                "ort_tied_rows": reports[name].tied_rows,
            }
        runtimes = {
            "ort": {n: _ort_fn(paths[n], args.threads) for n in models},
            "torch": {n: _torch_fn(m) for n, m in models.items()},
        }
        for batch in BATCHES:
            x = np.ascontiguousarray(histories[2 : 2 + batch])  # rows 0-1: padding, bad ids
            for runtime, fns in runtimes.items():
                medians = latency(fns, x, args.repeat)
                for name, ms in medians.items():
                    entry[name][f"{runtime}_ms_b{batch}"] = round(ms, 4)
                ratio = medians["subnet"] / medians["baseline"]
                entry[f"subnet_vs_baseline_{runtime}_b{batch}"] = round(ratio, 4)
                log.info(
                    "%s batch %d: baseline %.3f ms, subnet %.3f ms (x%.2f)",
                    runtime,
                    batch,
                    medians["baseline"],
                    medians["subnet"],
                    ratio,
                )
    entry |= {
        "prune_max_abs_diff": prune_diff,
        "onnx_max_abs_diff": onnx_diff,
        "weights": weights,
        "subnet_source": subnet_source,
        "inputs": inputs,
        "repeat": args.repeat,
        "threads": args.threads,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, shared with other jobs",
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
    }
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.name or args.dataset] = entry
    atomic_write_json(args.out, results)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
