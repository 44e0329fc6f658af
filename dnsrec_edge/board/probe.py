"""Board side of the energy meters: find sensors, read counters, sample power on a thread.

Runs on the board (standard library only). The host reaches these functions through the
RPC agent (``device_info.register``) or calls them in-process for ``--local`` runs; the
arithmetic (wrap-around, integration, baselines) lives host-side in ``energy.py``.

Every path is absolute; ``root`` prefixes the standard sysfs locations so tests can point
discovery at a constructed tree. Values are integers in the sensor's own unit (µJ, µW,
mV, mA); an unreadable value is ``None`` with its reason in ``errors``.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from typing import Any

POWERCAP = "sys/class/powercap"
HWMON = "sys/class/hwmon"
INA3221_IIO = "sys/bus/i2c/drivers/ina3221x"
RAPL_DOMAINS = {"package": "package", "core": "core", "uncore": "uncore", "dram": "dram"}


def _join(root: str, rel: str) -> str:
    return os.path.join(root, rel)


def read_int(path: str) -> tuple[int | None, str | None]:
    """``(value, None)`` or ``(None, reason)`` for one integer sysfs file."""
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except OSError as err:
        return None, f"{path}: {err.strerror or err}"
    except UnicodeDecodeError:
        return None, f"{path}: not text"
    try:
        return int(text), None
    except ValueError:
        return None, f"{path}: not an integer ({text[:20]!r})"


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _entry(path: str, **fields: Any) -> dict[str, Any]:
    """A sensor entry, marked readable or not (with the reason) by reading it once."""
    _, error = read_int(path)
    return {"path": path, **fields, "readable": error is None, "error": error}


def _rapl(root: str) -> list[dict[str, Any]]:
    out = []
    for zone in sorted(glob.glob(_join(root, f"{POWERCAP}/intel-rapl*:*"))):
        energy = os.path.join(zone, "energy_uj")
        if not os.path.lexists(energy):
            continue
        name = _read_text(os.path.join(zone, "name")) or os.path.basename(zone)
        domain = next((d for k, d in RAPL_DOMAINS.items() if name.startswith(k)), name)
        max_range, _ = read_int(os.path.join(zone, "max_energy_range_uj"))
        parent = os.path.basename(zone).count(":") > 1  # intel-rapl:0:0 is a subzone
        out.append(
            _entry(
                energy,
                zone=os.path.basename(zone),
                name=name,
                domain=domain,
                subzone=parent,
                max_energy_range_uj=max_range,
            )
        )
    return out


def _hwmon(root: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Generic hwmon sensors (energy µJ, power µW) and INA3221 voltage/current channels."""
    sensors, ina = [], []
    for chip in sorted(glob.glob(_join(root, f"{HWMON}/hwmon*"))):
        name = _read_text(os.path.join(chip, "name")) or os.path.basename(chip)
        if name.startswith("ina3221"):
            for volt in sorted(glob.glob(os.path.join(chip, "in[0-9]*_input"))):
                channel = os.path.basename(volt)[2:].split("_")[0]
                curr = os.path.join(chip, f"curr{channel}_input")
                if not os.path.lexists(curr):
                    continue
                rail = _read_text(os.path.join(chip, f"in{channel}_label")) or f"in{channel}"
                entry = _entry(volt, chip=name, rail=rail, kind="vi", current=curr)
                if entry["readable"]:
                    _, error = read_int(curr)
                    entry.update(readable=error is None, error=error)
                ina.append(entry)
            continue
        for kind, pattern, unit in (
            ("energy", "energy[0-9]*_input", "uJ"),
            ("power", "power[0-9]*_input", "uW"),
            ("power", "power[0-9]*_average", "uW"),
        ):
            for path in sorted(glob.glob(os.path.join(chip, pattern))):
                stem = os.path.basename(path).rsplit("_", 1)[0]
                label = _read_text(os.path.join(chip, f"{stem}_label")) or stem
                sensors.append(_entry(path, chip=name, label=label, kind=kind, unit=unit))
    return sensors, ina


def _ina3221_iio(root: str) -> list[dict[str, Any]]:
    """Older Jetson (L4T 32) INA3221 rails: ``in_power<N>_input`` in mW, ``rail_name_<N>``."""
    out = []
    for path in sorted(glob.glob(_join(root, f"{INA3221_IIO}/*/iio:device*/in_power[0-9]*_input"))):
        channel = os.path.basename(path)[len("in_power") :].split("_")[0]
        rail = _read_text(os.path.join(os.path.dirname(path), f"rail_name_{channel}"))
        out.append(_entry(path, chip="ina3221x", rail=rail or f"power{channel}", kind="power_mw"))
    return out


def discover(root: str = "/") -> dict[str, Any]:
    """Every energy sensor under ``root``: ``{"rapl", "hwmon", "ina3221"}`` lists of entries."""
    hwmon, ina = _hwmon(root)
    return {"root": root, "rapl": _rapl(root), "hwmon": hwmon, "ina3221": ina + _ina3221_iio(root)}


def read(paths: list[str]) -> dict[str, Any]:
    """Read integer files now: ``{"t": monotonic seconds, "values": {...}, "errors": {...}}``."""
    values, errors = {}, {}
    for path in paths:
        values[path], error = read_int(path)
        if error:
            errors[path] = error
    return {"t": time.monotonic(), "values": values, "errors": errors}


class Sampler:
    """Reads a set of files every ``interval_s`` seconds on a daemon thread."""

    def __init__(self, paths: list[str], interval_s: float):
        self.paths, self.interval_s = list(paths), interval_s
        self.times: list[float] = []
        self.values: dict[str, list[int | None]] = {p: [] for p in self.paths}
        self.errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="energy-sampler", daemon=True)

    def _sample(self) -> None:
        now = time.monotonic()
        for path in self.paths:
            value, error = read_int(path)
            self.values[path].append(value)
            if error:
                self.errors[path] = error
        self.times.append(now)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        """Stop, take a last sample, return ``{"t": [...], "values": {path: [...]}, "errors"}``."""
        self._stop.set()
        self._thread.join()
        self._sample()
        return {"t": self.times, "values": self.values, "errors": self.errors}


_active: Sampler | None = None


def sample_start(paths: list[str], interval_s: float) -> None:
    """Start this process's sampler (one at a time; a running one is stopped first)."""
    global _active
    if _active is not None:
        _active.stop()
    _active = Sampler(paths, interval_s)
    _active.start()


def sample_stop() -> dict[str, Any]:
    """Stop this process's sampler and return its samples."""
    global _active
    if _active is None:
        return {"t": [], "values": {}, "errors": {"sampler": "no sampler was started"}}
    sampler, _active = _active, None
    return sampler.stop()


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory (``VmHWM``), where ``/proc`` has it."""
    text = _read_text("/proc/self/status") or ""
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None
