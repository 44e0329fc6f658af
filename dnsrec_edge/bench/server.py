"""``device serve``: TVM's RPC server with the dnsrec-edge agent, for the board.

Runs on the board with only the TVM runtime installed (standard library + TVM; no torch,
no compiler)::

    pip install apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post0 psutil cloudpickle tornado
    pip install --no-deps dnsrec-edge
    python -m dnsrec_edge.bench.server --host 0.0.0.0 --port 9090   # or: dnsrec-edge device serve

It binds to loopback unless told otherwise (the RPC server runs any code it is sent), serves
until SIGINT or SIGTERM, then stops its worker processes. TVM's listening worker never
outlives the process that started it, even one killed with SIGKILL (``PR_SET_PDEATHSIG`` on
Linux, and a thread watching its parent everywhere). The agent (``device_info.register``)
lets the host read the board's facts and energy sensors.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import functools
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from dnsrec_edge.errors import DeviceError

log = logging.getLogger(__name__)

BOARD_REQUIREMENTS = (
    "apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post0 psutil cloudpickle tornado"
)
# module -> pip package, for the ones TVM's RPC server needs
RUNTIME_MODULES = {
    "tvm": "apache-tvm",
    "tvm_ffi": "apache-tvm-ffi",
    "psutil": "psutil",
    "cloudpickle": "cloudpickle",
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 0.5


def check_runtime() -> None:
    """Raise DeviceError naming what to install when this Python lacks the TVM RPC runtime."""
    missing = [pkg for mod, pkg in RUNTIME_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise DeviceError(
            f"this Python ({sys.executable}) has no {', '.join(missing)}, so it cannot serve "
            f"TVM RPC; install the runtime on the board with: pip install {BOARD_REQUIREMENTS}"
        )


def _init_agent(port: int) -> None:
    # Runs inside TVM's server process (sent there by cloudpickle, by reference).
    from dnsrec_edge.bench.cuda_runtime import load_cuda_runtime
    from dnsrec_edge.board import device_info

    die_with_parent()
    device_info.register(rpc_port=port)
    load_cuda_runtime()  # a GPU board serves CUDA artifacts; CPU-only boards skip this


def die_with_parent(poll_s: float = PARENT_POLL_S) -> None:
    """End this process when its parent dies, however it dies.

    TVM's listening worker otherwise keeps serving after ``device serve`` is killed with
    SIGKILL (its non-daemon listen thread holds it up). On Linux the kernel sends SIGTERM on
    the parent's death (``PR_SET_PDEATHSIG``); a daemon thread polling the parent's pid is
    the fallback where prctl is missing (other systems, some emulators).
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        except (OSError, AttributeError) as err:
            log.debug("prctl(PR_SET_PDEATHSIG) is not available (%s); polling the parent", err)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="dnsrec-edge-parent-watch", daemon=True).start()


def _check_address(host: str, port: int) -> None:
    """DeviceError naming the option to fix when ``host`` does not resolve to an address of
    this machine or ``port`` is taken (before TVM tries, whose errors carry tracebacks)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise DeviceError(
            f"cannot serve on {host}:{port}: '{host}' is not an address ({err.strerror}); pass "
            "an address of this machine with --host, e.g. 127.0.0.1 or 0.0.0.0"
        ) from err
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as TVM binds
        try:
            probe.bind(addr)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise DeviceError(
                    f"cannot serve on {host}:{port}: the port is in use; pick a free port with "
                    "--port"
                ) from err
            raise DeviceError(
                f"cannot serve on {host}:{port} ({err.strerror or err}); pass an address of "
                "this machine with --host (e.g. 127.0.0.1) and a port you may bind with --port"
            ) from err


def _last_line(err: BaseException) -> str:
    """The last non-empty line of an error's text (TVM wraps a worker's whole traceback)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and line.strip() != ")"]
    return lines[-1] if lines else type(err).__name__


