"""Energy meters: one small class per source behind one interface, each figure labelled.

Sources: ``rapl`` (Linux powercap, package and core domains, counter wrap-around),
``hwmon`` (energy counters in µJ, or power in µW sampled on a thread and integrated),
``ina3221`` (Jetson rails: mV x mA or mW, sampled and integrated), ``command`` (an external
meter that prints ``<number> J`` totals or ``<number> W`` samples) and ``model`` (the
target's power prior x latency, never a measurement). The measured labels are
:data:`~dnsrec_edge.cost.records.MEASURED_SOURCES` (kept with the record schema, below both
bench and the cost fit, so the two cannot disagree); each meter's ``source`` is one of them.
Sensors are read through a probe:
:class:`LocalProbe` in this process, :class:`RemoteProbe` on a board over RPC.

Example::

    meter = make_meter("auto", LocalProbe("/"), power=None)
    meter.start(); run_workload(); reading = meter.stop()
    print(reading.joules, reading.source)
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from dnsrec_edge.board import probe
from dnsrec_edge.cost.records import MEASURED_SOURCES
from dnsrec_edge.errors import DeviceError

log = logging.getLogger(__name__)

SOURCES = ("auto", *MEASURED_SOURCES, "model")  # what --energy accepts
SAMPLE_INTERVAL_S = 0.02
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")  # Jetson rails that measure the whole board's input
_NUMBER_UNIT = re.compile(
    r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(J|joules?|W|watts?)\b", re.IGNORECASE
)


@dataclass
class EnergyReading:
    """Energy over one window, where it came from, and per-sensor detail."""

    joules: float
    seconds: float
    source: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else 0.0


class EnergyMeter(ABC):
    """``start()`` before the measured work, ``stop()`` after it returns an EnergyReading."""

    source: str = ""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> EnergyReading: ...

    def describe(self) -> str:
        return self.source


# --- probes: where sensor files are read -------------------------------------------------


class LocalProbe:
    """Sensors of this machine (``root`` prefixes the sysfs paths; tests build trees)."""

    def __init__(self, root: str = "/"):
        self.root = root

    def discover(self) -> dict[str, Any]:
        return probe.discover(self.root)

    def read(self, paths: list[str]) -> dict[str, Any]:
        return probe.read(paths)

    def sample_start(self, paths: list[str], interval_s: float) -> None:
        probe.sample_start(paths, interval_s)

    def sample_stop(self) -> dict[str, Any]:
        return probe.sample_stop()


class RemoteProbe:
    """Sensors of a board, through the agent functions its RPC server registered."""

    def __init__(self, session: Any, root: str = "/"):
        self.root = root
        self._f = {
            name: session.get_function(f"dnsrec_edge.probe.{name}")
            for name in ("discover", "read", "sample_start", "sample_stop")
        }

    def discover(self) -> dict[str, Any]:
        return json.loads(self._f["discover"](self.root))

    def read(self, paths: list[str]) -> dict[str, Any]:
        return json.loads(self._f["read"](json.dumps(paths)))

    def sample_start(self, paths: list[str], interval_s: float) -> None:
        self._f["sample_start"](json.dumps(paths), float(interval_s))

    def sample_stop(self) -> dict[str, Any]:
        return json.loads(self._f["sample_stop"]())


# --- arithmetic ---------------------------------------------------------------------------


def counter_delta(start: int, end: int, max_range: int | None) -> int | None:
    """Counter increase from ``start`` to ``end``; one wrap-around at ``max_range`` allowed.

    ``None`` when the counter went down and its range is unknown (a reset, not a wrap).
    """
    if end >= start:
        return end - start
    if max_range:
        return max_range - start + end
    return None


def integrate(times: list[float], watts: list[float]) -> float:
    """Trapezoid integral of power samples over their timestamps, in joules."""
    return sum(
        0.5 * (watts[i] + watts[i - 1]) * (times[i] - times[i - 1]) for i in range(1, len(times))
    )


def net_joules(reading: EnergyReading, idle_watts: float) -> float:
    """Energy above the idle baseline: ``joules - idle_watts * seconds``."""
    return reading.joules - idle_watts * reading.seconds


def measure_idle(meter: EnergyMeter, seconds: float) -> float:
    """Idle power in watts: the meter over ``seconds`` of doing nothing."""
    meter.start()
    time.sleep(seconds)
    return meter.stop().watts


# --- counter sources ------------------------------------------------------------------------


class _CounterMeter(EnergyMeter):
    """Energy counters read at start and stop (µJ); ``total`` names the entries summed."""

    def __init__(self, probe_: Any, entries: list[dict[str, Any]], total: list[str]):
        self.probe, self.entries, self.total = probe_, entries, total
        self._start: dict[str, Any] | None = None

    def _name(self, entry: dict[str, Any]) -> str:
        return entry.get("name") or entry.get("label") or entry["path"]

    def start(self) -> None:
        self._start = self.probe.read([e["path"] for e in self.entries])

    def stop(self) -> EnergyReading:
        if self._start is None:
            raise RuntimeError("stop() before start()")
        end = self.probe.read([e["path"] for e in self.entries])
        begin, self._start = self._start, None
        detail: dict[str, Any] = {}
        joules = 0.0
        for entry in self.entries:
            path, name = entry["path"], self._name(entry)
            a, b = begin["values"].get(path), end["values"].get(path)
            if a is None or b is None:
                reason = end["errors"].get(path) or begin["errors"].get(path)
                raise DeviceError(f"{self.source} sensor {name} became unreadable ({reason})")
            delta = counter_delta(a, b, entry.get("max_energy_range_uj"))
            if delta is None:
                raise DeviceError(
                    f"{self.source} counter {name} went backwards ({a} -> {b} µJ) and has no "
                    "max_energy_range_uj to unwrap it; measure again"
                )
            detail[name] = delta / 1e6
            if path in self.total:
                joules += delta / 1e6
        return EnergyReading(joules, end["t"] - begin["t"], self.source, detail)


class RaplMeter(_CounterMeter):
    """Linux powercap RAPL: package domains summed; core/uncore/dram zones in the detail."""

    source = "rapl"

    def __init__(self, probe_: Any, zones: list[dict[str, Any]]):
        top = [z for z in zones if not z.get("subzone")] or zones
        packages = [z for z in top if z.get("domain") == "package"] or top
        super().__init__(probe_, zones, [z["path"] for z in packages])

    def describe(self) -> str:
        return "rapl (" + ", ".join(self._name(z) for z in self.entries) + ")"


class HwmonEnergyMeter(_CounterMeter):
    """hwmon ``energy*_input`` counters in µJ, summed."""

    source = "hwmon"

    def __init__(self, probe_: Any, sensors: list[dict[str, Any]]):
        super().__init__(probe_, sensors, [s["path"] for s in sensors])

    def _name(self, entry: dict[str, Any]) -> str:
        return f"{entry.get('chip')}/{entry.get('label')}"


# --- sampled sources -------------------------------------------------------------------------


class _SampledMeter(EnergyMeter):
    """Power sampled on the board's thread over the window and integrated per channel."""

    interval_s = SAMPLE_INTERVAL_S

    def __init__(self, probe_: Any, channels: list[dict[str, Any]]):
        self.probe, self.channels = probe_, channels

    @abstractmethod
    def _paths(self, channel: dict[str, Any]) -> list[str]: ...

    @abstractmethod
    def _watts(self, channel: dict[str, Any], values: list[int]) -> float: ...

    @abstractmethod
    def _name(self, channel: dict[str, Any]) -> str: ...

    def _is_total(self, channel: dict[str, Any]) -> bool:
        return True

    def start(self) -> None:
        paths = [p for c in self.channels for p in self._paths(c)]
        self.probe.sample_start(paths, self.interval_s)

    def stop(self) -> EnergyReading:
        got = self.probe.sample_stop()
        times = got["t"]
        if len(times) < 2:
            raise DeviceError(f"{self.source} sampler took fewer than 2 samples; measure longer")
        detail: dict[str, Any] = {}
        joules = 0.0
        for channel in self.channels:
            name = self._name(channel)
            series = [got["values"][p] for p in self._paths(channel)]
            if any(v is None for s in series for v in s):
                reason = next(
                    (got["errors"][p] for p in self._paths(channel) if p in got["errors"]), ""
                )
                raise DeviceError(f"{self.source} sensor {name} became unreadable ({reason})")
            watts = [self._watts(channel, list(vals)) for vals in zip(*series, strict=True)]
            detail[name] = integrate(times, watts)
            if self._is_total(channel):
                joules += detail[name]
        detail["samples"] = len(times)
        return EnergyReading(joules, times[-1] - times[0], self.source, detail)


