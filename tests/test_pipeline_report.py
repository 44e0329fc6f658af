"""The run report from constructed stage outputs: tables, plots, self-contained HTML."""

import base64
import re

from dnsrec_edge.pipeline.report import pareto_front, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data():
    log = [
        {
            "epoch": e,
            "depth_probs": [0.25, 0.25 + 0.05 * e, 0.25, 0.25 - 0.05 * e],
            "attn_probs": [[0.5, 0.3, 0.2]] * 2,
            "ffn_probs": [[0.2, 0.3, 0.5]] * 2,
            "attn_labels": ["4 heads", "2 heads", "1 head"],
            "ffn_labels": ["256", "128", "64"],
            "expected_cost": 2.0 - 0.2 * e,
            "budget": 1.5,
            "cost_unit": "ms",
            "penalty_weight": 0.1 * e,
            "valid_ndcg@10": 0.05 + 0.001 * e,
        }
        for e in range(1, 5)
    ]
    return {
        "title": "run on ml-100k",
        "dataset": {"name": "ml-100k", "users": 943, "items": 1349, "interactions": 99287},
        "budget": {"kind": "latency", "value": 1.5, "target": "x86_64", "text": "latency=1.5ms"},
        "models": {
            "baseline": {"hr@10": 0.2, "ndcg@10": 0.1, "params": 200000, "flops": 4e6},
            "dnsrec": {"hr@10": 0.19, "ndcg@10": 0.098, "params": 100000, "flops": 1e6},
        },
        "targets": [
            {
                "target": "x86_64",
                "mode": "local",
                "baseline": {
                    "latency_ms": {"median": 2.0, "p99": 2.5},
                    "ort_latency_ms": {"median_ms": 1.6, "p99_ms": 1.8},
                    "energy": {"joules_per_inference": 0.004, "source": "model"},
                    "library_bytes": 2 * 2**20,
                },
                "dnsrec": {
                    "latency_ms": {"median": 1.0, "p99": 1.4},
                    "ort_latency_ms": {"median_ms": 0.4, "p99_ms": 0.5},
                    "energy": {"joules_per_inference": 0.002, "source": "model"},
                    "library_bytes": 2**20,
                },
            },
            {
                "target": "arm64",
                "mode": "compiled only",
                "note": "no board",
                "baseline": {"library_bytes": 1000},
                "dnsrec": {"library_bytes": 500},
            },
        ],
        "plot_target": "x86_64",
        "candidates": [
            {
                "label": "e1",
                "ndcg@10": 0.09,
                "flops": 3e6,
                "latency_ms": 1.7,
                "latency_source": "predicted",
            },
            {
                "label": "e2",
                "ndcg@10": 0.097,
                "flops": 1.5e6,
                "latency_ms": 1.2,
                "latency_source": "measured",
            },
        ],
        "search_log": log,
        "cost_model": {
            "target": "x86_64",
            "kind": "measured",
            "points": [
                {"kind": "baseline", "predicted_ms": 1.9, "measured_ms": 2.0},
                {"kind": "dnsrec", "predicted_ms": 1.1, "measured_ms": 1.0},
            ],
        },
        "stages": [{"name": "data", "wall_seconds": 0.5, "skipped": True, "summary": "ok"}],
    }


def test_pareto_front():
    points = [(1.0, 0.5), (2.0, 0.7), (1.5, 0.4), (3.0, 0.7), (0.5, 0.1)]
    assert pareto_front(points) == [4, 0, 1]


def test_report_tables_and_plots(tmp_path):
    written = write_report(_data(), tmp_path)
    assert set(written) == {"accuracy", "search", "cost_model", "md", "html"}
    for name in ("accuracy", "search", "cost_model"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    md = (tmp_path / "report.md").read_text()
    assert "| NDCG@10 (full ranking) | 0.1000 | 0.0980 | 0.98x |" in md
    assert "| TVM latency median (ms) | 2.000 | 1.000 | 0.50x |" in md
    assert "| TVM latency p99 (ms) | 2.500 | 1.400 | 0.56x |" in md
    assert "| ONNX Runtime median (ms) | 1.600 | 0.400 | 0.25x |" in md
    assert "| energy per inference (mJ) | 4.000 | 2.000 | 0.50x |" in md
    assert "| energy source | model | model |  |" in md
    assert "| artifact library size | 2.0 MiB | 1.0 MiB | 0.50x |" in md
    assert "## Target arm64 (compiled only)" in md and "_no board_" in md
    assert "![Search trajectory](search.png)" in md


def test_html_is_self_contained(tmp_path):
    write_report(_data(), tmp_path)
    page = (tmp_path / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3
    assert all(base64.b64decode(b).startswith(PNG_MAGIC) for b in images)
    assert "src='http" not in page and "href=" not in page
    assert "<b>ml-100k</b>" in page


def test_missing_parts_leave_a_note_not_a_crash(tmp_path):
    data = {"models": {"baseline": {"ndcg@10": 0.1, "flops": 2e6}}}
    written = write_report(data, tmp_path)
    assert "accuracy" in written and "search" not in written and "cost_model" not in written
    assert "(no data for this plot in this run)" in (tmp_path / "report.md").read_text()
