"""Bench runs on this x86_64 machine: in-process, over a real loopback RPC server, through a
tracker with two boards, and every fault the issue lists (each with a real server)."""

from __future__ import annotations

import contextlib
import json
import platform
import socket
import threading

import numpy as np
import pytest
from test_bench_artifact import build_artifact
from test_device_servers import Proc, spawn_server, start_server, start_tvm

from dnsrec_edge.bench.emulate import free_port
from dnsrec_edge.bench.run import CHUNK_REPEATS, benchmark
from dnsrec_edge.errors import (
    ChecksumMismatch,
    DeviceError,
    DeviceUnreachable,
    OutputExists,
    OutputMismatch,
)

pytest.importorskip("tvm")
pytestmark = [
    pytest.mark.tvm,
    pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 host artifacts"),
]

FAST = {"warmup": 2, "repeat": 12, "number": 5}  # 12 repeats = two timed chunks (10 + 2)
LATENCY_KEYS = {"mean", "median", "p90", "p99", "std", "min", "max", "samples"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    return {
        "x86_64": build_artifact(root / "x86_64", "x86_64"),
        "aarch64": build_artifact(root / "aarch64", "aarch64"),
    }


@pytest.fixture(scope="module")
def server():
    proc, port = start_server()
    yield f"127.0.0.1:{port}"
    proc.kill()


def records(cal, target="x86_64"):
    path = cal / target / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def copy_artifact(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_local_bench_reports_checks_latency_energy_and_records(artifacts, tmp_path):
    chip = tmp_path / "sys/class/hwmon/hwmon0"  # a constructed 10 W power sensor
    chip.mkdir(parents=True)
    (chip / "name").write_text("board\n")
    (chip / "power1_input").write_text("10000000\n")
    out, cal = tmp_path / "report.json", tmp_path / "cal"
    report = benchmark(
        artifacts["x86_64"],
        **FAST,
        energy="hwmon",
        energy_seconds=0.2,
        sysfs_root=str(tmp_path),
        out=out,
        calibration_dir=cal,
    )
    d = json.loads(out.read_text())
    assert d == json.loads(json.dumps(report.to_dict()))
    assert d["complete"] and d["mode"] == "local" and d["emulated"] is False
    assert d["max_abs_diff"] <= 1e-4 and d["top10_match"] is True
    lat = d["latency_ms"]
    assert set(lat) == LATENCY_KEYS and lat["samples"] == FAST["repeat"]
    assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert d["throughput_per_s"] == pytest.approx(1000.0 / lat["mean"])
    assert d["library_bytes"] == (artifacts["x86_64"] / "lib.so").stat().st_size
    assert (
        d["artifact_sha256"]
        == json.loads((artifacts["x86_64"] / "manifest.json").read_text())["files"]["lib.so"]
    )
    assert d["peak_rss_bytes"] > 0 and d["device"]["arch"] == "x86_64"
    e = d["energy"]
    assert e["source"] == "hwmon" and e["inferences"] > 1
    assert e["joules_per_inference"] == pytest.approx(10.0 * e["window_s"] / e["inferences"])
    (rec,) = records(cal)
    assert rec["latency_ms"] == d["boards"][0]["latency_ms"]
    assert rec["energy"] == {"joules_per_inference": e["joules_per_inference"], "source": "hwmon"}
    assert rec["arch"]["hidden"] == 32 and rec["tuned"] is False
    with pytest.raises(OutputExists, match="pass --force"):  # refused before anything runs
        benchmark(artifacts["x86_64"], **FAST, out=out, calibration_dir=cal)
    assert len(records(cal)) == 1


def test_cli_bench_prints_a_summary(artifacts, tmp_path):
    from click.testing import CliRunner

    from dnsrec_edge.cli import main

    out = tmp_path / "r.json"
    args = [
        "bench",
        str(artifacts["x86_64"]),
        "--local",
        "--repeat",
        "3",
        "--number",
        "2",
        "--warmup",
        "1",
        "--energy",
        "model",
        "--no-record",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "median ms" in result.output and "(model)" in result.output
    assert "Energy is modelled" in result.output and f"Report written to {out}" in result.output
    assert json.loads(out.read_text())["energy"]["source"] == "model"
    result = CliRunner().invoke(main, ["bench", str(artifacts["x86_64"])])
    assert result.exit_code == 2 and "choose exactly one of --local" in result.output


def test_corrupt_artifact_is_refused_before_it_runs(artifacts, tmp_path):
    art = copy_artifact(artifacts["x86_64"], tmp_path / "art")
    lib = bytearray((art / "lib.so").read_bytes())
    lib[-1] ^= 0xFF
    (art / "lib.so").write_bytes(bytes(lib))
    with pytest.raises(ChecksumMismatch, match="lib.so"):
        benchmark(art, **FAST, calibration_dir=tmp_path / "cal")
    assert records(tmp_path / "cal") == []


def test_output_mismatch_fails_and_records_nothing(artifacts, tmp_path):
    import hashlib

    art = copy_artifact(artifacts["x86_64"], tmp_path / "art")
    ref = np.load(art / "reference_output.npy")
    np.save(art / "reference_output.npy", ref + 1e-3)  # a reference the board cannot match
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"]["reference_output.npy"] = hashlib.sha256(
        (art / "reference_output.npy").read_bytes()
    ).hexdigest()
    (art / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "r.json"
    with pytest.raises(OutputMismatch, match=r"max abs diff 1\.00e-03, limit 0\.0001") as err:
        benchmark(art, **FAST, out=out, calibration_dir=tmp_path / "cal")
    assert "nothing was timed or recorded" in str(err.value)
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and partial["latency_ms"] is None
    assert partial["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert records(tmp_path / "cal") == []


def test_artifact_for_another_arch_is_refused_before_upload(artifacts, server, tmp_path):
    for where in ({}, {"rpc": server}):
        with pytest.raises(
            DeviceError,
            match=r"built for aarch64 \(target arm64\) but the board"
            r" at .* is x86_64",
        ):
            benchmark(artifacts["aarch64"], **FAST, **where, calibration_dir=tmp_path)


def test_rpc_bench_on_a_loopback_server(artifacts, server, tmp_path):
    cal = tmp_path / "cal"
    report = benchmark(artifacts["x86_64"], rpc=server, **FAST, threads=1, calibration_dir=cal)
    d = report.to_dict()
    assert d["mode"] == "rpc" and d["address"] == server and d["complete"]
    assert d["device"]["rpc_port"] == int(server.split(":")[1]) and d["device"]["agent"]
    assert d["boards"][0]["threads"] == 1 and d["top10_match"]
    assert d["latency_ms"]["samples"] == FAST["repeat"]
    assert d["energy"]["source"] == "model"  # no sensors here: labelled, never recorded as energy
    assert d["peak_rss_bytes"] > 0
    (rec,) = records(cal)
    assert rec["energy"] is None and rec["device"]["rpc_port"] == d["device"]["rpc_port"]


def test_weight_files_run_in_process_and_over_rpc_and_are_checked(
    artifacts, server, tmp_path, monkeypatch
):
    from dnsrec_edge.compile import weights
    from dnsrec_edge.compile.artifact import load_artifact

    monkeypatch.setattr(weights, "EXTERNAL_MIN_BYTES", 1024)  # as a large catalogue's table
    path = build_artifact(tmp_path / "lifted")  # the build checked it against ONNX Runtime
    art = load_artifact(path)
    entries = art.manifest["weights"]
    assert len(entries) >= 2 and all(e["file"] in art.manifest["files"] for e in entries)
    inline = artifacts["x86_64"] / "lib.so"
    assert (
        art.library.stat().st_size
        < inline.stat().st_size - sum((path / e["file"]).stat().st_size for e in entries) / 2
    )
    x, ref = art.reference()
    assert np.abs(art.run_local(x) - ref).max() < 1e-4
    for where in ({}, {"rpc": server}):
        report = benchmark(path, **FAST, threads=1, calibration_dir=tmp_path / "cal", **where)
        assert report.to_dict()["top10_match"]
    weight = path / entries[0]["file"]
    weight.write_bytes(weight.read_bytes()[:-4] + b"\0\0\0\1")
    with pytest.raises(ChecksumMismatch, match=entries[0]["file"]):
        benchmark(path, **FAST, calibration_dir=tmp_path / "cal")


def test_unreachable_server_is_one_sentence_with_the_address(artifacts, tmp_path):
    port = free_port()
    with pytest.raises(DeviceUnreachable) as err:
        benchmark(artifacts["x86_64"], rpc=f"127.0.0.1:{port}", **FAST, calibration_dir=tmp_path)
    text = str(err.value)
    assert f"cannot reach the TVM RPC server at 127.0.0.1:{port} (Connection refused)" in text
    assert "\n" not in text and text.count(". ") == 0
    with pytest.raises(DeviceUnreachable, match="'board' is not HOST:PORT"):
        benchmark(artifacts["x86_64"], rpc="board", **FAST)


def test_a_port_that_is_not_tvm_rpc(artifacts, tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def answer():  # an SSH-like service: answers every connection with its banner
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # a port probe may hang up first
                conn.settimeout(10)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
                while conn.recv(64):  # reads what the client says until it hangs up
                    pass

    threading.Thread(target=answer, daemon=True).start()
    port = sock.getsockname()[1]
    with pytest.raises(DeviceUnreachable, match=f"127.0.0.1:{port} answers but is not a TVM RPC"):
        benchmark(artifacts["x86_64"], rpc=f"127.0.0.1:{port}", **FAST)
    sock.close()


def test_a_peer_that_never_answers_times_out(artifacts, monkeypatch):
    from dnsrec_edge.board import rpc

    monkeypatch.setattr(rpc, "HANDSHAKE_TIMEOUT_S", 1.0)
    with socket.socket() as sock:  # accepts (kernel backlog) but never speaks
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(DeviceUnreachable, match="did not finish the TVM RPC handshake"):
            benchmark(artifacts["x86_64"], rpc=f"127.0.0.1:{port}", **FAST)


@pytest.mark.slow
def test_dropped_connection_is_retried_once_then_fails_keeping_finished_runs(artifacts, tmp_path):
    board, port = start_server()
    boards = [board]

    def power_cycle(run):  # after the first chunk: the board dies and comes back
        if run == 1:
            boards[-1].kill()
            boards.append(start_server(port)[0])

    cal = tmp_path / "cal"
    try:
        report = benchmark(
            artifacts["x86_64"],
            rpc=f"127.0.0.1:{port}",
            **FAST,
            calibration_dir=cal,
            on_run=power_cycle,
        )
        b = report.boards[0]
        assert report.complete and b.reconnects == 1 and len(b.samples_ms) == FAST["repeat"]
        assert b.max_abs_diff <= 1e-4  # the reference check ran again on the new session
        assert len(records(cal)) == 1

        def power_off(run):
            if run == 1:
                boards[-1].kill()

        out = tmp_path / "partial.json"
        with pytest.raises(DeviceError) as err:
            benchmark(
                artifacts["x86_64"],
                rpc=f"127.0.0.1:{port}",
                **FAST,
                out=out,
                calibration_dir=cal,
                on_run=power_off,
            )
        text = str(err.value)
        assert (
            f"the connection to 127.0.0.1:{port} dropped during the run and the retry failed"
            in text
        )
        assert f"the {CHUNK_REPEATS} finished repeats are kept in the report" in text
        partial = json.loads(out.read_text())
        assert partial["complete"] is False and partial["latency_ms"]["samples"] == CHUNK_REPEATS
        assert err.value.report.boards[0].reconnects == 1
        assert len(records(cal)) == 1  # the failed run added nothing
    finally:
        for proc in boards:
            proc.kill()


@pytest.mark.slow
def test_plain_tvm_server_without_agent(artifacts, tmp_path):
    proc, port = start_tvm("rpc_server")
    try:
        report = benchmark(artifacts["x86_64"], rpc=f"127.0.0.1:{port}", **FAST, record=False)
        assert report.complete and report.boards[0].device == {"agent": False}
        assert report.to_dict()["top10_match"] is True
        with pytest.raises(DeviceError, match="runs no dnsrec-edge agent, so its rapl sensors"):
            benchmark(artifacts["x86_64"], rpc=f"127.0.0.1:{port}", **FAST, energy="rapl")
        # without facts the arch cannot be checked first: loading the library says it instead
        with pytest.raises(DeviceError, match="cannot load the artifact's library .*another arch"):
            benchmark(artifacts["aarch64"], rpc=f"127.0.0.1:{port}", **FAST, record=False)
    finally:
        proc.kill()


@pytest.mark.slow
def test_tracker_runs_on_two_boards_and_lists_them(artifacts, tmp_path):
    from click.testing import CliRunner

    from dnsrec_edge.cli import main

    tracker, tport = start_tvm("rpc_tracker")
    address = f"127.0.0.1:{tport}"
    boards: list[Proc] = []
    try:
        boards = [spawn_server(tracker=address, key="x86-test")[0] for _ in range(2)]
        for proc in boards:
            proc.wait_ready()
        runner = CliRunner()
        for _ in range(100):  # servers register a moment after they bind
            listed = runner.invoke(main, ["device", "list", "--rpc-tracker", address, "--json"])
            rows = json.loads(listed.output)
            if len(rows) == 2 and rows[0]["free"] == 2:
                break
            threading.Event().wait(0.2)
        assert [r["key"] for r in rows] == ["x86-test", "x86-test"]
        text = runner.invoke(main, ["device", "list", "--rpc-tracker", address]).output
        assert text.count("x86-test") == 2
        out, cal = tmp_path / "pool.json", tmp_path / "cal"
        result = runner.invoke(
            main,
            [
                "bench",
                str(artifacts["x86_64"]),
                "--rpc-tracker",
                address,
                "--rpc-key",
                "x86-test",
                "--devices",
                "2",
                "--repeat",
                "4",
                "--number",
                "2",
                "--warmup",
                "1",
                "--out",
                str(out),
                "--calibration-dir",
                str(cal),
            ],
        )
        assert result.exit_code == 0, result.output
        assert "pooled" in result.output
        d = json.loads(out.read_text())
        labels = [b["label"] for b in d["boards"]]
        assert len(set(labels)) == 2 and all(":" in label for label in labels)
        assert {b["device"]["rpc_port"] for b in d["boards"]} == {
            int(x.split(":")[1]) for x in labels
        }
        assert d["mode"] == "tracker" and d["key"] == "x86-test"
        assert d["latency_ms"]["samples"] == 8
        assert d["throughput_per_s"] == pytest.approx(
            sum(b["throughput_per_s"] for b in d["boards"])
        )
        assert len(records(cal)) == 2
        result = runner.invoke(
            main,
            [
                "bench",
                str(artifacts["x86_64"]),
                "--rpc-tracker",
                address,
                "--rpc-key",
                "x86-test",
                "--devices",
                "3",
                "--no-record",
            ],
        )
        assert result.exit_code == 1
        assert "has 2 free board(s) under key 'x86-test' but --devices 3 needs 3" in result.output
    finally:
        for proc in [*boards, tracker]:
            proc.kill()


def test_a_store_that_cannot_be_written_keeps_the_finished_measurement(artifacts, tmp_path):
    from click.testing import CliRunner

    from dnsrec_edge.cli import main

    (tmp_path / "file").write_text("not a folder")
    store, out = tmp_path / "file" / "cal", tmp_path / "r.json"
    report = benchmark(artifacts["x86_64"], **FAST, out=out, calibration_dir=store)
    assert report.complete and report.latency_ms()["samples"] == FAST["repeat"]
    assert "cannot append to" in report.record_error and str(store) in report.record_error
    assert json.loads(out.read_text())["record_error"] == report.record_error
    fast = [f"--{k}={v}" for k, v in FAST.items()]
    result = CliRunner().invoke(
        main, ["bench", str(artifacts["x86_64"]), "--local", *fast, "--calibration-dir", str(store)]
    )
    assert result.exit_code == 0, result.output
    assert "Warning: the measurement was not recorded (cannot append to" in result.output
    assert "the report above is kept" in result.output
