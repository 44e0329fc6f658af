"""Read the ELF header of a shared library: which CPU it was built for."""

from __future__ import annotations

import struct
from pathlib import Path

from dnsrec_edge.errors import InputFileError

# e_machine values (System V ABI) for the architectures targets name, keyed by `uname -m`.
MACHINES = {"x86_64": 62, "aarch64": 183, "riscv64": 243}
_NAMES = {v: k for k, v in MACHINES.items()}


def elf_machine(path: str | Path) -> str:
    """The ``uname -m`` style architecture of the ELF file at ``path`` (e.g. ``aarch64``)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            header = fh.read(20)
    except OSError as err:
        raise InputFileError(f"cannot read library '{path}' ({err.strerror})") from err
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise InputFileError(f"'{path}' is not an ELF file; rebuild it")
    order = {1: "<", 2: ">"}.get(header[5])
    if order is None:
        raise InputFileError(f"'{path}' has an invalid ELF byte-order field; rebuild it")
    (machine,) = struct.unpack(order + "H", header[18:20])
    return _NAMES.get(machine, f"e_machine={machine}")
