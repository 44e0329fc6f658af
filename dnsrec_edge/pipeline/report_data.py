"""The report stage: gathers the stages' recorded outputs into the report's input and writes it.

The report itself (plots, Markdown, HTML) is drawn by ``pipeline/report.py`` from the plain dict
:func:`report_data` returns, which is also stored as ``report_data.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dnsrec_edge.bench.host_latency import runtime_name
from dnsrec_edge.fsio import atomic_write_bytes, atomic_write_json
from dnsrec_edge.pipeline.stages import StageContext, StageOutput
from dnsrec_edge.pipeline.steps import MODELS
from dnsrec_edge.pipeline.summaries import SUMMARIES

REPORT_FILES = ("report.md", "report.html", "accuracy.png", "search.png", "cost_model.png")


def run_report(ctx: StageContext) -> dict[str, Any]:
    from dnsrec_edge.pipeline.report import write_report

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
            for name in MODELS:
                run[name] = dict(bench[name])
                run[name]["library_bytes"] = arts[name]["library_bytes"]
        else:
            run["mode"] = "compiled only"
            run["note"] = f"artifacts in stages/compile/{target}/; no board measured them"
            for name in MODELS:
                run[name] = {"library_bytes": arts[name]["library_bytes"]}
        targets.append(run)
    candidates = json.loads(up["search"].file("candidates.json").read_text(encoding="utf-8"))
    for cand, ms in zip(candidates, calib.get("candidates_ms", []), strict=False):
        cand["latency_ms"], cand["latency_source"] = ms, "predicted"
    measured = bench["mode"] not in ("none",)
    budget = search["budget"]
    base_ms = (bench.get("baseline") or {}).get("latency_ms", {}).get("median")
    if measured and base_ms and all(c.get("measured_share") for c in candidates):
        # the front was timed beside the baseline: draw every point as a share of the
        # baseline's latency, the candidates at their measured shares
        for cand in candidates:
            cand["latency_ms"] = cand["measured_share"] * base_ms
            cand["latency_source"] = "measured"
        runtime = runtime_name(search)
        cand_label = f"search candidate (its {runtime} share x the baseline)"
    else:
        cand_label = "search candidate"
    limit = budget["limit"]
    if budget["kind"] == "latency" and budget.get("relative_to") == "baseline" and base_ms:
        limit = budget["value"] * base_ms  # the budget's share of the baseline as measured
    return {
        "title": f"DNS-Rec on {data['name']}: {bench['target']}",
        "dataset": data,
        "budget": {
            **budget,
            "target": bench["target"],
            "value": limit if budget["kind"] == "latency" else budget["value"],
        },
        "models": models,
        "targets": targets,
        "plot_target": bench["target"] if measured else None,
        "plot_target_label": f"{bench['target']}, {bench['mode']}",
        "candidate_label": cand_label,
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
