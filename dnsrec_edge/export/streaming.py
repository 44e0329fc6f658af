"""Export the streaming step of a start-anchored SASRec to ONNX, and validate it by replay.

The step graph (see ``models/streaming.py``) has fixed shapes: inputs ``item`` (B,) int64,
``position`` (B,) int64 and per block ``k_i``, ``v_i`` (B, heads, max_len, head_dim) float32;
outputs ``scores`` (B, n_items) [, ``topk_items``, ``topk_scores`` (B, k)] and the updated
caches ``k_i_out``, ``v_i_out``. Its metadata holds ``dnsrec_edge.streaming`` (JSON: the cache
layout, what the inputs mean, the window rule) besides the usual ``archspec``, ``n_items`` etc.

Validation replays real histories item by item through ONNX Runtime, re-priming as a session
does (``models.streaming.windows``), and compares every step with ``SASRec.predict`` over the
same window under the project's comparison rule (``compare.compare_scores``: max abs
difference <= 1e-4 and the same top-10 at every step, up to exact ties), or
:class:`OutputMismatch` listing the first mismatches. The report also gives the share of
steps whose top-10 list is strictly identical.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dnsrec_edge.compare import TOLERANCE, TOPK, compare_scores, topk_indices
from dnsrec_edge.errors import CheckpointMismatch, ExportError, OutputMismatch
from dnsrec_edge.export.onnx_export import (
    ALLOWED_OPS,
    META_PREFIX,
    OPSET,
    _depends_on,
    _quiet_exporter,
    require_writable_folder,
    write_checked,
)
from dnsrec_edge.fsio import ensure_new
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.models.streaming import (
    StreamingStep,
    cache_names,
    cache_shapes,
    require_start_anchored,
    windows,
)

if TYPE_CHECKING:
    from dnsrec_edge.data.dataset import Dataset

log = logging.getLogger(__name__)

ITEM, POSITION = "item", "position"
STREAMING_KEY = "streaming"  # metadata key (under META_PREFIX) that marks a step graph


def streaming_layout(model: SASRec, batch: int, topk: int) -> dict[str, Any]:
    """The step graph's contract: inputs, outputs, cache layout, window rule (plain data)."""
    arch = model.arch
    names = cache_names(arch)
    cache = [
        {
            "name": name,
            "output": f"{name}_out",
            "block": i // 2,
            "role": "keys" if name.startswith("k") else "values",
            "shape": list(shape),
            "dtype": "float32",
        }
        for i, (name, shape) in enumerate(zip(names, cache_shapes(arch, batch), strict=True))
    ]
    outputs = ["scores", *(["topk_items", "topk_scores"] if topk else [])]
    return {
        "kind": "step",
        "batch": batch,
        "max_len": arch.max_len,
        "n_items": arch.n_items,
        "topk": topk,
        "item_input": ITEM,
        "position_input": POSITION,
        "cache": cache,
        "outputs": outputs + [c["output"] for c in cache],
        "length": "position is also the cache length: entries 0..position-1 are valid and "
        "the new item's keys/values are written at position",
        "window": "when the cache is full the next push re-primes it from the last keep items "
        "(default max_len // 2; max_len - 1 keeps the last max_len), so scores equal the full "
        "model's over the window",
        "cache_bytes_per_user": sum(4 * int(np.prod(c["shape"][1:])) for c in cache),
    }


