"""DNS-Rec search benchmark: baseline SASRec vs searched architectures at FLOPs budgets.

For each dataset: the baseline (figures and training time from benchmarks/results/baseline.json
when it holds the dataset with the same settings, else trained here), then per budget a search,
a retrain from scratch (the paper) and a finetune from the supernet (materialised by
torch-pruning), with test HR@10/NDCG@10 (full ranking and pop100), FLOPs, parameters, PyTorch
CPU latency at batch 1 measured side by side with the baseline, and wall times. Ablations at
one budget: without gates, fixed penalty weight, shared alpha. Results are merged into
benchmarks/results/search.json under the dataset's name.

    python benchmarks/search.py --quick                       # smoke run: ml-100k slice settings
    python benchmarks/search.py --dataset ml-100k             # full mode
    python benchmarks/search.py --dataset ml-1m --budgets 25 --ablations
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from baseline import SETTINGS as RECIPES  # benchmarks/baseline.py, beside this script

from dnsrec_edge.cost.analysis import analyze, param_count
from dnsrec_edge.data.load import load_dataset
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.search.loop import SearchConfig
from dnsrec_edge.search.retrain import retrain
from dnsrec_edge.search.run import search
from dnsrec_edge.search.space import SearchSpace
from dnsrec_edge.train.config import TrainConfig
from dnsrec_edge.train.trainer import baseline_arch, train_baseline

RESULTS = Path(__file__).resolve().parent / "results"
# training settings that must match for a baseline.json entry to stand for this baseline
RECIPE_KEYS = ("max_len", "epochs", "patience", "lr", "batch_size", "dropout", "valid_share", "ema")
log = logging.getLogger("bench.search")


def torch_latency(
    models: dict[str, torch.nn.Module], max_len: int, n_items: int, repeat: int
) -> dict:
    """Median ms of ``predict`` at batch 1, models interleaved so they share the machine's state."""
    torch.set_num_threads(1)
    seq = torch.randint(1, n_items + 1, (1, max_len))
    times = {name: [] for name in models}
    with torch.no_grad():
        for m in models.values():
            m.eval()
            for _ in range(5):
                m.predict(seq)
        for _ in range(repeat):
            for name, m in models.items():
                t0 = time.perf_counter()
                m.predict(seq)
                times[name].append(1e3 * (time.perf_counter() - t0))
    return {name: statistics.median(t) for name, t in times.items()}


def _metrics(m: dict) -> dict:
    return {p: {k: m[p][k] for k in ("hr@10", "ndcg@10")} for p in ("full", "pop100")}


def baseline_figures(dataset, train_cfg: TrainConfig, work: Path, out: Path, rerun: bool) -> dict:
    """The baseline's figures and training time: from baseline.json or an earlier run of this
    benchmark when they match the dataset and settings, else trained here."""
    settings = {"fingerprint": dataset.fingerprint} | {
        k: getattr(train_cfg, k) for k in RECIPE_KEYS
    }
    for path in (RESULTS / "baseline.json", out):
        if rerun or not path.is_file():
            continue
        saved = json.loads(path.read_text()).get(dataset.name, {})
        saved = saved.get("baseline", saved)
        used = saved.get("settings", {})
        fingerprint = used.get("fingerprint") or saved.get("dataset", {}).get("fingerprint")
        same = fingerprint == dataset.fingerprint and all(
            used.get(k) == v for k, v in settings.items() if k != "fingerprint"
        )
        if same and "full" in saved:
            log.info("baseline of %s from %s", dataset.name, path)
            arch = baseline_arch(dataset, train_cfg)
            return {
                "source": str(path.relative_to(RESULTS.parent.parent)),
                "settings": settings,
                "arch": arch.to_dict(),
                **_metrics(saved),
                "flops": analyze(arch).flops,
                "params": param_count(arch),
                "train_seconds": saved["train_seconds"],
                "best_epoch": saved.get("best_epoch"),
                "epochs": saved.get("epochs"),
            }
    log.info("training the baseline of %s here", dataset.name)
    cpu = time.process_time()
    result = train_baseline(dataset, work / "baseline", train_cfg, force=True, quiet=True)
    cpu = time.process_time() - cpu
    arch = result.model.arch
    return {
        "source": "trained by benchmarks/search.py",
        "settings": settings,
        "arch": arch.to_dict(),
        **_metrics(result.metrics["test"]),
        "flops": analyze(arch).flops,
        "params": param_count(arch),
        "train_seconds": result.train_seconds,
        "train_cpu_seconds": cpu,  # training + evaluation; robust to other jobs on the machine
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
    }


