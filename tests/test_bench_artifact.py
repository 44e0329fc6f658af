"""Tiny SASRec artifacts for the bench tests, made by the toolkit's own export and compile."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tvm")

TARGETS = {"x86_64": "x86_64", "aarch64": "arm64"}  # uname -m -> target preset


def build_artifact(out: Path, arch: str = "x86_64", seed: int = 0, int8: bool = False) -> Path:
    """Export a tiny SASRec to ONNX (``int8``: quantized, calibrated on random histories) and
    compile it for ``arch``; return the artifact folder."""
    import numpy as np
    import torch

    from dnsrec_edge.compile.build import compile as compile_model
    from dnsrec_edge.export.onnx_export import export_onnx
    from dnsrec_edge.export.quantize import quantize_onnx
    from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
    from dnsrec_edge.models.sasrec import SASRec

    torch.manual_seed(seed)
    arch_spec = ArchSpec(n_items=300, max_len=16, hidden=32, blocks=(BlockSpec(2, 16, 64),))
    onnx_path = export_onnx(SASRec(arch_spec).eval(), out.with_suffix(".onnx"))
    if int8:
        histories = np.random.default_rng(seed).integers(1, 301, (64, 16))
        onnx_path = quantize_onnx(onnx_path, out.with_suffix(".int8.onnx"), histories)
    return compile_model(onnx_path, TARGETS[arch], out, quiet=True).path


def test_a_folder_that_is_no_artifact_is_refused(tmp_path):
    from dnsrec_edge.bench.run import benchmark
    from dnsrec_edge.errors import InputFileError

    with pytest.raises(InputFileError, match="is not a compiled artifact"):
        benchmark(tmp_path / "nothing-here", rpc="127.0.0.1:9")
