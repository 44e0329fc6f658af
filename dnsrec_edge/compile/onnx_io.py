"""Read an ONNX model for compilation: validate it, pin static shapes, fold shape arithmetic.

TVM 0.27's ONNX importer fails on the ``Shape -> Gather`` chains that ``torch.onnx.export``
emits for ``view``/``reshape``; ONNX Runtime's basic graph optimisation (constant folding with
the input shape pinned) removes them, so the importer only sees static shapes.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dnsrec_edge.errors import CompileError, InputFileError

log = logging.getLogger(__name__)


@dataclass
class OnnxModel:
    """A loaded ONNX model and the facts the compiler needs about it."""

    path: Path
    proto: Any  # onnx.ModelProto
    input_name: str
    input_dtype: str
    input_shape: list[int | None]  # None where the dimension is symbolic
    output_names: list[str]
    metadata: dict[str, str]

    @property
    def archspec(self) -> dict | None:
        text = self.metadata.get("dnsrec_edge.archspec")
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            log.warning("ONNX metadata dnsrec_edge.archspec in %s is not JSON; ignored", self.path)
            return None


def load_onnx(path: str | Path) -> OnnxModel:
    """Load and check an ONNX file; ``InputFileError`` with one sentence if it is unusable."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputFileError(
            f"ONNX file '{path}' does not exist; export one with `dnsrec-edge export`"
        )
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, onnx.onnx_cpp2py_export.checker.ValidationError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "invalid graph"
        raise InputFileError(f"'{path}' is not a valid ONNX model ({first}); re-export it") from err
    except Exception as err:  # protobuf's DecodeError and friends: the file is not ONNX
        raise InputFileError(
            f"'{path}' is not a readable ONNX file ({type(err).__name__}); it may be truncated or "
            "not ONNX at all, re-export it"
        ) from err
    graph_inputs = [
        i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
    ]
    if len(graph_inputs) != 1:
        raise InputFileError(
            f"'{path}' has {len(graph_inputs)} inputs; a SASRec model has exactly one (item_seq)"
        )
    inp = graph_inputs[0]
    tensor_type = inp.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    if len(dims) != 2 or dtype != "int64":
        raise InputFileError(
            f"'{path}' input '{inp.name}' is {dtype} of rank {len(dims)}; expected int64 (batch, seq_len)"
        )
    return OnnxModel(
        path=path,
        proto=proto,
        input_name=inp.name,
        input_dtype=dtype,
        input_shape=dims,
        output_names=[o.name for o in proto.graph.output],
        metadata={p.key: p.value for p in proto.metadata_props},
    )


def check_operators(model: OnnxModel) -> None:
    """``CompileError`` naming the first operator (and its node) TVM's importer lacks."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    supported = _get_convert_map()
    for index, node in enumerate(model.proto.graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type not in supported:
            domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
            name = node.name or f"#{index}"
            raise CompileError(
                f"ONNX operator '{domain}{node.op_type}' (node '{name}') in '{model.path}' is not "
                "supported by TVM's ONNX importer; export the model without it"
            )


def static_shape(model: OnnxModel, batch: int, seq_len: int | None) -> list[int]:
    """Resolve the ``(batch, seq_len)`` to compile for."""
    fixed_batch, fixed_len = model.input_shape
    if fixed_batch is not None and fixed_batch != batch:
        raise InputFileError(
            f"'{model.path}' was exported for batch {fixed_batch}, not {batch}; "
            f"pass --batch {fixed_batch} or export with a dynamic batch"
        )
    if seq_len is None:
        if fixed_len is None:
            raise InputFileError(
                f"'{model.path}' has a dynamic sequence length; pass --seq-len (e.g. the model's max_len)"
            )
        seq_len = fixed_len
    elif fixed_len is not None and fixed_len != seq_len:
        raise InputFileError(
            f"'{model.path}' was exported for sequence length {fixed_len}, not {seq_len}; "
            f"pass --seq-len {fixed_len}"
        )
    if batch < 1 or seq_len < 1:
        raise InputFileError(f"batch and seq_len must be >= 1 (got {batch}, {seq_len})")
    return [batch, seq_len]


def fold_static(model: OnnxModel, shape: list[int]) -> Any:
    """The model with its input pinned to ``shape`` and shape arithmetic folded (ModelProto)."""
    import onnx
    import onnxruntime as ort

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    for graph_input in proto.graph.input:
        if graph_input.name == model.input_name:
            for dim, value in zip(graph_input.type.tensor_type.shape.dim, shape, strict=True):
                dim.ClearField("dim_param")
                dim.dim_value = value
    with tempfile.TemporaryDirectory(prefix="dnsrec-fold-") as tmp:
        out = Path(tmp) / "folded.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(out)
        try:
            ort.InferenceSession(
                proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise CompileError(
                f"ONNX Runtime cannot load '{model.path}' with input shape {shape} ({err}); "
                "check the model and --batch/--seq-len"
            ) from err
        return onnx.load(str(out))


def reference_input(model: OnnxModel, shape: list[int], n_items: int, seed: int = 0) -> np.ndarray:
    """A deterministic ``item_seq``: ids in 1..n_items, each row left-padded by a random amount."""
    rng = np.random.default_rng(seed)
    batch, seq_len = shape
    seq = rng.integers(1, n_items + 1, size=(batch, seq_len), dtype=np.int64)
    for row in range(batch):
        seq[row, : rng.integers(0, seq_len)] = 0  # left padding, keep at least one item
    return seq


def run_onnxruntime(
    model: OnnxModel, inputs: np.ndarray, threads: int | None = None
) -> list[np.ndarray]:
    """All outputs of the ORIGINAL model on ``inputs`` with ONNX Runtime (the reference)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        model.proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {model.input_name: inputs})
