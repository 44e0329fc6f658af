"""The emulated arm64 board end to end: cross-compile on the host, `device emulate arm64`,
upload, check outputs against ONNX Runtime, time, stop with no process left behind.

One test on purpose (the board takes tens of seconds to start under qemu). The first run
provisions the board into $DNSREC_EDGE_HOME/emulate/arm64 (Debian arm64 packages and
aarch64 wheels, ~450 MB); later runs reuse it.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import pytest
from test_bench_artifact import build_artifact
from test_device_servers import Proc

from dnsrec_edge.bench.emulate import emulate_dir, free_port
from dnsrec_edge.bench.run import benchmark

pytestmark = [
    pytest.mark.emulated_arm64,
    pytest.mark.slow,
    pytest.mark.tvm,
    pytest.mark.skipif(
        shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-gcc") is None,
        reason="needs qemu-user and gcc-aarch64-linux-gnu (scripts/bootstrap.sh installs them)",
    ),
]
PROVISION_AND_START_S = 900  # a first run downloads the board


def board_processes() -> list[int]:
    import psutil

    root = str(emulate_dir("arm64"))
    left = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and root in " ".join(p.info["cmdline"] or []):
            left.append(p.pid)
    return left


def test_emulated_arm64_board_runs_checks_and_times_the_artifact(tmp_path):
    pytest.importorskip("tvm")
    artifact = build_artifact(tmp_path / "arm64", "aarch64")
    port = free_port()
    cli = str(Path(sys.executable).parent / "dnsrec-edge")
    board = Proc(
        [cli, "device", "emulate", "arm64", "--port", str(port)], ready="board serving TVM RPC on"
    )
    try:
        board.wait_ready(PROVISION_AND_START_S)
        assert f"--rpc 127.0.0.1:{port}" in board.lines[-1]
        cal = tmp_path / "cal"
        report = benchmark(
            artifact, rpc=f"127.0.0.1:{port}", warmup=1, repeat=3, number=2, calibration_dir=cal
        )
        d = report.to_dict()
        assert d["emulated"] is True and d["complete"] is True
        assert d["device"]["arch"] == "aarch64" and d["device"]["emulator"] == "qemu-aarch64"
        assert d["device"]["tvm_version"] == "0.27.0.post1"
        assert d["max_abs_diff"] <= 1e-4 and d["top10_match"] is True
        assert d["latency_ms"]["samples"] == 3 and d["latency_ms"]["min"] > 0
        assert d["energy"]["source"] == "model"
        assert not (cal / "arm64" / "records.jsonl").exists()  # emulated: never a measurement
        assert board_processes(), "the board runs under qemu with the emulate sysroot"
        # an int8 build (one 8-bit item table, compile/int8_table.py) runs there too and
        # matches ONNX Runtime's int8 scores on the host
        int8 = build_artifact(tmp_path / "arm64-int8", "aarch64", int8=True)
        d = benchmark(int8, rpc=f"127.0.0.1:{port}", warmup=1, repeat=2, number=1,
                      calibration_dir=cal).to_dict()  # fmt: skip
        assert d["complete"] is True and d["max_abs_diff"] <= 1e-4 and d["top10_match"] is True
    finally:
        board.proc.send_signal(signal.SIGTERM)
        code = board.proc.wait(60)
    assert code == 0, board.lines
    assert "Emulated board stopped; no processes left." in board.lines
    assert board_processes() == []
    board.kill()  # nothing left to kill; makes sure of it
