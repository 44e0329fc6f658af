"""``pipeline``: data -> baseline -> search -> prune -> finetune -> export -> compile -> bench
-> calibrate -> report, resumable, in one run folder.

Example::

    result = pipeline("ml-100k", target="host", budget="latency=40%", out="runs/demo",
                      artifact_targets=("arm64",), preset="short")
    result.report_html, result.timings()
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnsrec_edge.bench.host_latency import check_runtime
from dnsrec_edge.errors import OutputExists, PipelineError, UnknownName
from dnsrec_edge.export.quantize import require_scheme
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.pipeline import steps
from dnsrec_edge.pipeline.presets import DEFAULT_BUDGETS, PRESETS, STAGE_NAMES, preset_settings
from dnsrec_edge.pipeline.report_data import run_report
from dnsrec_edge.pipeline.stages import Stage, StageOutput, run_stages
from dnsrec_edge.pipeline.summaries import SUMMARIES
from dnsrec_edge.search.budget import parse_budget

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    """A finished pipeline run: its folder, every stage's outputs and the report."""

    run_dir: Path
    stages: dict[str, StageOutput]
    report_md: Path
    report_html: Path

    def timings(self) -> dict[str, float]:
        """Wall seconds of each stage when it last ran."""
        return {name: out.wall_seconds for name, out in self.stages.items()}

    def reused(self) -> list[str]:
        """Stages this call did not rerun."""
        return [name for name, out in self.stages.items() if out.skipped]

    @property
    def summary(self) -> dict[str, Any]:
        """The report's baseline vs DNS-Rec figures (``report_data.json``)."""
        return self.stages["report"].result


def pipeline(
    dataset: Any = "ml-100k",
    target: str = "host",
    budget: str | None = None,
    *,
    rpc: str | None = None,
    tracker: str | None = None,
    key: str | None = None,
    emulate: bool = False,
    artifact_targets: tuple[str, ...] = (),
    out: str | Path | None = None,
    from_stage: str | None = None,
    preset: str = "full",
    quick: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    calibration_dir: str | Path | None = None,
    threads: int | None = None,
    refit: bool = False,
    seed: int = 0,
    quantize: str | None = None,
    measure_with: str = "ort",
    quiet: bool = False,
) -> PipelineResult:
    """Run (or resume) the whole loop for ``dataset`` on ``target`` in the run folder ``out``.

    ``dataset``: a registered name, a file, or a ``Dataset``. ``budget``: ``latency=40%`` of
    the trained baseline's latency on ``target`` (the default; the smoke preset's is 90%),
    ``flops=25%`` (of the baseline), ``latency=2ms`` or ``energy=2mJ``. The benched board: this host when the target
    is its own and none is named, ``rpc``/``tracker`` (+ ``key``) for a board, ``emulate`` for
    the emulated arm64 board; other targets are compiled, not measured. ``artifact_targets``
    are compiled too. ``preset``: ``full``, ``short`` or ``smoke`` (``quick=True``);
    ``overrides`` merges per-stage settings (``{"baseline": {"epochs": 2}}``). ``refit``
    refits the target's cost model from its records after benching. ``seed`` seeds the
    baseline, the search and the subnet's training. ``quantize="int8"`` exports, compiles
    and benches int8 files of both models (``export/quantize.py``). On this host a latency
    budget is measured under ``measure_with``: ``"ort"`` (ONNX Runtime) or ``"tvm"`` (the
    target's default TVM builds; ``bench/host_latency.py``). Finished stages are
    reused; ``from_stage`` redoes that stage and everything after it.
    """
    preset = "smoke" if quick else preset
    if preset not in PRESETS:
        raise UnknownName("preset", preset, PRESETS)
    if sum(bool(x) for x in (rpc, tracker, emulate)) > 1:
        raise PipelineError("choose at most one of --rpc, --rpc-tracker and --emulate")
    if quantize is not None:
        require_scheme(quantize)
    check_runtime(measure_with)
    if budget is not None and parse_budget(budget).streaming:
        raise PipelineError(
            f"the pipeline ships whole-sequence models, so it cannot take the streaming budget "
            f"'{budget}'; search a streaming subnet with 'dnsrec-edge search --budget {budget}', "
            "then retrain it and export it with 'export --streaming'"
        )
    from dnsrec_edge.compile.targets import load_target

    tgt = load_target(target)
    target = tgt.name
    if tracker and not key:
        key = tgt.rpc_key  # the board key the target's preset names
    extra = tuple(dict.fromkeys(load_target(t).name for t in artifact_targets))
    plan = steps.Plan(
        dataset=dataset,
        target=target,
        artifact_targets=extra,
        budget=budget or DEFAULT_BUDGETS[preset],
        rpc=rpc,
        tracker=tracker,
        key=key,
        settings=preset_settings(preset, _with_seed(overrides, seed)),
        calibration_dir=None if calibration_dir is None else str(calibration_dir),
        threads=threads,
        refit=refit,
        quantize=quantize,
        measure_with=measure_with,
    )
    run_dir = Path(out) if out is not None else Path("runs") / _default_name(dataset, target)
    _check_run_dir(run_dir)
    stages = build_stages(plan, emulate)
    outputs = run_stages(run_dir, stages, from_stage=from_stage, quiet=quiet)
    atomic_write_json(
        run_dir / "pipeline.json",
        {
            "dataset": outputs["data"].result["name"],
            "target": target,
            "budget": plan.budget,
            "preset": preset,
            "artifact_targets": list(extra),
            "stages": {
                n: {
                    "wall_seconds": round(o.wall_seconds, 2),
                    "cpu_seconds": None if o.cpu_seconds is None else round(o.cpu_seconds, 2),
                    "reused": o.skipped,
                }
                for n, o in outputs.items()
            },
        },
    )
    return PipelineResult(run_dir, outputs, run_dir / "report.md", run_dir / "report.html")


