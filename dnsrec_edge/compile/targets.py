"""Hardware targets: named presets read from ``targets/*.toml`` into frozen :class:`Target`s.

Shipped presets live in the repository's ``targets/`` folder. Users add a board by writing one
more TOML file (same keys as the shipped ones) into a folder named by ``$DNSREC_EDGE_TARGETS_DIR``
or passed as ``targets_dir``; a user file with a shipped name replaces the shipped preset.
Aliases (``aarch64`` -> ``arm64``) are resolved here and nowhere else.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dnsrec_edge import paths
from dnsrec_edge.errors import CrossCompilerMissing, InputFileError, UnknownTarget
from dnsrec_edge.hostinfo import host_arch

TARGETS_ENV = "DNSREC_EDGE_TARGETS_DIR"
HOST = "host"  # the target name that resolves to this machine's preset (compile/host.py)
AUTO = "auto"  # `threads = "auto"`: the board's usable cores
AUTO_THREADS_ELSEWHERE = 4  # an auto preset's threads when it is not this machine's arch
ARCHES = ("x86_64", "aarch64", "riscv64")
DEVICES = ("cpu", "cuda")
# SIMD width by -mcpu where the LLVM query cannot tell: TVM 0.27's ``llvm_get_vector_width``
# answers 512 for every x86-64 CPU, SSE-only ones included, which makes SSE builds use
# 16-lane register tiles that spill.
_X86_512 = ("x86-64-v4", "skylake-avx512", "cascadelake", "cooperlake", "icelake", "tigerlake",
            "sapphirerapids", "emeraldrapids", "graniterapids", "znver4", "znver5", "rocketlake")  # fmt: skip
_X86_256 = ("x86-64-v3", "haswell", "broadwell", "skylake", "alderlake", "raptorlake",
            "znver1", "znver2", "znver3", "bdver", "btver2", "sandybridge", "ivybridge")  # fmt: skip
_REQUIRED = (
    "name", "description", "arch", "device", "threads", "rpc_key", "peak_gflops",
    "mem_gbps", "idle_watts", "active_watts", "tvm", "sources",
)  # fmt: skip


@dataclass(frozen=True)
class Target:
    """One hardware target: how TVM compiles for it, how to link, and cost/power priors."""

    name: str
    description: str
    tvm: dict[str, Any]
    arch: str  # `uname -m` of the board: x86_64, aarch64, riscv64
    device: str  # "cpu" or "cuda"
    threads: int
    peak_gflops: float
    mem_gbps: float
    idle_watts: float
    active_watts: float
    rpc_key: str
    aliases: tuple[str, ...] = ()
    host: dict[str, Any] | None = None
    cross_compiler: str | None = None
    deb_package: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # the TOML file it came from
    threads_auto: bool = False  # threads = "auto" in its file: the board's usable cores
    requested: str | None = None  # the name asked for when it differs ("host")
    features: tuple[str, ...] = ()  # CPU features found on the host (host targets only)

    def with_threads(self, threads: int) -> Target:
        """This target with ``threads`` (and TVM's ``num-cores``) set: a user's choice."""
        if threads < 1:
            raise InputFileError(f"threads must be >= 1 (got {threads})")
        tvm_dict = dict(self.tvm)
        if "num-cores" in tvm_dict or self.device == "cpu":
            tvm_dict["num-cores"] = int(threads)
        return replace(self, threads=int(threads), tvm=tvm_dict, threads_auto=False)

    @property
    def runs_here(self) -> bool:
        """True if this machine can run the target's builds: a CPU target of its architecture."""
        return self.device == "cpu" and self.arch == host_arch()

    @property
    def vector_lanes(self) -> int:
        """float32 SIMD lanes of this target's CPU builds (0 for GPU targets)."""
        return vector_lanes(self.tvm, self.device)

    def tvm_target(self):
        """The ``tvm.target.Target`` (with its host for GPU targets)."""
        import tvm

        host = tvm.target.Target(self.host) if self.host else None
        return tvm.target.Target(self.tvm, host=host)

    def check_cross_compiler(self) -> str | None:
        """Path of the linker this target needs; ``CrossCompilerMissing`` if it is absent."""
        if self.device == "cuda" and shutil.which("nvcc") is None:
            raise CrossCompilerMissing(
                f"target '{self.name}' compiles its GPU kernels with 'nvcc', which is not on PATH; "
                "install the CUDA toolkit (Debian: sudo apt-get install nvidia-cuda-toolkit)"
            )
        if not self.cross_compiler:
            return None
        found = shutil.which(self.cross_compiler)
        if found is None:
            package = self.deb_package or "the package that provides it"
            raise CrossCompilerMissing(
                f"target '{self.name}' links with '{self.cross_compiler}', which is not installed; "
                f"install it with: sudo apt-get install {package}"
            )
        return found

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for ``targets show`` and manifests)."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "arch": self.arch,
            "device": self.device,
            "tvm": self.tvm,
            "host": self.host,
            "cross_compiler": self.cross_compiler,
            "deb_package": self.deb_package,
            "threads": self.threads,
            "rpc_key": self.rpc_key,
            "peak_gflops": self.peak_gflops,
            "mem_gbps": self.mem_gbps,
            "idle_watts": self.idle_watts,
            "active_watts": self.active_watts,
            "sources": self.sources,
            "path": str(self.path) if self.path else None,
            "threads_auto": self.threads_auto,
            "requested": self.requested,
            "features": list(self.features),
        }


