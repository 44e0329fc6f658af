"""Export a SASRec checkpoint to ONNX and validate it before the file appears."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dnsrec_edge.errors import CheckpointMismatch, ExportError
from dnsrec_edge.export.onnx_export import export_onnx, require_writable_folder
from dnsrec_edge.export.quantize import (
    calibration_inputs,
    check_quantized,
    quantize_onnx,
    require_scheme,
)
from dnsrec_edge.export.validate import ValidationReport, dataset_inputs, validate_onnx
from dnsrec_edge.fsio import ensure_new

if TYPE_CHECKING:
    from dnsrec_edge.data.dataset import Dataset

log = logging.getLogger(__name__)


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    topk: int = 0,
    batch: int | None = None,
    dataset: Dataset | str | None = None,
    rows: int = 512,
    force: bool = False,
    quantize: str | None = None,
) -> tuple[Path, ValidationReport]:
    """Export the SASRec in ``checkpoint`` to ``out`` and validate it against PyTorch.

    The file is exported beside ``out`` under a temporary name and only renamed to ``out``
    once :func:`validate_onnx` passed, so a failed validation leaves nothing behind.
    ``dataset`` (the one the model was trained on) supplies real histories for validation;
    without it, synthetic histories are used. ``quantize="int8"`` writes the int8 file
    instead (``export/quantize.py``): calibrated on ``dataset``'s validation histories and
    published only once it keeps the float32 file's accuracy on its test users
    (``report.quantized``).
    """
    from dnsrec_edge.train.checkpoint import load_checkpoint

    if quantize is not None:
        require_scheme(quantize)
        if dataset is None:
            raise ExportError(
                f"--quantize {quantize} calibrates and checks on real histories; pass --dataset "
                "(the dataset the model was trained on)"
            )
    out = ensure_new(out, force)
    require_writable_folder(out.parent)
    model, meta = load_checkpoint(checkpoint)
    if meta.get("kind") != "sasrec":
        raise CheckpointMismatch(
            f"'{checkpoint}' holds a {meta.get('kind')} checkpoint; export takes a plain SASRec "
            "(run dnsrec-edge prune on the search run first and export its model.pt)"
        )
    inputs = None
    if isinstance(dataset, (str, Path)):
        from dnsrec_edge.data.load import load_dataset

        dataset = load_dataset(dataset, quiet=True)
    if dataset is not None:
        if meta.get("dataset") and meta["dataset"] != dataset.fingerprint:
            raise CheckpointMismatch(
                f"checkpoint '{checkpoint}' was trained on other data than dataset "
                f"'{dataset.name}'; validate with the dataset it was trained on"
            )
        inputs = dataset_inputs(dataset, model.arch.max_len, rows)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp_int8 = out.with_name(f".{out.name}.{os.getpid()}.int8.tmp")
    metadata = {"dataset": meta.get("dataset") or "", "checkpoint": Path(checkpoint).name}
    try:
        export_onnx(model, tmp, batch=batch, topk=topk, metadata=metadata, force=True)
        report = validate_onnx(tmp, model, inputs)
        if quantize is not None:
            calibration = calibration_inputs(dataset, model.arch.max_len)
            quantize_onnx(tmp, tmp_int8, calibration, quantize)
            checked = check_quantized(tmp_int8, tmp, dataset)
            report.quantized = checked.to_dict() | {"path": str(out)}
            os.replace(tmp_int8, out)
        else:
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_int8.unlink(missing_ok=True)
    report.path = str(out)
    if dataset is not None:
        report.inputs = f"{dataset.name} test"
    log.debug("wrote %s", out)
    return out, report
