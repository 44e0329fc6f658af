"""A real measurement as calibration makes it: compile, benchmark on this host, record."""

from __future__ import annotations

import pytest

from dnsrec_edge.bench.calibrate import measure_architecture
from dnsrec_edge.cost.calibrated import fit_data
from dnsrec_edge.cost.records import load_records
from dnsrec_edge.models.archspec import ArchSpec


@pytest.mark.slow
@pytest.mark.tvm
def test_measure_architecture_records_every_round(tmp_path, monkeypatch):
    monkeypatch.setenv("DNSREC_EDGE_HOME", str(tmp_path / "home"))
    store = tmp_path / "store"
    arch = ArchSpec.uniform(n_items=300, max_len=20, hidden=32, depth=1, heads=2, ffn=32)
    ms = measure_architecture(arch, "x86_64", threads=1, rounds=2, calibration_dir=store)
    lines = (store / "x86_64" / "records.jsonl").read_text().splitlines()
    assert len(lines) == 2  # one record per round, appended
    new = [r for r in load_records("x86_64", store) if r["arch"] == arch.to_dict()]
    assert len(new) == 2 and new[0]["artifact_sha256"] == new[1]["artifact_sha256"]
    assert new[0]["device"]["arch"] == "x86_64" and new[0]["threads"] == 1
    assert not new[0]["tuned"] and new[0]["batch"] == 1 and new[0]["seq_len"] == 20
    # The two rounds are duplicates (same artifact, same board): merged into one point.
    (merged,) = fit_data(new, "min").records
    assert merged["merged_ms"] == pytest.approx(ms)
    assert sorted(merged["repeats_ms"]) == sorted(r["latency_ms"]["min"] for r in new)
