"""Facts about the board this process runs on, and the RPC agent that serves them.

Runs on the board: standard library and TVM only (no torch, no numpy needed). The RPC
server started by ``dnsrec-edge device serve`` calls :func:`register` in its process, so a
host asks the board itself (``device info --rpc HOST:PORT``); ``python -m
dnsrec_edge.board.device_info`` prints the same facts as JSON on the board.

Registered functions (all take and return JSON text or plain numbers):

- ``dnsrec_edge.device_info(root)`` -> facts JSON
- ``dnsrec_edge.probe.discover(root)`` / ``.read(paths_json)`` / ``.sample_start(paths_json,
  interval_s)`` / ``.sample_stop()`` -> see ``probe.py``
- ``dnsrec_edge.peak_rss()`` -> peak resident bytes of the serving process (-1 if unknown)
- ``dnsrec_edge.set_threads(n)`` -> TVM worker threads now in use
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import sys
from typing import Any

from dnsrec_edge.board import probe
from dnsrec_edge.hostinfo import host_arch

EMULATED_ENV = "DNSREC_EDGE_EMULATED"  # set by `device emulate` to the emulator's name
AGENT_FUNCTION = "dnsrec_edge.device_info"
CPU_MODEL_KEYS = ("model name", "Model", "Hardware", "cpu model", "uarch", "isa")
_state: dict[str, Any] = {}


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _cpu_model(root: str) -> str | None:
    info = _read(os.path.join(root, "proc/cpuinfo")) or ""
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields and value.strip():
            fields[key.strip()] = value.strip()
    for key in CPU_MODEL_KEYS:
        if key in fields:
            return fields[key]
    if "CPU part" in fields:  # Arm: implementer + part number, e.g. 0x41 / 0xd08 (Cortex-A72)
        return f"Arm implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
    return None


def _cpufreq(root: str) -> dict[str, Any]:
    base = os.path.join(root, "sys/devices/system/cpu/cpu0/cpufreq")
    out: dict[str, Any] = {"governor": _read(os.path.join(base, "scaling_governor"))}
    for key, name in (("cur_freq_mhz", "scaling_cur_freq"), ("max_freq_mhz", "cpuinfo_max_freq")):
        value, _ = probe.read_int(os.path.join(base, name))
        out[key] = None if value is None else round(value / 1000.0, 1)  # kHz -> MHz
    return out


def _mem_total(root: str) -> int | None:
    for line in (_read(os.path.join(root, "proc/meminfo")) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _tvm_versions() -> dict[str, str | None]:
    """Versions of the loaded TVM (in the server), else of the installed one (no import)."""
    out: dict[str, str | None] = {}
    for key, module, dist in (
        ("tvm_version", "tvm", "apache-tvm"),
        ("tvm_ffi_version", "tvm_ffi", "apache-tvm-ffi"),
    ):
        loaded = sys.modules.get(module)
        version = getattr(loaded, "__version__", None) if loaded else None
        if version is None:
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                version = None
        out[key] = version
    return out


def _sensor_summary(found: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for source in ("rapl", "hwmon", "ina3221"):
        for e in found[source]:
            name = e.get("name") or e.get("label") or e.get("rail")
            out.append(
                {
                    "source": source,
                    "name": name,
                    "kind": e.get("kind", e.get("domain")),
                    "path": e["path"],
                    "readable": e["readable"],
                }
            )
    return out


def collect(root: str = "/") -> dict[str, Any]:
    """This board's facts: arch, CPU, cores, frequency, memory, TVM, energy sensors."""
    emulator = os.environ.get(EMULATED_ENV) or None
    cpu_model = _cpu_model(root)
    if emulator:  # qemu-user shows the host's /proc: say so rather than report a wrong CPU
        cpu_model = f"{emulator} on {cpu_model or 'unknown host CPU'}"
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = None
    facts: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "arch": host_arch(),
        "os": platform.system(),
        "kernel": platform.release(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_available": available,
        **_cpufreq(root),
        "mem_total_bytes": _mem_total(root),
        "python": platform.python_version(),
        **_tvm_versions(),
        "energy_sensors": _sensor_summary(probe.discover(root)),
        "emulated": emulator is not None,
        "emulator": emulator,
    }
    if "rpc_port" in _state:
        facts["rpc_port"] = _state["rpc_port"]
    return facts


def register(rpc_port: int | None = None) -> None:
    """Register the agent functions in this process's TVM global registry (idempotent)."""
    import tvm_ffi

    if rpc_port is not None:
        _state["rpc_port"] = rpc_port

    def reg(name: str, func: Any) -> None:
        tvm_ffi.register_global_func(name, func, override=True)

    reg(AGENT_FUNCTION, lambda root: json.dumps(collect(str(root) or "/")))
    reg("dnsrec_edge.probe.discover", lambda root: json.dumps(probe.discover(str(root) or "/")))
    reg("dnsrec_edge.probe.read", lambda paths: json.dumps(probe.read(json.loads(str(paths)))))
    reg(
        "dnsrec_edge.probe.sample_start",
        lambda paths, interval: probe.sample_start(json.loads(str(paths)), float(interval)),
    )
    reg("dnsrec_edge.probe.sample_stop", lambda: json.dumps(probe.sample_stop()))
    reg("dnsrec_edge.peak_rss", lambda: probe.peak_rss_bytes() or -1)
    reg("dnsrec_edge.set_threads", set_threads)


def set_threads(threads: int) -> int:
    """Use ``threads`` TVM worker threads in this process; return the count now in use.

    TVM sizes its pool from ``TVM_NUM_THREADS`` when the pool is first made (by default half
    the cores on x86), so the variable is set before configuring.
    """
    import tvm_ffi

    os.environ["TVM_NUM_THREADS"] = str(int(threads))
    tvm_ffi.get_global_func("runtime.config_threadpool")(1, int(threads))
    return int(tvm_ffi.get_global_func("runtime.NumThreads")())


def main(argv: list[str] | None = None) -> int:
    """Print this board's facts as JSON (``python -m dnsrec_edge.board.device_info [ROOT]``)."""
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(collect(argv[0] if argv else "/"), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
