"""The host's CPU architecture, spelt the way ``uname -m`` spells it (the one owner of it).

Targets, ELF headers, board facts and manifests all name architectures; they are compared
after :func:`normalize_arch` (``arm64`` -> ``aarch64``, ``amd64`` -> ``x86_64``), and "this
machine" is :func:`host_arch`. Nothing else reads :func:`platform.machine`.
"""

from __future__ import annotations

import platform

ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64", "riscv": "riscv64"}


def normalize_arch(arch: str | None) -> str | None:
    """``uname -m`` spelling of an architecture name (``arm64`` -> ``aarch64``); None stays None."""
    return None if arch is None else ARCH_ALIASES.get(arch.lower(), arch.lower())


def host_arch() -> str:
    """This machine's architecture, e.g. ``x86_64`` or ``aarch64``."""
    return normalize_arch(platform.machine()) or "unknown"
