"""Compiled artifacts: a folder with ``lib.so``, ``manifest.json`` and a reference input/output.

The manifest makes the folder self-describing (target, shapes, versions, checksums, ArchSpec,
tuning); :func:`load_artifact` checks every checksum before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dnsrec_edge.errors import ChecksumMismatch, DeviceError, InputFileError

SCHEMA = 1
LIBRARY = "lib.so"
MANIFEST = "manifest.json"
REFERENCE_INPUT = "reference_input.npy"
REFERENCE_OUTPUT = "reference_output.npy"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Artifact:
    """A compiled model folder and its parsed ``manifest.json``."""

    path: Path
    manifest: dict[str, Any]

    @property
    def library(self) -> Path:
        return self.path / LIBRARY

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def sha256(self) -> str:
        """Checksum of the library: identifies this build in measurement records."""
        return self.manifest["files"][LIBRARY]

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The ONNX Runtime reference ``(input, output)`` pair stored with the library."""
        return np.load(self.path / REFERENCE_INPUT), np.load(self.path / REFERENCE_OUTPUT)

    def runs_here(self) -> bool:
        """True if this machine's CPU architecture matches the artifact's (and it is a CPU build)."""
        return self.manifest["device"] == "cpu" and self.manifest["arch"] == platform.machine()

    def load_vm(self, threads: int | None = None):
        """A Relax VirtualMachine over the library on this machine's CPU."""
        import tvm
        from tvm.runtime.vm import VirtualMachine  # runtime-only TVM installs have no relax

        if not self.runs_here():
            raise DeviceError(
                f"artifact '{self.path}' is a {self.manifest['arch']} {self.manifest['device']} "
                f"build and this machine is {platform.machine()}; run it on its board with "
                "`dnsrec-edge device bench`"
            )
        if threads is not None:
            set_threads(threads)
        module = tvm.runtime.load_module(str(self.library))
        return VirtualMachine(module, tvm.cpu())

    def run_local(self, inputs: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Run the library on this host's CPU: ``item_seq`` (B, L) int64 -> ``scores``."""
        import tvm

        spec = self.manifest["inputs"][0]
        inputs = np.ascontiguousarray(inputs, dtype=spec["dtype"])
        if list(inputs.shape) != list(spec["shape"]):
            raise InputFileError(
                f"input of shape {list(inputs.shape)} does not fit artifact '{self.path}', "
                f"which was compiled for {spec['shape']}; recompile with --batch/--seq-len"
            )
        vm = self.load_vm(threads)
        out = vm[self.manifest["entry"]](tvm.runtime.tensor(inputs, tvm.cpu()))
        if not hasattr(out, "numpy"):  # several outputs: the first is `scores`
            out = out[0]
        return out.numpy()


def set_threads(threads: int) -> None:
    """Size TVM's CPU thread pool for this process."""
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(0, int(threads))


def load_artifact(path: str | Path, verify: bool = True) -> Artifact:
    """Read an artifact folder; with ``verify`` every file's sha256 must match the manifest."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise InputFileError(
            f"'{path}' is not a compiled artifact (no {MANIFEST}); create one with `dnsrec-edge compile`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputFileError(f"cannot read '{manifest_path}' ({err}); recompile the model") from err
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise InputFileError(
            f"'{manifest_path}' is not a schema-{SCHEMA} manifest; recompile with this version"
        )
    if verify:
        for name, expected in manifest.get("files", {}).items():
            file = path / name
            if not file.is_file():
                raise InputFileError(f"artifact file '{file}' is missing; recompile the model")
            if sha256_file(file) != expected:
                raise ChecksumMismatch(
                    f"artifact file '{file}' does not match its sha256 in {MANIFEST}; "
                    "it was changed or damaged, recompile the model"
                )
    return Artifact(path=path, manifest=manifest)
