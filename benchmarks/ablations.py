"""Ablations of DNS-Rec's search and subnet training, mean ± std over seeds (ml-100k default).

Each seed reuses the embedded default run of ``benchmarks/default_run.py``
(``runs/{--runs}-seed{S}``: its trained baseline and its search) and adds:

- ``no-distill``: the default search's subnet, inherited, trained without distillation;
- ``scratch``: the default search's architecture trained from scratch (the paper's retrain);
- ``no-gates``, ``fixed-penalty``, ``shared-alpha``, ``no-warmup-rule`` (no sandwich rule, no
  prolonged warm-up: the mixture's loss for one warm-up epoch), ``no-inherit`` (the supernet
  starts from its own initialisation, not from the trained baseline), ``all-depths`` (the
  supernet keeps every depth, also those whose cheapest architecture is over the budget): a
  new search with that one change, then the default subnet training (inherited + distilled).

Every subnet trains with the baseline's recipe and budget. Reported per variant and seed: test
HR@10 / NDCG@10 / MRR@10 (full ranking), the share of the seed's baseline NDCG@10, the
architecture, and its ONNX Runtime latency share of the baseline (batch 1, one thread, one
interleaved run). Results: ``benchmarks/results/ablations.json`` (or ``--out``).

    python benchmarks/ablations.py --seeds 0 1 2 --runs quickstart
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import statistics
import time
from dataclasses import replace
from pathlib import Path

from dnsrec_edge.bench.host_latency import HostLatencyModel, host_shares
from dnsrec_edge.data.load import load_dataset
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.pipeline.presets import DEFAULT_BUDGETS, PRESETS
from dnsrec_edge.search.loop import SearchConfig
from dnsrec_edge.search.retrain import retrain
from dnsrec_edge.search.run import search
from dnsrec_edge.search.space import SearchSpace
from dnsrec_edge.train.checkpoint import load_checkpoint
from dnsrec_edge.train.config import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
PRESET = PRESETS["short"]
SEARCH_VARIANTS = {
    "no-gates": ({}, {"gate_hidden": 0}),
    "fixed-penalty": ({"penalty": "fixed"}, {}),
    "shared-alpha": ({"shared_alpha": True}, {}),
    "no-warmup-rule": ({"sandwich": False, "warmup_target": 0.0, "warmup_epochs": 1}, {}),
    "no-inherit": ({"inherit": False}, {}),
    "all-depths": ({"feasible_depths": False}, {}),
}
log = logging.getLogger("bench.ablations")


def metrics_of(res) -> dict:
    full = res.metrics["test"]["full"]
    return {k: full[k] for k in ("hr@10", "ndcg@10", "mrr@10")}


def one_seed(seed: int, variants: list[str], threads: int, save, prefix: str) -> None:
    """Run the ``variants`` for ``seed``; ``save(seed, baseline, name, entry)`` after each."""
    run = ROOT / "runs" / f"{prefix}-seed{seed}" / "stages"
    ds = load_dataset("ml-100k", quiet=True)
    teacher, _ = load_checkpoint(run / "baseline" / "train" / "model.pt", ds.fingerprint)
    done = json.loads((run / "baseline" / "done.json").read_text())["result"]
    baseline = {k: done["test"]["full"][k] for k in ("hr@10", "ndcg@10", "mrr@10")}
    train = TrainConfig(**PRESET["baseline"], seed=seed, threads=threads)
    # the pipeline's time budget (time_share) is left out: on ml-100k every default fine-tune
    # ended on early stopping inside it, and the variants here end the same way
    finetune = {k: v for k, v in PRESET["finetune"].items() if k != "time_share"}
    distill = replace(train, **finetune)
    work = ROOT / "runs" / f"ablations-seed{seed}"
    for name in variants:
        t0 = time.perf_counter()
        if name in SEARCH_VARIANTS:
            cfg, space_kw = SEARCH_VARIANTS[name]
            config = SearchConfig(**{**PRESET["search"], **cfg}, seed=seed, threads=threads)
            res = search(
                ds,
                DEFAULT_BUDGETS["short"],
                work / name,
                "host",
                config=config,
                space=SearchSpace(ds.n_items, config.max_len, **space_kw),
                baseline=teacher.arch,
                baseline_valid=done["valid"]["ndcg@10"],
                measure=lambda archs: host_shares(archs, teacher.arch),
                cost_model=HostLatencyModel(threads=1),  # as the pipeline does on this host
                baseline_checkpoint=run / "baseline" / "train" / "model.pt",
                force=True,
                quiet=True,
            )
            log.info(
                "seed %d %s: searched in %.0f s: %s", seed, name, time.perf_counter() - t0, res.arch
            )
            run_dir, mode, config = work / name, "distill", distill
        else:  # the default search's subnet, trained another way
            run_dir, mode = (
                run / "search" / "run",
                {"no-distill": "finetune", "scratch": "scratch"}[name],
            )
            config = train
        res = retrain(
            run_dir, mode, config=config, dataset=ds, force=True, quiet=True, teacher=teacher
        )
        arch = ArchSpec.load(Path(run_dir) / "arch.json")
        m = metrics_of(res)
        entry = {
            **m,
            "ndcg_share": m["ndcg@10"] / baseline["ndcg@10"],
            "arch": arch.to_dict(),
            "ort_share": host_shares([arch], teacher.arch)[0],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        log.info("seed %d %s: NDCG@10 %.4f (%.3fx)", seed, name, m["ndcg@10"], entry["ndcg_share"])
        save(seed, baseline, name, entry)


def summarise(per_seed: dict[int, dict]) -> dict:
    names = sorted({v for s in per_seed.values() for v in s["variants"]})
    summary = {}
    for name in names:
        shares = [
            s["variants"][name]["ndcg_share"] for s in per_seed.values() if name in s["variants"]
        ]
        ndcg = [s["variants"][name]["ndcg@10"] for s in per_seed.values() if name in s["variants"]]
        summary[name] = {
            "seeds": len(shares),
            "ndcg@10_mean": statistics.mean(ndcg),
            "ndcg@10_std": statistics.stdev(ndcg) if len(ndcg) > 1 else None,
            "ndcg_share_mean": statistics.mean(shares),
            "ndcg_share_std": statistics.stdev(shares) if len(shares) > 1 else None,
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variants", nargs="+", default=["no-distill", "scratch", *SEARCH_VARIANTS]
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--runs", default="default", help="the default runs to build on: runs/RUNS-seedS"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "ablations.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = args.out

    def save(seed: int, baseline: dict, name: str, entry: dict) -> None:
        # Re-read under a lock, so seeds run in parallel processes merge instead of clobbering.
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = json.loads(path.read_text()) if path.exists() else {}
            per_seed = {int(k): v for k, v in old.get("per_seed", {}).items()}
            record = per_seed.setdefault(seed, {"variants": {}})
            record["baseline"] = baseline
            record["variants"][name] = entry
            atomic_write_json(
                path,
                {
                    "dataset": "ml-100k",
                    "preset": "short",
                    "budget": DEFAULT_BUDGETS["short"],
                    "per_seed": dict(sorted(per_seed.items())),
                    "summary": summarise(per_seed),
                },
            )

    for seed in args.seeds:
        one_seed(seed, args.variants, args.threads, save, args.runs)
    print(json.dumps(json.loads(path.read_text())["summary"], indent=1))


if __name__ == "__main__":
    main()
