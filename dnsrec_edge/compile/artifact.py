"""Compiled artifacts: a folder with ``lib.so``, ``manifest.json`` and a reference input/output.

The manifest makes the folder self-describing (target, shapes, versions, checksums, ArchSpec,
tuning); :func:`load_artifact` checks every checksum, that every file the manifest names lies
inside the folder, and that the library's ELF machine is the architecture the manifest and its
target claim, before anything runs. :func:`install_artifact` puts a freshly built folder in
place, replacing only an earlier artifact's own files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from dnsrec_edge.errors import ChecksumMismatch, DeviceError, InputFileError, OutputNotWritable
from dnsrec_edge.fsio import sha256_file
from dnsrec_edge.hostinfo import host_arch, normalize_arch

SCHEMA = 1
LIBRARY = "lib.so"
MANIFEST = "manifest.json"
REFERENCE_INPUT = "reference_input.npy"
REFERENCE_OUTPUT = "reference_output.npy"


def load_array(path: Path) -> np.ndarray:
    """A numeric ``.npy`` array (never pickled objects); InputFileError naming the file."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise InputFileError(
            f"artifact file '{path}' is not a numeric .npy array ({err}); recompile the model"
        ) from err


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
        return load_array(self.path / REFERENCE_INPUT), load_array(self.path / REFERENCE_OUTPUT)

    def runs_here(self) -> bool:
        """True if this machine's CPU architecture matches the artifact's (and it is a CPU build)."""
        return (
            self.manifest["device"] == "cpu"
            and normalize_arch(self.manifest["arch"]) == host_arch()
        )

    def load_vm(self, threads: int | None = None):
        """A Relax VirtualMachine over the library on this machine's CPU."""
        import tvm
        from tvm.runtime.vm import VirtualMachine  # runtime-only TVM installs have no relax

        if not self.runs_here():
            raise DeviceError(
                f"artifact '{self.path}' is a {self.manifest['arch']} {self.manifest['device']} "
                f"build and this machine is {host_arch()}; run it on its board with "
                "`dnsrec-edge device bench`"
            )
        if threads is not None:
            set_threads(threads)
        module = tvm.runtime.load_module(str(self.library))
        return VirtualMachine(module, tvm.cpu())

    def weights(self, dev: Any = None) -> list[Any]:
        """The weight files as TVM tensors on ``dev`` (this host's CPU: mapped, no copy), to
        pass after the input: ``vm[entry](x, *weights)``; none for most artifacts."""
        from dnsrec_edge.compile.weights import load_weights

        return load_weights(self.path, self.manifest, dev)

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
        out = vm[self.manifest["entry"]](tvm.runtime.tensor(inputs, tvm.cpu()), *self.weights())
        if not hasattr(out, "numpy"):  # several outputs: the first is `scores`
            out = out[0]
        return out.numpy()


def set_threads(threads: int) -> None:
    """Size TVM's CPU thread pool for this process.

    TVM makes its pool once, when first used, with ``TVM_NUM_THREADS`` threads (unset: half
    the cores on x86, one on a 2-core host) and never grows it, so a later request for more
    threads would silently run on fewer: unless the user set it, the variable is set to this
    host's usable cores first. Configuring the pool pins the calling thread to one core (its
    workers to the others); the caller's CPU affinity is restored afterwards, so what runs
    next in this process (training, ONNX Runtime sessions and their threads) still has every
    core it had.
    """
    from dnsrec_edge.compile.host import usable_cores

    os.environ.setdefault("TVM_NUM_THREADS", str(max(usable_cores(), int(threads))))
    import tvm

    mask = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    tvm.get_global_func("runtime.config_threadpool")(0, int(threads))
    if mask is not None:
        os.sched_setaffinity(0, mask)


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
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(files.get(LIBRARY), str):
        raise InputFileError(
            f"'{manifest_path}' names no {LIBRARY} in its files; recompile the model"
        )
    for name in files:
        member(path, name)
    if verify:
        for name, expected in files.items():
            file = path / name
            if not file.is_file():
                raise InputFileError(f"artifact file '{file}' is missing; recompile the model")
            if sha256_file(file) != expected:
                raise ChecksumMismatch(
                    f"artifact file '{file}' does not match its sha256 in {MANIFEST}; "
                    "it was changed or damaged, recompile the model"
                )
        check_library_arch(path, manifest)
    return Artifact(path=path, manifest=manifest)


