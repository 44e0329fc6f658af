"""The pipeline's stage functions: thin adapters over the toolkit's own API.

Each function takes the :class:`Plan` (what the user asked for) and the stage's
:class:`StageContext`, calls the module that does the work, writes into ``ctx.out`` and
returns a small JSON result for ``done.json``, the next stages and the report. Heavy
modules (torch, TVM, ONNX) are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnsrec_edge.errors import DataError, InputFileError, PipelineError, UnknownDataset
from dnsrec_edge.flow.stages import StageContext
from dnsrec_edge.fsio import atomic_write_json

log = logging.getLogger(__name__)

MODELS = ("baseline", "dnsrec")
HOST_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}.get(
    platform.machine().lower(), platform.machine().lower()
)


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
            return {"path": str(path.resolve()), "sha256": _sha256(path)}
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _metrics(model, dataset, max_len: int, part: str = "test", protocols=("full", "pop100")):
    from dnsrec_edge.evaluate import evaluate

    return evaluate(model.predict, dataset, part, max_len, protocols=protocols)


def _size(arch) -> dict[str, Any]:
    from dnsrec_edge.cost.analysis import analyze, param_count

    return {"params": param_count(arch), "flops": analyze(arch, 1).flops}


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

    budget = parse_budget(plan.budget)
    settings = {
        "budget": str(budget),
        "config": plan.settings["search"],
        "space": plan.settings["space"],
        "candidates": plan.settings["candidates"],
    }
    if budget.kind != "flops":
        settings |= {"target": plan.target, "cost_model": cost_model_id(plan)}
    return settings


def cost_model_id(plan: Plan) -> str:
    """sha256 of the model file the target's cost model loads from, or "prior"."""
    from dnsrec_edge.compile.targets import load_target
    from dnsrec_edge.cost.records import MODEL_FILE, store_folders

    name = load_target(plan.target).name
    for folder in reversed(store_folders(name, plan.calibration_dir)):
        if (folder / MODEL_FILE).is_file():
            return _sha256(folder / MODEL_FILE)
    return "prior"


def bench_options(plan: Plan) -> dict[str, Any]:
    """The preset's bench options; unless they fix ``threads``, the thread count the target's
    measured cost model was calibrated with, so measurement and prediction compare like with
    like (a prior model leaves the target's own count)."""
    from dnsrec_edge.cost.calibrated import load_cost_model

    opts = dict(plan.settings["bench"])
    if opts.get("threads") is None:
        model = load_cost_model(plan.target, plan.calibration_dir)
        if model.kind == "measured" and model.meta.get("threads"):
            opts["threads"] = int(model.meta["threads"])
    return opts


