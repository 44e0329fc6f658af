"""The bench report: statistics, per-board and pooled figures, JSON round trip, summary."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from dnsrec_edge.bench.report import BenchReport, BoardResult, latency_stats


def board(label, runs, energy=None, emulated=False):
    return BoardResult(
        label=label,
        device={"arch": "aarch64", "cpu_model": "Cortex-A72", "emulated": emulated},
        threads=4,
        max_abs_diff=2e-6,
        top10_match=True,
        runs=runs,
        energy=energy,
        peak_rss_bytes=50 << 20,
    )


def report(*boards):
    return BenchReport(
        artifact="/a/rpi4",
        artifact_sha256="ab" * 32,
        target="rpi4",
        arch="aarch64",
        batch=1,
        seq_len=50,
        boards=list(boards),
        complete=True,
        settings={"number": 10},
    )


def test_latency_stats_are_over_per_repeat_samples():
    stats = latency_stats([float(i) for i in range(1, 11)])
    assert stats == {
        "mean": 5.5,
        "median": 5.5,
        "p90": pytest.approx(9.1),
        "p99": pytest.approx(9.91),
        "std": pytest.approx(2.8722813),
        "min": 1.0,
        "max": 10.0,
        "samples": 10,
    }
    assert latency_stats([]) is None


def test_pooled_figures_and_round_trip():
    a = board(
        "pi-a:9090", [[2.0, 2.0], [4.0]], {"joules_per_inference": 0.010, "source": "ina3221"}
    )
    b = board("pi-b:9090", [[1.0]], {"joules_per_inference": 0.020, "source": "ina3221"})
    r = report(a, b)
    d = r.to_dict()
    assert d["latency_ms"]["samples"] == 4 and d["latency_ms"]["mean"] == pytest.approx(2.25)
    assert d["boards"][0]["latency_ms"]["mean"] == pytest.approx(8 / 3)
    assert d["throughput_per_s"] == pytest.approx(1000 / (8 / 3) + 1000 / 1.0)
    assert d["energy"] == {
        "joules_per_inference": pytest.approx(0.015),
        "source": "ina3221",
        "boards": 2,
    }
    assert d["emulated"] is False and d["max_abs_diff"] == 2e-6 and d["top10_match"] is True
    again = BenchReport.from_dict(json.loads(json.dumps(d)))
    assert again.to_dict() == d
    b.energy = {"joules_per_inference": 0.020, "source": "model"}
    assert r.to_dict()["energy"]["source"] == "mixed:ina3221+model"


def test_summary_fits_one_screen_and_says_what_is_estimated():
    console = Console(record=True, width=80)
    r = report(
        board(
            "pi-a:9090",
            [[2.0, 3.0]],
            {"joules_per_inference": 0.01, "source": "model"},
            emulated=True,
        ),
        board("pi-b:9090", [[1.0]]),
    )
    r.complete, r.error = False, "the connection to pi-b:9090 dropped"
    r.summary(console)
    text = console.export_text()
    assert len(text.splitlines()) <= 24 and max(map(len, text.splitlines())) <= 80
    for words in (
        "pooled",
        "median ms",
        "p99 ms",
        "10.000 mJ (model)",
        "Emulated board",
        "Energy is modelled",
        "Incomplete: the connection",
    ):
        assert words in text
