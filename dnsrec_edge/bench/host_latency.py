"""Measured latency of architectures on this host, under ONNX Runtime or as TVM builds.

A latency budget on this host rests on measurements, not on a prior. Each architecture is
exported with untrained weights (latency does not depend on the weights), then timed at
batch 1 either under ONNX Runtime (``"ort"``: the runtime a user would otherwise pick) or as
this toolkit's default TVM build for the host target (``"tvm"``: the artifact it ships). All
architectures of one call are timed in one interleaved run, so a shared machine's drift
stays out of their ratios. :class:`HostLatencyModel` is a cost model that measures;
:func:`host_shares` gives latencies as shares of a reference measured in the same run.

Example::

    host_shares([subnet_arch], reference=baseline_arch, runtime="tvm", target="host")
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dnsrec_edge.errors import UnknownName
from dnsrec_edge.export.ort_timing import time_onnx, timing_export
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.timing import time_calls

RUNTIMES = {"ort": "ONNX Runtime", "tvm": "TVM builds"}


def runtime_name(search_result: dict) -> str:
    """The runtime a search stage's result was measured with, in words; results written
    before ``measured_with`` existed were measured under ONNX Runtime."""
    return RUNTIMES[search_result.get("measured_with") or "ort"]


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is one this host can time; else one sentence naming the choices."""
    if runtime not in RUNTIMES:
        raise UnknownName("runtime to measure latency with", runtime, RUNTIMES)
    return runtime


def _tvm_calls(
    files: dict[Path, ArchSpec], target: str, threads: int, folder: Path, seed: int = 0
) -> dict[str, Callable[[], object]]:
    """One call per ONNX file of an architecture: its default TVM build for ``target`` (at
    ``threads``) run on a fixed batch-1 history of random item ids."""
    import tvm

    from dnsrec_edge.compile.build import compile as compile_onnx
    from dnsrec_edge.compile.targets import load_target

    tgt = load_target(target).with_threads(threads)
    calls: dict[str, Callable[[], object]] = {}
    rng = np.random.default_rng(seed)
    for path, arch in files.items():
        art = compile_onnx(path, target=tgt, out_dir=folder / f"{path.stem}-tvm", quiet=True)
        spec = art.manifest["inputs"][0]
        history = rng.integers(1, arch.n_items + 1, size=spec["shape"]).astype(spec["dtype"])
        fn = art.load_vm(threads)[art.manifest["entry"]]
        args = (tvm.runtime.tensor(history, tvm.cpu()), *art.weights())
        calls[str(path)] = lambda fn=fn, args=args: fn(*args)
    return calls


def measure_archs(
    archs: Sequence[ArchSpec],
    runtime: str = "ort",
    target: str | None = None,
    threads: int = 1,
    repeat: int = 15,
    number: int = 20,
) -> list[float]:
    """Each architecture's median latency in ms at batch 1 on this host, all in one run."""
    with tempfile.TemporaryDirectory(prefix=f"dnsrec-{runtime}-") as tmp:
        paths = [timing_export(a, Path(tmp), f"arch{i}") for i, a in enumerate(archs)]
        if check_runtime(runtime) == "ort":
            stats = time_onnx(paths, threads, repeat, number)
        else:
            files = dict(zip(paths, archs, strict=True))
            calls = _tvm_calls(files, target or "host", threads, Path(tmp))
            stats = time_calls(calls, threads, repeat, number)
    return [stats[str(p)]["median_ms"] for p in paths]


@dataclass
class HostLatencyModel:
    """A :class:`CostModel` whose latency is measured on this host under ``runtime``
    (``"ort"`` or ``"tvm"``, the latter built for ``target``), once per architecture
    (cached). FLOPs come from the exact analysis."""

    runtime: str = "ort"
    target: str | None = None
    threads: int = 1
    repeat: int = 15
    number: int = 20
    measured: bool = True  # read by the search: costs carry measurement noise
    _cache: dict[str, float] = field(default_factory=dict, repr=False)

    def predict(self, arch: ArchSpec, target: Any = None):
        from dnsrec_edge.cost.model import Cost, FlopsModel

        self.predict_many([arch], target)
        return Cost(flops=FlopsModel().predict(arch).flops, latency_ms=self._cache[arch.to_json()])

    def predict_many(self, archs: Sequence[ArchSpec], target: Any = None) -> None:
        """Measure every architecture not yet measured, all in one interleaved run."""
        todo = list({a.to_json(): a for a in archs if a.to_json() not in self._cache}.values())
        if todo:
            ms = measure_archs(
                todo, self.runtime, self.target, self.threads, self.repeat, self.number
            )
            self._cache.update({a.to_json(): m for a, m in zip(todo, ms, strict=True)})

    def fit(self, records: list[dict[str, Any]]) -> HostLatencyModel:
        """Nothing to fit: it measures."""
        return self


def host_shares(
    archs: Sequence[ArchSpec],
    reference: ArchSpec,
    runtime: str = "ort",
    target: str | None = None,
    threads: int = 1,
    repeat: int = 20,
    number: int = 20,
) -> list[float]:
    """Each architecture's median latency at batch 1 under ``runtime`` as a share of
    ``reference``'s, all timed in one interleaved run."""
    base, *ms = measure_archs([reference, *archs], runtime, target, threads, repeat, number)
    return [m / base for m in ms]