def simd_bits(tvm: Mapping[str, Any]) -> int | None:
    """Width in bits of the vector registers an LLVM target dict names (``mtriple``, ``mcpu``,
    ``mattr``): 512, 256 or 128 on x86-64, 128 (NEON) on Arm; None when the dict does not say."""
    mattr = [str(m) for m in tvm.get("mattr") or ()]
    mcpu = str(tvm.get("mcpu") or "")
    triple = str(tvm.get("mtriple") or "")
    if triple.startswith("x86_64") or mcpu.startswith(("x86-64", "znver", "skylake")):
        if "+avx512f" in mattr or mcpu.startswith(_X86_512):
            return 512
        if "+avx2" in mattr or "+avx" in mattr or mcpu.startswith(_X86_256):
            return 256
        return 128
    if triple.startswith(("aarch64", "arm")):
        return 128  # NEON (SVE code is not generated: scalable vectors are not used here)
    return None


def vector_lanes(tvm: Mapping[str, Any], device: str = "cpu") -> int:
    """float32 SIMD lanes the default CPU schedules tile for (at least 4; 128-bit vectors when
    the dict does not say); 0 for GPU targets, whose kernels are not padded to vectors."""
    if device != "cpu" or tvm.get("kind") != "llvm":
        return 0
    return max((simd_bits(tvm) or 128) // 32, 4)


def _parse(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(f"cannot read target file '{path}' ({err}); fix or remove it") from err
    except tomllib.TOMLDecodeError as err:
        raise InputFileError(
            f"target file '{path}' is not valid TOML ({err}); fix or remove it"
        ) from err
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise InputFileError(
            f"target file '{path}' lacks {', '.join(missing)}; copy a shipped file from "
            f"'{paths.targets_dir()}' as a template"
        )
    problems = []
    if data["arch"] not in ARCHES:
        problems.append(f"arch '{data['arch']}' is not one of {', '.join(ARCHES)}")
    if data["device"] not in DEVICES:
        problems.append(f"device '{data['device']}' is not one of {', '.join(DEVICES)}")
    if not isinstance(data["tvm"], dict) or "kind" not in data["tvm"]:
        problems.append("[tvm] must be a table with a 'kind'")
    if data["device"] == "cuda" and not isinstance(data.get("host"), dict):
        problems.append("a cuda target needs a [host] table (the board's CPU)")
    auto = data["threads"] == AUTO
    if not auto and (not isinstance(data["threads"], int) or data["threads"] < 1):
        problems.append(f'threads must be a positive integer or "{AUTO}" (got {data["threads"]!r})')
    if problems:
        raise InputFileError(f"target file '{path}': " + "; ".join(problems))
    tvm_dict = dict(data["tvm"])
    threads = data["threads"]
    if auto:  # the board's usable cores: this machine's when it is of the preset's arch
        from dnsrec_edge.compile.host import usable_cores

        threads = usable_cores() if data["arch"] == host_arch() else AUTO_THREADS_ELSEWHERE
        if data["device"] == "cpu":
            tvm_dict["num-cores"] = threads
    try:
        return Target(
            name=str(data["name"]),
            aliases=tuple(str(a) for a in data.get("aliases", ())),
            description=str(data["description"]),
            tvm=tvm_dict,
            host=dict(data["host"]) if data.get("host") else None,
            arch=data["arch"],
            device=data["device"],
            cross_compiler=data.get("cross_compiler"),
            deb_package=data.get("deb_package"),
            threads=int(threads),
            threads_auto=auto,
            peak_gflops=float(data["peak_gflops"]),
            mem_gbps=float(data["mem_gbps"]),
            idle_watts=float(data["idle_watts"]),
            active_watts=float(data["active_watts"]),
            sources={str(k): str(v) for k, v in data["sources"].items()},
            rpc_key=str(data["rpc_key"]),
            path=path,
        )
    except (TypeError, ValueError) as err:
        raise InputFileError(f"target file '{path}' has a malformed value ({err})") from err


def _search_dirs(targets_dir: str | Path | None) -> list[Path]:
    dirs = [paths.targets_dir()]
    extra = targets_dir if targets_dir is not None else os.environ.get(TARGETS_ENV)
    if extra:
        extra = Path(extra).expanduser()
        if not extra.is_dir():
            raise InputFileError(
                f"targets folder '{extra}' does not exist; create it or fix {TARGETS_ENV}"
            )
        dirs.append(extra)
    return dirs


def list_targets(targets_dir: str | Path | None = None) -> list[Target]:
    """Every known target, sorted by name; user files override shipped ones of the same name."""
    found: dict[str, Target] = {}
    for folder in _search_dirs(targets_dir):
        for path in sorted(folder.glob("*.toml")):
            target = _parse(path)
            found[target.name] = target
    return sorted(found.values(), key=lambda t: t.name)


def host_target(targets_dir: str | Path | None = None, cpu=None) -> Target:
    """This machine as a target: the preset its CPU features match (``x86_64-avx512``,
    ``x86_64-avx2``, ``x86_64``, ``arm64``) with ``threads``/``num-cores`` set to its usable
    cores and ``requested == "host"`` (see :mod:`dnsrec_edge.compile.host`). A user target
    file named ``host`` replaces the detection. ``cpu`` (a ``HostCpu``) is for tests."""
    from dnsrec_edge.compile.host import detect_host

    targets = list_targets(targets_dir)
    for target in targets:
        if target.name == HOST:
            return target
    cpu = cpu or detect_host()
    preset = load_target(cpu.preset, targets_dir)
    tvm_dict = dict(preset.tvm)
    if cpu.extra_mattr:
        tvm_dict["mattr"] = [*tvm_dict.get("mattr", []), *cpu.extra_mattr]
    resolved = replace(
        preset,
        tvm=tvm_dict,
        requested=HOST,
        features=cpu.features,
        description=f"this host ({cpu.model or cpu.arch}, {cpu.cores} usable cores): "
        f"{preset.description}",
    )
    return resolved.with_threads(cpu.cores)


def load_target(name_or_alias: str, targets_dir: str | Path | None = None) -> Target:
    """The target called ``name_or_alias``; ``UnknownTarget`` lists the known ones."""
    targets = list_targets(targets_dir)
    for target in targets:
        if name_or_alias == target.name:
            return target
    if name_or_alias == HOST:
        return host_target(targets_dir)
    for target in targets:
        if name_or_alias in target.aliases:
            return target
    err = UnknownTarget(name_or_alias, [HOST, *(t.name for t in targets)])
    if "did you mean" not in str(err):  # no close name: try the aliases
        aliases = [a for t in targets for a in t.aliases]
        close = difflib.get_close_matches(name_or_alias, aliases, n=1)
        if close:
            owner = next(t.name for t in targets if close[0] in t.aliases)
            err.args = (f"{err.args[0]} (did you mean {owner}?)",)
    raise err