def export_streaming(
    model: SASRec,
    path: str | Path,
    *,
    batch: int = 1,
    topk: int = 0,
    metadata: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Write the step graph of ``model`` (start-anchored) to ``path``; return the path.

    Example::

        export_streaming(model, "step.onnx", topk=10)
    """

    path = Path(path)
    arch = model.arch
    require_start_anchored(arch)
    if batch < 1:
        raise ExportError(f"static batch must be >= 1 (got {batch}); pass a positive --batch")
    if not 0 <= topk <= arch.n_items:
        raise ExportError(
            f"top-k {topk} is outside 0..{arch.n_items} (the item count); pass a smaller --topk"
        )
    ensure_new(path, force)
    require_writable_folder(path.parent)
    layout = streaming_layout(model, batch, topk)
    proto = _trace(model, batch, topk, layout)
    layout_prop = {STREAMING_KEY: json.dumps(layout, separators=(",", ":"))}
    write_checked(
        proto, path, arch, batch, topk, metadata, check_step_graph, "step graph", layout_prop
    )
    log.debug("exported step graph %s (batch %d, topk %d)", path, batch, topk)
    return path


def _trace(model: SASRec, batch: int, topk: int, layout: dict):
    was_training = model.training
    step = StreamingStep(model, topk).eval()
    item = torch.ones(batch, dtype=torch.long)  # (B,)
    position = torch.zeros(batch, dtype=torch.long)  # (B,)
    cache = tuple(torch.zeros(c["shape"]) for c in layout["cache"])
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                step,
                (item, position, *cache),
                None,
                input_names=[ITEM, POSITION, *(c["name"] for c in layout["cache"])],
                output_names=layout["outputs"],
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
    finally:
        model.train(was_training)
    return program.model_proto


def check_step_graph(proto) -> None:
    """Refuse unexpected ops, or an embedding Gather on ``item``/``position`` without a Where."""
    problems = []
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ALLOWED_OPS:
            problems.append(
                f"unexpected op {node.domain or 'ai.onnx'}::{node.op_type} ({node.name})"
            )
    producer = {out: node for node in proto.graph.node for out in node.output}
    for node in proto.graph.node:
        if node.op_type != "Gather":
            continue
        if not any(_depends_on(node.input[1], producer, name) for name in (ITEM, POSITION)):
            continue
        source = producer.get(node.input[1])
        if source is None or source.op_type != "Where":
            problems.append(f"Gather {node.name} reads ids without the range guard (Where)")
    if problems:
        raise OutputMismatch("the step graph is not runtime-safe: " + "; ".join(problems))


def read_layout(proto_or_props) -> dict | None:
    """The ``dnsrec_edge.streaming`` layout of an ONNX model (proto or props dict), or None."""
    props = (
        proto_or_props
        if isinstance(proto_or_props, dict)
        else {p.key: p.value for p in proto_or_props.metadata_props}
    )
    text = props.get(META_PREFIX + STREAMING_KEY)
    return json.loads(text) if text else None


@dataclass
class StreamingValidation:
    """Outcome of a passed replay validation (a failed one raises)."""

    path: str
    histories: int
    steps: int
    max_abs_diff: float
    top10_agreement: float  # share of steps whose top-10 list equals the full recompute's
    keep: int
    inputs: str
    tied_steps: int = 0  # steps whose top-10 order differs only among scores tied within error

    def to_dict(self) -> dict:
        return asdict(self)


def full_recompute(
    model: SASRec, histories: list[np.ndarray], keep: int | None, steps: int | None
) -> list[np.ndarray]:
    """Per history, ``(n_steps, n_items)`` scores of ``model.predict`` over each step's window."""
    from dnsrec_edge.data.batching import left_pad

    arch = model.arch
    spans = [windows(min(len(h), steps or len(h)), arch.max_len, keep) for h in histories]
    out = [np.zeros((len(s), arch.n_items), dtype=np.float32) for s in spans]
    longest = max((len(s) for s in spans), default=0)
    model.eval()
    with torch.no_grad():
        for t in range(longest):  # every history at its step t, in one batch
            rows = [r for r, s in enumerate(spans) if t < len(s)]
            for chunk in range(0, len(rows), 256):
                part = rows[chunk : chunk + 256]
                seqs = [histories[r][slice(*spans[r][t])] for r in part]
                scores = model.predict(torch.from_numpy(left_pad(seqs, arch.max_len)))
                for r, row in zip(part, scores.numpy(), strict=True):
                    out[r][t] = row
    return out


def validate_streaming(
    onnx_path: str | Path,
    model: SASRec,
    histories: list[np.ndarray],
    *,
    keep: int | None = None,
    steps: int | None = None,
    atol: float = TOLERANCE,
    k: int = TOPK,
    inputs: str = "given",
) -> StreamingValidation:
    """Replay ``histories`` through the ONNX step graph with ONNX Runtime and compare each step
    with a full recompute by ``model.predict`` (first ``steps`` items of each; all by default).
    """
    from dnsrec_edge.compile.session import StreamingSession

    path = Path(onnx_path)
    session = StreamingSession.from_onnx(path, keep=keep)
    ref = full_recompute(model, histories, session.keep, steps)
    k = min(k, model.arch.n_items)
    problems, max_diff, agree, total, ties = [], 0.0, 0, 0, 0
    for h, (history, expected) in enumerate(zip(histories, ref, strict=True)):
        session.reset()
        got = np.zeros_like(expected)
        for t in range(len(expected)):
            session.push(int(history[t]))
            got[t] = session.last_scores[0]
        result = compare_scores(got, expected, atol=atol, k=k, reference="a full recompute")
        max_diff, total = max(max_diff, result.max_abs_diff), total + len(expected)
        ties += result.tied_rows
        agree += int(np.sum(np.all(topk_indices(got, k) == topk_indices(expected, k), axis=1)))
        if not result.ok and len(problems) < 5:  # rows are the history's steps
            problems.append(f"history {h}: " + result.summary(2).replace("row ", "step "))
    if problems:
        raise OutputMismatch(
            f"the step graph '{path}' disagrees with a full recompute (tolerance {atol:g}, "
            f"top-{k}) on {len(histories)} replayed histories; re-export it: " + "; ".join(problems)
        )
    return StreamingValidation(
        str(path),
        len(histories),
        total,
        max_diff,
        agree / max(total, 1),
        session.keep,
        inputs,
        ties,
    )


def dataset_histories(dataset: Dataset, rows: int, seed: int = 0) -> list[np.ndarray]:
    """``rows`` real test histories (history minus its test item), users drawn by ``seed``."""
    users = np.random.default_rng(seed).permutation(dataset.n_users)[:rows]
    return [np.asarray(dataset.sequences[u][:-1], dtype=np.int64) for u in sorted(users)]


def synthetic_histories(n_items: int, max_len: int, rows: int = 16, seed: int = 0):
    """Random histories, some longer than ``max_len`` (the window re-prime is exercised)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + max_len // 2 + 2, size=rows)
    return [rng.integers(1, n_items + 1, size=int(n)).astype(np.int64) for n in lengths]


def export_streaming_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    topk: int = 0,
    batch: int = 1,
    dataset: Dataset | str | None = None,
    rows: int = 64,
    steps: int | None = None,
    force: bool = False,
) -> tuple[Path, StreamingValidation]:
    """Export the step graph of the SASRec in ``checkpoint`` and validate it by replay.

    Validation replays ``rows`` histories (real test histories of ``dataset``, or synthetic
    ones), ``steps`` items each (default ``max_len + 8``, so the window re-prime is crossed);
    the file appears only once it passed.
    """
    from dnsrec_edge.train.checkpoint import load_checkpoint

    out = ensure_new(out, force)
    require_writable_folder(out.parent)
    model, meta = load_checkpoint(checkpoint)
    if meta.get("kind") != "sasrec":
        raise CheckpointMismatch(
            f"'{checkpoint}' holds a {meta.get('kind')} checkpoint; export takes a plain SASRec "
            "(run dnsrec-edge prune on the search run first and export its model.pt)"
        )
    require_start_anchored(model.arch)
    if isinstance(dataset, (str, Path)):
        from dnsrec_edge.data.load import load_dataset

        dataset = load_dataset(dataset, quiet=True)
    if dataset is not None:
        if meta.get("dataset") and meta["dataset"] != dataset.fingerprint:
            raise CheckpointMismatch(
                f"checkpoint '{checkpoint}' was trained on other data than dataset "
                f"'{dataset.name}'; validate with the dataset it was trained on"
            )
        histories, inputs = dataset_histories(dataset, rows), f"{dataset.name} test histories"
    else:
        histories = synthetic_histories(model.arch.n_items, model.arch.max_len, rows)
        inputs = "synthetic"
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    metadata = {"dataset": meta.get("dataset") or "", "checkpoint": Path(checkpoint).name}
    try:
        export_streaming(model, tmp, batch=batch, topk=topk, metadata=metadata, force=True)
        report = validate_streaming(
            tmp, model, histories, steps=steps or model.arch.max_len + 8, inputs=inputs
        )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    report.path = str(out)
    return out, report
