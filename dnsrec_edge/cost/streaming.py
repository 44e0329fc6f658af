"""Work and predicted cost of one streaming step (``models/streaming.py``): one position.

Per block, the new item's row runs the Q/K/V projections, the output projection and the
FFN (``m = batch``); its query attends over the whole fixed-size cache (``max_len`` keys, the
unused ones masked), and its key/value rows are written into the cache, which the compiled
graph does as a select over every cache element (read the old cache, write the new one). Then
the final LayerNorm and the scoring over every item, as in ``predict``. The same
:class:`~dnsrec_edge.cost.analysis.Work` record as a whole-sequence call, so the calibrated
per-target models price it with their own coefficients (:func:`predict_step`).

Example::

    work = analyze_step(arch)              # FLOPs, bytes, kernels of one push
    cost = predict_step(load_cost_model("x86_64"), arch)
    StepCostModel(load_cost_model("x86_64")).predict(arch)   # the same, as a CostModel
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dnsrec_edge.cost.analysis import (
    MatMul,
    RowKernel,
    Work,
    _layernorm,
    _linear,
)
from dnsrec_edge.cost.model import Cost
from dnsrec_edge.models.archspec import ArchSpec


def analyze_step(arch: ArchSpec, batch: int = 1, topk: int = 0) -> Work:
    """Work of one step of the start-anchored ``arch`` (cache of ``arch.max_len`` positions)."""
    b, cache, d, n = batch, arch.max_len, arch.hidden, arch.n_items
    work = Work(batch=b, seq_len=1)
    # id and position guards, two gathers, scale + add, padding mask; slot and causal masks
    work.add(
        "embedding", other=3 * b * d + 4 * b, elems=2 * b + 3 * b * d + 2 * b * cache, kernels=8
    )
    if any(blk.gate_hidden for blk in arch.blocks):
        _layernorm(work, b, d)
    for blk in arch.blocks:
        w, h, hs, f, g = blk.attn_width, blk.heads, blk.head_dim, blk.ffn, blk.gate_hidden
        _layernorm(work, b, d)
        for _ in range(3):
            _linear(work, "qkv_proj", b, d, w)
            work.add("qkv_proj", kernels=1)  # head split
        cache_elems = b * h * cache * hs
        # write the new key and value rows: a select over each cache (read it, write it)
        work.add("attn_scores", other=2 * cache_elems, elems=4 * cache_elems, kernels=2)
        score_elems = b * h * cache
        work.matmuls.append(MatMul("attn_scores", b * h, 1, cache, hs))
        work.add(
            "attn_scores",
            matmul=2 * score_elems * hs,
            other=score_elems,
            elems=b * w + cache_elems + score_elems,
        )
        if blk.attention == "softmax":
            work.add("softmax", other=5 * score_elems, elems=3 * score_elems, kernels=1)
            work.row_kernels.append(RowKernel("softmax", score_elems, 5 * score_elems))
        else:  # elu + L2-normalise the new q and k rows, then the causal 0/1 mask
            flops = 12 * b * w + score_elems
            work.add("softmax", other=flops, elems=6 * b * w + 2 * score_elems, kernels=4)
            work.row_kernels.append(RowKernel("linear_attention", 2 * b * w, flops))
        work.matmuls.append(MatMul("attn_v", b * h, 1, hs, cache))
        work.add("attn_v", matmul=2 * score_elems * hs, elems=score_elems + cache_elems + b * w)
        _linear(work, "out_proj", b, w, d)
        work.add("out_proj", other=b * d, elems=3 * b * d, kernels=1)  # residual add
        _layernorm(work, b, d)
        _linear(work, "ffn", b, d, f)
        work.add("ffn", other=b * f, elems=0, kernels=1)  # relu
        _linear(work, "ffn", b, f, d)
        work.add("ffn", other=b * d, elems=3 * b * d, kernels=1)  # residual add
        if g:
            for d_out in (f, d):
                _linear(work, "gates", b, d, g)
                _linear(work, "gates", b, g, d_out)
                work.add("gates", other=b * g + 3 * b * d_out, elems=3 * b * d_out, kernels=2)
    _layernorm(work, b, d)
    work.matmuls.append(MatMul("scoring", 1, b, n, d))
    work.add("scoring", matmul=2 * b * d * n, elems=b * d + n * d + b * n)
    if topk:
        work.add("topk", other=b * n, elems=b * n + 2 * b * topk)
    return work


def cache_bytes(arch: ArchSpec, batch: int = 1) -> int:
    """Bytes of one user's key/value cache (float32 keys and values of every block)."""
    return sum(2 * 4 * batch * blk.heads * arch.max_len * blk.head_dim for blk in arch.blocks)


def predict_step(model: Any, arch: ArchSpec, target: Any = None) -> Cost:
    """Predicted cost of one step: a calibrated model prices :func:`analyze_step`'s work with
    its own coefficients (its per-architecture lookup table is for whole sequences and is not
    used); a model without coefficients (``FlopsModel``) gives the FLOPs only."""
    work = analyze_step(arch, getattr(model, "batch", 1))
    if not hasattr(model, "latency_ms") or not hasattr(model, "coefficients"):
        return Cost(flops=float(work.flops))
    from dnsrec_edge.cost.calibrated import features

    if target is not None:
        model.predict(arch, target)  # the model's own check that it is for this target
    feats = features(work, model.cache_mb, getattr(model, "lanes", 0))
    latency = float(model.latency_ms(feats))
    if getattr(model, "energy_coefficients", None) is not None:
        energy = sum(model.energy_coefficients.get(f, 0.0) * v for f, v in feats.items())
    else:
        energy = model.facts.active_watts * latency  # W x ms = mJ
    return Cost(flops=float(work.flops), latency_ms=latency, energy_mj=float(energy))


@dataclass(frozen=True)
class StepCostModel:
    """A target's cost model pricing one streaming step instead of a whole sequence: the
    :class:`~dnsrec_edge.cost.model.CostModel` a ``step-latency`` budget searches with."""

    model: Any

    def predict(self, arch: ArchSpec, target: Any = None) -> Cost:
        return predict_step(self.model, arch, target)

    def fit(self, records: list[dict[str, Any]]) -> StepCostModel:
        """Steps are priced with the whole-sequence model's coefficients; refit that one."""
        return self
