"""ONNX Runtime latency of ONNX files, interleaved in one run (the runtime users would pick).

Timing several files round-robin (one round of each, then the next round) keeps a shared
machine's drift out of their ratios. :func:`ort_shares` exports each architecture with
untrained weights (latency does not depend on the weights) and returns its median latency
as a share of a reference architecture's, measured in the same run. :class:`OrtLatencyModel`
is a cost model that measures instead of predicting: a latency budget on this host then
rests on measured latencies, not on a prior.

Example::

    stats = time_onnx(["baseline.onnx", "subnet.onnx"], threads=1)
    stats["subnet.onnx"]["median_ms"] / stats["baseline.onnx"]["median_ms"]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dnsrec_edge.models.archspec import ArchSpec


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feed(session, seed: int) -> dict[str, np.ndarray]:
    feed = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        n_items = int(session.get_modelmeta().custom_metadata_map.get("dnsrec_edge.n_items", 100))
        rng = np.random.default_rng(seed)
        feed[inp.name] = rng.integers(1, n_items + 1, size=shape).astype(np.int64)
    return feed


def time_onnx(
    paths: Sequence[str | Path],
    threads: int = 1,
    repeat: int = 30,
    number: int = 20,
    warmup: int = 5,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per file: ``median_ms``, ``p99_ms``, ``mean_ms`` over ``repeat`` rounds of ``number``
    calls each, the files interleaved round by round."""
    sessions = {str(p): _session(Path(p), threads) for p in paths}
    feeds = {p: _feed(s, seed) for p, s in sessions.items()}
    for p, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feeds[p])
    samples: dict[str, list[float]] = {p: [] for p in sessions}
    for _ in range(repeat):
        for p, s in sessions.items():
            t0 = time.perf_counter()
            for _ in range(number):
                s.run(None, feeds[p])
            samples[p].append((time.perf_counter() - t0) / number * 1e3)
    return {
        p: {
            "median_ms": float(np.median(v)),
            "p99_ms": float(np.percentile(v, 99)),
            "mean_ms": float(np.mean(v)),
            "threads": threads,
        }
        for p, v in samples.items()
    }


def _exported(arch: ArchSpec, folder: Path, name: str) -> Path:
    """``arch`` with seeded untrained weights as a static batch-1 ONNX file, for timing only.

    It goes through torch's TorchScript exporter, about three times faster than the dynamo
    exporter that ``export_onnx`` uses for shipped files; the two graphs of one architecture
    ran within 2 % of each other under ONNX Runtime here. The files a user ships and the
    pipeline's bench always come from ``export_onnx``.
    """
    import warnings

    import torch

    from dnsrec_edge.export.onnx_export import INPUT, OPSET, _Predictor
    from dnsrec_edge.models.sasrec import SASRec

    torch.manual_seed(0)
    path = folder / f"{name}.onnx"
    wrapper = _Predictor(SASRec(arch).eval(), 0).eval()
    example = torch.zeros(1, arch.max_len, dtype=torch.long)  # (B, L)
    example[:, -1] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=[INPUT], opset_version=OPSET, dynamo=False
        )
    return path


@dataclass
class OrtLatencyModel:
    """A :class:`CostModel` whose latency is measured: each architecture is exported with
    untrained weights and timed under ONNX Runtime on this host at batch 1 (median ms),
    once (cached by architecture). FLOPs come from the exact analysis."""

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
        if not todo:
            return
        with tempfile.TemporaryDirectory(prefix="dnsrec-ort-") as tmp:
            paths = [_exported(a, Path(tmp), f"arch{i}") for i, a in enumerate(todo)]
            stats = time_onnx(paths, self.threads, self.repeat, self.number)
        for arch, path in zip(todo, paths, strict=True):
            self._cache[arch.to_json()] = stats[str(path)]["median_ms"]

    def fit(self, records: list[dict[str, Any]]) -> OrtLatencyModel:
        """Nothing to fit: it measures."""
        return self


def ort_shares(
    archs: Sequence[ArchSpec],
    reference: ArchSpec,
    threads: int = 1,
    repeat: int = 20,
    number: int = 20,
) -> list[float]:
    """Each architecture's ONNX Runtime median latency at batch 1 as a share of
    ``reference``'s, all exported with untrained weights and timed in one interleaved run."""
    with tempfile.TemporaryDirectory(prefix="dnsrec-ort-") as tmp:
        paths = [_exported(a, Path(tmp), f"arch{i}") for i, a in enumerate([reference, *archs])]
        stats = time_onnx(paths, threads=threads, repeat=repeat, number=number)
    base = stats[str(paths[0])]["median_ms"]
    return [stats[str(p)]["median_ms"] / base for p in paths[1:]]
