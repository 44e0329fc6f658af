"""DNS-Rec on a real log at baseline-relative latency budgets, seeds, both runtimes, one table.

Each (seed, budget) is one run of the README's pipeline, full preset, on this host::

    dnsrec-edge pipeline --dataset D --budget B --seed S --out runs/D-SLUG-seedS

On this host the pipeline measures a latency budget under ONNX Runtime; ``--measure-with tvm``
measures it as the target's default TVM builds instead (``dnsrec-edge pipeline
--measure-with tvm``): run folders then end in ``-tvm`` and the budget's entry is keyed
``B (tvm)``, with ``"measured_with"`` saying which runtime the budget's share is of.

For each seed the first budget's run trains the baseline; the other budgets' run folders get a
copy of its data and baseline stages before they start (the pipeline reuses a stage whose
inputs match), so every budget of a seed is judged against one baseline, and of its supernet
warm-up, which does not depend on the budget (their searches start after it; the per-seed
``warmup_reused`` says so, and their search seconds leave the warm-up out). Finished run folders
are resumed, not redone; seeds recorded earlier whose run folders are gone stay in the means.
Per budget, ``benchmarks/results/search.json`` gets, under the dataset's name and
``budgets[B]``:

- ``budget``: ``{"kind", "value", "relative_to", ...}``;
- the mean over seeds of the subnet's test HR@10 / NDCG@10 / MRR@10 (``full`` and ``pop100``),
  parameters, FLOPs, search and subnet-training seconds, its NDCG@10 share of the seed's
  baseline (``ndcg_ratio_vs_baseline`` ± ``ndcg_ratio_std``), and the time of search plus
  subnet training over the baseline's training, in wall time (``time_ratio_vs_baseline``)
  and in CPU time with a reused warm-up's cost counted (``cpu_time_ratio_vs_baseline``:
  mean, std, min, max; the figure to read when runs shared the machine);
- ``latency_ms``: ``{"tvm", "ort"}``, each with both models' median and p99 (batch 1, measured
  in the same bench stage) and the subnet's share of the baseline; ``within_budget`` per
  runtime (a share at most 1.1x the budget);
- ``seeds``: the per-seed figures (``pipeline_runs.run_figures``).

    python benchmarks/search.py --dataset ml-1m --budgets latency=50% latency=25% --seeds 0 1 2
    python benchmarks/search.py --dataset ml-1m --budgets latency=25% --measure-with tvm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline_runs import (  # beside this script
    METRICS,
    RUNTIMES,
    cpu_time_ratio,
    run_figures,
    stats,
)

from dnsrec_edge.bench.host_latency import RUNTIMES as MEASURING_RUNTIMES
from dnsrec_edge.errors import BudgetError
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.search.budget import parse_budget

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SHARED_STAGES = ("data", "baseline")
WARMUPS = Path("cache") / "warmup"  # a run folder's supernet warm-ups (search/warmup_cache.py)
TOLERANCE = 1.1  # a measured share within 10 % of the budget counts as met


def slug(budget: str) -> str:
    """``latency=50%`` -> ``lat50``: the budget's part of a run folder's name."""
    b = parse_budget(budget)
    kind = {"latency": "lat"}.get(b.kind, b.kind)
    value = (
        f"{b.value * 100:g}"
        if b.relative
        else f"{b.value:g}" + ("" if b.kind == "flops" else b.unit)
    )
    return kind + value + ("supernet" if b.relative_to == "supernet" else "")


def entry_key(budget: str, runtime: str) -> str:
    """The budget's key in search.json: its text, marked when measured as TVM builds."""
    return budget if runtime == "ort" else f"{budget} ({runtime})"


def run_one(
    dataset: str, budget: str, seed: int, threads: int | None, shared: Path | None, runtime: str
) -> Path:
    """Run (or resume) the pipeline for one budget and seed, the budget measured under
    ``runtime``; ``shared`` lends its baseline."""
    suffix = "" if runtime == "ort" else f"-{runtime}"
    run = ROOT / "runs" / f"{dataset}-{slug(budget)}-seed{seed}{suffix}"
    if shared is not None:
        for stage in SHARED_STAGES:
            if not (run / "stages" / stage).exists():
                (run / "stages").mkdir(parents=True, exist_ok=True)
                shutil.copytree(shared / "stages" / stage, run / "stages" / stage)
        if (shared / WARMUPS).is_dir():  # the supernet warm-up does not depend on the budget
            shutil.copytree(shared / WARMUPS, run / WARMUPS, dirs_exist_ok=True)
    cmd = [str(ROOT / ".venv" / "bin" / "dnsrec-edge"), "--quiet", "pipeline"]
    cmd += ["--dataset", dataset, "--budget", budget, "--seed", str(seed), "--out", str(run)]
    if threads:
        cmd += ["--threads", str(threads)]
    cmd += ["--measure-with", runtime]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return run


def _mean(rows: list[dict], *path: str) -> float:
    values = []
    for row in rows:
        for key in path:
            row = row[key]
        values.append(row)
    return stats(values)["mean"]


def _cpu_ratios(seeds: list[dict]) -> dict | None:
    """Mean, std, min and max over seeds of the CPU-time ratio (None if a seed lacks it)."""
    ratios = [cpu_time_ratio(s) for s in seeds]
    return None if any(r is None for r in ratios) else stats(ratios)


