"""ONNX Runtime latency of ONNX files, interleaved in one run (the runtime users would pick).

Timing several files round-robin (one round of each, then the next round) keeps a shared
machine's drift out of their ratios. :func:`timing_export` writes an architecture with
untrained weights (latency does not depend on the weights) for timing; the round-robin
itself is :func:`dnsrec_edge.timing.time_calls`.

Example::

    stats = time_onnx(["baseline.onnx", "subnet.onnx"], threads=1)
    stats["subnet.onnx"]["median_ms"] / stats["baseline.onnx"]["median_ms"]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.timing import time_calls


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
    calls = {p: functools.partial(s.run, None, _feed(s, seed)) for p, s in sessions.items()}
    return time_calls(calls, threads, repeat, number, warmup)


def timing_export(arch: ArchSpec, folder: Path, name: str) -> Path:
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
