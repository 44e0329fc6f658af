"""What the pipeline prints: one line per finished stage, and the terminal summary table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnsrec_edge.bench.host_latency import runtime_name
from dnsrec_edge.pipeline.steps import MODELS

if TYPE_CHECKING:
    from dnsrec_edge.pipeline.run import PipelineResult


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
    of = "the baseline" if r["budget"].get("relative_to") == "baseline" else "the full supernet"
    text = f"{r['budget']['text']}: depth {depth} ({widths}), cost {100 * r['share']:.0f}% of {of}"
    if r.get("measured_share") is not None:
        runtime = runtime_name(r)
        text += f" (measured {100 * r['measured_share']:.0f}%, {runtime})"
    text += f", valid NDCG@10 {r['valid']['ndcg@10']:.4f}"
    return text + (", warm-up reused" if r.get("warmup_reused") else "")


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
    lat = {m: r[m]["latency_ms"]["median"] for m in MODELS}
    text = (
        f"{r['target']} ({r['mode']}): baseline {lat['baseline']:.3f} ms, DNS-Rec "
        f"{lat['dnsrec']:.3f} ms median ({lat['dnsrec'] / lat['baseline']:.2f}x)"
    )
    if all(r[m].get("ort_latency_ms") for m in MODELS):
        ort = {m: r[m]["ort_latency_ms"]["median_ms"] for m in MODELS}
        text += f"; ONNX Runtime {ort['dnsrec'] / ort['baseline']:.2f}x"
    return text


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


def render_table(result: PipelineResult) -> str:
    """The terminal summary: baseline vs DNS-Rec per target, and the stage timings."""
    from dnsrec_edge.pipeline.report import accuracy_rows, target_rows

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
