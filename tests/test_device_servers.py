"""The board side: `device serve`, its agent facts over real RPC, a board without TVM.

Also holds the helpers other bench tests use to run real RPC servers and trackers on
loopback (each in its own process group, stopped as a group).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path

import pytest

from dnsrec_edge.bench import energy
from dnsrec_edge.bench.emulate import free_port
from dnsrec_edge.board import device_info

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120


def wait_port(port: int, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def term_with_parent() -> None:
    """In the child: SIGTERM it when the test process dies (a killed run leaves no server)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Proc:
    """A server process in its own process group, with its output collected."""

    def __init__(self, args: list[str], ready: str | None = None, env: dict | None = None):
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            args,
            preexec_fn=term_with_parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=env,
            cwd=REPO,
        )
        self._marker = ready
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if self._marker and self._marker in line:
                self.ready.set()
        self.ready.set()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Proc:
        assert self.ready.wait(timeout), f"not ready after {timeout} s: {self.lines}"
        assert self.proc.poll() is None, f"exited: {self.lines}"
        return self

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the whole group: a board that loses power."""
        if self.proc.poll() is None or self.group_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def spawn_server(port: int | None = None, tracker: str | None = None, key: str = "") -> tuple:
    """Start `python -m dnsrec_edge.bench.server` on loopback; returns (Proc, port) at once."""
    port = port or free_port()
    args = [sys.executable, "-m", "dnsrec_edge.bench.server", "--port", str(port)]
    if tracker:
        args += ["--tracker", tracker, "--key", key]
    return Proc(args, ready="Serving TVM RPC"), port


def start_server(port: int | None = None, tracker: str | None = None, key: str = "") -> tuple:
    """`spawn_server`, returning once it serves."""
    proc, port = spawn_server(port, tracker, key)
    return proc.wait_ready(), port


def start_tvm(module: str, port: int | None = None) -> tuple:
    """TVM's own `python -m tvm.exec.<module>` (rpc_server or rpc_tracker) on loopback."""
    port = port or free_port()
    args = [
        sys.executable,
        "-m",
        f"tvm.exec.{module}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--port-end",
        str(port + 1),
    ]
    proc = Proc(args)
    wait_port(port)
    return proc, port


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.tvm
def test_serve_reports_facts_samples_sensors_and_stops_every_worker_on_sigterm(tmp_path):
    pytest.importorskip("tvm")
    import psutil
    from click.testing import CliRunner

    from dnsrec_edge.board.rpc import connect
    from dnsrec_edge.cli import main

    chip = tmp_path / "sys/class/hwmon/hwmon0"  # a constructed 4 W sensor the board reads
    chip.mkdir(parents=True)
    (chip / "name").write_text("board\n")
    (chip / "power1_input").write_text("4000000\n")
    proc, port = start_server()
    try:
        assert f"--rpc 127.0.0.1:{port}" in proc.lines[0]
        result = CliRunner().invoke(
            main, ["device", "info", "--rpc", f"127.0.0.1:{port}", "--json"]
        )
        assert result.exit_code == 0, result.output
        facts = json.loads(result.output)
        assert facts["agent"] is True and facts["rpc_port"] == port
        assert facts["arch"] == platform.machine() and facts["emulated"] is False
        assert facts["tvm_version"] == "0.27.0.post1"
        assert facts["cpu_count"] == os.cpu_count()
        session = connect(f"127.0.0.1:{port}")
        probe = energy.RemoteProbe(session, str(tmp_path))
        meter, note = energy.make_meter("hwmon", probe, None)
        assert note == "" and isinstance(meter, energy.HwmonPowerMeter)
        meter.start()
        time.sleep(0.2)
        reading = meter.stop()
        assert reading.detail["samples"] >= 3  # sampled on the board's own thread
        assert reading.joules == pytest.approx(4.0 * reading.seconds)
        workers = psutil.Process(proc.proc.pid).children(recursive=True)
        assert len(workers) >= 2, "TVM's server worker and this session's process"
        del probe, session
    finally:
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0
    time.sleep(0.5)
    assert not [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert "RPC server stopped." in proc.lines


def running_in_group(pgid: int) -> list[int]:
    """Pids of the group's processes that still run (zombies a container's init never reaps
    do not count)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


def port_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def test_serve_does_not_outlive_a_parent_killed_with_sigkill():
    pytest.importorskip("tvm")
    port = free_port()
    cli = "from dnsrec_edge.cli import main; main()"
    proc = Proc([sys.executable, "-c", cli, "device", "serve", "--port", str(port)])
    try:
        wait_port(port)
        os.kill(proc.proc.pid, signal.SIGKILL)  # only the parent: its TVM worker must follow
        proc.proc.wait(10)
        deadline = time.monotonic() + 5
        while not port_closed(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert port_closed(port), "the TVM worker still listens after its parent was killed"
        time.sleep(0.5)
        assert running_in_group(proc.proc.pid) == [], "a worker of the killed server still runs"
    finally:
        proc.kill()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "256.1.1.1"], "'256.1.1.1' is not an address"),
        (["--port", "{taken}"], "the port is in use; pick a free port with --port"),
    ],
)
def test_serve_on_a_bad_host_or_a_taken_port_is_one_sentence(args, message):
    pytest.importorskip("tvm")
    from click.testing import CliRunner

    from dnsrec_edge.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = [a.format(taken=taken.getsockname()[1]) for a in args]
        result = CliRunner().invoke(main, ["device", "serve", *args])
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_board_without_tvm_runtime_says_what_to_install(tmp_path):
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [str(bare / "bin" / "python"), "-m", "dnsrec_edge.bench.server", "--port", "9"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("Error: this Python")
    assert "has no apache-tvm, apache-tvm-ffi, psutil, cloudpickle" in done.stderr
    assert "pip install apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post0" in done.stderr


def test_board_side_modules_stay_light():
    code = (
        "import sys, json\n"
        "import dnsrec_edge.bench.server, dnsrec_edge.board.device_info as d\n"
        "facts = d.collect()\n"
        "heavy = [m for m in ('torch', 'tvm', 'click', 'rich', 'numpy') if m in sys.modules]\n"
        "print(json.dumps([heavy, facts['arch'], facts['tvm_version']]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, arch, tvm_version = json.loads(out.stdout)
    assert heavy == [] and arch == platform.machine() and tvm_version == "0.27.0.post1"


def test_facts_from_a_constructed_root(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(
        "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\nprocessor\t: 1\n"
    )
    (tmp_path / "proc/meminfo").write_text("MemTotal:        3884564 kB\n")
    freq = tmp_path / "sys/devices/system/cpu/cpu0/cpufreq"
    freq.mkdir(parents=True)
    (freq / "scaling_governor").write_text("ondemand\n")
    (freq / "scaling_cur_freq").write_text("1500000\n")
    (freq / "cpuinfo_max_freq").write_text("1800000\n")
    facts = device_info.collect(str(tmp_path))
    assert facts["cpu_model"] == "Arm implementer 0x41 part 0xd08"
    assert (facts["governor"], facts["cur_freq_mhz"], facts["max_freq_mhz"]) == (
        "ondemand",
        1500.0,
        1800.0,
    )
    assert facts["mem_total_bytes"] == 3884564 * 1024
    assert facts["energy_sensors"] == []
    (tmp_path / "proc/cpuinfo").write_text("model name\t: Test CPU @ 2.0GHz\n")
    (freq / "scaling_cur_freq").unlink()
    facts = device_info.collect(str(tmp_path))
    assert facts["cpu_model"] == "Test CPU @ 2.0GHz" and facts["cur_freq_mhz"] is None
