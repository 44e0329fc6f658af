"""int8 ONNX files written by ONNX Runtime's quantization tools, checked against float32.

Scheme ``int8`` (the only one): static QDQ, the form ``onnxruntime.quantization.quantize_static``
writes (``QuantizeLinear``/``DequantizeLinear`` pairs, which TVM's ONNX importer reads):

- every linear layer's weight int8, per output channel, symmetric, in 7 bits
  (``reduce_range``): on x86 CPUs without AVX-512 VNNI, ONNX Runtime multiplies uint8 by int8
  with ``vpmaddubsw``, whose 16-bit pair sums saturate on full 8-bit weights. Its scores then
  left the exact int8 arithmetic (a TVM build of the same file differed by 0.098, with
  another top-10, on an AVX2 host) and lost accuracy: the top-10 overlap of toy ml-100k
  models with float32 rose from 0.91-0.95 to 0.97-0.98 with 7 bits;
- the item and position tables (the embedding ``Gather``s) uint8: the item table is stored
  once, and the scoring reads the same 8-bit table;
- activations uint8, static: calibrated (99.999th percentile) on real validation histories of
  the dataset the model was trained on. Attention's activation-by-activation matmuls (scores
  and the value product) stay float32: quantising them too gave 0.95x the float32 NDCG@10
  on a briefly trained ml-1m model, against 1.00x without.

An int8 model is not bit-equal to its float32 source, so :func:`check_quantized` measures it
on every test user of the dataset (full ranking, seen items excluded) and refuses it unless
its NDCG@10 is at least ``MIN_NDCG_RATIO`` (0.99) of the float32 file's and the mean top-10
overlap of the two files' recommendations at least ``MIN_TOP10_OVERLAP`` (0.9).

Example::

    quantize_onnx("model.onnx", "model-int8.onnx", calibration_inputs(dataset, 200))
    report = check_quantized("model-int8.onnx", "model.onnx", dataset)
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dnsrec_edge.errors import ExportError, OutputMismatch

if TYPE_CHECKING:
    from dnsrec_edge.data.dataset import Dataset

log = logging.getLogger(__name__)

SCHEMES = ("int8",)
MIN_NDCG_RATIO = 0.99
MIN_TOP10_OVERLAP = 0.90
CALIBRATION_ROWS = 256
_CALIBRATION_BATCH = 32
# The calibrator keeps every batch's intermediate tensors until it builds its histograms, and
# the scoring reads the whole (transposed) item table: 260 MB a batch at 10^6 items. Above
# this many bytes the batches are fed in strides, each folded into the histograms at once.
CALIBRATION_MEMORY = 1 << 30


@dataclass
class QuantReport:
    """Outcome of a passed int8 check (a failed one raises)."""

    path: str
    scheme: str
    bytes: int
    fp32_bytes: int
    users: int  # test users measured
    ndcg_fp32: float  # full-ranking test NDCG@10, seen items excluded
    ndcg_int8: float
    top10_overlap: float  # mean share of each user's top-10 that both files recommend

    @property
    def ndcg_ratio(self) -> float:
        return self.ndcg_int8 / self.ndcg_fp32 if self.ndcg_fp32 else 1.0

    def to_dict(self) -> dict:
        return asdict(self) | {"ndcg_ratio": self.ndcg_ratio}


def require_scheme(scheme: str) -> None:
    """Refuse an unknown quantization scheme in one sentence."""
    if scheme not in SCHEMES:
        raise ExportError(
            f"unknown quantization scheme '{scheme}'; use one of {', '.join(SCHEMES)}"
        )


def calibration_inputs(dataset: Dataset, max_len: int, rows: int = CALIBRATION_ROWS) -> np.ndarray:
    """Real histories to calibrate activations on: the validation inputs of the first
    ``rows`` users (never their test items), ``(rows, max_len)`` int64."""
    from dnsrec_edge.data.batching import eval_inputs

    return eval_inputs(dataset, "valid", max_len)[0][:rows].numpy()


def quantize_onnx(
    fp32_path: str | Path, out: str | Path, calibration: np.ndarray, scheme: str = "int8"
) -> Path:
    """Write the ``scheme`` (``int8``) QDQ file of ``fp32_path`` to ``out`` with ONNX Runtime's
    ``quantize_static``; the caller checks it (:func:`check_quantized`) before publishing it."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from dnsrec_edge.export.onnx_export import INPUT, META_PREFIX  # imports torch: not at load

    require_scheme(scheme)
    proto = onnx.load(str(fp32_path))
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    step = batch.dim_value if batch.HasField("dim_value") else _CALIBRATION_BATCH
    chunks = [calibration[i : i + step] for i in range(0, len(calibration) - step + 1, step)]
    if not chunks:
        raise ExportError(
            f"calibration needs at least {step} histories, got {len(calibration)}; use a "
            "dataset with more users"
        )
    stride = calibration_stride(proto, step, len(chunks))
    extra = {}
    if stride < len(chunks):
        chunks = chunks[: len(chunks) // stride * stride]  # the strides must tile the batches
        extra["CalibStridedMinMax"] = stride  # (despite its name, strides any calibrator)

    class Histories(CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, len(chunks))

        def __len__(self) -> int:
            return len(chunks)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.batches = iter(chunks[start_index:end_index])

        def get_next(self):
            chunk = next(self.batches, None)
            return None if chunk is None else {INPUT: np.ascontiguousarray(chunk, np.int64)}

    with _quiet_quantizer():
        quantize_static(
            str(fp32_path),
            str(out),
            Histories(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.Percentile,
            op_types_to_quantize=["MatMul", "Gemm", "Gather"],
            nodes_to_quantize=_weight_nodes(proto),
            extra_options=extra,
        )
    quantized = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    props[META_PREFIX + "quantize"] = scheme
    onnx.helper.set_model_props(quantized, props)
    onnx.save(quantized, str(out))
    return Path(out)


def calibration_stride(proto, batch: int, batches: int) -> int:
    """How many calibration batches to run before folding them into the histograms: all of
    them unless their kept tensors, about the scoring's item table and scores per batch,
    would pass :data:`CALIBRATION_MEMORY`."""
    tables = [t.dims for t in proto.graph.initializer if len(t.dims) == 2]
    items, hidden = max(tables, key=lambda d: d[0] * d[1], default=(0, 0))  # the item table
    per_batch = 4 * items * (hidden + batch)
    if per_batch * batches <= CALIBRATION_MEMORY:
        return batches
    return max(1, CALIBRATION_MEMORY // per_batch)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence the quantizer's prints (histogram settings) and its root-logger advice."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _weight_nodes(proto) -> list[str]:
    """Names of the nodes that read a constant table: linear layers and the embedding gathers."""
    consts = {i.name for i in proto.graph.initializer}
    kinds = {"MatMul": 1, "Gemm": 1, "Gather": 0}  # which input holds the constant
    return [
        n.name
        for n in proto.graph.node
        if n.op_type in kinds and n.input[kinds[n.op_type]] in consts
    ]


def check_quantized(
    int8_path: str | Path, fp32_path: str | Path, dataset: Dataset, threads: int = 1
) -> QuantReport:
    """Measure the int8 file against the float32 one on every test user of ``dataset``;
    :class:`OutputMismatch` unless it keeps ``MIN_NDCG_RATIO`` of NDCG@10 and
    ``MIN_TOP10_OVERLAP`` of the top-10."""
    from dnsrec_edge.evaluate import evaluate

    fp32, int8 = _OrtScorer(fp32_path, threads), _OrtScorer(int8_path, threads)
    ndcg = {}
    for name, scorer in (("fp32", fp32), ("int8", int8)):  # users in the same order for both
        ndcg[name] = evaluate(scorer, dataset, "test", fp32.max_len, protocols=("full",))["full"][
            "ndcg@10"
        ]
    a, b = np.concatenate(fp32.top10), np.concatenate(int8.top10)
    overlaps = [len(set(x) & set(y)) / a.shape[1] for x, y in zip(a, b, strict=True)]
    report = QuantReport(
        str(int8_path),
        "int8",
        Path(int8_path).stat().st_size,
        Path(fp32_path).stat().st_size,
        len(overlaps),
        float(ndcg["fp32"]),
        float(ndcg["int8"]),
        float(np.mean(overlaps)),
    )
    problems = []
    if report.ndcg_ratio < MIN_NDCG_RATIO:
        problems.append(
            f"test NDCG@10 {report.ndcg_int8:.4f} is {report.ndcg_ratio:.3f}x the float32 "
            f"file's {report.ndcg_fp32:.4f} (at least {MIN_NDCG_RATIO}x needed)"
        )
    if report.top10_overlap < MIN_TOP10_OVERLAP:
        problems.append(
            f"top-10 overlap with float32 is {report.top10_overlap:.3f} (at least "
            f"{MIN_TOP10_OVERLAP} needed)"
        )
    if problems:
        raise OutputMismatch(
            f"the int8 model loses accuracy on {dataset.name}'s {report.users} test users: "
            + "; ".join(problems)
            + "; ship the float32 file for this model"
        )
    log.info(
        "int8: NDCG@10 %.4f vs %.4f float32 (%.3fx), top-10 overlap %.3f, %d of %d bytes",
        report.ndcg_int8, report.ndcg_fp32, report.ndcg_ratio, report.top10_overlap,
        report.bytes, report.fp32_bytes,
    )  # fmt: skip
    return report


def _top10(scores: np.ndarray) -> np.ndarray:
    k = min(10, scores.shape[1])
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


class _OrtScorer:
    """``item_seq (B, L) -> scores (B, n_items)`` under ONNX Runtime, in the file's batch;
    keeps each call's top-10 columns (``top10``) for the overlap check."""

    def __init__(self, path: str | Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        self.batch = shape[0] if isinstance(shape[0], int) else None
        self.max_len = int(shape[1])
        self.top10: list[np.ndarray] = []

    def __call__(self, item_seq) -> np.ndarray:
        seqs = np.asarray(item_seq, dtype=np.int64)
        step = self.batch or len(seqs)
        out = []
        for start in range(0, len(seqs), step):
            chunk = seqs[start : start + step]
            n = len(chunk)
            if n < step:  # a static batch: pad with all-padding rows
                chunk = np.concatenate([chunk, np.zeros((step - n, chunk.shape[1]), np.int64)])
            out.append(self.session.run(["scores"], {self.input: chunk})[0][:n])
        scores = np.concatenate(out)
        self.top10.append(_top10(scores))
        return scores