def merge(out: Path, name: str, path: tuple[str, ...], value) -> None:
    """Re-read the results file and set ``results[name][path...] = value`` (runs may overlap)."""
    results = json.loads(out.read_text()) if out.is_file() else {}
    node = results.setdefault(name, {})
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    results["meta"] = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "note": "CPU shared with other jobs; times are wall-clock on that machine",
        "torch": torch.__version__,
    }
    atomic_write_json(out, results)


def run_budget(
    dataset,
    budget: str,
    search_cfg: SearchConfig,
    space: SearchSpace,
    train_cfg: TrainConfig,
    out: Path,
    finetune: bool,
) -> tuple[dict, dict]:
    """Search, retrain (scratch, optionally finetune); figures and the retrained models."""
    cpu = time.process_time()
    res = search(dataset, budget, out, config=search_cfg, space=space, force=True, quiet=True)
    search_cpu = time.process_time() - cpu
    scratch = retrain(out, "scratch", config=train_cfg, dataset=dataset, force=True, quiet=True)
    retrain_cpu = time.process_time() - cpu - search_cpu
    entry = {
        "arch": res.arch.to_dict(),
        "share_of_supernet": res.share,
        "within_budget": res.cost <= res.limit,
        "argmax_in_budget": res.argmax_in_budget,
        "search_valid_ndcg@10": res.valid["ndcg@10"],
        **_metrics(scratch.metrics["test"]),
        "flops": scratch.flops,
        "params": scratch.params,
        "search_seconds": res.seconds,
        "retrain_seconds": scratch.train_seconds,
        "search_cpu_seconds": search_cpu,
        "retrain_cpu_seconds": retrain_cpu,
        "retrain_best_epoch": scratch.best_epoch,
    }
    models = {"scratch": scratch.model}
    if finetune:
        tuned = retrain(out, "finetune", config=train_cfg, dataset=dataset, force=True, quiet=True)
        entry["finetune"] = {
            **_metrics(tuned.metrics["test"]),
            "retrain_seconds": tuned.train_seconds,
            "best_epoch": tuned.best_epoch,
        }
    return entry, models


