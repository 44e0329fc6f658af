"""Export a plain SASRec to ONNX: ``item_seq`` in, ``scores`` (and optionally in-graph top-k) out.

The graph comes from torch's ``torch.export``-based exporter (opset 18), which gives a clean
graph of MatMul / Softmax / LayerNormalization with the causal mask as an explicit ``Where``:
no contrib ``Attention`` op, which TVM's importer mishandles. ``SASRec.embed`` maps ids
outside ``0..n_items`` to padding with a ``Where`` before the embedding ``Gather``, so no
out-of-range id reaches a gather (TVM's gather is unchecked); :func:`check_graph` verifies
that guard and the op set in every exported file.

Model metadata (``metadata_props``): ``dnsrec_edge.archspec`` (ArchSpec JSON),
``dnsrec_edge.n_items``, ``dnsrec_edge.dataset`` (dataset fingerprint), ``dnsrec_edge.version``,
plus ``dnsrec_edge.topk``, ``dnsrec_edge.batch`` and ``dnsrec_edge.id_guard``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnsrec_edge.errors import ExportError, OutputMismatch, OutputNotWritable
from dnsrec_edge.fsio import atomic_write_bytes, ensure_new
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.sasrec import SASRec

log = logging.getLogger(__name__)

OPSET = 18
INPUT = "item_seq"
OUTPUTS = ("scores", "topk_items", "topk_scores")
META_PREFIX = "dnsrec_edge."
ID_GUARD = "ids outside 0..n_items are mapped to padding (0) by a Where before the embedding Gather"
# Every op the exporter may emit for SASRec; anything else (e.g. a contrib Attention) is refused.
ALLOWED_OPS = frozenset(
    {
        "Add", "And", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Div", "Elu",
        "CumSum",  # start-anchored positions (ArchSpec.positions)
        "Equal", "Expand", "Gather", "Greater", "Identity", "LayerNormalization", "Less",
        "Gemm", "MatMul", "Max", "Min", "Mul", "Neg", "Not", "Or", "Pow", "Range", "ReduceL2",
        "ReduceMean", "ReduceSum", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax",
        "Sqrt", "Squeeze", "Sub", "TopK", "Transpose", "Trilu", "Unsqueeze", "Where",
    }
)  # fmt: skip


class _Predictor(nn.Module):
    """``item_seq`` (B, L) -> scores (B, n_items) [, top-k item ids (B, k), top-k scores (B, k)]."""

    def __init__(self, model: SASRec, topk: int):
        super().__init__()
        self.model, self.topk = model, topk

    def forward(self, item_seq: torch.Tensor):
        scores = self.model.predict(item_seq)  # (B, n_items)
        if not self.topk:
            return scores
        top_scores, top_idx = torch.topk(scores, self.topk, dim=-1)  # (B, k) each
        return scores, top_idx + 1, top_scores  # column j is item id j + 1


def export_onnx(
    model: SASRec,
    path: str | Path,
    *,
    batch: int | None = None,
    topk: int = 0,
    metadata: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Export ``model.predict`` to an ONNX file at ``path`` and return the path.

    ``batch=None`` gives a dynamic batch axis; an int gives a fully static shape
    ``(batch, max_len)`` for compilers. ``topk > 0`` adds an in-graph TopK with outputs
    ``topk_items`` (int64 item ids, i.e. index + 1) and ``topk_scores``. ``metadata``
    entries are stored as ``dnsrec_edge.<key>`` metadata props (``dataset`` is the dataset
    fingerprint). The file is checked with ``onnx.checker`` and :func:`check_graph`, then
    written atomically; an existing file is refused unless ``force``.

    Example::

        export_onnx(model, "model.onnx", topk=10, metadata={"dataset": fingerprint})
    """
    path = Path(path)
    arch = model.arch
    if batch is not None and batch < 1:
        raise ExportError(f"static batch must be >= 1 (got {batch}); pass a positive --batch")
    if not 0 <= topk <= arch.n_items:
        raise ExportError(
            f"top-k {topk} is outside 0..{arch.n_items} (the item count); pass a smaller --topk"
        )
    ensure_new(path, force)
    require_writable_folder(path.parent)

    proto = _trace(model, batch, topk)
    write_checked(proto, path, arch, batch, topk, metadata, check_graph, "graph")
    log.debug("exported %s (%s batch, topk %d, opset %d)", path, batch or "dynamic", topk, OPSET)
    return path


