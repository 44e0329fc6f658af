"""A real measurement as calibration makes it: compile, benchmark on this host, record."""

from __future__ import annotations

import json

import pytest

from dnsrec_edge.bench.calibrate import _compile_arch, _measure, measure_architecture
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
    # measured at 1 thread, built for 1 thread (a build for more cores runs slower on one)
    built, _sha = _compile_arch(arch, "x86_64", tmp_path / "b", 0, threads=1)
    assert json.loads((built / "manifest.json").read_text())["threads"] == 1
    assert not new[0]["tuned"] and new[0]["batch"] == 1 and new[0]["seq_len"] == 20
    # The two rounds are duplicates (same artifact, same board): merged into one point.
    (merged,) = fit_data(new, "min").records
    assert merged["merged_ms"] == pytest.approx(ms)
    assert sorted(merged["repeats_ms"]) == sorted(r["latency_ms"]["min"] for r in new)


@pytest.mark.slow
@pytest.mark.tvm
def test_a_library_measured_before_is_skipped_and_a_new_build_is_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("DNSREC_EDGE_HOME", str(tmp_path / "home"))
    store = tmp_path / "store"
    archs = [
        ArchSpec.uniform(n_items=300, max_len=20, hidden=32, depth=1, heads=h, ffn=32)
        for h in (1, 2)
    ]
    where = {"rpc": None, "tracker": None, "key": None, "threads": 1}

    def measure():
        measured, skipped, failed = _measure(
            archs, "x86_64", where, rounds=1, calibration_dir=store, seed=0, quiet=True
        )
        assert not failed
        return measured, skipped

    assert measure() == (2, 0)
    # the first measurement names the board; the same library after it is not measured again
    assert measure() == (1, 1)
    # records of other libraries of the same architectures (an older toolkit's builds)
    path = store / "x86_64" / "records.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r | {"artifact_sha256": "0" * 64}) + "\n" for r in lines))
    assert measure() == (2, 0)
