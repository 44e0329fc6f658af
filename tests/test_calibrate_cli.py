"""``dnsrec-edge calibrate``: refits, bad input (one sentence each, nothing lost), shipped files."""

from __future__ import annotations

import json
import logging
import random
import shutil

import pytest
from click.testing import CliRunner

from dnsrec_edge import paths
from dnsrec_edge.bench.calibrate import calibrate
from dnsrec_edge.cli import main
from dnsrec_edge.compile.targets import list_targets, load_target
from dnsrec_edge.cost.analysis import analyze
from dnsrec_edge.cost.calibrate import write_prior
from dnsrec_edge.cost.calibrated import FEATURES, MIN_RECORDS, features, load_cost_model
from dnsrec_edge.cost.records import append_measurement, load_records
from dnsrec_edge.cost.sampling import SearchSpace, sample_archs

# A made-up arm64 board: the shipped store holds no arm64 records, so these are all there is.
BOARD = {
    "overhead": 0.05,
    "kernels": 0.004,
    "gemm_gflop": 120.0,
    "gemv_gflop": 200.0,
    "gemm8_gflop": 160.0,
    "gemv8_gflop": 260.0,
    "gemm_scalar_gflop": 500.0,
    "gemv_scalar_gflop": 700.0,
    "gemm_scalar_par_gflop": 900.0,
    "gemv_scalar_par_gflop": 900.0,
    "softmax_par_gflop": 600.0,
    "other_gflop": 150.0,
    "stream_gb": 150.0,
}


def board_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i, arch in enumerate(sample_archs(SearchSpace(n_items=(500, 3000), max_len=(20, 50)), n)):
        feats = features(analyze(arch))
        ms = sum(BOARD[f] * feats[f] for f in FEATURES) * (1 + 0.02 * rng.gauss(0, 1))
        out.append(
            {
                "schema": 1,
                "target": "arm64",
                "arch": arch.to_dict(),
                "batch": 1,
                "seq_len": arch.max_len,
                "latency_ms": {"median": ms, "min": ms},
                "energy": None,
                "device": {"hostname": "pi", "arch": "aarch64"},
                "artifact_sha256": f"a{i}",
                "tuned": False,
                "threads": 4,
                "time": f"2025-02-01T00:00:{i:02d}",
            }
        )
    return out


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("DNSREC_EDGE_HOME", str(tmp_path / "home"))
    return tmp_path / "store"


def run(*args: str):
    return CliRunner().invoke(main, ["calibrate", *args])


def test_refit_from_records_alone(store):
    for record in board_records(14):
        append_measurement("arm64", record, store)
    result = run("--target", "arm64", "--refit", "--calibration-dir", str(store))
    assert result.exit_code == 0, result.output
    assert "measured 0 new architecture(s)" in result.output
    assert "fitted on 14 record(s)" in result.output
    saved = json.loads((store / "arm64" / "model.json").read_text())
    assert saved["kind"] == "measured" and saved["heldout"]["n"] == 14
    assert (store / "arm64" / "heldout.png").stat().st_size > 0
    shown = run("--target", "aarch64", "--show", "--calibration-dir", str(store))
    assert shown.exit_code == 0 and "arm64': measured" in shown.output


def test_torn_and_malformed_lines_are_skipped_and_kept(store, caplog):
    for record in board_records(14):
        path = append_measurement("arm64", record, store)
    with open(path, "a") as fh:
        fh.write("{not json}\n")
        fh.write('{"schema": 1, "target": "arm64", "arch": {"n_')  # torn by a crash
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING):
        result = run("--target", "arm64", "--refit", "--calibration-dir", str(store))
    assert result.exit_code == 0, result.output
    assert f"{path} line 15 skipped: not a JSON object" in caplog.text
    assert f"{path} line 16 skipped: torn last line" in caplog.text
    assert "fitted on 14 record(s)" in result.output
    assert path.read_bytes() == before


def test_records_with_bad_devices_or_latencies_are_skipped_with_a_warning(store, caplog):
    for record in board_records(14):
        path = append_measurement("arm64", record, store)
    bad = board_records(3, seed=1)
    bad[0]["device"] = "pi"  # not an object of facts
    bad[1]["latency_ms"] = {"median": 2.0, "min": "fast"}
    bad[2]["latency_ms"] = {"median": 2.0, "min": -3.0}
    with open(path, "a") as fh:
        for record in bad:
            fh.write(json.dumps(record) + "\n")
    with caplog.at_level(logging.WARNING):
        result = run("--target", "arm64", "--refit", "--calibration-dir", str(store))
    assert result.exit_code == 0, result.output
    assert f"{path} line 15 skipped: record device must be an object" in caplog.text
    assert f"{path} line 16 skipped: record latency_ms min must be non-negative" in caplog.text
    assert f"{path} line 17 skipped: record latency_ms min must be non-negative" in caplog.text
    assert "fitted on 14 record(s)" in result.output