def _with_seed(
    overrides: Mapping[str, Mapping[str, Any]] | None, seed: int
) -> dict[str, dict[str, Any]]:
    """``overrides`` with ``seed`` set for the stages that train (unless an override sets it);
    seed 0 adds nothing, so run folders of earlier versions keep their input hashes."""
    out = {k: dict(v) for k, v in (overrides or {}).items()}
    if seed:
        for stage in ("baseline", "search", "finetune"):
            out.setdefault(stage, {}).setdefault("seed", seed)
    return out


def _default_name(dataset: Any, target: str) -> str:
    name = getattr(dataset, "name", None) or Path(str(dataset)).stem
    return f"{name}-{target}"


def _check_run_dir(run_dir: Path) -> None:
    """Refuse a non-empty folder that is not a pipeline run (nothing a user made is touched)."""
    if run_dir.is_file() or (
        run_dir.is_dir()
        and any(run_dir.iterdir())
        and not (run_dir / "stages").is_dir()
        and not (run_dir / ".lock").exists()
    ):
        raise OutputExists(run_dir)


def build_stages(plan: steps.Plan, emulate: bool = False) -> list[Stage]:
    """The ten stages with their settings (what their input hash covers)."""
    s = plan.settings
    mode, note = steps.bench_mode(plan, emulate)
    board = {"rpc": plan.rpc, "tracker": plan.tracker, "key": plan.key}
    specs = [  # name, function, upstream stages, settings
        ("data", steps.run_data, (), {"source": plan.dataset_source()}),
        ("baseline", steps.run_baseline, ("data",), {"config": s["baseline"]}),
        ("search", steps.run_search, ("data", "baseline"), steps.search_settings(plan)),
        ("prune", steps.run_prune, ("data", "search"), {}),
        (
            "finetune",
            steps.run_finetune,
            ("data", "baseline", "search", "prune"),
            {"config": s["finetune"], "baseline": s["baseline"]},
        ),
        (
            "export",
            steps.run_export,
            ("data", "baseline", "finetune"),
            {"batch": 1, **s["export"], **({"quantize": plan.quantize} if plan.quantize else {})},
        ),
        ("compile", steps.run_compile, ("export",), steps.compile_settings(plan)),
        (
            "bench",
            steps.run_bench,
            ("compile", "export"),
            {
                "mode": mode,
                "note": note,
                "board": board if mode != "local" else {},
                "options": steps.bench_options(plan),
                "target": plan.target,
            },
        ),
        (
            "calibrate",
            steps.run_calibrate,
            ("search", "baseline", "finetune", "bench"),
            {
                "refit": plan.refit,
                "calibration_dir": plan.calibration_dir,
                # the model file it reads, unless it refits that file itself
                "cost_model": None if plan.refit else steps.cost_model_id(plan),
            },
        ),
        ("report", lambda _plan, ctx: run_report(ctx), STAGE_NAMES[:-1], {}),
    ]
    return [
        Stage(name, functools.partial(fn, plan), deps, settings, SUMMARIES[name])
        for name, fn, deps, settings in specs
    ]


__all__ = ["STAGE_NAMES", "PipelineResult", "pipeline"]
