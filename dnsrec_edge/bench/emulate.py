"""An emulated arm64 board: aarch64 CPython + TVM runtime under qemu-user, served on loopback.

Provisioning (once, cached under ``$DNSREC_EDGE_HOME/emulate/arm64``; needs network, no
root, changes nothing on the system):

1. ``apt-get update`` + ``apt-get download`` of Debian bookworm's arm64 ``python3.11-minimal``,
   ``libpython3.11-stdlib`` and their libraries, with a private apt state folder and
   ``APT::Architectures=arm64`` (so no ``dpkg --add-architecture`` is needed), each unpacked
   with ``dpkg -x`` into one sysroot;
2. ``pip install --target --platform manylinux_2_28_aarch64 --only-binary=:all:`` of the
   aarch64 wheels TVM's RPC server needs (numpy, ml_dtypes, typing_extensions,
   apache-tvm-ffi, apache-tvm, psutil, cloudpickle, tornado);
3. a ``bin/python3`` wrapper that runs that CPython under ``qemu-aarch64 -L SYSROOT``
   with ``-0 <wrapper>``, so ``sys.executable`` is the wrapper and the worker processes TVM's
   server starts re-enter qemu (there is no binfmt_misc here).

The board runs ``python -m dnsrec_edge.bench.server`` from a copy of the board-side files
only (no torch, no click), in its own process group; :meth:`EmulatedBoard.stop` ends the
whole group. Its facts say ``"emulated": true`` and its timings are never recorded.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dnsrec_edge import paths
from dnsrec_edge.board.device_info import EMULATED_ENV
from dnsrec_edge.errors import DeviceError

log = logging.getLogger(__name__)

DEBIAN_SOURCES = [
    "http://deb.debian.org/debian bookworm main",
    "http://deb.debian.org/debian bookworm-updates main",
    "http://deb.debian.org/debian-security bookworm-security main",
]
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEB_PACKAGES = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "gcc-12-base",
    "libgcc-s1",
    "libstdc++6",
    "libgomp1",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libssl3",
    "libbz2-1.0",
    "liblzma5",
    "libsqlite3-0",
    "libuuid1",
    "libtinfo6",
    "libncursesw6",
    "libreadline8",
    "libcrypt1",
    "libnsl2",
    "libtirpc3",
    "libtirpc-common",
    "libgssapi-krb5-2",
    "libk5crypto3",
    "libkeyutils1",
    "libkrb5-3",
    "libkrb5support0",
    "libcom-err2",
    "libdb5.3",
    "media-types",
)
WHEELS = (
    "numpy==2.4.6",
    "ml_dtypes==0.6.0",
    "typing_extensions==4.16.0",
    "apache-tvm-ffi==0.1.14.post0",
    "apache-tvm==0.27.0.post1",
    "psutil==7.2.2",
    "cloudpickle==3.1.3",
    "tornado==6.6.1",
)
PIP_PLATFORM = "manylinux_2_28_aarch64"
PYTHON = "usr/bin/python3.11"
QEMU = "qemu-aarch64"
# The board-side modules: the package root, typed errors, the host's architecture and the
# agent; nothing else.
BOARD_FILES = (
    "__init__.py",
    "errors.py",
    "hostinfo.py",
    "bench/__init__.py",
    "bench/cuda_runtime.py",
    "board/__init__.py",
    "board/probe.py",
    "board/device_info.py",
    "bench/server.py",
)
ARCHES = {"arm64": "arm64", "aarch64": "arm64"}
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 15.0


def _recipe() -> dict[str, Any]:
    return {
        "debian": DEBIAN_SOURCES,
        "packages": list(DEB_PACKAGES),
        "wheels": list(WHEELS),
        "python": PYTHON,
    }


def _arch(name: str) -> str:
    if name not in ARCHES:
        raise DeviceError(f"cannot emulate '{name}'; known: {', '.join(sorted(ARCHES))}")
    return ARCHES[name]


def emulate_dir(arch: str = "arm64") -> Path:
    """Where the emulated board of ``arch`` is provisioned."""
    return paths.home() / "emulate" / _arch(arch)


def _require_tools() -> str:
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise DeviceError(
            f"{QEMU} is not installed, so no arm64 board can be emulated; install it with: "
            "sudo apt-get install qemu-user (scripts/bootstrap.sh does it)"
        )
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise DeviceError(
                f"{tool} is missing: provisioning the emulated board needs Debian's apt"
            )
    if not Path(DEBIAN_KEYRING).is_file():
        raise DeviceError(
            f"{DEBIAN_KEYRING} is missing; install it with: sudo apt-get install "
            "debian-archive-keyring"
        )
    return qemu


def _run(cmd: list[str], what: str, **kw: Any) -> None:
    log.debug("running %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DeviceError(f"provisioning the emulated board failed at {what}: {' '.join(tail)}")


def _apt_options(work: Path) -> list[str]:
    for sub in ("state/lists/partial", "cache/archives/partial", "parts"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "status").touch()
    (work / "sources.list").write_text(
        "".join(f"deb [arch=arm64 signed-by={DEBIAN_KEYRING}] {s}\n" for s in DEBIAN_SOURCES)
    )
    settings = {
        "Dir::Etc::SourceList": work / "sources.list",
        "Dir::Etc::SourceParts": work / "parts",
        "Dir::State": work / "state",
        "Dir::State::status": work / "status",
        "Dir::Cache": work / "cache",
        "APT::Architecture": "arm64",
        "APT::Architectures::": "arm64",
        "APT::Sandbox::User": "root" if os.getuid() == 0 else "",
    }
    return [a for k, v in settings.items() if v != "" for a in ("-o", f"{k}={v}")]


def _wrapper_text(root: Path, site: Path, agent: Path, qemu: str, wrapper: Path) -> str:
    return f"""#!/bin/sh
