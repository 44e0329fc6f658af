"""``--target host``: this machine's CPU features and usable cores, and the preset they match.

Features come from ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on Arm); usable cores from
``os.sched_getaffinity`` (what this process may run on: a container or ``taskset`` gives fewer
than the machine has). The preset is the widest shipped one the CPU runs:

- x86_64: ``x86_64-avx512`` with AVX-512 F/BW/CD/DQ/VL (x86-64-v4), ``x86_64-avx2`` with AVX2,
  FMA, BMI1/2, F16C, MOVBE (x86-64-v3), else ``x86_64`` (x86-64-v2);
- aarch64: ``arm64`` (NEON; SVE is detected and recorded but not compiled for).

The resolved target keeps the preset's name, so artifacts and calibration records name the
preset; it has ``requested == "host"``, ``threads`` and ``num-cores`` set to the usable cores,
and the extra instruction sets found (AVX512-BF16, AVX512-VNNI) added to ``mattr``.

    >>> cpu = detect_host(cpuinfo_text="flags : fpu sse4_2 avx avx2 fma bmi1 bmi2 f16c movbe",
    ...                   arch="x86_64", cores=2)
    >>> cpu.preset
    'x86_64-avx2'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dnsrec_edge.hostinfo import host_arch, normalize_arch

HOST = "host"
CPUINFO = Path("/proc/cpuinfo")
X86_V3 = frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe"})
X86_V4 = frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})
# instruction sets beyond a preset's -mcpu that LLVM can use when this host is the board
X86_EXTRA_MATTR = {"avx512_bf16": "+avx512bf16", "avx512_vnni": "+avx512vnni"}
NOTABLE = (
    "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
    "avx512_vnni", "avx512_fp16", "avx_vnni", "amx_bf16", "amx_int8",
    "asimd", "asimddp", "asimdhp", "bf16", "i8mm", "sve", "sve2",
)  # fmt: skip


@dataclass(frozen=True)
class HostCpu:
    """What this machine's CPU offers: architecture, model name, feature flags, usable cores."""

    arch: str
    model: str
    flags: frozenset[str]
    cores: int

    @property
    def preset(self) -> str:
        """Name of the shipped preset this CPU runs best."""
        if self.arch == "x86_64":
            if X86_V4.issubset(self.flags):
                return "x86_64-avx512"
            if X86_V3.issubset(self.flags):
                return "x86_64-avx2"
            return "x86_64"
        if self.arch == "aarch64":
            return "arm64"
        return self.arch  # riscv64: the preset is named after the architecture

    @property
    def features(self) -> tuple[str, ...]:
        """The notable SIMD features found (``neon`` for Arm's ``asimd``)."""
        found = [f for f in NOTABLE if f in self.flags]
        return tuple("neon" if f == "asimd" else f for f in found)

    @property
    def extra_mattr(self) -> tuple[str, ...]:
        """LLVM ``mattr`` entries for features beyond the preset's ``mcpu``."""
        if self.arch != "x86_64" or self.preset != "x86_64-avx512":
            return ()
        return tuple(attr for flag, attr in X86_EXTRA_MATTR.items() if flag in self.flags)

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "model": self.model,
            "cores": self.cores,
            "preset": self.preset,
            "features": list(self.features),
        }


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` of the first CPU in a ``/proc/cpuinfo`` text."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return model, flags


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # not Linux
        return max(os.cpu_count() or 1, 1)


def detect_host(
    cpuinfo_text: str | None = None, arch: str | None = None, cores: int | None = None
) -> HostCpu:
    """This machine's :class:`HostCpu` (arguments replace what is read, for tests)."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo_text = ""
    model, flags = parse_cpuinfo(cpuinfo_text)
    return HostCpu(
        arch=normalize_arch(arch) or host_arch(),
        model=model,
        flags=flags,
        cores=cores if cores is not None else usable_cores(),
    )
