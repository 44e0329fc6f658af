"""The bench report: a documented JSON schema, per board and pooled, and a one-screen summary.

Report schema 1 (``BenchReport.to_dict()``)::

    {"schema": 1, "complete": bool, "error": str | null,
     "record_error": str | null, "time": ISO, "tool_version",
     "host_tvm_version", "artifact": path, "artifact_sha256": sha256 of lib.so,
     "target", "arch" (uname -m of the library's ELF machine), "archspec": dict | null,
     "batch", "seq_len",
     "tuned", "library_bytes", "mode": "local" | "rpc" | "tracker", "address", "key",
     "settings": {"threads", "warmup", "repeat", "number", "energy", "idle_baseline_s"},
     "emulated": bool,                      # any board emulated: its timings mean nothing
     "max_abs_diff", "top10_match",         # reference check, worst over boards
     "latency_ms": {"mean", "median", "p90", "p99", "std", "min", "max", "samples"},  # pooled
     "throughput_per_s",                    # summed over boards (they run side by side)
     "energy": {"joules_per_inference", "source", ...},  # mean over boards with a figure
     "peak_rss_bytes", "device": {...},     # worst board / first board's facts
     "boards": [{"label", "device", "threads", "max_abs_diff", "top10_match",
                 "latency_ms", "throughput_per_s", "samples_ms": [per-repeat means],
                 "runs", "reconnects", "energy", "peak_rss_bytes", "error"}]}

Latency samples are per repeat (each the mean of ``number`` back-to-back calls), warm-up
excluded; percentiles are over those samples. Energy ``source`` is one of ``rapl``,
``hwmon``, ``ina3221``, ``command`` (measured), ``model`` (prior x latency, an estimate) or
``none``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dnsrec_edge import __version__
from dnsrec_edge.fsio import atomic_write_json

REPORT_SCHEMA = 1


def latency_stats(samples_ms: list[float]) -> dict[str, float] | None:
    """mean, median, p90, p99, std (population), min, max of per-repeat samples, in ms."""
    if not samples_ms:
        return None
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "std": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
        "samples": int(a.size),
    }


@dataclass
class BoardResult:
    """One board's run: facts, reference check, timed runs, energy, memory."""

    label: str
    device: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    max_abs_diff: float | None = None
    top10_match: bool | None = None
    runs: list[list[float]] = field(default_factory=list)  # per chunk: per-repeat ms
    reconnects: int = 0
    energy: dict[str, Any] | None = None
    peak_rss_bytes: int | None = None
    error: str | None = None

    @property
    def samples_ms(self) -> list[float]:
        return [s for run in self.runs for s in run]

    def latency_ms(self) -> dict[str, float] | None:
        return latency_stats(self.samples_ms)

    def throughput_per_s(self, batch: int) -> float | None:
        stats = self.latency_ms()
        return batch * 1000.0 / stats["mean"] if stats else None

    def to_dict(self, batch: int) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            latency_ms=self.latency_ms(),
            throughput_per_s=self.throughput_per_s(batch),
            samples_ms=self.samples_ms,
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BoardResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def _pooled_energy(boards: list[BoardResult]) -> dict[str, Any] | None:
    figures = [b.energy for b in boards if b.energy]
    if not figures:
        return None
    if len(figures) == 1:
        return figures[0]
    values = [
        e["joules_per_inference"] for e in figures if e.get("joules_per_inference") is not None
    ]
    sources = sorted({e["source"] for e in figures})
    return {
        "joules_per_inference": float(np.mean(values)) if values else None,
        "source": sources[0] if len(sources) == 1 else "mixed:" + "+".join(sources),
        "boards": len(values),
    }


