"""The measurement store: append-only records, torn lines, duplicates, overlay of stores."""

from __future__ import annotations

import logging

import pytest

from dnsrec_edge import paths
from dnsrec_edge.cost.records import (
    append_measurement,
    load_records,
    merge_duplicates,
    record_id,
)
from dnsrec_edge.errors import CalibrationError
from dnsrec_edge.models.archspec import ArchSpec


def make_record(i: int, median: float = 2.0, board: str = "box-a", target: str = "x86_64") -> dict:
    arch = ArchSpec.uniform(n_items=1000 + i, max_len=20, hidden=32, depth=1)
    return {
        "schema": 1,
        "target": target,
        "arch": arch.to_dict(),
        "batch": 1,
        "seq_len": 20,
        "latency_ms": {
            "mean": median,
            "median": median,
            "p90": median,
            "p99": median,
            "std": 0.0,
            "min": median,
            "max": median,
        },
        "energy": None,
        "device": {"hostname": board, "cpu_model": "test cpu", "machine": "x86_64"},
        "artifact_sha256": f"{i:064x}",
        "tuned": False,
        "tool_version": "0.1.0",
        "tvm_version": "0.27.0",
        "time": f"2025-01-01T00:00:{i:02d}",
    }


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """An empty shipped folder and an empty user store, both under tmp_path."""
    shipped = tmp_path / "shipped"
    monkeypatch.setattr(paths, "shipped_calibration_dir", lambda: shipped)
    monkeypatch.setenv("DNSREC_EDGE_HOME", str(tmp_path / "home"))
    return shipped, tmp_path / "home" / "calibration"


def test_append_then_load_round_trip(stores):
    _, user = stores
    path = append_measurement("x86_64", make_record(1))
    assert path == user / "x86_64" / "records.jsonl"
    (loaded,) = load_records("x86_64")
    assert loaded["latency_ms"]["median"] == 2.0
    assert loaded["id"] == record_id(make_record(1))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"emulated": True}, "emulated"),
        ({"target": "arm64"}, "for target 'arm64'"),
        ({"latency_ms": {"median": -1}}, "positive 'median'"),
        ({"schema": 2}, "schema 2"),
    ],
)
def test_bad_records_are_refused(stores, change, words):
    with pytest.raises(CalibrationError, match=words):
        append_measurement("x86_64", make_record(1) | change)
    assert load_records("x86_64") == []


def test_missing_field_is_named(stores):
    record = make_record(1)
    del record["artifact_sha256"]
    with pytest.raises(CalibrationError, match="artifact_sha256"):
        append_measurement("x86_64", record)


def test_torn_last_line_is_skipped_with_warning_and_kept(stores, caplog):
    for i in range(3):
        path = append_measurement("x86_64", make_record(i))
    with open(path, "ab") as fh:
        fh.write(b'{"schema": 1, "target": "x86_64", "arch"')  # a crash mid-append
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING):
        records = load_records("x86_64")
    assert len(records) == 3
    assert f"{path} line 4 skipped: torn last line" in caplog.text
    assert path.read_bytes() == before  # never rewritten
    # The next append starts a fresh line: the new record is readable, the fragment kept.
    append_measurement("x86_64", make_record(7))
    assert len(load_records("x86_64")) == 4
    assert path.read_bytes().startswith(before)


def test_malformed_middle_line_is_skipped(stores, caplog):
    path = append_measurement("x86_64", make_record(0))
    with open(path, "a") as fh:
        fh.write("not json\n")
        fh.write('{"schema": 1, "target": "x86_64"}\n')  # JSON, but not a record
    append_measurement("x86_64", make_record(1))
    with caplog.at_level(logging.WARNING):
        assert len(load_records("x86_64")) == 2
    assert "line 2 skipped: not a JSON object" in caplog.text
    assert "line 3 skipped: measurement record lacks" in caplog.text


def test_duplicates_are_kept_and_merged(stores, caplog):
    with caplog.at_level(logging.INFO):
        for median in (2.0, 3.0, 2.5):
            append_measurement("x86_64", make_record(5, median=median))
    append_measurement("x86_64", make_record(5, median=9.0, board="box-b"))
    assert "repeat measurement 3" in caplog.text
    records = load_records("x86_64")
    assert len(records) == 4
    merged = merge_duplicates(records)
    assert len(merged) == 2  # one per (artifact, board)
    by_board = {r["device"]["hostname"]: r for r in merged}
    assert by_board["box-a"]["latency_ms"]["median"] == 2.5
    assert by_board["box-a"]["repeats_ms"] == [2.0, 3.0, 2.5]


def test_user_store_overlays_shipped_and_shipped_is_not_written(stores):
    shipped, user = stores
    (shipped / "x86_64").mkdir(parents=True)
    shipped_file = shipped / "x86_64" / "records.jsonl"
    append_measurement("x86_64", make_record(1), calibration_dir=shipped)
    before = shipped_file.read_bytes()
    append_measurement("x86_64", make_record(2))
    assert [r["artifact_sha256"][-1] for r in load_records("x86_64")] == ["1", "2"]
    assert shipped_file.read_bytes() == before
    assert (user / "x86_64" / "records.jsonl").is_file()


def test_calibration_dir_replaces_the_user_store(stores, tmp_path):
    _, user = stores
    append_measurement("x86_64", make_record(1))
    other = tmp_path / "elsewhere"
    append_measurement("x86_64", make_record(2), calibration_dir=other)
    assert len(load_records("x86_64", calibration_dir=other)) == 1
    assert len(load_records("x86_64")) == 1
    assert (other / "x86_64" / "records.jsonl").is_file()