def test_model_file_for_another_target_is_refused_and_kept(store):
    write_prior("riscv64", store)
    (store / "arm64").mkdir(parents=True)
    wrong = store / "arm64" / "model.json"
    shutil.move(store / "riscv64" / "model.json", wrong)
    before = wrong.read_bytes()
    for record in board_records(14):
        append_measurement("arm64", record, store)
    shown = run("--target", "arm64", "--show", "--calibration-dir", str(store))
    assert shown.exit_code == 1
    assert shown.output.startswith(
        f"Error: '{wrong}' is a cost model for target 'riscv64', not 'arm64';"
    )
    refit = run("--target", "arm64", "--refit", "--calibration-dir", str(store))
    assert refit.exit_code == 1
    assert "it is not replaced: move" in refit.output
    assert wrong.read_bytes() == before


def test_too_few_records_says_how_many(store):
    for record in board_records(3):
        path = append_measurement("arm64", record, store)
    before = path.read_bytes()
    result = run("--target", "arm64", "--refit", "--calibration-dir", str(store))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: fitting target 'arm64' needs at least {MIN_RECORDS} measured architectures on "
        f"one board, found 3; measure more with 'dnsrec-edge calibrate --target arm64 "
        f"--samples {2 * MIN_RECORDS}'\n"
    )
    assert path.read_bytes() == before and not (store / "arm64" / "model.json").exists()


def test_where_to_measure_must_be_said_once(store):
    result = run("--target", "arm64", "--calibration-dir", str(store))
    assert result.exit_code == 1
    assert (
        "exactly one of --local, --rpc HOST:PORT or --rpc-tracker HOST:PORT (got none)"
        in result.output
    )
    result = run("--target", "arm64", "--local", "--rpc", "h:1", "--calibration-dir", str(store))
    assert "(got --local, --rpc)" in result.output
    result = run("--target", "arm64", "--rpc-tracker", "h:1", "--calibration-dir", str(store))
    assert "--rpc-tracker needs --rpc-key" in result.output


def test_a_bad_sampling_range_is_named(store):
    for items, lens in (("5:2", "50"), ("1000-9000", "50"), ("1000:9000", "fifty")):
        result = run("-t", "x86_64", "--local", "--items", items, "--lens", lens)
        assert result.exit_code == 1
        assert "--items" in result.output and "measured 0" not in result.output
    assert not (store / "x86_64").exists()


MEASURED = {"x86_64", "x86_64-avx512"}  # shipped models fitted on measurements


def test_shipped_calibration_says_what_each_target_has():
    for target in list_targets():
        path = paths.shipped_calibration_dir() / target.name / "model.json"
        saved = json.loads(path.read_text())
        assert saved["target"] == target.name
        assert saved["kind"] == ("measured" if target.name in MEASURED else "prior")
    for name in MEASURED:
        x86 = json.loads((paths.shipped_calibration_dir() / name / "model.json").read_text())
        assert x86["device"]["arch"] == "x86_64" and x86["device"]["cpu_model"]
        assert set(x86["heldout"]) == set(x86["prior_heldout"]) == {"n", "within10", "mape"}
        assert x86["heldout"]["within10"] > x86["prior_heldout"]["within10"]


def test_refit_of_the_shipped_x86_64_records_reproduces_the_shipped_model(store):
    shipped = json.loads((paths.shipped_calibration_dir() / "x86_64" / "model.json").read_text())
    result = calibrate("x86_64", refit=True, calibration_dir=store)
    assert result.model.meta["heldout"] == shipped["heldout"]
    assert result.model.meta["heldout"]["n"] >= 40
    assert result.model.meta["heldout"]["within10"] >= 0.9
    assert result.model.meta["heldout"]["mape"] <= 5.0
    assert (
        result.model.meta["flops_only_heldout"]["mape"] > 2 * result.model.meta["heldout"]["mape"]
    )
    assert result.model.meta["prior_heldout"] == shipped["prior_heldout"]
    model = load_cost_model(load_target("x86_64"), store)
    assert model.kind == "measured" and len(load_records("x86_64", store)) >= 40