@dataclass
class BenchReport:
    """A bench run over one or more boards; ``to_dict`` is the documented JSON."""

    artifact: str
    artifact_sha256: str
    target: str
    arch: str | None
    batch: int
    seq_len: int
    archspec: dict[str, Any] | None = None
    tuned: bool = False
    library_bytes: int | None = None
    mode: str = "local"
    address: str | None = None
    key: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    boards: list[BoardResult] = field(default_factory=list)
    complete: bool = False
    error: str | None = None
    record_error: str | None = None  # why a finished measurement could not be recorded
    time: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    )
    tool_version: str = __version__
    host_tvm_version: str | None = None

    @property
    def emulated(self) -> bool:
        return any(b.device.get("emulated") for b in self.boards)

    def latency_ms(self) -> dict[str, float] | None:
        return latency_stats([s for b in self.boards for s in b.samples_ms])

    def throughput_per_s(self) -> float | None:
        rates = [r for b in self.boards if (r := b.throughput_per_s(self.batch)) is not None]
        return float(sum(rates)) if rates else None

    def max_abs_diff(self) -> float | None:
        diffs = [b.max_abs_diff for b in self.boards if b.max_abs_diff is not None]
        return max(diffs) if diffs else None

    def top10_match(self) -> bool | None:
        checks = [b.top10_match for b in self.boards if b.top10_match is not None]
        return all(checks) if checks else None

    def to_dict(self) -> dict[str, Any]:
        rss = [b.peak_rss_bytes for b in self.boards if b.peak_rss_bytes]
        return {
            "schema": REPORT_SCHEMA,
            "complete": self.complete,
            "error": self.error,
            "record_error": self.record_error,
            "time": self.time,
            "tool_version": self.tool_version,
            "host_tvm_version": self.host_tvm_version,
            "artifact": self.artifact,
            "artifact_sha256": self.artifact_sha256,
            "target": self.target,
            "arch": self.arch,
            "archspec": self.archspec,
            "batch": self.batch,
            "seq_len": self.seq_len,
            "tuned": self.tuned,
            "library_bytes": self.library_bytes,
            "mode": self.mode,
            "address": self.address,
            "key": self.key,
            "settings": self.settings,
            "emulated": self.emulated,
            "max_abs_diff": self.max_abs_diff(),
            "top10_match": self.top10_match(),
            "latency_ms": self.latency_ms(),
            "throughput_per_s": self.throughput_per_s(),
            "energy": _pooled_energy(self.boards),
            "peak_rss_bytes": max(rss) if rss else None,
            "device": self.boards[0].device if self.boards else {},
            "boards": [b.to_dict(self.batch) for b in self.boards],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchReport:
        names = cls.__dataclass_fields__
        fields = {k: v for k, v in data.items() if k in names and k != "boards"}
        return cls(**fields, boards=[BoardResult.from_dict(b) for b in data.get("boards", [])])

    def save(self, path: str | Path) -> Path:
        """Write the JSON report atomically."""
        return atomic_write_json(path, self.to_dict())

    def summary(self, console: Any = None) -> None:
        """Print a one-screen summary (rich) to ``console`` (stdout by default)."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        console.print(
            f"[bold]{Path(self.artifact).name}[/]: target {self.target} ({self.arch}), batch "
            f"{self.batch} x seq {self.seq_len}, library {_size(self.library_bytes)}"
            f"{', tuned' if self.tuned else ''}"
        )
        for b in self.boards:
            d = b.device
            facts = ", ".join(
                str(x)
                for x in (
                    d.get("cpu_model"),
                    d.get("arch"),
                    f"{b.threads} threads" if b.threads else None,
                    f"peak RSS {_size(b.peak_rss_bytes)}" if b.peak_rss_bytes else None,
                )
                if x
            )
            console.print(f"  {b.label}: {facts or 'no facts (no agent)'}; check {_check_text(b)}")
        columns = [
            (b.label, b.latency_ms(), b.throughput_per_s(self.batch), b.energy) for b in self.boards
        ]
        if len(self.boards) > 1:
            columns.append(
                ("pooled", self.latency_ms(), self.throughput_per_s(), _pooled_energy(self.boards))
            )
        table = Table(box=None, pad_edge=False, header_style="bold")
        table.add_column("")
        for label, *_ in columns:
            table.add_column(_short(label, 24), justify="right", no_wrap=True)
        for key in ("mean", "median", "p90", "p99", "std", "min", "max"):
            table.add_row(
                f"{key} ms", *(f"{lat[key]:.4g}" if lat else "-" for _, lat, _, _ in columns)
            )
        table.add_row(
            "inferences/s", *(f"{rate:.4g}" if rate else "-" for _, _, rate, _ in columns)
        )
        table.add_row("energy/inference", *(_energy_text(e) for *_, e in columns))
        console.print(table)
        samples = (self.latency_ms() or {}).get("samples", 0)
        number = self.settings.get("number")
        console.print(f"{samples} samples of {number} calls each, warm-up excluded")
        if self.emulated:
            console.print(
                "[yellow]Emulated board: timings say nothing about real hardware; not recorded.[/]"
            )
        energy = _pooled_energy(self.boards)
        if energy and energy.get("source") == "model":
            console.print(
                "[yellow]Energy is modelled (target power prior x latency), not measured.[/]"
            )
        elif energy and energy.get("note"):
            console.print(f"Energy: {energy['note']}")
        if not self.complete:
            console.print(f"[red]Incomplete: {self.error}[/]")


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _size(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def _energy_text(energy: dict[str, Any] | None) -> str:
    if not energy:
        return "-"
    jpi = energy.get("joules_per_inference")
    value = f"{jpi * 1e3:.3f} mJ" if jpi is not None else "-"
    return f"{value} ({energy.get('source')})"


def _check_text(board: BoardResult) -> str:
    if board.max_abs_diff is None:
        return "not run"
    ok = board.top10_match and board.max_abs_diff <= 1e-4
    top = "same" if board.top10_match else "different"
    return f"{'ok' if ok else 'FAILED'} (max abs diff {board.max_abs_diff:.1e}, top-10 {top})"
