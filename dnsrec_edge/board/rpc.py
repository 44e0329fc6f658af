"""Reaching boards over TVM RPC: direct servers, trackers, retries, facts, uploads.

A :class:`BoardLink` knows how to (re)open a session to one board: ``--local`` (an
in-process ``LocalSession``), ``--rpc HOST:PORT`` or a tracker key. Connection problems
become :class:`DeviceUnreachable` with the address tried; TVM is imported lazily.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dnsrec_edge.board import device_info
from dnsrec_edge.errors import DeviceError, DeviceUnreachable
from dnsrec_edge.hostinfo import normalize_arch

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 3
CONNECT_DELAY_S = 1.0
PROBE_TIMEOUT_S = 5.0
HANDSHAKE_TIMEOUT_S = 60.0  # a TVM server serves one session at a time; others queue


def parse_address(text: str, option: str = "--rpc") -> tuple[str, int]:
    """``HOST:PORT`` -> ``(host, port)``; DeviceUnreachable naming the option when malformed."""
    host, _, port = str(text).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DeviceUnreachable(
            f"{option} '{text}' is not HOST:PORT; pass e.g. {option} 192.168.1.20:9090"
        )
    return host.strip("[]"), int(port)


def _tcp_probe(host: str, port: int) -> str | None:
    """``None`` if something accepts TCP at host:port, else the reason."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as err:
        return err.strerror or str(err)


def _handshake(rpc: Any, host: str, port: int) -> Any:
    """``rpc.connect`` with a deadline: TVM waits forever on a peer that never answers."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["session"] = rpc.connect(host, port)
        except RuntimeError as err:
            box["error"] = err

    thread = threading.Thread(target=work, name=f"rpc-connect-{host}:{port}", daemon=True)
    thread.start()
    thread.join(HANDSHAKE_TIMEOUT_S)
    if thread.is_alive():  # the thread stays blocked in TVM; it ends with the process
        raise DeviceUnreachable(
            f"{host}:{port} accepted the connection but did not finish the TVM RPC handshake "
            f"within {HANDSHAKE_TIMEOUT_S:.0f} s (busy with another session, or not a TVM RPC "
            "server); try again later or check the port"
        )
    if "error" in box:
        raise box["error"]
    return box["session"]


def connect(address: str, *, attempts: int = CONNECT_ATTEMPTS) -> Any:
    """An RPC session to the server at ``address``; retries, then one clear sentence."""
    from tvm import rpc

    host, port = parse_address(address)
    reason = "unknown error"
    for attempt in range(attempts):
        if attempt:
            time.sleep(CONNECT_DELAY_S * attempt)
        reason = _tcp_probe(host, port)
        if reason is not None:
            continue
        try:
            return _handshake(rpc, host, port)
        except RuntimeError as err:
            text = str(err)
            if "is not TVM RPC server" in text:
                raise DeviceUnreachable(
                    f"{host}:{port} answers but is not a TVM RPC server; check the port and "
                    "start `dnsrec-edge device serve` on the board"
                ) from err
            reason = text.splitlines()[-1] if text else type(err).__name__
    raise DeviceUnreachable(
        f"cannot reach the TVM RPC server at {host}:{port} ({reason}) after {attempts} "
        f"attempts; start it on the board with `dnsrec-edge device serve --host 0.0.0.0 "
        f"--port {port}` and check the address"
    )


def connect_tracker(address: str) -> Any:
    """A tracker session; fails fast (TVM itself would retry for a minute)."""
    from tvm import rpc

    host, port = parse_address(address, "--rpc-tracker")
    reason = _tcp_probe(host, port)
    if reason is not None:
        raise DeviceUnreachable(
            f"cannot reach the RPC tracker at {host}:{port} ({reason}); start it with "
            f"`python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {port}` and check the address"
        )
    try:
        return rpc.connect_tracker(host, port)
    except RuntimeError as err:
        raise DeviceUnreachable(
            f"{host}:{port} is not a TVM RPC tracker ({err}); check --rpc-tracker"
        ) from err


def tracker_boards(address: str) -> list[dict[str, Any]]:
    """What a tracker has: one row per server ``{key, address}`` plus per-key queue counts."""
    summary = connect_tracker(address).summary()
    queue = summary.get("queue_info", {})
    rows = []
    for item in sorted(summary.get("server_info", []), key=lambda s: (s["key"], s["addr"])):
        key = item["key"].split(":", 1)[-1]
        addr = item.get("addr") or ["?", "?"]
        info = queue.get(key, {})
        rows.append(
            {
                "key": key,
                "address": f"{addr[0]}:{addr[1]}",
                "free": info.get("free"),
                "pending": info.get("pending"),
            }
        )
    return rows


def free_boards(tracker: Any, key: str) -> int:
    """How many servers under ``key`` the tracker can hand out now."""
    return int(tracker.summary().get("queue_info", {}).get(key, {}).get("free", 0))


@dataclass
class BoardLink:
    """How to open (and re-open) a session to one board."""

    label: str
    opener: Callable[[], Any]
    local: bool = False
    named: bool = True  # False: the label is a placeholder, replaced by the board's facts
    session: Any = None  # already open (tracker boards are claimed up front); used first

    def open(self) -> Any:
        if self.session is not None:
            session, self.session = self.session, None
            return session
        return self.opener()


def local_link() -> BoardLink:
    """This machine, run in-process through TVM's ``LocalSession``."""

    def opener() -> Any:
        from tvm import rpc

        device_info.register()
        logging.getLogger("RPCServer").setLevel(logging.WARNING)  # TVM logs each module load
        return rpc.LocalSession()

    return BoardLink("local", opener, local=True)


