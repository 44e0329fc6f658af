"""``pipeline``: data -> baseline -> search -> prune -> finetune -> export -> compile -> bench
-> calibrate -> report, resumable, in one run folder.

Example::

    result = pipeline("ml-100k", target="x86_64", budget="flops=25%", out="runs/demo",
                      artifact_targets=("arm64",), preset="short")
    result.report_html, result.timings()
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnsrec_edge.errors import OutputExists, PipelineError, UnknownName
from dnsrec_edge.flow import steps
from dnsrec_edge.flow.presets import DEFAULT_BUDGET, PRESETS, STAGE_NAMES, preset_settings
from dnsrec_edge.flow.stages import Stage, StageContext, StageOutput, run_stages
from dnsrec_edge.fsio import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

REPORT_FILES = ("report.md", "report.html", "accuracy.png", "search.png", "cost_model.png")


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
    target: str = "x86_64",
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
    quiet: bool = False,
) -> PipelineResult:
    """Run (or resume) the whole loop for ``dataset`` on ``target`` in the run folder ``out``.

    ``dataset``: a registered name, a file, or a ``Dataset``. ``budget``: ``flops=25%``
    (default), ``latency=2ms`` or ``energy=2mJ``. The benched board: this host when the target
    is its own and none is named, ``rpc``/``tracker`` (+ ``key``) for a board, ``emulate`` for
    the emulated arm64 board; other targets are compiled, not measured. ``artifact_targets``
    are compiled too. ``preset``: ``full``, ``short`` or ``smoke`` (``quick=True``);
    ``overrides`` merges per-stage settings (``{"baseline": {"epochs": 2}}``). ``refit``
    refits the target's cost model from its records after benching. Finished stages are
    reused; ``from_stage`` redoes that stage and everything after it.
    """
    preset = "smoke" if quick else preset
    if preset not in PRESETS:
        raise UnknownName("preset", preset, PRESETS)
    if sum(bool(x) for x in (rpc, tracker, emulate)) > 1:
        raise PipelineError("choose at most one of --rpc, --rpc-tracker and --emulate")
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
        budget=budget or DEFAULT_BUDGET,
        rpc=rpc,
        tracker=tracker,
        key=key,
        settings=preset_settings(preset, {k: dict(v) for k, v in (overrides or {}).items()}),
        calibration_dir=None if calibration_dir is None else str(calibration_dir),
        threads=threads,
        refit=refit,
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
    mode, note = steps.bench_mode(plan.target, emulate, plan.rpc, plan.tracker)
    board = {"rpc": plan.rpc, "tracker": plan.tracker, "key": plan.key}
    specs = [  # name, function, upstream stages, settings
        ("data", steps.run_data, (), {"source": plan.dataset_source()}),
        ("baseline", steps.run_baseline, ("data",), {"config": s["baseline"]}),
        ("search", steps.run_search, ("data",), steps.search_settings(plan)),
        ("prune", steps.run_prune, ("data", "search"), {}),
        ("finetune", steps.run_finetune, ("data", "search", "prune"), {"config": s["finetune"]}),
        ("export", steps.run_export, ("data", "baseline", "finetune"), {"batch": 1, **s["export"]}),
        ("compile", steps.run_compile, ("export",), {"targets": list(plan.targets)}),
        (
            "bench",
            steps.run_bench,
            ("compile",),
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
        ("report", lambda _plan, ctx: _run_report(ctx), STAGE_NAMES[:-1], {}),
    ]
    return [
        Stage(name, functools.partial(fn, plan), deps, settings, SUMMARIES[name])
        for name, fn, deps, settings in specs
    ]


# ---------------------------------------------------------------------------------------------
# one-line summaries


def _sum_data(r):
    return f"{r['name']}: {r['users']} users, {r['items']} items, {r['interactions']} interactions"


def _sum_model(r):
    t = r["test"]["full"]
    return (
        f"test NDCG@10 {t['ndcg@10']:.4f} HR@10 {t['hr@10']:.4f}, {r['params']:,} params, "
        f"{r['flops'] / 1e6:.2f} MFLOPs, {r['epochs']} epochs"
    )


def _sum_search(r):
    depth = r["arch"]["depth"]
    widths = ", ".join(f"{b['heads']}h/ffn{b['ffn']}" for b in r["arch"]["blocks"])
    return (
        f"{r['budget']['text']}: depth {depth} ({widths}), cost {100 * r['share']:.0f}% of "
        f"the supernet, valid NDCG@10 {r['valid']['ndcg@10']:.4f}"
    )


def _sum_prune(r):
    diff = (r.get("equivalence") or {}).get("max_abs_diff")
    diff_text = f", max |diff| {diff:.1e}" if isinstance(diff, float) else ""
    return (
        f"{r['params_before']:,} -> {r['params_after']:,} params{diff_text}, "
        f"test NDCG@10 {r['test']['full']['ndcg@10']:.4f} before fine-tune"
    )


def _sum_export(r):
    return ", ".join(f"{k}.onnx {v['bytes'] / 1024:.0f} KiB" for k, v in r.items())


def _sum_compile(r):
    return ", ".join(f"{t}: {len(models)} artifacts" for t, models in r.items())


def _sum_bench(r):
    if r["mode"] == "none":
        return r["note"]
    lat = {m: r[m]["latency_ms"]["median"] for m in steps.MODELS}
    return (
        f"{r['target']} ({r['mode']}): baseline {lat['baseline']:.3f} ms, DNS-Rec "
        f"{lat['dnsrec']:.3f} ms median ({lat['dnsrec'] / lat['baseline']:.2f}x)"
    )


def _sum_calibrate(r):
    text = f"{r['target']} cost model ({r['kind']})"
    if r.get("budget_check"):
        text += ": " + r["budget_check"]["verdict"]
    return text


SUMMARIES = {
    "data": _sum_data,
    "baseline": _sum_model,
    "search": _sum_search,
    "prune": _sum_prune,
    "finetune": _sum_model,
    "export": _sum_export,
    "compile": _sum_compile,
    "bench": _sum_bench,
    "calibrate": _sum_calibrate,
    "report": lambda r: f"report.html, {r.get('plots', 0)} plots",
}


# ---------------------------------------------------------------------------------------------
# the report


def _run_report(ctx: StageContext) -> dict[str, Any]:
    from dnsrec_edge.flow.report import write_report

    data = report_data(ctx.upstream)
    atomic_write_json(ctx.out / "report_data.json", data)
    written = write_report(data, ctx.out)
    run_dir = ctx.out.parent.parent
    for name in REPORT_FILES:  # a copy at the top of the run folder, where users look
        if (ctx.out / name).is_file():
            atomic_write_bytes(run_dir / name, (ctx.out / name).read_bytes())
        else:
            (run_dir / name).unlink(missing_ok=True)
    plots = len([k for k in written if k not in ("md", "html")])
    return {"plots": plots, "models": data["models"], "targets": data["targets"]}


def report_data(up: Mapping[str, StageOutput]) -> dict[str, Any]:
    """The report's input (see ``report.write_report``) from the stages' recorded outputs."""
    from dnsrec_edge.models.archspec import ArchSpec

    data, base, ft = up["data"].result, up["baseline"].result, up["finetune"].result
    search, prune, bench = up["search"].result, up["prune"].result, up["bench"].result
    calib, comp = up["calibrate"].result, up["compile"].result

    def model(r, label):
        full = r["test"]["full"]
        return {
            "label": label,
            "hr@10": full.get("hr@10"),
            "ndcg@10": full.get("ndcg@10"),
            "params": r.get("params"),
            "flops": r.get("flops"),
        }

    dns = model(ft, "DNS-Rec subnet (fine-tuned)")
    dns["arch_text"] = _arch_text(ArchSpec.from_dict(ft["arch"]))
    models = {
        "baseline": model(base, "SASRec baseline"),
        "pruned": model(prune, "DNS-Rec subnet, before fine-tune"),
        "dnsrec": dns,
    }
    targets = []
    for target, arts in comp.items():
        run: dict[str, Any] = {"target": target}
        if target == bench["target"] and bench["mode"] != "none":
            run["mode"] = {"local": "measured on this host", "emulate": "emulated board"}.get(
                bench["mode"], "measured on the board"
            )
            run["note"] = bench["note"]
            for name in steps.MODELS:
                run[name] = dict(bench[name])
                run[name]["library_bytes"] = arts[name]["library_bytes"]
        else:
            run["mode"] = "compiled only"
            run["note"] = f"artifacts in stages/compile/{target}/; no board measured them"
            for name in steps.MODELS:
                run[name] = {"library_bytes": arts[name]["library_bytes"]}
        targets.append(run)
    candidates = json.loads(up["search"].file("candidates.json").read_text(encoding="utf-8"))
    for cand, ms in zip(candidates, calib.get("candidates_ms", []), strict=False):
        cand["latency_ms"], cand["latency_source"] = ms, "predicted"
    measured = bench["mode"] not in ("none",)
    budget = search["budget"]
    return {
        "title": f"DNS-Rec on {data['name']}: {bench['target']}",
        "dataset": data,
        "budget": {
            **budget,
            "target": bench["target"],
            "value": budget["limit"] if budget["kind"] == "latency" else budget["value"],
        },
        "models": models,
        "targets": targets,
        "plot_target": bench["target"] if measured else None,
        "plot_target_label": f"{bench['target']}, {bench['mode']}",
        "candidates": candidates,
        "search_log": search_log_rows(up["search"].file("run")),
        "selected_epoch": search.get("best_epoch"),
        "cost_model": {
            "target": calib["target"],
            "kind": calib["kind"],
            "points": [
                p
                for p in calib["points"]
                if p.get("measured_ms") and (p["kind"] == "record" or bench["mode"] != "emulate")
            ],
        },
        "stages": [
            {"name": n, "wall_seconds": o.wall_seconds, "summary": SUMMARIES[n](o.result)}
            for n, o in up.items()
        ],
        "notes": _notes(search, calib, bench),
    }


def _notes(search, calib, bench) -> list[str]:
    notes = [
        "Search candidates are the architectures the search picked at each epoch, scored "
        "with the supernet's shared weights (not fine-tuned); their latency is the cost "
        "model's prediction."
    ]
    if bench["mode"] == "emulate":
        notes.append(
            "Latency comes from the emulated arm64 board (qemu-user): it shows the "
            "artifact runs correctly, not how fast the board is."
        )
    if calib.get("budget_check"):
        notes.append("Budget check: " + calib["budget_check"]["summary"] + ".")
    if not search.get("argmax_in_budget", True):
        notes.append(
            "The search's argmax was over budget at the selected epoch; the most "
            "probable in-budget architecture was taken."
        )
    return notes


def _arch_text(arch) -> str:
    lines = [
        f"depth {arch.depth}, hidden {arch.hidden}, max_len {arch.max_len}, {arch.n_items} items"
    ]
    for i, b in enumerate(arch.blocks, start=1):
        gates = f", gates {b.gate_hidden}" if b.gate_hidden else ""
        lines.append(
            f"block {i}: {b.heads} head(s) x {b.head_dim}, FFN {b.ffn}, "
            f"{b.attention} attention{gates}"
        )
    return "\n".join(lines)


def search_log_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The search log in the report's terms (controller probabilities, cost, penalty)."""
    from dnsrec_edge.fsio import read_jsonl
    from dnsrec_edge.search.space import SearchSpace

    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    space = SearchSpace.from_dict(run["space"])
    flops = run["budget"]["kind"] == "flops"
    scale, unit = (1e-6, "MFLOPs") if flops else (1.0, run["budget"]["unit"])
    attn_labels = [
        f"{h} head{'s' if h > 1 else ''}" + ("" if kind == "softmax" else f" {kind}")
        for kind, h in space.attn_candidates
    ]
    rows = []
    for _, rec, _raw in read_jsonl(run_dir / "search_log.jsonl"):
        if rec is None:
            continue
        rows.append(
            {
                "epoch": rec["epoch"],
                "depth_probs": rec.get("p_depth"),
                "attn_probs": rec.get("p_attn"),
                "ffn_probs": rec.get("p_ffn"),
                "attn_labels": attn_labels,
                "ffn_labels": [str(f) for f in space.ffn],
                "expected_cost": rec["expected_cost"] * scale,
                "budget": rec.get("budget_limit", run["budget"]["limit"]) * scale,
                "cost_unit": unit,
                "penalty_weight": rec.get("penalty_weight"),
                "temperature": rec.get("temperature"),
                "valid_ndcg@10": (rec.get("valid") or {}).get("ndcg@10"),
            }
        )
    return rows


def render_table(result: PipelineResult) -> str:
    """The terminal summary: baseline vs DNS-Rec per target, and the stage timings."""
    from dnsrec_edge.flow.report import accuracy_rows, target_rows

    summary = result.summary
    header = ["", "baseline", "DNS-Rec", "ratio"]
    blocks = [_text_table(header, accuracy_rows(summary))]
    for run in summary["targets"]:
        blocks.append(f"{run['target']} ({run['mode']})\n" + _text_table(header, target_rows(run)))
    timing = ", ".join(
        f"{n} {o.wall_seconds:.0f}s{'*' if o.skipped else ''}" for n, o in result.stages.items()
    )
    blocks.append(f"stage wall times (* reused): {timing}")
    return "\n\n".join(blocks)


def _text_table(header, rows) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    return "\n".join(lines)


__all__ = ["STAGE_NAMES", "PipelineResult", "pipeline", "render_table"]