def write_checked(
    proto,
    path: Path,
    arch: ArchSpec,
    batch: int | None,
    topk: int,
    metadata: dict[str, Any] | None,
    check: Callable[[Any], None],
    what: str,
    extra_props: dict[str, str] | None = None,
) -> None:
    """Stamp the toolkit's metadata props on ``proto``, drop the exporter's per-node trace
    info, check it with ``onnx.checker`` and ``check``, and write it to ``path`` atomically
    (``what`` names the graph in errors)."""
    import onnx

    strip_trace_info(proto)

    props = {
        "archspec": json.dumps(arch.to_dict(), separators=(",", ":")),
        "n_items": str(arch.n_items),
        "dataset": "",
        "version": _tool_version(),
        "topk": str(topk),
        "batch": "dynamic" if batch is None else str(batch),
        "id_guard": ID_GUARD,
        **(extra_props or {}),
    }
    props.update({str(k).removeprefix(META_PREFIX): str(v) for k, v in (metadata or {}).items()})
    onnx.helper.set_model_props(proto, {META_PREFIX + k: v for k, v in props.items()})
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        raise OutputMismatch(
            f"the exported {what} fails onnx.checker ({err}); please report it"
        ) from err
    check(proto)
    atomic_write_bytes(path, proto.SerializeToString())


def strip_trace_info(proto) -> None:
    """Remove what torch's exporter notes on every node (stack traces with this machine's
    paths, FX node text, module names): about 1 KB per node, which is a fifth of an int8
    file and says nothing a runtime reads."""
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


def _trace(model: SASRec, batch: int | None, topk: int):
    """Run torch's exporter on an eval-mode wrapper; leave ``model`` in its prior mode."""
    was_training = model.training
    wrapper = _Predictor(model, topk).eval()
    example = torch.zeros(batch or 2, model.arch.max_len, dtype=torch.long)  # (B, L)
    example[:, -1] = 1
    names = list(OUTPUTS if topk else OUTPUTS[:1])
    dynamic = None if batch is not None else ({0: torch.export.Dim("batch", min=1)},)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                wrapper,
                (example,),
                None,
                input_names=[INPUT],
                output_names=names,
                opset_version=OPSET,
                dynamo=True,
                dynamic_shapes=dynamic,
                verbose=False,
            )
    finally:
        model.train(was_training)
    return program.model_proto


def check_graph(proto) -> None:
    """Refuse a graph with an unexpected op or an embedding Gather not guarded by a Where.

    Raises :class:`OutputMismatch` naming every problem.
    """
    problems = []
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ALLOWED_OPS:
            problems.append(
                f"unexpected op {node.domain or 'ai.onnx'}::{node.op_type} ({node.name})"
            )
    producer = {out: node for node in proto.graph.node for out in node.output}
    for node in proto.graph.node:
        if node.op_type != "Gather" or not _depends_on(node.input[1], producer, INPUT):
            continue
        source = producer.get(node.input[1])
        if source is None or source.op_type != "Where":
            problems.append(f"Gather {node.name} reads item ids without the range guard (Where)")
    if problems:
        raise OutputMismatch("the exported graph is not runtime-safe: " + "; ".join(problems))


def _depends_on(name: str, producer: dict, graph_input: str) -> bool:
    """Whether tensor ``name`` is computed from ``graph_input``."""
    seen, stack = set(), [name]
    while stack:
        cur = stack.pop()
        if cur == graph_input:
            return True
        if cur in seen or cur not in producer:
            continue
        seen.add(cur)
        stack.extend(producer[cur].input)
    return False


def require_writable_folder(folder: Path) -> None:
    """Fail before the (slow) export when ``folder`` cannot hold a new file."""
    if folder.exists() and not folder.is_dir():
        raise OutputNotWritable(
            f"cannot write to folder '{folder}' (it is a file); choose a writable folder"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputNotWritable(
            f"cannot write to folder '{folder}' ({err.strerror}); choose a writable folder"
        ) from err


def _tool_version() -> str:
    from dnsrec_edge import __version__

    return __version__


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's info chatter, torchvision-not-installed warnings and deprecations."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
