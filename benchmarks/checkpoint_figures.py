"""Test accuracy and latency of the fine-tuned subnets of run folders, also unfinished ones.

For each ``runs/ml-1m-lat50-seedS`` given, loads the baseline's and the fine-tune's
``model.pt`` (the best validation epoch so far, so a run stopped before early stopping counts
with what it had), evaluates both on the test users (full ranking and pop100), then exports
and compiles both (``--target host``) and times the TVM builds and ONNX Runtime on the same
ONNX files at batch 1, one thread, in one interleaved run on a real history. Prints one JSON
object per run and writes them all to ``--out``.

    python benchmarks/checkpoint_figures.py runs/ml-1m-lat50-seed0 runs/ml-1m-lat50-seed1 \\
        --out benchmarks/results/checkpoint_figures.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from dnsrec_edge.compile.artifact import set_threads
from dnsrec_edge.compile.build import compile as compile_model
from dnsrec_edge.data.load import load_dataset
from dnsrec_edge.evaluate import PROTOCOLS
from dnsrec_edge.export.onnx_export import export_onnx
from dnsrec_edge.export.validate import dataset_inputs
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.train.checkpoint import load_checkpoint, read_checkpoint
from dnsrec_edge.train.config import TrainConfig
from dnsrec_edge.train.trainer import final_metrics

sys.path.insert(0, str(Path(__file__).parent))
from timing import interleaved  # noqa: E402  (benchmarks/timing.py)

MODELS = {"baseline": "baseline/train/model.pt", "subnet": "finetune/train/model.pt"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for run in args.runs:  # refuse a wrong folder before minutes of evaluation
        for rel in MODELS.values():
            if not (run / "stages" / rel).is_file():
                parser.error(f"'{run}' holds no stages/{rel}; pass a pipeline run folder")
    import onnxruntime as ort
    import tvm

    ds = load_dataset(args.dataset, quiet=True)
    work = Path(tempfile.mkdtemp(prefix="checkpoint-figures-"))
    set_threads(1)
    rows, fns = {}, {}
    for run in args.runs:
        row = {}
        for name, rel in MODELS.items():
            path = run / "stages" / rel
            model, _ = load_checkpoint(path, ds.fingerprint)
            cfg = TrainConfig.from_dict(read_checkpoint(path)["extra"]["train_config"])
            test = final_metrics(model, ds, cfg, PROTOCOLS, True)["test"]
            x = dataset_inputs(ds, cfg.max_len, rows=1)
            onnx_path = export_onnx(model.eval(), work / f"{run.name}-{name}.onnx")
            art = compile_model(onnx_path, "host", work / f"{run.name}-{name}", batch=1, quiet=True)
            vm, xi, w = art.load_vm(1), tvm.runtime.tensor(x, tvm.cpu()), art.weights()
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            sess = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
            fns[f"{run}/{name}/tvm"] = lambda vm=vm, xi=xi, w=w: vm["main"](xi, *w)
            fns[f"{run}/{name}/ort"] = lambda s=sess, x=x: s.run(None, {"item_seq": x})
            row[name] = {"arch": model.arch.to_dict(), **{p: test[p] for p in ("full", "pop100")}}
        rows[str(run)] = row
    times = interleaved(fns, 15, 20)
    for run, row in rows.items():
        row["ndcg_share"] = row["subnet"]["full"]["ndcg@10"] / row["baseline"]["full"]["ndcg@10"]
        for rt in ("tvm", "ort"):
            base, sub = times[f"{run}/baseline/{rt}"], times[f"{run}/subnet/{rt}"]
            row[f"{rt}_ms"] = {"baseline": base, "subnet": sub}
            row[f"{rt}_share"] = sub["median"] / base["median"]
        print(json.dumps({run: {k: row[k] for k in ("ndcg_share", "tvm_share", "ort_share")}}))
    atomic_write_json(args.out, rows)


if __name__ == "__main__":
    main()
