"""The pipeline's stage functions: thin adapters over the toolkit's own API.

Each function takes the :class:`Plan` (what the user asked for) and the stage's
:class:`StageContext`, calls the module that does the work, writes into ``ctx.out`` and
returns a small JSON result for ``done.json``, the next stages and the report. Heavy
modules (torch, TVM, ONNX) are imported inside the functions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnsrec_edge.errors import DataError, InputFileError, UnknownDataset
from dnsrec_edge.fsio import atomic_write_json, sha256_file
from dnsrec_edge.pipeline.stages import StageContext

MODELS = ("baseline", "dnsrec")

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What the user asked for, resolved: dataset, targets, budget, board, preset settings."""

    dataset: Any  # registered name, path, or a Dataset object
    target: str
    artifact_targets: tuple[str, ...]
    budget: str
    rpc: str | None
    tracker: str | None
    key: str | None
    settings: dict[str, dict[str, Any]]
    calibration_dir: str | None = None
    threads: int | None = None
    refit: bool = False
    quantize: str | None = None  # "int8": export, compile and bench int8 files
    measure_with: str = "ort"  # the runtime a latency budget on this host is measured under
    _datasets: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def targets(self) -> tuple[str, ...]:
        """The benched target first, then the artifact-only ones."""
        return (self.target, *[t for t in self.artifact_targets if t != self.target])

    def dataset_source(self) -> dict[str, Any]:
        """What identifies the input data (a file's content hash, not its name)."""
        from dnsrec_edge.data.dataset import Dataset
        from dnsrec_edge.data.load import looks_like_path

        if isinstance(self.dataset, Dataset):
            return {"fingerprint": self.dataset.fingerprint, "name": self.dataset.name}
        if looks_like_path(self.dataset):
            path = Path(self.dataset)
            if not path.is_file():
                raise InputFileError(
                    f"dataset file '{path}' does not exist; pass an existing file or a "
                    "registered name (ml-1m, ml-100k, ml-latest-small)"
                )
            return {"path": str(path.resolve()), "sha256": sha256_file(path)}
        from dnsrec_edge.data.registry import known_names

        if str(self.dataset) not in known_names():
            raise UnknownDataset(str(self.dataset), known_names())
        return {"name": str(self.dataset)}

    def load_dataset(self, quiet: bool = False, fingerprint: str | None = None):
        """The Dataset (loaded once per process); checks ``fingerprint`` when given."""
        from dnsrec_edge.data.dataset import Dataset
        from dnsrec_edge.data.load import load_dataset

        if isinstance(self.dataset, Dataset):
            ds = self.dataset
        else:
            key = str(self.dataset)
            if key not in self._datasets:
                self._datasets[key] = load_dataset(self.dataset, quiet=quiet)
            ds = self._datasets[key]
        if fingerprint is not None and ds.fingerprint != fingerprint:
            raise DataError(
                f"dataset '{ds.name}' changed since the data stage ran; rerun with --from data"
            )
        return ds

    def dataset_for(self, ctx: StageContext):
        return self.load_dataset(ctx.quiet, ctx["data"].result["fingerprint"])


def _metrics(model, dataset, max_len: int, part: str = "test", protocols=("full", "pop100")):
    from dnsrec_edge.evaluate import evaluate

    return evaluate(model.predict, dataset, part, max_len, protocols=protocols)


def _size(arch) -> dict[str, Any]:
    from dnsrec_edge.cost.analysis import size

    return size(arch)


# ---------------------------------------------------------------------------------------------
# data, baseline, search, prune, finetune


