"""The run report: ``report.md`` and a self-contained ``report.html`` with PNG plots.

Input is a plain dict assembled from the stages' recorded outputs (see :func:`write_report`
for its keys), so a report can be rebuilt from a finished run folder without rerunning
anything. Plots: accuracy against latency and FLOPs (baseline, search candidates, selected
subnet, Pareto front), the search trajectory, and the cost model's predicted vs measured
latency. Tables: baseline vs DNS-Rec per target.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the Agg backend)
from matplotlib.ticker import NullFormatter  # noqa: E402

from dnsrec_edge.fsio import atomic_write_bytes, atomic_write_text  # noqa: E402

log = logging.getLogger(__name__)

COLORS = {"baseline": "#1f4e99", "dnsrec": "#c0392b", "pruned": "#e67e22", "cand": "#7f8c8d"}
MODEL_LABELS = {"baseline": "SASRec baseline", "dnsrec": "DNS-Rec subnet"}
DPI = 110


# ---------------------------------------------------------------------------------------------
# points and the Pareto front


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats (cost lower or equal, accuracy higher or equal,
    one strictly), sorted by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _accuracy_points(data: Mapping[str, Any], axis: str) -> list[dict[str, Any]]:
    """Every model with an NDCG@10 and a value on ``axis`` ("latency" or "flops")."""
    points = []
    target = data.get("plot_target")
    measured = _measured_latency(data, target) if axis == "latency" else {}
    for key in ("baseline", "pruned", "dnsrec"):
        model = data.get("models", {}).get(key)
        if not model or model.get("ndcg@10") is None:
            continue
        x = measured.get(key) if axis == "latency" else model.get("flops")
        if x is None:
            continue
        points.append(
            {
                "kind": key,
                "label": model.get("label", key),
                "x": x,
                "y": model["ndcg@10"],
                "measured": True,
            }
        )
    for cand in data.get("candidates", []):
        if cand.get("ndcg@10") is None:
            continue
        if axis == "latency":
            x, is_measured = cand.get("latency_ms"), cand.get("latency_source") == "measured"
        else:
            x, is_measured = cand.get("flops"), True
        if x is None:
            continue
        points.append(
            {
                "kind": "cand",
                "label": cand.get("label", ""),
                "x": x,
                "y": cand["ndcg@10"],
                "measured": is_measured,
            }
        )
    return points


def _measured_latency(data: Mapping[str, Any], target: str | None) -> dict[str, float]:
    for run in data.get("targets", []):
        if run.get("target") == target:
            return {
                k: run[k]["latency_ms"]["median"]
                for k in ("baseline", "dnsrec", "pruned")
                if run.get(k) and run[k].get("latency_ms")
            }
    return {}


# ---------------------------------------------------------------------------------------------
# plots


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_accuracy(data: Mapping[str, Any]) -> bytes | None:
    """NDCG@10 against measured latency (left) and FLOPs (right), Pareto front marked."""
    panels = [
        ("latency", _accuracy_points(data, "latency")),
        ("flops", _accuracy_points(data, "flops")),
    ]
    panels = [(axis, pts) for axis, pts in panels if pts]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.2), squeeze=False)
    for ax, (axis, pts) in zip(axes[0], panels, strict=True):
        scale = 1e-6 if axis == "flops" else 1.0
        xy = [(p["x"] * scale, p["y"]) for p in pts]
        front = pareto_front(xy)
        fx, fy = zip(*[xy[i] for i in front], strict=True)
        ax.step(
            fx, fy, where="post", color="#2ecc71", lw=1.6, alpha=0.8, zorder=1, label="Pareto front"
        )
        for i, (p, (x, y)) in enumerate(zip(pts, xy, strict=True)):
            on_front = i in front
            if p["kind"] == "cand":
                ax.scatter(
                    x,
                    y,
                    s=34,
                    zorder=2,
                    facecolors=COLORS["cand"] if p["measured"] else "none",
                    edgecolors=COLORS["cand"],
                    linewidths=1.2,
                )
            else:
                marker = {"baseline": "s", "pruned": "^", "dnsrec": "D"}[p["kind"]]
                ax.scatter(
                    x,
                    y,
                    s=80,
                    marker=marker,
                    color=COLORS[p["kind"]],
                    zorder=3,
                    edgecolors="black" if on_front else "none",
                    linewidths=1.0,
                    label=p["label"],
                )
        if any(p["kind"] == "cand" and p["measured"] for p in pts):
            label = "search candidate"
            if axis == "latency":
                label = data.get("candidate_label", label)
            ax.scatter([], [], s=34, color=COLORS["cand"], label=label)
        if any(p["kind"] == "cand" and not p["measured"] for p in pts):
            ax.scatter(
                [],
                [],
                s=34,
                facecolors="none",
                edgecolors=COLORS["cand"],
                label="search candidate (predicted latency)",
            )
        if axis == "latency":
            budget = data.get("budget") or {}
            if budget.get("kind") == "latency" and budget.get("target") == data.get("plot_target"):
                ax.axvline(budget["value"], color="#555", ls="--", lw=1, label="latency budget")
            ax.set_xlabel(f"latency, median ms (batch 1, {data.get('plot_target_label', '')})")
        else:
            ax.set_xlabel("MFLOPs per inference (batch 1)")
        xs = [x for x, _ in xy]
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap
        ax.set_ylabel("NDCG@10 (test, full ranking)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Accuracy against cost", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def plot_search(
    log_rows: Sequence[Mapping[str, Any]], note: str = "", selected_epoch: int | None = None
) -> bytes | None:
    """Controller weights, penalty weight and expected cost per epoch, from the search log."""
    rows = [r for r in log_rows if "epoch" in r]
    if not rows:
        return None
    epochs = [r["epoch"] for r in rows]
    n_blocks = max((len(r.get("ffn_probs") or []) for r in rows), default=0)
    ncols = 3
    nrows = 1 + (1 if n_blocks else 0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)

    ax = axes[0][0]
    depth = [r.get("depth_probs") for r in rows]
    if all(depth):
        stack = list(zip(*depth, strict=True))
        ax.stackplot(
            epochs,
            stack,
            labels=[f"depth {i + 1}" for i in range(len(stack))],
            alpha=0.85,
            colors=plt.cm.Blues(
                [0.3 + 0.6 * i / max(len(stack) - 1, 1) for i in range(len(stack))]
            ),
        )
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="lower left", framealpha=0.9)
    ax.set_title("depth controller (beta)", fontsize=9)
    ax.set_xlabel("epoch")

    ax = axes[0][1]
    cost = [r.get("expected_cost") for r in rows]
    if any(c is not None for c in cost):
        ax.plot(epochs, cost, "o-", color=COLORS["dnsrec"], label="expected cost")
        budget = rows[-1].get("budget")
        if budget is not None:
            ax.axhline(budget, color="#555", ls="--", lw=1, label="budget")
        unit = rows[-1].get("cost_unit", "")
        ax.set_ylabel(f"expected cost ({unit})" if unit else "expected cost")
        penalty = [r.get("penalty_weight") for r in rows]
        if any(p is not None for p in penalty):
            twin = ax.twinx()
            twin.plot(epochs, penalty, "s--", color="#8e44ad", ms=4, label="penalty weight")
            twin.set_ylabel("penalty weight", color="#8e44ad")
            twin.tick_params(axis="y", colors="#8e44ad")
            lines = ax.get_legend_handles_labels()
            more = twin.get_legend_handles_labels()
            ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="best")
        else:
            ax.legend(fontsize=7)
    ax.set_title("resource constraint", fontsize=9)
    ax.set_xlabel("epoch")

    ax = axes[0][2]
    valid = [r.get("valid_ndcg@10") for r in rows]
    if any(v is not None for v in valid):
        ax.plot(epochs, valid, "o-", color=COLORS["baseline"])
    temp = [r.get("temperature") for r in rows]
    if any(t is not None for t in temp):
        twin = ax.twinx()
        twin.plot(epochs, temp, ":", color="#999", label="temperature")
        twin.set_ylabel("temperature", color="#777")
    ax.set_title("supernet valid NDCG@10", fontsize=9)
    ax.set_xlabel("epoch")

    if n_blocks:
        _plot_width_choice(axes[1][0], rows, epochs, "attn_probs", "attn_labels", "attention")
        _plot_width_choice(axes[1][1], rows, epochs, "ffn_probs", "ffn_labels", "FFN")
        axes[1][2].axis("off")
        if note:
            axes[1][2].text(
                0.0,
                0.95,
                note,
                va="top",
                ha="left",
                fontsize=8,
                family="monospace",
                transform=axes[1][2].transAxes,
            )
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if selected_epoch is not None and ax.axison:
            ax.axvline(selected_epoch, color="#c0392b", lw=0.8, ls=":", zorder=0)
    fig.suptitle(
        "Search trajectory"
        + (
            f" (dotted line: selected epoch {selected_epoch})" if selected_epoch is not None else ""
        ),
        fontsize=11,
    )
    fig.tight_layout()
    return _png(fig)


def _plot_width_choice(ax, rows, epochs, key, label_key, what) -> None:
    """Per block, the probability of the argmax candidate of the last epoch, over epochs."""
    last = rows[-1].get(key) or []
    labels = rows[-1].get(label_key)
    cmap = plt.cm.tab10
    for b, probs in enumerate(last):
        best = max(range(len(probs)), key=lambda j: probs[j])
        series = [
            (r.get(key) or [[None]])[b][best] if len(r.get(key) or []) > b else None for r in rows
        ]
        name = labels[best] if labels else f"#{best}"
        ax.plot(epochs, series, "o-", ms=3, color=cmap(b), label=f"block {b + 1}: {name}")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{what} controller (alpha): weight of final choice", fontsize=9)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7, loc="lower right")


def _selection_note(data: Mapping[str, Any]) -> str:
    arch = (data.get("models", {}).get("dnsrec") or {}).get("arch_text")
    return f"selected:\n{arch}" if arch else ""


def plot_cost_model(cost: Mapping[str, Any]) -> bytes | None:
    """Predicted against measured latency, with the y = x line and a +-10% band."""
    points = [p for p in cost.get("points", []) if p.get("predicted_ms") and p.get("measured_ms")]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    xs = [p["measured_ms"] for p in points]
    ys = [p["predicted_ms"] for p in points]
    lo, hi = min(xs + ys) / 1.5, max(xs + ys) * 1.5
    ax.plot([lo, hi], [lo, hi], color="#333", lw=1, label="predicted = measured")
    ax.fill_between(
        [lo, hi],
        [lo * 0.9, hi * 0.9],
        [lo * 1.1, hi * 1.1],
        color="#2ecc71",
        alpha=0.15,
        label="within 10%",
    )
    for p in points:
        kind = p.get("kind", "cand")
        ax.scatter(
            p["measured_ms"],
            p["predicted_ms"],
            s=60 if kind != "record" else 18,
            color=COLORS.get(kind, "#95a5a6"),
            zorder=3,
            marker={"baseline": "s", "dnsrec": "D"}.get(kind, "o"),
        )
        if kind in ("baseline", "dnsrec"):
            ax.annotate(
                MODEL_LABELS[kind],
                (p["measured_ms"], p["predicted_ms"]),
                textcoords="offset points",
                xytext=(6, 4 if kind == "baseline" else -12),  # apart when the two are close
                fontsize=8,
            )
    if any(p.get("kind") == "record" for p in points):
        ax.scatter([], [], s=18, color="#95a5a6", label="calibration records")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())  # minor labels overlap
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"measured latency, {cost.get('statistic', 'median')} ms (log)")
    ax.set_ylabel("predicted latency, ms (log)")
    ax.set_title(f"cost model on {cost.get('target', '?')} ({cost.get('kind', '?')})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# tables


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and spec:
        return format(value, spec)
    return str(value)


def _count(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, div in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or a == 0:
        return ""
    return f"{b / a:.2f}x"


def accuracy_rows(data: Mapping[str, Any]) -> list[list[str]]:
    """Rows of the model table: metric, baseline, DNS-Rec, DNS-Rec / baseline."""
    models = data.get("models", {})
    base, dns = models.get("baseline", {}), models.get("dnsrec", {})
    rows = []
    for key, name, fmt in (
        ("hr@10", "HR@10 (full ranking)", lambda v: _fmt(v, ".4f")),
        ("ndcg@10", "NDCG@10 (full ranking)", lambda v: _fmt(v, ".4f")),
        ("params", "parameters", _count),
        ("flops", "FLOPs per inference (batch 1)", _count),
    ):
        a, b = base.get(key), dns.get(key)
        rows.append([name, fmt(a), fmt(b), _ratio(a, b)])
    return rows


def target_rows(run: Mapping[str, Any]) -> list[list[str]]:
    """Rows of one target's table: TVM and (on this host) ONNX Runtime latency median and p99
    on the same ONNX files, energy with source, artifact size."""
    base, dns = run.get("baseline") or {}, run.get("dnsrec") or {}

    def lat(m, q):
        return (m.get("latency_ms") or {}).get(q)

    def ort(m, q):
        return (m.get("ort_latency_ms") or {}).get(q)

    def energy(m):
        e = m.get("energy") or {}
        j = e.get("joules_per_inference")
        return None if j is None else j * 1e3

    def src(m):
        return (m.get("energy") or {}).get("source")

    rows = []
    for name, getter, fmt in (
        ("TVM latency median (ms)", lambda m: lat(m, "median"), lambda v: _fmt(v, ".3f")),
        ("TVM latency p99 (ms)", lambda m: lat(m, "p99"), lambda v: _fmt(v, ".3f")),
        ("ONNX Runtime median (ms)", lambda m: ort(m, "median_ms"), lambda v: _fmt(v, ".3f")),
        ("ONNX Runtime p99 (ms)", lambda m: ort(m, "p99_ms"), lambda v: _fmt(v, ".3f")),
        ("energy per inference (mJ)", energy, lambda v: _fmt(v, ".3f")),
        ("artifact library size", lambda m: m.get("library_bytes"), _bytes),
    ):
        a, b = getter(base), getter(dns)
        rows.append([name, fmt(a), fmt(b), _ratio(a, b)])
    if src(base) or src(dns):
        rows.append(["energy source", _fmt(src(base)), _fmt(src(dns)), ""])
    return [r for r in rows if r[1] != "–" or r[2] != "–"]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------------------------------------
# the documents


def _sections(data: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """(kind, title, payload) in document order; kind is "p", "table", "plot" or "list"."""
    out: list[tuple[str, str, Any]] = []
    ds = data.get("dataset") or {}
    intro = (
        f"Dataset **{ds.get('name', '?')}**: {_fmt(ds.get('users'))} users, "
        f"{_fmt(ds.get('items'))} items, {_fmt(ds.get('interactions'))} interactions."
    )
    budget = data.get("budget")
    if budget:
        intro += f" Search budget: **{budget.get('text', budget)}**."
    out.append(("p", "", intro))
    for note in data.get("notes", []):
        out.append(("p", "", note))
    header = ["", MODEL_LABELS["baseline"], MODEL_LABELS["dnsrec"], "DNS-Rec / baseline"]
    out.append(("table", "Accuracy and size", (header, accuracy_rows(data))))
    for run in data.get("targets", []):
        title = f"Target {run['target']} ({run.get('mode', '')})"
        if run.get("note"):
            out.append(("table", title, (header, target_rows(run), run["note"])))
        else:
            out.append(("table", title, (header, target_rows(run))))
    for name, title in (
        ("accuracy", "Accuracy against latency and FLOPs"),
        ("search", "Search trajectory"),
        ("cost_model", "Cost model: predicted against measured latency"),
    ):
        out.append(("plot", title, name))
    arch = (data.get("models", {}).get("dnsrec") or {}).get("arch_text")
    if arch:
        out.append(("p", "Selected architecture", arch))
    stages = data.get("stages") or []
    if stages:
        rows = [[s["name"], f"{s['wall_seconds']:.1f}", s.get("summary", "")] for s in stages]
        out.append(
            (
                "table",
                "Stages (wall time when each last ran)",
                (["stage", "wall s", "summary"], rows),
            )
        )
    return out


def render_markdown(data: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    """report.md: tables and links to the PNG files beside it."""
    lines = [f"# {data.get('title', 'dnsrec-edge run')}", ""]
    for kind, title, payload in _sections(data):
        if title:
            lines += [f"## {title}", ""]
        if kind == "p":
            lines += [payload if "\n" not in payload else f"```\n{payload}\n```", ""]
        elif kind == "table":
            lines += [_md_table(payload[0], payload[1]), ""]
            if len(payload) > 2:
                lines += [f"_{payload[2]}_", ""]
        elif kind == "plot":
            if payload in plots:
                lines += [f"![{title}]({plots[payload]})", ""]
            else:
                lines += ["_(no data for this plot in this run)_", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #1f4e99;padding-bottom:.2em}
h2{font-size:1.2em;margin-top:1.6em;color:#1f4e99}
table{border-collapse:collapse;margin:.5em 0;font-size:.93em}
th,td{border:1px solid #ccd;padding:.3em .7em;text-align:right}
td:first-child,th:first-child{text-align:left}
thead th{background:#eef2fa}
img{max-width:100%;border:1px solid #eee}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto}
.note{color:#666;font-size:.9em}
"""