class HwmonPowerMeter(_SampledMeter):
    """hwmon ``power*_input``/``power*_average`` in µW, sampled and integrated, summed."""

    source = "hwmon"

    def _paths(self, channel: dict[str, Any]) -> list[str]:
        return [channel["path"]]

    def _watts(self, channel: dict[str, Any], values: list[int]) -> float:
        return values[0] / 1e6  # µW -> W

    def _name(self, channel: dict[str, Any]) -> str:
        return f"{channel.get('chip')}/{channel.get('label')}"


class Ina3221Meter(_SampledMeter):
    """Jetson INA3221 rails: the board-input rail (VDD_IN) if present, else all rails summed."""

    source = "ina3221"

    def __init__(self, probe_: Any, rails: list[dict[str, Any]]):
        super().__init__(probe_, rails)
        self._totals = {r["path"] for r in rails if r.get("rail") in TOTAL_RAILS} or {
            r["path"] for r in rails
        }

    def _paths(self, channel: dict[str, Any]) -> list[str]:
        if channel["kind"] == "vi":
            return [channel["path"], channel["current"]]
        return [channel["path"]]

    def _watts(self, channel: dict[str, Any], values: list[int]) -> float:
        if channel["kind"] == "vi":
            return values[0] * values[1] / 1e6  # mV x mA -> W
        return values[0] / 1e3  # mW -> W

    def _name(self, channel: dict[str, Any]) -> str:
        return str(channel.get("rail"))

    def _is_total(self, channel: dict[str, Any]) -> bool:
        return channel["path"] in self._totals