def reach_hint(host: str, port: int, tracker: str | None, key: str) -> str:
    """How a host reaches this server, as printed on start-up."""
    if tracker:
        return (
            f"registered with tracker {tracker} under key '{key}'; from the host run: "
            f"dnsrec-edge bench ARTIFACT --rpc-tracker {tracker} --rpc-key {key}"
        )
    shown = "<this board's address>" if host in ("0.0.0.0", "::") else host
    return f"from the host run: dnsrec-edge bench ARTIFACT --rpc {shown}:{port}"


class Served:
    """A running RPC server; :meth:`stop` ends it and every worker process it started."""

    def __init__(self, server: Any, host: str, port: int):
        self.server, self.host, self.port = server, host, port

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()  # kills the worker and its session processes
            self.server = None


def serve(
    host: str = "127.0.0.1",
    port: int = 9090,
    tracker: str | None = None,
    key: str = "",
    *,
    silent: bool = True,
) -> Served:
    """Start TVM's RPC server with the agent on exactly ``host:port``; return at once."""
    check_runtime()
    if tracker and not key:
        raise DeviceError("--tracker needs --key, the name boards of one kind share on the tracker")
    from tvm import rpc

    tracker_addr = None
    if tracker:
        thost, _, tport = tracker.rpartition(":")
        if not thost or not tport.isdigit():
            raise DeviceError(
                f"tracker address '{tracker}' is not HOST:PORT; pass e.g. 127.0.0.1:9190"
            )
        tracker_addr = (thost, int(tport))
        try:  # TVM would retry in the background for a minute and serve unregistered
            socket.create_connection(tracker_addr, timeout=5).close()
        except OSError as err:
            raise DeviceError(
                f"cannot reach the RPC tracker at {tracker} ({err.strerror or err}); start it "
                "first or fix --tracker"
            ) from err
    _check_address(host, port)
    try:
        server = rpc.Server(
            host,
            port,
            port + 1,
            key=key,
            tracker_addr=tracker_addr,
            silent=silent,
            server_init_callback=functools.partial(_init_agent, port),
        )
    except (ValueError, OSError) as err:
        raise DeviceError(
            f"cannot serve on {host}:{port} ({_last_line(err)}); pick a free port with --port"
        ) from err
    return Served(server, host, server.port)


def wait_for_signal(alive: Callable[[], bool] | None = None) -> None:
    """Block until SIGINT or SIGTERM (or until ``alive()`` turns false)."""
    done = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        done.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(0.5):
            if alive is not None and not alive():
                return
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_forever(host: str, port: int, tracker: str | None, key: str, quiet: bool = False) -> None:
    """Serve in the foreground until SIGINT or SIGTERM, then stop every worker."""
    served = serve(host, port, tracker, key)
    try:
        where = f"Serving TVM RPC with the dnsrec-edge agent on {served.host}:{served.port}"
        print(f"{where}; {reach_hint(host, served.port, tracker, key)}", flush=True)
        if host not in LOOPBACK and not quiet:
            print(
                "Warning: anyone who can reach this port can run code on this machine; "
                "serve on a trusted network only.",
                file=sys.stderr,
                flush=True,
            )
        wait_for_signal()
    finally:
        served.stop()
        if not quiet:
            print("RPC server stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m dnsrec_edge.bench.server``: the same as ``dnsrec-edge device serve``."""
    parser = argparse.ArgumentParser(
        prog="python -m dnsrec_edge.bench.server",
        description="Serve TVM RPC with the dnsrec-edge agent.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=9090, help="port to bind (default 9090)")
    parser.add_argument("--tracker", help="register with the RPC tracker at HOST:PORT")
    parser.add_argument("--key", default="", help="device key on the tracker")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    args = parser.parse_args(argv)
    try:
        run_forever(args.host, args.port, args.tracker, args.key, args.quiet)
    except DeviceError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