def member(folder: Path, name: object) -> Path:
    """``folder / name`` for a file name a manifest lists; InputFileError for an absolute
    name, a ``..`` part, or one that resolves outside ``folder`` (through a link)."""
    bad = not isinstance(name, str) or not name or PurePosixPath(name).is_absolute()
    if bad or ".." in PurePosixPath(str(name).replace("\\", "/")).parts:
        raise InputFileError(
            f"'{folder / MANIFEST}' names the file {name!r}, which is not a plain name inside "
            "the artifact folder; the manifest was edited: recompile the model"
        )
    file = folder / name
    if not file.resolve().is_relative_to(folder.resolve()):
        raise InputFileError(
            f"'{folder / MANIFEST}' names the file {name!r}, which resolves outside the "
            "artifact folder; recompile the model"
        )
    return file


def library_arch(path: Path) -> str:
    """The architecture the artifact's library is code for (its ELF machine)."""
    from dnsrec_edge.compile.elf import elf_machine

    return elf_machine(path / LIBRARY)


def check_library_arch(path: Path, manifest: dict[str, Any]) -> str:
    """The library's ELF architecture; InputFileError when the manifest's ``arch``, or its
    target preset's architecture, says otherwise (an edited or mixed-up manifest)."""
    from dnsrec_edge.compile.targets import load_target
    from dnsrec_edge.errors import UnknownTarget

    found = library_arch(path)
    claims = {"arch": normalize_arch(str(manifest.get("arch")))}
    try:
        target = load_target(str(manifest.get("target")))
    except (UnknownTarget, InputFileError):
        target = None  # a board's own preset this machine lacks: the arch field must do
    if target is not None:
        claims[f"target {target.name}"] = normalize_arch(target.arch)
    for what, arch in claims.items():
        if arch != found:
            raise InputFileError(
                f"artifact '{path}': {MANIFEST} says {what} is {arch}, but {LIBRARY} is "
                f"{found} code; the manifest was edited or belongs to another build: "
                "recompile the model"
            )
    return found


def replaceable(out: Path) -> set[str]:
    """The files ``--force`` may replace in ``out``: an earlier artifact's (those its manifest
    names, and the manifest). OutputNotWritable when ``out`` is a file."""
    if not out.exists():
        return set()
    if not out.is_dir():
        raise OutputNotWritable(
            f"output '{out}' is a file, not an artifact folder; --force replaces only an earlier "
            "artifact's files: choose another output folder"
        )
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        files = manifest.get("files") if isinstance(manifest, dict) else None
    except (OSError, ValueError):
        return set()
    names = {MANIFEST}
    for name in files if isinstance(files, dict) else ():
        try:
            member(out, name)
        except InputFileError:
            continue  # never delete what an edited manifest points at
        names.add(name)
    return names


def check_replaceable(out: Path, new_names: tuple[str, ...]) -> set[str]:
    """:func:`replaceable`, refusing when a file the build writes exists in ``out`` and is
    not an earlier artifact's (a user's file of the same name)."""
    old = replaceable(out)
    for name in (*new_names, MANIFEST):
        if (out / name).exists() and name not in old:
            raise OutputNotWritable(
                f"'{out / name}' is not part of an earlier artifact, and --force replaces only "
                "an artifact's own files; move it away or choose another output folder"
            )
    return old


def install_artifact(built: Path, out: Path) -> None:
    """Move the artifact built in ``built`` to ``out``. An earlier artifact in ``out`` loses its
    own files (manifest first, so a crash never leaves a valid-looking mix); nothing else
    there is touched. ``built`` is removed."""
    if not out.exists():
        built.rename(out)
        return
    new_names = tuple(p.name for p in built.iterdir() if p.name != MANIFEST)
    old = check_replaceable(out, new_names)
    (out / MANIFEST).unlink(missing_ok=True)
    for name in sorted(old - {MANIFEST}):
        (out / name).unlink(missing_ok=True)
    for name in new_names:
        os.replace(built / name, out / name)
    os.replace(built / MANIFEST, out / MANIFEST)
    built.rmdir()