def run_search(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    from dnsrec_edge.search.loop import SearchConfig
    from dnsrec_edge.search.run import search
    from dnsrec_edge.search.space import SearchSpace

    ds = plan.dataset_for(ctx)
    config = SearchConfig(**ctx.settings["config"], threads=plan.threads)
    space = SearchSpace(ds.n_items, config.max_len, **ctx.settings["space"])
    res = search(
        ds,
        ctx.settings["budget"],
        ctx.out / "run",
        target=plan.target,
        config=config,
        space=space,
        calibration_dir=plan.calibration_dir,
        quiet=ctx.quiet,
    )
    candidates = evaluate_candidates(
        ctx.out / "run", ds, config.max_len, ctx.settings["candidates"]["max"]
    )
    atomic_write_json(ctx.out / "candidates.json", candidates)
    return {
        "run": "run",
        "arch": res.arch.to_dict(),
        "budget": {
            "text": str(res.budget),
            "kind": res.budget.kind,
            "limit": res.limit,
            "unit": res.budget.unit,
            "value": res.budget.value,
            "relative": res.budget.relative,
        },
        "cost": res.cost,
        "share": res.share,
        "best_epoch": res.best_epoch,
        "valid": res.valid,
        "argmax_in_budget": res.argmax_in_budget,
        "search_seconds": round(res.seconds, 2),
        "candidates": len(candidates),
        **_size(res.arch),
    }


def evaluate_candidates(run_dir: Path, dataset, max_len: int, limit: int) -> list[dict]:
    """Test NDCG@10 of the architectures the search visited (each epoch's pick and argmax),
    with the supernet's weights of the selected epoch (inherited, not fine-tuned)."""
    import torch

    from dnsrec_edge.evaluate import evaluate
    from dnsrec_edge.fsio import read_jsonl
    from dnsrec_edge.search.space import Choice
    from dnsrec_edge.train.checkpoint import load_checkpoint

    supernet, _ = load_checkpoint(run_dir / "supernet.pt", dataset.fingerprint)
    supernet.eval()
    seen: dict[tuple, dict[str, Any]] = {}
    for _, record, _raw in read_jsonl(run_dir / "search_log.jsonl"):
        if record is None:
            continue
        for key in ("selected", "argmax"):
            choice = Choice(record[key]["depth"], tuple(map(tuple, record[key]["blocks"])))
            ident = (choice.depth, choice.blocks)
            if ident not in seen and len(seen) < limit:
                seen[ident] = {"label": f"epoch {record['epoch']} {key}", "choice": choice}
    out = []
    for item in seen.values():
        choice = item.pop("choice")
        with torch.no_grad(), supernet.selected(choice):
            test = evaluate(supernet.predict, dataset, "test", max_len, protocols=("full",))
        arch = supernet.space.arch(choice)
        out.append(
            {
                **item,
                "depth": choice.depth,
                "blocks": [list(b) for b in choice.blocks],
                "arch": arch.to_dict(),
                "ndcg@10": test["full"]["ndcg@10"],
                "hr@10": test["full"]["hr@10"],
                **_size(arch),
            }
        )
    return out


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

    from dnsrec_edge.search.retrain import default_train_config, read_run
    from dnsrec_edge.train.checkpoint import load_checkpoint
    from dnsrec_edge.train.config import TrainConfig
    from dnsrec_edge.train.trainer import final_metrics, train_model

    ds = plan.dataset_for(ctx)
    model, _ = load_checkpoint(ctx["prune"].file("model.pt"), ds.fingerprint)
    base = asdict(default_train_config(read_run(ctx["search"].file("run"))))
    config = TrainConfig.from_dict(base | ctx.settings["config"] | {"threads": plan.threads})
    result = train_model(model, ds, config, ctx.out / "train", quiet=ctx.quiet)
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
        **_size(model.arch),
    }


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
        )
        out[name] = {
            "onnx": path.name,
            "bytes": path.stat().st_size,
            "max_abs_diff": report.to_dict().get("max_abs_diff"),
        }
    return out


def run_compile(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    """Compile both models for every target; an artifact already built in this run folder for
    the same ONNX bytes and target (e.g. the baseline, when only the budget changed) is
    reused from the run's compile cache after its checksums verify."""
    from dnsrec_edge.compile.build import compile as tvm_compile

    out: dict[str, Any] = {}
    for target in ctx.settings["targets"]:
        out[target] = {}
        (ctx.out / target).mkdir()
        for name in MODELS:
            onnx_path = ctx["export"].file(ctx["export"].result[name]["onnx"])
            dest = ctx.out / target / name
            cached = _compile_cache(ctx, onnx_path, target)
            art = _reuse_artifact(cached, dest)
            reused = art is not None
            if art is None:
                art = tvm_compile(onnx_path, target=target, out_dir=dest, batch=1, quiet=ctx.quiet)
                _store_artifact(dest, cached)
            out[target][name] = {
                "artifact": f"{target}/{name}",
                "library_bytes": art.library.stat().st_size,
                "arch": art.manifest.get("arch"),
                "seconds": art.manifest.get("compile_seconds"),
                "reused": reused,
            }
    return out


def _compile_cache(ctx: StageContext, onnx_path: Path, target: str) -> Path:
    """``RUN/cache/compile/<sha256 of ONNX bytes, target, tool and TVM versions>``."""
    import importlib.metadata

    from dnsrec_edge import __version__

    tvm = importlib.metadata.version("apache-tvm")
    key = hashlib.sha256(
        f"{_sha256(onnx_path)} {target} batch=1 {__version__} {tvm}".encode()
    ).hexdigest()[:24]
    return ctx.out.parents[1] / "cache" / "compile" / key


def _reuse_artifact(cached: Path, dest: Path):
    """A verified copy of the cached artifact at ``dest``, or ``None`` (then compile)."""
    import shutil

    from dnsrec_edge.compile.artifact import load_artifact
    from dnsrec_edge.errors import DnsrecError

    if not cached.is_dir():
        return None
    shutil.copytree(cached, dest)
    try:
        art = load_artifact(dest)  # every file's sha256 against the manifest
    except DnsrecError as err:
        log.warning("compile cache entry %s is damaged (%s); compiling again", cached, err)
        shutil.rmtree(dest)
        return None
    log.info("reusing the artifact compiled earlier in this run from %s", cached)
    return art


def _store_artifact(dest: Path, cached: Path) -> None:
    """Copy a fresh artifact into the run's compile cache (atomically: copy, then rename)."""
    import shutil
    import tempfile

    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".tmp-"))
    shutil.copytree(dest, tmp, dirs_exist_ok=True)
    try:
        tmp.rename(cached)
    except OSError:  # another entry landed first: keep it
        shutil.rmtree(tmp, ignore_errors=True)


