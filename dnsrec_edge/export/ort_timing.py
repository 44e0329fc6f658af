"""ONNX Runtime latency of ONNX files, interleaved in one run (the runtime users would pick).

Timing several files round-robin (one round of each, then the next round) keeps a shared
machine's drift out of their ratios. :func:`ort_shares` exports each architecture with
untrained weights (latency does not depend on the weights) and returns its median latency
as a share of a reference architecture's, measured in the same run.

Example::

    stats = time_onnx(["baseline.onnx", "subnet.onnx"], threads=1)
    stats["subnet.onnx"]["median_ms"] / stats["baseline.onnx"]["median_ms"]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

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


def ort_shares(
    archs: Sequence[ArchSpec],
    reference: ArchSpec,
    threads: int = 1,
    repeat: int = 20,
    number: int = 20,
) -> list[float]:
    """Each architecture's ONNX Runtime median latency at batch 1 as a share of
    ``reference``'s, all exported with untrained weights and timed in one interleaved run."""
    import torch

    from dnsrec_edge.export.onnx_export import export_onnx
    from dnsrec_edge.models.sasrec import SASRec

    with tempfile.TemporaryDirectory(prefix="dnsrec-ort-") as tmp:
        paths = []
        torch.manual_seed(0)
        for i, arch in enumerate([reference, *archs]):
            path = Path(tmp) / f"arch{i}.onnx"
            export_onnx(SASRec(arch).eval(), path, batch=1)
            paths.append(path)
        stats = time_onnx(paths, threads=threads, repeat=repeat, number=number)
    base = stats[str(paths[0])]["median_ms"]
    return [stats[str(p)]["median_ms"] / base for p in paths[1:]]