def bench_dataset(name: str, args) -> None:
    dataset = load_dataset(name, quiet=True)
    out = Path(args.out)
    # the baseline's recipe (benchmarks/baseline.py) for the baseline and every retrain
    train_cfg = TrainConfig(threads=args.threads, max_len=args.max_len, **RECIPES.get(name, {}))
    search_cfg = SearchConfig(
        epochs=args.epochs, warmup_epochs=args.warmup, max_len=args.max_len, threads=args.threads
    )
    if args.quick:
        train_cfg = replace(train_cfg, epochs=3, patience=2)
    space = SearchSpace(dataset.n_items, args.max_len)
    work = Path(args.workdir) / name
    base = baseline_figures(dataset, train_cfg, work, out, args.rerun_baseline)
    merge(out, name, ("baseline",), base)
    merge(
        out,
        name,
        ("settings",),
        {
            "search": asdict(search_cfg),
            "train": asdict(train_cfg),
            "space": space.to_dict(),
            "threads": args.threads,
        },
    )
    base_model = SASRec(baseline_arch(dataset, train_cfg))
    for pct in args.budgets:
        budget = f"flops={pct:g}%supernet"  # the share these committed results used
        log.info("%s %s", name, budget)
        result, models = run_budget(
            dataset,
            budget,
            search_cfg,
            space,
            train_cfg,
            work / f"flops{pct:g}",
            finetune=not args.no_finetune,
        )
        lat = torch_latency(
            {"baseline": base_model, "searched": models["scratch"]},
            args.max_len,
            dataset.n_items,
            args.repeat,
        )
        result["torch_ms_b1"] = lat["searched"]
        result["baseline_torch_ms_b1"] = lat["baseline"]
        result["ndcg_ratio_vs_baseline"] = result["full"]["ndcg@10"] / base["full"]["ndcg@10"]
        result["time_ratio_vs_baseline"] = (
            result["search_seconds"] + result["retrain_seconds"]
        ) / base["train_seconds"]
        if "train_cpu_seconds" in base:
            result["cpu_time_ratio_vs_baseline"] = (
                result["search_cpu_seconds"] + result["retrain_cpu_seconds"]
            ) / base["train_cpu_seconds"]
        merge(out, name, ("budgets", f"{pct:g}%"), result)
        log.info("%s %s: %s", name, budget, json.dumps(result)[:600])
    variants = {
        "no_gates": (search_cfg, replace(space, gate_hidden=0)),
        "fixed_penalty": (replace(search_cfg, penalty="fixed"), space),
        "shared_alpha": (replace(search_cfg, shared_alpha=True), space),
    }
    budget = f"flops={args.ablation_budget:g}%supernet"
    for key in args.ablations:
        cfg, sp = variants[key]
        log.info("%s ablation %s at %s", name, key, budget)
        result, _ = run_budget(
            dataset, budget, cfg, sp, train_cfg, work / f"ablation-{key}", finetune=False
        )
        result["budget"] = budget
        result["ndcg_ratio_vs_baseline"] = result["full"]["ndcg@10"] / base["full"]["ndcg@10"]
        merge(out, name, ("ablations", key), result)
        log.info("%s ablation %s: %s", name, key, json.dumps(result)[:600])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run (ml-100k, short runs)")
    parser.add_argument("--dataset", action="append", help="dataset(s) (default ml-100k and ml-1m)")
    parser.add_argument(
        "--budgets",
        type=float,
        nargs="*",
        default=[50, 25, 10],
        help="FLOPs budgets in percent of the full supernet",
    )
    parser.add_argument(
        "--ablations",
        nargs="*",
        default=["no_gates", "fixed_penalty", "shared_alpha"],
        help="ablations to run at --ablation-budget (none: skip)",
    )
    parser.add_argument("--ablation-budget", type=float, default=25)
    parser.add_argument("--no-finetune", action="store_true", help="skip the finetune retrain")
    parser.add_argument("--epochs", type=int, default=10, help="search epochs")
    parser.add_argument("--warmup", type=int, default=3, help="search warm-up epochs")
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=50, help="latency repeats")
    parser.add_argument("--rerun-baseline", action="store_true", help="train the baseline here")
    parser.add_argument("--workdir", default="runs/bench-search")
    parser.add_argument("--out", default=str(RESULTS / "search.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.quick:
        args.dataset = args.dataset or ["ml-100k"]
        args.epochs, args.warmup, args.max_len, args.repeat = 2, 1, 50, 10
        args.budgets, args.ablations = [25], ["no_gates"]
        args.rerun_baseline = True
        args.out = str(Path(args.workdir) / "search-quick.json")  # a smoke run is not a result
    for name in args.dataset or ["ml-100k", "ml-1m"]:
        t0 = time.perf_counter()
        bench_dataset(name, args)
        log.info("%s done in %.0f s; wrote %s", name, time.perf_counter() - t0, args.out)


if __name__ == "__main__":
    main()