# aarch64 CPython under qemu-user (made by dnsrec-edge device emulate). argv[0] is this
# script, so sys.executable re-enters qemu for the worker processes TVM's server starts.
unset LD_LIBRARY_PATH LD_PRELOAD PYTHONHOME VIRTUAL_ENV
export PYTHONPATH="{agent}:{site}" PYTHONNOUSERSITE=1 TVM_USE_RUNTIME_LIB=1
export {EMULATED_ENV}={QEMU}
exec {qemu} -L {root} -0 {wrapper} {root / PYTHON} "$@"
"""


def provision(arch: str = "arm64", quiet: bool = True) -> Path:
    """Provision (once) and return the emulated board's folder; cached and locked."""
    qemu = _require_tools()
    final = emulate_dir(arch)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = final / "ready.json"
        if stamp.is_file() and json.loads(stamp.read_text()).get("recipe") == _recipe():
            return final
        say = (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
        build = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            _build(build, final, qemu, say)
            if final.exists():
                shutil.rmtree(final)
            os.replace(build, final)
        finally:
            shutil.rmtree(build, ignore_errors=True)
        _write_wrapper(final, qemu)
        return final


def _build(build: Path, final: Path, qemu: str, say: Any) -> None:
    apt = build / "apt"
    opts = _apt_options(apt)
    say("emulate: fetching Debian arm64 package lists")
    _run(["apt-get", *opts, "-qq", "update"], "apt-get update")
    debs = build / "debs"
    debs.mkdir()
    say(f"emulate: downloading {len(DEB_PACKAGES)} arm64 packages (python3.11 and its libraries)")
    _run(["apt-get", *opts, "-qq", "download", *DEB_PACKAGES], "apt-get download", cwd=debs)
    root = build / "root"
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(root)], f"dpkg -x {deb.name}")
    shutil.rmtree(debs)
    shutil.rmtree(apt)
    say("emulate: installing aarch64 wheels (TVM runtime, numpy, ...); about 400 MB")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            PIP_PLATFORM,
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            "--target",
            str(build / "site"),
            *WHEELS,
        ],
        "pip install (aarch64 wheels)",
    )
    if not (root / PYTHON).is_file():
        raise DeviceError(f"provisioning the emulated board produced no {PYTHON}")
    (build / "ready.json").write_text(json.dumps({"recipe": _recipe(), "qemu": qemu}, indent=2))


def _write_wrapper(final: Path, qemu: str) -> Path:
    """(Re)write ``bin/python3`` for the folder's current location and qemu."""
    wrapper = final / "bin" / "python3"
    wrapper.parent.mkdir(exist_ok=True)
    text = _wrapper_text(final / "root", final / "site", final / "agent", qemu, wrapper)
    wrapper.write_text(text)
    wrapper.chmod(0o755)
    return wrapper