def run_data(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    ds = plan.load_dataset(ctx.quiet)
    stats = ds.stats()
    atomic_write_json(ctx.out / "dataset.json", stats)
    keys = ("name", "users", "items", "interactions", "fingerprint")
    return {k: stats[k] for k in keys}


def run_baseline(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    from dnsrec_edge.train.config import TrainConfig
    from dnsrec_edge.train.trainer import train_baseline

    ds = plan.dataset_for(ctx)
    config = TrainConfig(**ctx.settings["config"], threads=plan.threads)
    result = train_baseline(
        ds, ctx.out / "train", config, quiet=ctx.quiet, protocols=("full", "pop100")
    )
    arch = result.model.arch
    return {
        "checkpoint": "train/model.pt",
        "arch": arch.to_dict(),
        "test": result.metrics["test"],
        "valid": result.metrics["valid"]["full"],
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.train_seconds, 2),
        "max_len": config.max_len,
        **_size(arch),
    }


def search_settings(plan: Plan) -> dict[str, Any]:
    """The search stage's settings; a latency/energy budget adds the cost model it reads."""
    from dnsrec_edge.search.budget import parse_budget
    from dnsrec_edge.search.run import runs_on_this_host

    budget = parse_budget(plan.budget)
    settings = {
        "budget": str(budget),
        "config": plan.settings["search"],
        "space": plan.settings["space"],
        "candidates": plan.settings["candidates"],
    }
    if budget.kind != "flops":
        settings |= {"target": plan.target, "cost_model": cost_model_id(plan)}
    if budget.kind == "latency" and runs_on_this_host(plan.target):
        from dnsrec_edge.bench.host_latency import RUNTIMES

        # this host: the costs and the front's latency shares are measured
        runtime = plan.measure_with
        settings |= {
            "measure": runtime,
            "cost_model": f"measured on this host ({RUNTIMES[runtime]})",
        }
    return settings


def bench_mode(plan: Plan, emulate: bool = False) -> tuple[str, str]:
    """How the plan's target is benched (see ``bench.boards.bench_mode``), and a note."""
    from dnsrec_edge.bench.boards import bench_mode

    return bench_mode(plan.target, emulate, plan.rpc, plan.tracker)


def cost_model_id(plan: Plan) -> str:
    """sha256 of the model file the target's cost model loads from, or "prior"."""
    from dnsrec_edge.compile.targets import load_target
    from dnsrec_edge.cost.records import model_id

    return model_id(load_target(plan.target).name, plan.calibration_dir)


def bench_options(plan: Plan) -> dict[str, Any]:
    """The preset's bench options; unless they fix ``threads``, the thread count the target's
    measured cost model was calibrated with, so measurement and prediction compare like with
    like (a prior model leaves the target's own count)."""
    from dnsrec_edge.cost.calibrate import calibrated_threads

    opts = dict(plan.settings["bench"])
    if opts.get("threads") is None:
        threads = calibrated_threads(plan.target, plan.calibration_dir)
        if threads is not None:
            opts["threads"] = threads
    return opts


def run_search(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    from dnsrec_edge.models.archspec import ArchSpec
    from dnsrec_edge.search.candidates import evaluate_candidates
    from dnsrec_edge.search.loop import SearchConfig
    from dnsrec_edge.search.run import search
    from dnsrec_edge.search.space import SearchSpace

    ds = plan.dataset_for(ctx)
    config = SearchConfig(**ctx.settings["config"], threads=plan.threads)
    space = SearchSpace(ds.n_items, config.max_len, **ctx.settings["space"])
    baseline = ctx["baseline"].result
    measure = cost_model = None
    if ctx.settings.get("measure"):  # this host: measure, do not predict
        from dnsrec_edge.search.run import host_measurers

        cost_model, measure = host_measurers(
            ArchSpec.from_dict(baseline["arch"]),
            runtime=ctx.settings["measure"],
            target=plan.target,
        )
    res = search(
        ds,
        ctx.settings["budget"],
        ctx.out / "run",
        target=plan.target,
        config=config,
        space=space,
        calibration_dir=plan.calibration_dir,
        quiet=ctx.quiet,
        baseline=ArchSpec.from_dict(baseline["arch"]),
        baseline_valid=baseline["valid"]["ndcg@10"],
        measure=measure,
        front_size=ctx.settings["candidates"]["max"],
        cost_model=cost_model,
        warmup_cache=ctx.out.parents[1] / "cache" / "warmup",  # shared by the run's budgets
        baseline_checkpoint=ctx["baseline"].file(baseline["checkpoint"]),
    )
    candidates = evaluate_candidates(
        ctx.out / "run", ds, config.max_len, ctx.settings["candidates"]["max"]
    )
    atomic_write_json(ctx.out / "candidates.json", candidates)
    return {
        "run": "run",
        "arch": res.arch.to_dict(),
        "budget": res.budget.to_dict() | {"limit": res.limit},
        "cost": res.cost,
        "measured_share": next(
            (p.measured_share for p in res.front if p.choice == res.choice), None
        ),
        "share": res.share,
        "measured_with": ctx.settings.get("measure"),  # None: predicted by the cost model
        "best_epoch": res.best_epoch,
        "valid": res.valid,
        "argmax_in_budget": res.argmax_in_budget,
        "search_seconds": round(res.seconds, 2),
        "warmup_reused": res.warmup_reused,
        "warmup_cpu_seconds": res.warmup_cpu_seconds,
        "candidates": len(candidates),
        **_size(res.arch),
    }


def run_prune(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    from dnsrec_edge.prune.run import prune_run
    from dnsrec_edge.train.checkpoint import load_checkpoint

    ds = plan.dataset_for(ctx)
    path, prune_plan = prune_run(ctx["search"].file("run"), out_dir=ctx.out, dataset=ds)
    model, _ = load_checkpoint(path)
    test = _metrics(model, ds, model.arch.max_len, protocols=("full",))
    return {
        "checkpoint": path.name,
        "arch": model.arch.to_dict(),
        "params_before": prune_plan.get("params_before"),
        "params_after": prune_plan.get("params_after"),
        "equivalence": prune_plan.get("equivalence"),
        "test": test,
        **_size(model.arch),
    }


def run_finetune(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    from dataclasses import asdict

    from dnsrec_edge.train.checkpoint import load_checkpoint
    from dnsrec_edge.train.config import TrainConfig
    from dnsrec_edge.train.trainer import final_metrics, train_model

    ds = plan.dataset_for(ctx)
    model, _ = load_checkpoint(ctx["prune"].file("model.pt"), ds.fingerprint)
    teacher, _ = load_checkpoint(
        ctx["baseline"].file(ctx["baseline"].result["checkpoint"]), ds.fingerprint
    )
    # the baseline's own recipe and budget (epochs, schedule, early stopping), then the
    # preset's subnet settings (distillation weight, temperature)
    settings = dict(ctx.settings["config"])
    budget = finetune_budget(settings.pop("time_share", None), ctx)
    base = asdict(TrainConfig(**ctx.settings["baseline"]))
    config = TrainConfig.from_dict(
        base | settings | {"threads": plan.threads, "budget_seconds": budget}
    )
    result = train_model(model, ds, config, ctx.out / "train", quiet=ctx.quiet, teacher=teacher)
    both = final_metrics(result.model, ds, config, ("full", "pop100"))
    metrics, valid = both["test"], both["valid"]
    atomic_write_json(ctx.out / "metrics.json", {"test": metrics, "valid": valid})
    return {
        "checkpoint": "train/model.pt",
        "arch": model.arch.to_dict(),
        "test": metrics,
        "valid": valid["full"],
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.train_seconds, 2),
        "budget_seconds": None if budget is None else round(budget, 3),
        "budget_spent": round(result.budget_spent, 2),
        "stopped": result.stopped,
        **_size(model.arch),
    }


def finetune_budget(share: float | None, ctx: StageContext) -> float | None:
    """CPU seconds the subnet's training may take so that search (with a warm-up it reused),
    prune and training together take at most ``share`` times the baseline stage's CPU time;
    None without a share or when an upstream stage did not record its time."""
    base, search, prune = ctx["baseline"], ctx["search"], ctx["prune"]
    if share is None or base.cpu_seconds is None or search.cpu_seconds is None:
        return None
    reused = search.result.get("warmup_cpu_seconds") or 0.0
    if search.result.get("warmup_reused") and not reused:
        log.warning("the search reused a warm-up of unknown cost; it is not counted")
    spent = search.cpu_seconds + reused + (prune.cpu_seconds or 0.0)
    left = share * base.cpu_seconds - spent
    if left <= 0:
        log.warning(
            "the search took %.1fx the baseline's training time; the subnet trains one epoch",
            spent / base.cpu_seconds,
        )
    return max(left, 1e-3)


# ---------------------------------------------------------------------------------------------
# export, compile, bench, calibrate


def run_export(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    from dnsrec_edge.export.checkpoint import export_checkpoint

    ds = plan.dataset_for(ctx)
    out = {}
    sources = {"baseline": ctx["baseline"], "dnsrec": ctx["finetune"]}
    for name, stage in sources.items():
        path, report = export_checkpoint(
            stage.file(stage.result["checkpoint"]),
            ctx.out / f"{name}.onnx",
            batch=ctx.settings["batch"],
            dataset=ds,
            rows=ctx.settings["rows"],
            quantize=ctx.settings.get("quantize"),
        )
        out[name] = {
            "onnx": path.name,
            "bytes": path.stat().st_size,
            "max_abs_diff": report.to_dict().get("max_abs_diff"),
            "quantized": report.quantized,
        }
    return out


def compile_settings(plan: Plan) -> dict[str, Any]:
    """The compile stage's settings: every target, and the thread count the benched target
    runs at when the bench fixes one (a build is made for its thread count: on a 2-core host
    a build for 2 cores run on 1 thread took 0.354 ms against 0.321 ms built for 1:
    benchmarks/results/threads.json)."""
    settings: dict[str, Any] = {"targets": list(plan.targets)}
    threads = bench_options(plan).get("threads")
    if threads is not None:
        settings["threads"] = {plan.target: int(threads)}
    return settings


def run_compile(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    """Compile both models for every target; an artifact already built in this run folder for
    the same ONNX bytes and target (e.g. the baseline, when only the budget changed) is
    reused from the run's compile cache after its checksums verify."""
    from dnsrec_edge.compile.cache import compile_cached

    cache = ctx.out.parents[1] / "cache" / "compile"
    out: dict[str, Any] = {}
    for target in ctx.settings["targets"]:
        out[target] = {}
        (ctx.out / target).mkdir()
        for name in MODELS:
            onnx_path = ctx["export"].file(ctx["export"].result[name]["onnx"])
            dest = ctx.out / target / name
            threads = ctx.settings.get("threads", {}).get(target)
            art, reused = compile_cached(
                onnx_path, target, dest, cache, threads=threads, quiet=ctx.quiet
            )
            out[target][name] = {
                "artifact": f"{target}/{name}",
                "library_bytes": art.library.stat().st_size,
                "arch": art.manifest.get("arch"),
                "seconds": art.manifest.get("compile_seconds"),
                "reused": reused,
            }
    return out


def run_bench(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    mode, note = ctx.settings["mode"], ctx.settings["note"]
    if mode == "none":
        return {"mode": mode, "note": note, "target": plan.target}
    from dnsrec_edge.bench.boards import board
    from dnsrec_edge.bench.run import benchmark

    opts = dict(ctx.settings["options"])
    results = {}
    with board(mode, plan.rpc, plan.tracker, plan.key) as where:
        for name in MODELS:
            artifact = ctx["compile"].file(ctx["compile"].result[plan.target][name]["artifact"])
            report = benchmark(
                artifact,
                **where,
                **opts,
                out=ctx.out / f"{name}.json",
                record=mode != "emulate",
                calibration_dir=plan.calibration_dir,
            )
            data = report.to_dict()
            results[name] = {
                k: data.get(k)
                for k in (
                    "latency_ms",
                    "energy",
                    "max_abs_diff",
                    "top10_match",
                    "emulated",
                    "library_bytes",
                    "peak_rss_bytes",
                    "throughput_per_s",
                    "artifact_sha256",
                )
            }
            results[name]["threads"] = (data.get("boards") or [{}])[0].get("threads")
    if mode == "local":  # the runtime users would pick instead, on the same ONNX files
        from dnsrec_edge.export.ort_timing import time_onnx

        paths = {name: ctx["export"].file(f"{name}.onnx") for name in MODELS}
        threads = results["baseline"].get("threads") or 1  # the threads TVM ran with
        stats = time_onnx(list(paths.values()), threads=threads, repeat=opts.get("repeat", 30))
        for name, path in paths.items():
            results[name]["ort_latency_ms"] = stats[str(path)]
    return {"mode": mode, "note": note, "target": plan.target, **results}


def run_calibrate(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    """The target's cost model against the measurements: predictions for the baseline, the
    subnet and the candidates; the budget check; optionally a refit from the records.

    Measured figures are the latency statistic the model predicts (``min`` or ``median``)."""
    from dnsrec_edge.compile.targets import load_target
    from dnsrec_edge.cost.calibrate import record_points
    from dnsrec_edge.cost.calibrated import load_cost_model
    from dnsrec_edge.models.archspec import ArchSpec

    target = load_target(plan.target)
    bench = ctx["bench"].result
    if ctx.settings["refit"] and bench["mode"] not in ("none", "emulate"):
        from dnsrec_edge.bench.calibrate import calibrate

        calibrate(target=target.name, refit=True, calibration_dir=plan.calibration_dir)
    model = load_cost_model(target, plan.calibration_dir)
    archs = {"baseline": ctx["baseline"].result["arch"], "dnsrec": ctx["finetune"].result["arch"]}
    points = []
    for name, arch in archs.items():
        cost = model.predict(ArchSpec.from_dict(arch))
        measured = ((bench.get(name) or {}).get("latency_ms") or {}).get(model.statistic)
        points.append(
            {
                "kind": name,
                "predicted_ms": cost.latency_ms,
                "predicted_mj": cost.energy_mj,
                "measured_ms": measured,
            }
        )
    points += record_points(model, target.name, plan.calibration_dir)
    candidates = json.loads(ctx["search"].file("candidates.json").read_text(encoding="utf-8"))
    predicted = [model.predict(ArchSpec.from_dict(c["arch"])).latency_ms for c in candidates]
    result: dict[str, Any] = {
        "target": target.name,
        "kind": model.kind,
        "points": points,
        "candidates_ms": predicted,
        "heldout": model.meta.get("heldout"),
        "statistic": model.statistic,
    }
    budget = ctx["search"].result["budget"]
    measured = points[1]["measured_ms"]
    if budget["kind"] == "latency" and measured is not None and bench["mode"] != "emulate":
        from dnsrec_edge.cost.check import check_against_budget

        check = check_against_budget(
            ArchSpec.from_dict(archs["dnsrec"]),
            target,
            measured,
            budget["limit"],
            "latency",
            plan.calibration_dir,
        )
        result["budget_check"] = check.to_dict() | {"summary": check.summary()}
    return result