def render_html(data: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """report.html: one self-contained file, PNGs embedded as base64."""
    title = html.escape(data.get("title", "dnsrec-edge run"))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
        f"<style>{_CSS}</style></head><body><h1>{title}</h1>",
    ]
    for kind, sec_title, payload in _sections(data):
        if sec_title:
            parts.append(f"<h2>{html.escape(sec_title)}</h2>")
        if kind == "p":
            if "\n" in payload:
                parts.append(f"<pre>{html.escape(payload)}</pre>")
            else:
                text = html.escape(payload)
                while "**" in text:  # the only markdown the paragraphs use
                    text = text.replace("**", "<b>", 1).replace("**", "</b>", 1)
                parts.append(f"<p>{text}</p>")
        elif kind == "table":
            parts.append(_html_table(payload[0], payload[1]))
            if len(payload) > 2:
                parts.append(f"<p class='note'>{html.escape(payload[2])}</p>")
        elif kind == "plot":
            if payload in images:
                b64 = base64.b64encode(images[payload]).decode("ascii")
                parts.append(
                    f"<img alt='{html.escape(sec_title)}' src='data:image/png;base64,{b64}'>"
                )
            else:
                parts.append("<p class='note'>(no data for this plot in this run)</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(data: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNGs into ``out_dir``; returns their paths.

    ``data`` keys (all optional): ``title``; ``dataset`` {name, users, items, interactions};
    ``budget`` {kind, value, target, text}; ``models`` {baseline|pruned|dnsrec: {label,
    hr@10, ndcg@10, params, flops, arch_text}}; ``targets`` [{target, mode, note, baseline|
    dnsrec: {latency_ms {median, p99}, energy {joules_per_inference, source}, library_bytes}}];
    ``plot_target``/``plot_target_label`` (whose latency the accuracy plot uses);
    ``candidates`` [{label, ndcg@10, flops, latency_ms, latency_source}]; ``search_log``
    [{epoch, depth_probs, attn_probs, ffn_probs, attn_labels, ffn_labels, expected_cost,
    cost_unit, budget, penalty_weight, temperature, valid_ndcg@10}]; ``cost_model`` {target,
    kind, points [{kind, predicted_ms, measured_ms}]}; ``stages`` [{name, wall_seconds,
    skipped, summary}]; ``notes`` [str].
    """
    out_dir = Path(out_dir)
    images = {}
    for name, make in (
        ("accuracy", lambda: plot_accuracy(data)),
        (
            "search",
            lambda: plot_search(
                data.get("search_log") or [], _selection_note(data), data.get("selected_epoch")
            ),
        ),
        ("cost_model", lambda: plot_cost_model(data.get("cost_model") or {})),
    ):
        png = make()
        if png is not None:
            images[name] = png
    written = {}
    for name, png in images.items():
        written[name] = atomic_write_bytes(out_dir / f"{name}.png", png)
    plots = {name: f"{name}.png" for name in images}
    written["md"] = atomic_write_text(out_dir / "report.md", render_markdown(data, plots))
    written["html"] = atomic_write_text(out_dir / "report.html", render_html(data, images))
    return written