def _copy_agent(final: Path) -> None:
    """Copy the board-side modules (fresh each start, so the board runs this checkout's code)."""
    src = Path(__file__).resolve().parent.parent
    dst = final / "agent" / "dnsrec_edge"
    shutil.rmtree(dst, ignore_errors=True)
    for rel in BOARD_FILES:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)


def _term_with_parent() -> None:
    # In the board's process: SIGTERM it (a graceful stop) if whoever started it dies.
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmulatedBoard:
    """An emulated arm64 board serving TVM RPC on ``host:port`` while started.

    The board gets SIGTERM (and stops cleanly) if the thread that started it dies, so a killed
    ``device emulate`` leaves nothing behind; start it from a thread that outlives its use.

    Example::

        with EmulatedBoard(port=9190) as board:
            benchmark(artifact, rpc=board.address)
    """

    def __init__(
        self,
        arch: str = "arm64",
        host: str = "127.0.0.1",
        port: int = 0,
        tracker: str | None = None,
        key: str = "",
        quiet: bool = True,
    ):
        self.arch, self.host, self.port = _arch(arch), host, port or free_port(host)
        self.tracker, self.key, self.quiet = tracker, key, quiet
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._ready = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _reader(self, stdout: Any) -> None:
        for line in stdout:
            self.output.append(line.rstrip())
            log.debug("emulated board: %s", line.rstrip())
            if line.startswith("Serving TVM RPC"):
                self._ready.set()
        self._ready.set()  # the server exited: wake the waiter

    def start(self, timeout_s: float = START_TIMEOUT_S) -> EmulatedBoard:
        """Provision if needed, start the server under qemu, wait until it accepts sessions."""
        folder = provision(self.arch, quiet=self.quiet)
        wrapper = _write_wrapper(folder, _require_tools())
        _copy_agent(folder)
        cmd = [
            str(wrapper),
            "-m",
            "dnsrec_edge.bench.server",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        if self.tracker:
            cmd += ["--tracker", self.tracker, "--key", self.key]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=_term_with_parent,
            cwd=folder,
        )
        threading.Thread(target=self._reader, args=(self.proc.stdout,), daemon=True).start()
        if not self._ready.wait(timeout_s) or self.proc.poll() is not None:
            tail = " | ".join(self.output[-3:]) or "no output"
            self.stop()
            raise DeviceError(
                f"the emulated {self.arch} board did not start on {self.address} "
                f"within {timeout_s:.0f} s ({tail})"
            )
        return self

    def group_pids(self) -> list[int]:
        """Live (non-zombie) processes of the board's process group."""
        import psutil

        if self.proc is None:
            return []
        pids = []
        for p in psutil.process_iter(["status"]):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(p.pid) == self.proc.pid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    pids.append(p.pid)
        return pids

    def stop(self) -> list[int]:
        """Stop the server and its whole process group; return pids still alive (none)."""
        if self.proc is None:
            return []
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)  # graceful: the server stops its workers
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("emulated board did not stop on SIGTERM; killing its group")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything of the group still alive
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        deadline = time.monotonic() + 5
        while (left := self.group_pids()) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.proc = None if not left else proc
        return left

    def __enter__(self) -> EmulatedBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_foreground(
    arch: str, host: str, port: int, tracker: str | None, key: str, quiet: bool = False
) -> None:
    """``device emulate``: serve until SIGINT/SIGTERM, then stop every process started."""
    from dnsrec_edge.bench.server import reach_hint, wait_for_signal

    board = EmulatedBoard(arch, host, port, tracker, key, quiet=quiet)
    if not quiet:
        print(
            f"Starting an emulated {board.arch} board (qemu-user; first start provisions "
            f"it under {emulate_dir(arch)})...",
            flush=True,
        )
    board.start()
    try:
        print(
            f"Emulated {board.arch} board serving TVM RPC on {board.address}; "
            f"{reach_hint(host, board.port, tracker, key)}. Timings are emulated and "
            "never recorded. Ctrl-C stops it.",
            flush=True,
        )
        wait_for_signal(alive=lambda: board.proc is not None and board.proc.poll() is None)
        if board.proc is not None and board.proc.poll() is not None:
            tail = " | ".join(board.output[-3:]) or "no output"
            raise DeviceError(f"the emulated board exited unexpectedly ({tail})")
    finally:
        left = board.stop()
        if left:
            raise DeviceError(f"emulated board processes {left} survived SIGKILL; kill them by pid")
        if not quiet:
            print("Emulated board stopped; no processes left.", flush=True)
