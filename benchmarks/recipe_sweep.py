"""Train several baseline recipes side by side and rank them by full-ranking test NDCG@10.

Used to choose the recipe of ``benchmarks/baseline.py``: each candidate is ``baseline.py``'s
ml-1m settings plus the changes listed in ``CANDIDATES``; they run in parallel child
processes (one torch thread each), on a GPU when ``--device cuda`` is given. A recipe chosen
here is then timed and confirmed on the 2-core machine by ``baseline.py``; the figures of a
sweep are for ranking only (another device rounds differently).

    .venv/bin/python benchmarks/recipe_sweep.py --device cuda --parallel 10 --out sweep.jsonl
    .venv/bin/python benchmarks/recipe_sweep.py --only ref dropout0.2 --parallel 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from baseline import SETTINGS  # noqa: E402

# name -> changes to baseline.py's ml-1m settings. Epoch counts are kept where the 2-core
# machine can run them in 30 minutes (80 epochs of full cross-entropy take about 23).
CANDIDATES: dict[str, dict] = {
    "ref": {},
    "dropout0.2": {"dropout": 0.2},
    "dropout0.2-e95": {"dropout": 0.2, "epochs": 95},
    "crop0.5": {"crop": 0.5},
    "b128-lr1e-3": {"batch_size": 128, "lr": 1e-3},
    "b128-lr2e-3": {"batch_size": 128, "lr": 2e-3},
    "heads2": {"heads": 2},
    "ema0.999": {"ema": 0.999},
    "sampled-pop1024-e95": {"loss": "sampled", "sampler": "pop", "negatives": 1024, "epochs": 95},
    "sampled-uni1024-e95": {"loss": "sampled", "negatives": 1024, "epochs": 95},
    "wd1e-4": {"weight_decay": 1e-4},
    "dropout0.3": {"dropout": 0.3},
}


def run_one(args: tuple[str, dict, str, float | None, str]) -> dict:
    """Train one candidate in this child process; return its record."""
    name, changes, device, max_minutes, dataset_name = args
    import torch

    from dnsrec_edge.data.load import load_dataset
    from dnsrec_edge.train.config import TrainConfig
    from dnsrec_edge.train.trainer import train_baseline

    torch.set_num_threads(1)
    settings = {**SETTINGS[dataset_name], **changes}
    config = TrainConfig(threads=1, device=device, max_minutes=max_minutes, **settings)
    dataset = load_dataset(dataset_name, quiet=True)
    start = time.perf_counter()
    try:
        result = train_baseline(dataset, None, config, quiet=True, protocols=("full", "uni100"))
    except Exception as err:  # one failed candidate must not sink the sweep
        return {"name": name, "changes": changes, "error": f"{type(err).__name__}: {err}"}
    test = result.metrics["test"]
    return {
        "name": name,
        "changes": changes,
        "ndcg@10": round(test["full"]["ndcg@10"], 4),
        "hr@10": round(test["full"]["hr@10"], 4),
        "uni100_hr@10": round(test["uni100"]["hr@10"], 4),
        "valid_ndcg@10": round(result.best_valid.get("ndcg@10", float("nan")), 4),
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "seconds": round(time.perf_counter() - start, 1),
        "device": device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m", choices=sorted(SETTINGS))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--parallel", type=int, default=2, help="candidates trained at once")
    parser.add_argument("--only", nargs="+", choices=sorted(CANDIDATES), help="candidates to run")
    parser.add_argument("--max-minutes", type=float, default=None, help="per-candidate cap")
    parser.add_argument("--epochs", type=int, default=None, help="override every epoch count")
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line each")
    args = parser.parse_args()
    names = args.only or list(CANDIDATES)
    epochs = {} if args.epochs is None else {"epochs": args.epochs}
    jobs = [
        (n, {**CANDIDATES[n], **epochs}, args.device, args.max_minutes, args.dataset) for n in names
    ]
    records = []
    with mp.get_context("spawn").Pool(min(args.parallel, len(jobs))) as pool:
        for record in pool.imap_unordered(run_one, jobs):
            records.append(record)
            print(json.dumps(record), flush=True)
            if args.out is not None:
                with args.out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
    print("\n| candidate | test NDCG@10 | HR@10 | uni100 HR@10 | epochs (best) | s |")
    print("|---|---|---|---|---|---|")
    ranked = sorted(records, key=lambda r: -r.get("ndcg@10", -1))
    for r in ranked:
        if "error" in r:
            print(f"| {r['name']} | error: {r['error']} | | | | |")
            continue
        print(
            f"| {r['name']} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | {r['uni100_hr@10']:.4f} "
            f"| {r['epochs']} ({r['best_epoch']}) | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