# --- command and model -------------------------------------------------------------------------


def parse_meter_output(text: str, seconds: float) -> tuple[float, dict[str, Any]]:
    """Joules from a meter's output: the last ``<n> J`` line, else mean of ``<n> W`` x seconds."""
    joules, watts = [], []
    for line in text.splitlines():
        match = _NUMBER_UNIT.search(line)
        if match:
            value, unit = float(match.group(1)), match.group(2).lower()
            (joules if unit.startswith("j") else watts).append(value)
    if joules:
        return joules[-1], {"reported_joules": len(joules)}
    if watts:
        return sum(watts) / len(watts) * seconds, {"watt_samples": len(watts)}
    raise DeviceError(
        "the energy command printed no '<number> J' or '<number> W' line; make it print its "
        "total joules or one watts sample per line"
    )


class CommandMeter(EnergyMeter):
    """An external meter command, started at ``start()`` and interrupted at ``stop()``."""

    source = "command"

    def __init__(self, command: str, stop_timeout_s: float = 5.0):
        self.command, self.stop_timeout_s = command, stop_timeout_s
        self._proc: subprocess.Popen[str] | None = None
        self._t0 = 0.0

    def describe(self) -> str:
        return f"command ({self.command})"

    def start(self) -> None:
        try:
            argv = shlex.split(self.command)
            self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        except (OSError, ValueError) as err:
            raise DeviceError(f"cannot start energy command '{self.command}' ({err})") from err
        self._t0 = time.monotonic()

    def stop(self) -> EnergyReading:
        if self._proc is None:
            raise RuntimeError("stop() before start()")
        proc, self._proc = self._proc, None
        seconds = time.monotonic() - self._t0
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # meters print their total on interrupt
        try:
            out, _ = proc.communicate(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        joules, detail = parse_meter_output(out or "", seconds)
        return EnergyReading(joules, seconds, self.source, detail)


@dataclass
class ModelMeter(EnergyMeter):
    """Target power prior x time: an estimate, always labelled ``model``."""

    active_watts: float
    idle_watts: float = 0.0
    source: str = "model"

    def __post_init__(self) -> None:
        self._t0 = 0.0

    def describe(self) -> str:
        return f"model ({self.active_watts:g} W active, {self.idle_watts:g} W idle prior)"

    def start(self) -> None:
        self._t0 = time.monotonic()

    def stop(self) -> EnergyReading:
        seconds = time.monotonic() - self._t0
        return EnergyReading(self.active_watts * seconds, seconds, self.source)

    def joules_per_inference(self, latency_s: float, net: bool = False) -> float:
        """Active power x latency (minus idle power x latency when ``net``)."""
        watts = self.active_watts - (self.idle_watts if net else 0.0)
        return watts * latency_s


# --- choosing a meter -----------------------------------------------------------------------------


def _pick(entries: list[dict[str, Any]], name: str, keys: tuple[str, ...]) -> tuple[list, str]:
    """Readable entries (matching ``name`` when given), or ``[]`` and why there are none."""
    if name:
        named = [e for e in entries if any(str(e.get(k)) == name for k in keys)]
        if not named:
            have = sorted({str(e.get(keys[0])) for e in entries})
            return [], f"no sensor named '{name}' (found: {', '.join(have) or 'none'})"
        entries = named
    ok = [e for e in entries if e["readable"]]
    if ok or not entries:
        return ok, ""
    return [], f"not readable ({entries[0]['error']})"


def make_meter(
    spec: str, probe_: Any | None, power: tuple[float, float] | None, where: str = "the board"
) -> tuple[EnergyMeter | None, str]:
    """The meter ``spec`` asks for on ``where``; returns ``(meter or None, note)``.

    ``spec`` is ``auto``, ``rapl``, ``hwmon[:NAME]``, ``ina3221[:RAIL]``, ``command:CMD`` or
    ``model``; ``probe_`` is None when the board has no agent; ``power`` is the target's
    ``(idle_watts, active_watts)`` prior or None. ``auto`` picks the first readable sensor
    (rapl, hwmon energy, ina3221, hwmon power) and falls back to the model; an explicit
    sensor that is missing or unreadable raises DeviceError naming it and the fix.
    """
    kind, _, arg = spec.partition(":")
    if kind not in SOURCES:
        raise DeviceError(
            f"unknown --energy '{spec}'; use auto, rapl, hwmon[:NAME], ina3221[:RAIL], "
            "command:CMD or model"
        )
    if kind == "command":
        if not arg.strip():
            raise DeviceError("--energy command: needs a command, e.g. command:'my-meter --joules'")
        return CommandMeter(arg), ""
    model = ModelMeter(power[1], power[0]) if power else None
    if kind == "model":
        return model, "" if model else "the target has no power priors to model energy from"
    if probe_ is None:
        if kind == "auto":
            return model, f"{where} runs no dnsrec-edge agent, so its sensors cannot be read"
        raise DeviceError(
            f"{where} runs no dnsrec-edge agent, so its {kind} sensors cannot be read; serve it "
            "with `dnsrec-edge device serve` (or python -m dnsrec_edge.bench.server) or use "
            "--energy model"
        )
    found = probe_.discover()
    hwmon_energy = [s for s in found["hwmon"] if s["kind"] == "energy"]
    hwmon_power = [s for s in found["hwmon"] if s["kind"] == "power"]
    sources = {  # label -> (entries, keys a NAME matches, meter class)
        "rapl": (found["rapl"], ("name", "zone"), RaplMeter),
        "hwmon energy": (hwmon_energy, ("label", "chip"), HwmonEnergyMeter),
        "ina3221": (found["ina3221"], ("rail",), Ina3221Meter),
        "hwmon power": (hwmon_power, ("label", "chip"), HwmonPowerMeter),
    }
    order = {
        "auto": list(sources),
        "rapl": ["rapl"],
        "hwmon": ["hwmon energy", "hwmon power"],
        "ina3221": ["ina3221"],
    }[kind]
    reasons = []
    for label in order:
        entries, keys, cls = sources[label]
        usable, reason = _pick(entries, arg if kind != "auto" else "", keys)
        if usable:
            return cls(probe_, usable), ""
        if reason:
            reasons.append(f"{label} sensors: {reason}")
    wanted = "energy" if kind == "auto" else kind
    why = "; ".join(reasons) or f"{where} has no {wanted} sensors"
    if kind == "auto":
        return model, why
    hint = ""
    if kind == "rapl" and any("not readable" in r for r in reasons):
        hint = " (on the board: sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj)"
    raise DeviceError(f"--energy {spec}: {why}{hint}; pick another source or use --energy model")