def summarise(budget: str, seeds: list[dict], runtime: str = "ort") -> dict:
    """The budget's entry: means over ``seeds`` (per-seed figures kept under ``"seeds"``);
    ``runtime`` is the one the budget's share was measured under."""
    b = parse_budget(budget)
    shares = [s["ndcg_share"] for s in seeds]
    time_ratios = [
        sum(s["stage_seconds"][k] for k in ("search", "prune", "finetune"))
        / s["stage_seconds"]["baseline"]
        for s in seeds
    ]
    entry = {
        "budget": b.to_dict(),
        "measured_with": runtime,
        "arch": seeds[0]["dnsrec"]["arch"],
        **{
            p: {k: _mean(seeds, "dnsrec", p, k) for k in METRICS}
            for p in ("full", "pop100")
            if p in seeds[0]["dnsrec"]
        },
        "baseline": {
            p: {k: _mean(seeds, "baseline", p, k) for k in METRICS}
            for p in ("full", "pop100")
            if p in seeds[0]["baseline"]
        },
        "params": _mean(seeds, "dnsrec", "params"),
        "flops": _mean(seeds, "dnsrec", "flops"),
        "search_seconds": _mean(seeds, "stage_seconds", "search"),
        "retrain_seconds": _mean(seeds, "stage_seconds", "finetune"),
        "ndcg_ratio_vs_baseline": stats(shares)["mean"],
        "ndcg_ratio_std": stats(shares)["std"],
        "time_ratio_vs_baseline": stats(time_ratios)["mean"],
        "cpu_time_ratio_vs_baseline": _cpu_ratios(seeds),
        "latency_ms": {},
        "within_budget": {},
    }
    for runtime in RUNTIMES:
        share = stats([s[f"{runtime}_share"] for s in seeds])
        entry["latency_ms"][runtime] = {
            m: {q: _mean(seeds, "latency_ms", runtime, m, q) for q in ("median", "p99")}
            for m in ("baseline", "dnsrec")
        } | {"share": share["mean"], "share_std": share["std"]}
        if b.relative and b.metric == "latency":
            entry["within_budget"][runtime] = all(
                s[f"{runtime}_share"] <= TOLERANCE * b.value for s in seeds
            )
    entry["seeds"] = seeds
    return entry


def with_recorded(recorded: dict | None, seeds: list[dict]) -> list[dict]:
    """``seeds`` plus the per-seed figures ``recorded`` (the budget's earlier entry) holds for
    seeds not run now, sorted by seed: an earlier session's seeds count after their run
    folders are gone, and a seed run again replaces its old figures."""
    fresh = {s["seed"] for s in seeds}
    kept = [s for s in (recorded or {}).get("seeds", []) if s["seed"] not in fresh]
    return sorted(kept + seeds, key=lambda s: s["seed"])


def save(dataset: str, budget: str, seeds: list[dict], note: str, runtime: str) -> list[dict]:
    """Merge the budget's entry into search.json (other datasets, budgets and seeds are kept);
    returns every seed the entry now holds."""
    path = RESULTS / "search.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    node = results.setdefault(dataset, {})
    budgets = node.setdefault("budgets", {})
    key = entry_key(budget, runtime)
    seeds = with_recorded(budgets.get(key), seeds)
    budgets[key] = summarise(budget, seeds, runtime)
    node["pipeline"] = {
        "command": "dnsrec-edge pipeline --dataset D --budget B --seed S --out runs/D-SLUG-seedS",
        "preset": "full",
        "note": note,
        "load_average_at_save": os.getloadavg(),
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
    }
    atomic_write_json(path, results)
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--budgets", nargs="+", default=["latency=50%", "latency=25%"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument("--note", default="", help="how the machine was shared during the runs")
    parser.add_argument(
        "--measure-with",
        choices=sorted(MEASURING_RUNTIMES),
        default="ort",
        help="the runtime a latency budget is measured under (the pipeline's --measure-with)",
    )
    args = parser.parse_args()
    for budget in args.budgets:
        try:
            parse_budget(budget)  # refuse a bad budget before hours of training
        except BudgetError as err:
            parser.error(str(err))
    per_budget: dict[str, list[dict]] = {b: [] for b in args.budgets}
    recorded: dict[str, list[dict]] = {}
    for seed in args.seeds:
        first = None
        for budget in args.budgets:
            run = run_one(args.dataset, budget, seed, args.threads, first, args.measure_with)
            first = first or run
            per_budget[budget].append({"seed": seed, **run_figures(run)})
            recorded[budget] = save(
                args.dataset, budget, per_budget[budget], args.note, args.measure_with
            )
    for budget, seeds in recorded.items():
        entry = summarise(budget, seeds, args.measure_with)
        cpu = entry["cpu_time_ratio_vs_baseline"]
        print(
            f"{entry_key(budget, args.measure_with)}: NDCG@10 {entry['ndcg_ratio_vs_baseline']:.3f}x, "
            f"TVM {entry['latency_ms']['tvm']['share']:.2f}x, "
            f"ORT {entry['latency_ms']['ort']['share']:.2f}x, "
            f"search + training {'?' if cpu is None else format(cpu['max'], '.2f')}x the "
            f"baseline's CPU time at most ({len(seeds)} seeds)"
        )


if __name__ == "__main__":
    main()