def bench_mode(
    target_name: str, emulate: bool, rpc: str | None, tracker: str | None
) -> tuple[str, str]:
    """How the benched target is measured (local, rpc, tracker, emulate or none), and a note."""
    from dnsrec_edge.compile.targets import load_target

    target = load_target(target_name)
    if emulate:
        if target.arch != "aarch64":
            raise PipelineError(
                f"--emulate runs arm64 targets only, not {target.name} ({target.arch}); "
                "pass --target arm64 or drop --emulate"
            )
        return "emulate", "emulated arm64 board (qemu-user on this host): not the board's timings"
    if rpc:
        return "rpc", f"board at {rpc}"
    if tracker:
        return "tracker", f"board from tracker {tracker}"
    if target.arch == HOST_ARCH and target.device == "cpu":
        return "local", f"this host ({HOST_ARCH})"
    return "none", (
        f"no board named for {target.name} ({target.arch}): compiled, not measured "
        "(pass --rpc, --rpc-tracker or --emulate)"
    )


def run_bench(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    mode, note = ctx.settings["mode"], ctx.settings["note"]
    if mode == "none":
        return {"mode": mode, "note": note, "target": plan.target}
    from dnsrec_edge.bench.run import benchmark

    opts = dict(ctx.settings["options"])
    results = {}
    with _board(plan, mode) as where:
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
            data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
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
    return {"mode": mode, "note": note, "target": plan.target, **results}


class _board:
    """Context manager giving ``benchmark`` keyword arguments for the chosen board."""

    def __init__(self, plan: Plan, mode: str):
        self.plan, self.mode, self.emulator = plan, mode, None

    def __enter__(self) -> dict[str, Any]:
        if self.mode == "local":
            return {}
        if self.mode == "rpc":
            return {"rpc": self.plan.rpc}
        if self.mode == "tracker":
            return {"tracker": self.plan.tracker, "key": self.plan.key}
        from dnsrec_edge.bench.emulate import EmulatedBoard

        self.emulator = EmulatedBoard("arm64", quiet=True).start()
        return {"rpc": self.emulator.address}

    def __exit__(self, *exc) -> None:
        if self.emulator is not None:
            self.emulator.stop()


def _record_points(model, target: str, calibration_dir, limit: int = 300) -> list[dict]:
    """Predicted vs measured latency (the model's statistic) of the target's batch-1 records."""
    from dnsrec_edge.cost.records import load_records
    from dnsrec_edge.errors import ArchSpecError
    from dnsrec_edge.models.archspec import ArchSpec

    points = []
    for rec in load_records(target, calibration_dir)[-limit:]:
        measured = (rec.get("latency_ms") or {}).get(model.statistic)
        if not rec.get("arch") or rec.get("batch") != 1 or not measured:
            continue
        try:
            arch = ArchSpec.from_dict(rec["arch"])
        except ArchSpecError:
            continue
        points.append(
            {
                "kind": "record",
                "predicted_ms": model.predict(arch).latency_ms,
                "measured_ms": measured,
            }
        )
    return points


def run_calibrate(plan: Plan, ctx: StageContext) -> dict[str, Any]:
    """The target's cost model against the measurements: predictions for the baseline, the
    subnet and the candidates; the budget check; optionally a refit from the records.

    Measured figures are the latency statistic the model predicts (``min`` or ``median``)."""
    from dnsrec_edge.compile.targets import load_target
    from dnsrec_edge.cost.calibrated import load_cost_model
    from dnsrec_edge.models.archspec import ArchSpec

    target = load_target(plan.target)
    bench = ctx["bench"].result
    if ctx.settings["refit"] and bench["mode"] not in ("none", "emulate"):
        from dnsrec_edge.calibrate import calibrate

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
    points += _record_points(model, target.name, plan.calibration_dir)
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