def rpc_link(address: str) -> BoardLink:
    host, port = parse_address(address)
    return BoardLink(f"{host}:{port}", lambda: connect(address))


def tracker_links(address: str, key: str, devices: int) -> list[BoardLink]:
    """``devices`` links under ``key``, each holding a session to a distinct board."""
    if not key:
        raise DeviceUnreachable("--rpc-tracker needs --rpc-key, the key the boards registered with")
    tracker = connect_tracker(address)
    free = free_boards(tracker, key)
    if free < devices:
        raise DeviceUnreachable(
            f"the RPC tracker at {address} has {free} free board(s) under key '{key}' but "
            f"--devices {devices} needs {devices}; start more servers or lower --devices"
        )

    def opener() -> Any:
        try:
            return tracker.request(key, max_retry=2)
        except RuntimeError as err:
            raise DeviceUnreachable(
                f"the RPC tracker at {address} gave no board under key '{key}' ({err})"
            ) from err

    # Claim every board before running any, so no board is handed out twice.
    return [BoardLink(f"{key}#{i}", opener, named=False, session=opener()) for i in range(devices)]


def has_agent(session: Any) -> bool:
    """Whether the board's server registered the dnsrec-edge agent functions."""
    try:
        session.get_function(device_info.AGENT_FUNCTION)
    except (AttributeError, RuntimeError):
        return False
    return True


def board_facts(session: Any) -> dict[str, Any] | None:
    """The board's facts from its agent, or ``None`` for a server without it."""
    if not has_agent(session):
        return None
    return json.loads(session.get_function(device_info.AGENT_FUNCTION)("/"))


def peak_rss(session: Any) -> int | None:
    """Peak resident bytes of the board's serving process, where the agent can read it."""
    if not has_agent(session):
        return None
    value = int(session.get_function("dnsrec_edge.peak_rss")())
    return value if value > 0 else None


def check_arch(
    artifact_arch: str | None, facts: dict[str, Any] | None, where: str, artifact: str, target: str
) -> None:
    """DeviceError when the artifact's architecture is not the board's (before any upload)."""
    want, have = normalize_arch(artifact_arch), normalize_arch((facts or {}).get("arch"))
    if want and have and want != have:
        raise DeviceError(
            f"artifact '{artifact}' is built for {want} (target {target}) but {where} is "
            f"{have}; compile it for that board's target with dnsrec-edge compile --target"
        )


def capped_threads(threads: int, facts: dict[str, Any] | None) -> int:
    """``threads`` capped at the cores the board reports available (uncapped if unknown)."""
    return min(threads, (facts or {}).get("cpus_available") or threads)


def set_threads(session: Any, facts: dict[str, Any] | None, threads: int | None) -> int:
    """Size the board's TVM thread pool (``None``: leave it) and return its thread count."""
    if threads and (facts or {}).get("agent"):
        return int(session.get_function("dnsrec_edge.set_threads")(threads))
    if threads:
        session.get_function("runtime.config_threadpool")(1, int(threads))
    return int(session.get_function("runtime.NumThreads")())


def load_library(session: Any, lib_path: str, name: str, where: str) -> Any:
    """Upload ``lib_path`` to the board and load it; a foreign library becomes DeviceError."""
    session.upload(lib_path, name)
    try:
        return session.load_module(name)
    except RuntimeError as err:
        raise DeviceError(
            f"{where} cannot load the artifact's library ({str(err).splitlines()[-1]}); it is "
            "probably built for another architecture: compile for that board's target"
        ) from err


def open_board(
    rpc: str | None = None, tracker: str | None = None, key: str | None = None
) -> tuple[BoardLink, Any]:
    """One board's link and an open session: local (neither given), ``rpc`` or a tracker key."""
    if rpc and tracker:
        raise DeviceUnreachable("pass either --rpc or --rpc-tracker, not both")
    if tracker:
        link = tracker_links(tracker, key or "", 1)[0]
    else:
        link = rpc_link(rpc) if rpc else local_link()
    return link, link.open()


def describe(rpc: str | None = None, tracker: str | None = None, key: str | None = None) -> dict:
    """The facts of one board as its agent reports them (``device info``)."""
    link, session = open_board(rpc, tracker, key)
    facts = board_facts(session)
    if facts is None:
        return {
            "agent": False,
            "address": link.label,
            "tvm_threads": int(session.get_function("runtime.NumThreads")()),
        }
    return facts | {"agent": True, "address": link.label}
