"""Validate an exported ONNX file against the PyTorch model it came from, failing hard.

Checks, in order: ``onnx.checker`` (full check), the op set and the id range guard
(:func:`check_graph`), the ArchSpec in the file's metadata, then ONNX Runtime against
``SASRec.predict`` on the given batches by the toolkit's one comparison rule
(:mod:`dnsrec_edge.compare`: every row's max abs difference <= ``atol``, every row's top-``k``
list identical up to ties within twice the row's own error), applied to the in-graph
``topk_items`` too. Every mismatch is listed in the :class:`OutputMismatch` raised.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from dnsrec_edge.compare import compare_scores, differing_rows, topk_indices
from dnsrec_edge.errors import CheckpointMismatch, InputFileError, OutputMismatch
from dnsrec_edge.export.onnx_export import INPUT, META_PREFIX, check_graph
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.sasrec import SASRec

log = logging.getLogger(__name__)


@dataclass
class ValidationReport:
    """Outcome of a passed validation (a failed one raises)."""

    path: str
    rows: int
    max_abs_diff: float
    k: int
    tied_rows: int  # rows whose top-k lists differ only among scores tied within the row's error
    outputs: list[str]
    inputs: str  # "given" or "synthetic"
    quantized: dict | None = None  # export --quantize: the int8 file's QuantReport.to_dict()

    def to_dict(self) -> dict:
        return asdict(self)


def synthetic_inputs(n_items: int, max_len: int, rows: int = 64, seed: int = 0) -> np.ndarray:
    """Left-padded random histories ``(rows, max_len)`` int64 of random lengths.

    Row 0 is all padding; row 1 holds out-of-range ids (negative and > n_items) so the
    graph's range guard is exercised against PyTorch's.
    """
    rng = np.random.default_rng(seed)
    seqs = np.zeros((rows, max_len), dtype=np.int64)  # (U, L)
    for r in range(1, rows):
        n = int(rng.integers(1, max_len + 1))
        seqs[r, max_len - n :] = rng.integers(1, n_items + 1, size=n)
    if rows > 1:
        seqs[1, -3:] = [-7, n_items + 1, n_items + 1000]
    return seqs


def dataset_inputs(dataset, max_len: int, rows: int = 512) -> np.ndarray:
    """Real histories for validation: the first ``rows`` test inputs of ``dataset``, (U, L)."""
    from dnsrec_edge.data.batching import eval_inputs

    item_seq, _ = eval_inputs(dataset, "test", max_len)
    return item_seq[:rows].numpy()


def validate_onnx(
    onnx_path: str | Path,
    model: SASRec,
    inputs: np.ndarray | torch.Tensor | None = None,
    *,
    atol: float = 1e-4,
    k: int = 10,
    batch_size: int = 64,
) -> ValidationReport:
    """Compare ONNX Runtime with ``model.predict`` on ``inputs`` (U, L) int64; raise on any mismatch.

    ``inputs=None`` uses :func:`synthetic_inputs`; pass real batches (e.g. ``eval_inputs``)
    where you have the dataset. Sequences are left-padded or cut to ``max_len``.
    """
    import onnx
    import onnxruntime as ort

    path = Path(onnx_path)
    if not path.is_file():
        raise InputFileError(f"ONNX file '{path}' does not exist; export it first")
    try:
        onnx.checker.check_model(str(path), full_check=True)
        proto = onnx.load(str(path))
    except (
        onnx.checker.ValidationError,
        onnx.onnx_cpp2py_export.shape_inference.InferenceError,
        ValueError,
    ) as err:
        raise OutputMismatch(f"'{path}' fails onnx.checker ({err}); re-export it") from err
    check_graph(proto)
    _check_arch(path, proto, model.arch)

    arch = model.arch
    given = inputs is not None
    seqs = _fit_len(
        np.asarray(inputs if given else synthetic_inputs(arch.n_items, arch.max_len)), arch.max_len
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    static = session.get_inputs()[0].shape[0]
    step = static if isinstance(static, int) else batch_size

    was_training = model.training
    model.eval()
    try:
        ref, got = _run_both(model, session, seqs, step)
    finally:
        model.train(was_training)

    k = min(k, arch.n_items)
    mismatches, max_diff, ties = _compare(ref, got, names, k, atol)
    if mismatches:
        raise OutputMismatch(
            f"ONNX Runtime disagrees with PyTorch on '{path}' in {len(mismatches)} place(s) "
            f"(tolerance {atol:g}, top-{k}); re-export with the matching model: "
            + "; ".join(mismatches)
        )
    report = ValidationReport(
        str(path), len(seqs), max_diff, k, ties, names, "given" if given else "synthetic"
    )
    log.debug(
        "validated %s: %d rows, max abs diff %.3g, top-%d identical", path, len(seqs), max_diff, k
    )
    return report


def _check_arch(path: Path, proto, arch: ArchSpec) -> None:
    props = {p.key: p.value for p in proto.metadata_props}
    text = props.get(META_PREFIX + "archspec")
    if text is None:
        return
    if ArchSpec.from_dict(json.loads(text)) != arch:
        raise CheckpointMismatch(
            f"'{path}' was exported from another architecture than the model it is checked "
            "against; validate it with the checkpoint it was exported from"
        )


def _fit_len(seqs: np.ndarray, max_len: int) -> np.ndarray:
    """Keep the last ``max_len`` ids of each row, left-padding shorter rows with 0."""
    seqs = seqs.astype(np.int64, copy=False)
    if seqs.ndim != 2:
        raise InputFileError(
            f"validation inputs must be 2-D (rows, length), got shape {seqs.shape}"
        )
    if seqs.shape[1] >= max_len:
        return np.ascontiguousarray(seqs[:, -max_len:])
    pad = np.zeros((len(seqs), max_len - seqs.shape[1]), dtype=np.int64)
    return np.concatenate([pad, seqs], axis=1)


def _run_both(model: SASRec, session, seqs: np.ndarray, step: int):
    """Outputs of torch (scores only) and ORT (every output) over ``seqs`` in chunks of ``step``."""
    ref, got = [], []
    for start in range(0, len(seqs), step):
        chunk = seqs[start : start + step]
        n = len(chunk)
        if n < step:  # static batch: pad the last chunk with all-padding rows
            chunk = np.concatenate([chunk, np.zeros((step - n, chunk.shape[1]), np.int64)])
        with torch.no_grad():
            ref.append(model.predict(torch.from_numpy(chunk)).numpy()[:n])
        got.append([o[:n] for o in session.run(None, {INPUT: chunk})])
    return np.concatenate(ref), [np.concatenate(parts) for parts in zip(*got, strict=True)]


def _compare(ref: np.ndarray, got: list[np.ndarray], names: list[str], k: int, atol: float):
    """Every mismatch between the reference scores and the ONNX outputs, max abs diff, ties."""
    out = dict(zip(names, got, strict=True))
    scores = out["scores"]
    result = compare_scores(scores, ref, atol=atol, k=k, reference="PyTorch")
    mismatches, ties = list(result.mismatches), result.tied_rows
    if scores.shape != ref.shape or "topk_items" not in out:
        return mismatches, result.max_abs_diff, ties
    items, top_scores = out["topk_items"], out["topk_scores"]
    if items.min(initial=1) < 1 or items.max(initial=1) > ref.shape[1]:
        mismatches.append(f"topk_items holds ids outside 1..{ref.shape[1]}")
        items = np.clip(items, 1, ref.shape[1])
    ref_items = topk_indices(ref, items.shape[1]) + 1
    bad, graph_ties = differing_rows(ref, items - 1, ref_items - 1, result.noise)
    ties = max(ties, graph_ties)
    for row in bad:
        mismatches.append(
            f"row {row}: topk_items {items[row].tolist()} != PyTorch's {ref_items[row].tolist()}"
        )
    ref_scores = np.take_along_axis(ref, items - 1, axis=1)
    sdiff = np.abs(top_scores - ref_scores).max(axis=1)
    for row in np.flatnonzero(~(sdiff <= atol)):
        mismatches.append(f"row {row}: topk_scores max abs diff {sdiff[row]:.3g} > {atol:g}")
    return mismatches, result.max_abs_diff, ties
