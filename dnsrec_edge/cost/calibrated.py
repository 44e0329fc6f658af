"""Per-target latency and energy model, fitted from measurement records.

latency_ms = sum_f coefficient_f * feature_f(arch), every coefficient >= 0. The features
follow what makes a batch-1 call take time on a CPU with the toolkit's TVM build:

- ``overhead`` (1 per call) and ``kernels`` (launches: argument checks, allocation);
- matmul GFLOPs split by how the kernel runs. A matmul's output columns are vectorised
  in register tiles of 16 columns when their count N is a multiple of 16, of 8 when N is
  an odd multiple of 8 (its own feature: measured on x86_64 with one thread, 8-column
  row-vector products cost 1.5x the 16-column ones per FLOP), and of 4 when N is otherwise
  a multiple of 4 (counted twice as 16-column work); any other N runs scalar code, several
  times slower per FLOP. Row-vector
  products (``gemv``: one row, e.g. the scoring layer and the last block at batch 1) stream
  their weights and cost more per FLOP than many-row ``gemm``. Scalar kernels above
  ``PARALLEL_MIN_MACS`` go through the thread pool, which the compiler's schedule handles
  worse again, so they have their own feature. The scoring layer's N is the item count:
  an odd item count makes scoring scalar, which can dominate a small model's latency.
  A model of today's CPU builds (``lanes`` > 0) counts each matmul's columns as the build
  computes them: a constant weight whose N is not a whole number of two-vector tiles is
  padded to one at compile time (``compile/rewrites.py``, plus one slice kernel), and any
  other N that is not whole vectors (the attention scores over 50 or 200 keys) is padded by
  the matmul schedule; so those kernels run in vector tiles over the padded columns, not
  scalar. Model files fitted before the builds padded lack ``lanes`` and keep the old count;
- ``softmax_par_gflop`` (softmax-class kernels big enough to run in the thread pool) and
  ``other_gflop`` (every other elementwise FLOP: masks, LayerNorm, gates, residuals);
- ``stream_gb``: the bytes of every weight matrix too large for the board's cache (in
  practice the item table of a large catalogue), which each call streams from memory. The
  cache size is fitted with the coefficients (the candidate in ``CACHE_MB`` whose fit
  cross-validates best), since what a call keeps in cache is a property of the board.

Coefficients are fitted by non-negative least squares on relative error, so each is a plain
figure (ms per call, ms per kernel, ms per GFLOP). Energy is fitted the same way from records
with a measured energy source, or else taken as the target's active power times the
predicted latency. Without records the model is the target's roofline prior (peak GFLOP/s,
memory GB/s, a default launch cost).

A new board or build flavour (the host target, a tuned build) can start from an existing
model: ``fit(records, start=model)`` pulls each coefficient towards the existing one (scaled
by one factor fitted first) with a ridge penalty, so a handful of records already corrects
the existing model where it is wrong, and the pull fades as records accumulate.

Example::

    model = load_cost_model("x86_64")
    model.predict(arch)            # Cost(flops=..., latency_ms=..., energy_mj=...)
    refit = model.fit(load_records("x86_64"))
    host = CalibratedModel.prior("x86_64-avx512").fit(records, start=model)
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dnsrec_edge import __version__
from dnsrec_edge.compile.padding import constant_columns, schedule_width
from dnsrec_edge.cost.analysis import MatMul, Work, analyze
from dnsrec_edge.cost.model import Cost
from dnsrec_edge.cost.records import (
    MODEL_FILE,
    board_key,
    is_measured_energy,
    merge_duplicates,
    model_file,
    record_id,
    store_dir,
)
from dnsrec_edge.errors import ArchSpecError, CalibrationError
from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.models.archspec import ArchSpec

log = logging.getLogger(__name__)

MODEL_SCHEMA = 1
MIN_RECORDS = 14  # fewest distinct measured architectures a fit accepts (features + 2)
FOLDS = 5
# The latency figure a model predicts: "min" (the fastest of many single-call samples: what
# the code and the board determine, steady when other processes share the CPU) or "median".
STATISTICS = ("min", "median")
FEATURES = (
    "overhead",
    "kernels",
    "gemm_gflop",
    "gemv_gflop",
    "gemm8_gflop",
    "gemv8_gflop",
    "gemm_scalar_gflop",
    "gemv_scalar_gflop",
    "gemm_scalar_par_gflop",
    "gemv_scalar_par_gflop",
    "softmax_par_gflop",
    "other_gflop",
    "stream_gb",
)
UNITS = {f: "ms per GFLOP" for f in FEATURES} | {
    "overhead": "ms per call",
    "kernels": "ms per kernel",
    "stream_gb": "ms per GB",
}
# Cache sizes a fit tries (MB): weights larger than the chosen one count as streamed.
CACHE_MB = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
DEFAULT_CACHE_MB = 8.0  # the prior's, and the cache of a model fitted before stream_gb existed
TRANSFER_RIDGE = 1.0  # pull of a start model's coefficients, in records' worth of evidence
ATTENTION_MATMULS = ("attn_scores", "attn_v")  # their operands are activations, not weights
# Matmuls of at least this many multiply-adds, and elementwise kernels of at least a quarter
# as many elements, run through the thread pool (the compile area's PARALLEL_MIN_WORK).
PARALLEL_MIN_MACS = 1 << 17
DEFAULT_KERNEL_MS = 0.002  # prior launch cost per kernel
DEFAULT_OVERHEAD_MS = 0.01  # prior fixed cost of one call (argument copy, VM dispatch)
SCALAR_PENALTY = 4.0  # prior: scalar code uses one of (at least) four SIMD lanes


def _tile_class(n: int) -> tuple[str, int]:
    """(feature infix, weight) of a matmul with N output columns: 16-column tiles ("", 1),
    8-column tiles ("8", 1), 4-column tiles ("", 2), scalar code ("scalar", 1)."""
    if n % 16 == 0:
        return "", 1
    if n % 8 == 0:
        return "8", 1
    if n % 4 == 0:
        return "", 2
    return "scalar", 1


def built_columns(mm: MatMul, lanes: int) -> tuple[int, bool]:
    """``(columns, sliced)``: the output columns ``mm`` runs over in a CPU build with ``lanes``
    float32 lanes (0: as in the ONNX file), and whether a slice kernel cuts the padding off.

    A constant weight (every matmul but the attention's) is padded to whole two-vector tiles at
    compile time; any N left that is not whole vectors is padded by the matmul schedule
    (the rules of ``compile/padding.py``)."""
    if not lanes:
        return mm.n, False
    n = mm.n if mm.op in ATTENTION_MATMULS else constant_columns(mm.n, 2 * lanes)
    sliced = n != mm.n
    width = schedule_width(n, lanes)
    if width:
        n = -(-n // width) * width
    return n, sliced


def features(work: Work, cache_mb: float = DEFAULT_CACHE_MB, lanes: int = 0) -> dict[str, float]:
    """Model features of one ``predict`` call's work (see the module docstring); weights
    larger than ``cache_mb`` count as streamed from memory; ``lanes`` > 0 counts matmul
    columns as a CPU build with that many float32 lanes pads them (:func:`built_columns`)."""
    out = dict.fromkeys(FEATURES, 0.0)
    out["overhead"] = 1.0
    out["kernels"] = float(work.kernels)
    streamed = 0.0
    for mm in work.matmuls:
        n, sliced = built_columns(mm, lanes)
        out["kernels"] += sliced
        shape = "gemv" if mm.m == 1 else "gemm"
        tile, weight = _tile_class(n)
        gflop = mm.flops * n / mm.n / 1e9
        if tile == "scalar":
            par = "_par" if mm.macs >= PARALLEL_MIN_MACS else ""
            out[f"{shape}_scalar{par}_gflop"] += gflop
        else:
            out[f"{shape}{tile}_gflop"] += weight * gflop
        if mm.op not in ATTENTION_MATMULS and 4 * mm.k * n > cache_mb * 1e6:
            streamed += 4 * mm.k * n / 1e9
    par_rows = sum(r.flops for r in work.row_kernels if 4 * r.elements >= PARALLEL_MIN_MACS)
    out["softmax_par_gflop"] = par_rows / 1e9
    out["other_gflop"] = (work.flops - work.matmul_flops - par_rows) / 1e9
    out["stream_gb"] = streamed
    return out


def lookup_key(arch: dict[str, Any] | ArchSpec, batch: int, seq_len: int) -> str:
    """Key of an exact (architecture, batch, sequence length) in the lookup table."""
    spec = arch if isinstance(arch, ArchSpec) else ArchSpec.from_dict(arch)
    body = {"arch": spec.to_dict(), "batch": int(batch), "seq_len": int(seq_len)}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class TargetFacts:
    """What the prior needs from a Target: name, roofline and power figures."""

    name: str
    peak_gflops: float
    mem_gbps: float
    idle_watts: float
    active_watts: float
    lanes: int = 0  # float32 SIMD lanes of its CPU builds (0: a GPU, or not known)

    @classmethod
    def of(cls, target: Any) -> TargetFacts:
        """From a ``Target``, a target name or alias (read from ``targets/``), or a dict."""
        if isinstance(target, TargetFacts):
            return target
        from dnsrec_edge.compile.targets import load_target, vector_lanes  # data; no TVM

        if isinstance(target, str):
            target = load_target(target)
        get = target.get if isinstance(target, dict) else lambda k: getattr(target, k)
        return cls(
            str(get("name")),
            float(get("peak_gflops")),
            float(get("mem_gbps")),
            float(get("idle_watts")),
            float(get("active_watts")),
            vector_lanes(get("tvm") or {}, get("device") or "cpu"),
        )


def prior_coefficients(facts: TargetFacts) -> dict[str, float]:
    """Roofline prior: FLOPs at peak (scalar code at a quarter of it), row-vector products at
    full memory bandwidth when that is slower (2 bytes of weights per FLOP), a default
    launch cost."""
    peak = 1e3 / facts.peak_gflops  # ms per GFLOP
    stream = max(peak, 2e3 / facts.mem_gbps)
    scalar = SCALAR_PENALTY * peak
    return {
        "overhead": DEFAULT_OVERHEAD_MS,
        "kernels": DEFAULT_KERNEL_MS,
        "gemm_gflop": peak,
        "gemv_gflop": stream,
        "gemm8_gflop": peak,
        "gemv8_gflop": stream,
        "gemm_scalar_gflop": scalar,
        "gemv_scalar_gflop": max(scalar, stream),
        "gemm_scalar_par_gflop": scalar,
        "gemv_scalar_par_gflop": max(scalar, stream),
        "softmax_par_gflop": scalar,
        "other_gflop": scalar,
        "stream_gb": 1e3 / facts.mem_gbps,
    }


def error_stats(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """``{"n", "within10", "mape"}``: share within +-10 % and mean absolute % error."""
    rel = np.abs(predicted / measured - 1.0)
    return {
        "n": int(len(rel)),
        "within10": round(float(np.mean(rel <= 0.10)), 4),
        "mape": round(float(100 * np.mean(rel)), 3),
    }


def nnls_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative ``c`` minimising ``sum((x @ c / y - 1)^2)``: least squares on relative error."""
    from scipy.optimize import nnls

    a = x / y[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(a / scale, np.ones(len(y)), maxiter=50 * a.shape[1])
    return coef / scale


def repeatability(records: list[dict[str, Any]]) -> dict[str, float] | None:
    """How far single rounds lie from their architecture's merged figure: the noise floor.

    ``{"n", "within10", "mape"}`` over every repeat of the merged records that have repeats;
    ``None`` when no architecture was measured twice.
    """
    single, merged = [], []
    for record in records:
        for value in record.get("repeats_ms", []):
            single.append(value)
            merged.append(record["merged_ms"])
    return error_stats(np.array(merged), np.array(single)) if single else None


@dataclass
class FitData:
    """Feature matrix and targets of the usable records."""

    records: list[dict[str, Any]]
    x: np.ndarray  # (n, F) features
    latency: np.ndarray  # (n,) ms, the model's statistic (median over repeats)
    energy: np.ndarray  # (n,) mJ, NaN where no measured energy
    gflop: np.ndarray  # (n,) total GFLOPs, for the FLOPs-only comparison
    works: list[Work] = field(default_factory=list)  # each record's analysed work
    lanes: int = 0  # the build's float32 lanes the features count padded columns with

    def with_cache(self, cache_mb: float) -> FitData:
        """The same records with features for another cache size (no re-analysis)."""
        rows = [[features(w, cache_mb, self.lanes)[f] for f in FEATURES] for w in self.works]
        return replace(self, x=np.array(rows, dtype=float).reshape(-1, len(FEATURES)))


def fit_data(
    records: list[dict[str, Any]],
    statistic: str = "min",
    cache_mb: float = DEFAULT_CACHE_MB,
    lanes: int = 0,
) -> FitData:
    """Merge duplicates and build features (matmul columns as a build with ``lanes`` pads
    them); records without an ArchSpec or the statistic are left out."""
    usable, works = [], []
    for record in merge_duplicates(records, statistic):
        value = (record.get("latency_ms") or {}).get(statistic)
        if not record.get("arch") or not isinstance(value, int | float) or value <= 0:
            continue
        try:
            arch = ArchSpec.from_dict(record["arch"])
            work = analyze(arch, int(record["batch"]), int(record["seq_len"]))
        except (ArchSpecError, KeyError, TypeError, ValueError) as err:
            log.warning("record %s skipped: %s", record.get("id", "?"), err)
            continue
        usable.append(record | {"merged_ms": float(value)})
        works.append(work)
    energy = [_measured_energy_mj(r) for r in usable]
    data = FitData(
        usable,
        np.empty((0, len(FEATURES))),
        np.array([r["merged_ms"] for r in usable]),
        np.array(energy, dtype=float),
        np.array([w.flops / 1e9 for w in works], dtype=float),
        works,
        lanes,
    )
    return data.with_cache(cache_mb)


def _measured_energy_mj(record: dict[str, Any]) -> float:
    energy = record.get("energy")
    if is_measured_energy(energy):
        return 1e3 * float(energy["joules_per_inference"])
    return math.nan


def nnls_towards(
    x: np.ndarray, y: np.ndarray, start: np.ndarray, base: np.ndarray, ridge: float
) -> np.ndarray:
    """Non-negative coefficients near ``start``: relative least squares on the records plus
    ``ridge * sum(((c - s * start) / base)^2)`` over the features ``start`` uses (non-zero),
    where ``s`` is the one factor that best scales ``start`` to the records. Features
    ``start`` does not use are fitted freely. With no records, ``start`` itself."""
    from scipy.optimize import nnls

    if len(y) == 0:
        return start.copy()
    p = (x @ start) / y
    s = float(p.sum() / (p @ p)) if p @ p > 0 else 1.0
    used = start > 0
    a = x * base / y[:, None]  # in units of base: c = base * r
    pull = np.sqrt(ridge) * np.eye(len(start))[used]
    target = np.concatenate([np.ones(len(y)), np.sqrt(ridge) * s * start[used] / base[used]])
    r, _ = nnls(np.vstack([a, pull]), target, maxiter=50 * len(start))
    return r * base


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    folds: int = FOLDS,
    seed: int = 0,
    solve: Any = nnls_relative,
) -> np.ndarray:
    """Out-of-fold predictions: each record predicted by a fit (``solve(x, y)``) that did not
    see it."""
    order = list(range(len(y)))
    random.Random(seed).shuffle(order)
    pred = np.empty(len(y))
    for k in range(folds):
        test = order[k::folds]
        train = [i for i in order if i not in test]
        pred[test] = x[test] @ solve(x[train], y[train])
    return pred


def _transfer_solver(start: dict[str, float], facts: TargetFacts, ridge: float) -> Any:
    """``solve(x, y)`` for ``nnls_towards`` from a start model's coefficients."""
    c0 = np.array([start.get(f, 0.0) for f in FEATURES])
    prior = prior_coefficients(facts)
    base = np.array([c0[i] if c0[i] > 0 else prior[f] for i, f in enumerate(FEATURES)])
    return lambda x, y: nnls_towards(x, y, c0, base, ridge)


@dataclass
class CalibratedModel:
    """A target's cost model: latency and energy coefficients, plus exact measured lookups."""

    target: str
    facts: TargetFacts
    coefficients: dict[str, float]
    kind: str = "prior"  # "measured" once fitted from records
    energy_coefficients: dict[str, float] | None = None  # None: active power x latency
    lookup: dict[str, dict[str, float]] = field(default_factory=dict)
    batch: int = 1
    seq_len: int | None = None
    statistic: str = "min"  # which latency figure of a measurement the model predicts
    cache_mb: float = DEFAULT_CACHE_MB  # weights larger than this are streamed (stream_gb)
    meta: dict[str, Any] = field(default_factory=dict)
    # the float32 lanes the builds it describes pad matmul columns with (``built_columns``);
    # 0 for a model file fitted before the builds padded, which lacks the key
    lanes: int = 0

    @classmethod
    def prior(cls, target: Any) -> CalibratedModel:
        """The roofline/power prior of a target (no records)."""
        facts = TargetFacts.of(target)
        return cls(
            facts.name,
            facts,
            prior_coefficients(facts),
            kind="prior",
            lanes=facts.lanes,
            meta={
                "note": "roofline prior from the target's peak_gflops, mem_gbps, "
                "active_watts; no measurements"
            },
        )

    def latency_ms(self, feats: dict[str, float]) -> float:
        return sum(self.coefficients.get(f, 0.0) * feats[f] for f in FEATURES)

    def predict(self, arch: ArchSpec, target: Any = None) -> Cost:
        """Predicted cost of one ``predict`` call of ``arch`` at this model's batch."""
        if target is not None and target != self.target:
            name = TargetFacts.of(target).name
            if name != self.target:
                raise CalibrationError(
                    f"this cost model is for target '{self.target}', not '{name}'; "
                    f"load the model of '{name}' with load_cost_model"
                )
        work = analyze(arch, self.batch, self.seq_len)
        seq_len = self.seq_len or arch.max_len
        exact = self.lookup.get(lookup_key(arch, self.batch, seq_len))
        feats = features(work, self.cache_mb, self.lanes)
        latency = exact["latency_ms"] if exact else self.latency_ms(feats)
        if exact and exact.get("energy_mj"):
            energy = exact["energy_mj"]
        elif self.energy_coefficients is not None:
            energy = sum(self.energy_coefficients.get(f, 0.0) * feats[f] for f in FEATURES)
        else:
            energy = self.facts.active_watts * latency  # W x ms = mJ
        return Cost(flops=float(work.flops), latency_ms=float(latency), energy_mj=float(energy))

    def fit(
        self,
        records: list[dict[str, Any]],
        *,
        statistic: str | None = None,
        seed: int = 0,
        start: CalibratedModel | None = None,
        ridge: float = TRANSFER_RIDGE,
    ) -> CalibratedModel:
        """A measured model fitted on ``records`` of the latest board, with held-out errors.

        Records of one board and one build (tuned or not, thread count) are fitted together:
        the board of the newest record and its most common build, whose matmul columns are
        counted as the target's builds pad them today. ``statistic`` (default:
        this model's) is the latency figure fitted, ``min`` or ``median``; repeat measurements
        of an artifact count once, with the median of their figures. Needs at least
        ``MIN_RECORDS`` distinct measured architectures, or one with a ``start`` model (an
        existing model of another board or build, which the fit corrects: ``nnls_towards``).
        """
        statistic = statistic or self.statistic
        if statistic not in STATISTICS:
            raise CalibrationError(
                f"latency statistic '{statistic}' is not one of {', '.join(STATISTICS)}"
            )
        chosen, note = select_records(records)
        solve = (
            nnls_relative
            if start is None
            else _transfer_solver(start.coefficients, self.facts, ridge)
        )
        needed = MIN_RECORDS if start is None else 1
        preferred = start.cache_mb if start else self.cache_mb
        data = fit_data(chosen, statistic, preferred, self.facts.lanes)
        n = len(data.latency)
        if n < needed:
            raise CalibrationError(
                f"fitting target '{self.target}' needs at least {needed} measured "
                f"architectures on one board, found {n}{note}; measure more with "
                f"'dnsrec-edge calibrate --target {self.target} --samples {2 * MIN_RECORDS}'"
            )
        folds = min(FOLDS, n)
        cache_mb, data, cv = _fit_cache(data, solve, folds, seed, preferred)
        coef = solve(data.x, data.latency)
        prior = replace(self, coefficients=prior_coefficients(self.facts))
        prior_pred = np.array(
            [prior.latency_ms(dict(zip(FEATURES, row, strict=True))) for row in data.x]
        )
        flops_only = np.column_stack([np.ones(n), data.gflop])  # overhead + ms per GFLOP
        flops_cv = cross_validate(flops_only, data.latency, folds, seed)
        energy_coef, energy_heldout = None, None
        has_energy = ~np.isnan(data.energy)
        if has_energy.sum() >= MIN_RECORDS:
            xe, ye = data.x[has_energy], data.energy[has_energy]
            energy_coef = dict(zip(FEATURES, nnls_relative(xe, ye).tolist(), strict=True))
            energy_heldout = error_stats(ye, cross_validate(xe, ye, min(FOLDS, len(ye)), seed))
        lookup = _lookup_table(data)
        device = dict(chosen[-1].get("device") or {}) if chosen else {}
        meta = {
            "board": board_key(device),
            "device": device,
            "tuned": bool(chosen[-1].get("tuned", False)),
            "threads": chosen[-1].get("threads"),
            "records": [r.get("id") or record_id(r) for r in chosen if r.get("arch")],
            "heldout": error_stats(data.latency, cv),
            "heldout_method": f"{folds}-fold cross-validation over distinct architectures",
            "prior_heldout": error_stats(data.latency, prior_pred),
            "flops_only_heldout": error_stats(data.latency, flops_cv),
            "repeatability": repeatability(data.records),
            "energy_heldout": energy_heldout,
            "energy_records": int(has_energy.sum()),
            "predictions": [
                {
                    "id": r.get("id"),
                    "measured_ms": float(m),
                    "heldout_ms": float(p),
                    "prior_ms": float(q),
                }
                for r, m, p, q in zip(data.records, data.latency, cv, prior_pred, strict=True)
            ],
            "note": note.strip("; ") or None,
        }
        if start is not None:
            meta["start"] = {
                "target": start.target,
                "board": start.meta.get("board"),
                "source": start.meta.get("source"),
                "ridge": ridge,
            }
        return replace(
            self,
            kind="measured",
            statistic=statistic,
            cache_mb=cache_mb,
            lanes=self.facts.lanes,
            coefficients=dict(zip(FEATURES, coef.tolist(), strict=True)),
            energy_coefficients=energy_coef,
            lookup=lookup,
            meta=meta,
        )

    def describe(self) -> str:
        """A few lines for people: kind, source, held-out errors, coefficients."""
        lines = [
            f"cost model of target '{self.target}': {self.kind} "
            f"(predicts the {self.statistic} latency of a call)"
        ]
        if self.meta.get("source"):
            lines.append(f"  from {self.meta['source']}")
        for label, key in (
            ("held out (this model)", "heldout"),
            ("roofline prior", "prior_heldout"),
            ("best FLOPs-only fit", "flops_only_heldout"),
            ("one round vs all rounds", "repeatability"),
        ):
            stat = self.meta.get(key)
            if stat:
                lines.append(
                    f"  {label:<24} n={stat['n']:<4} within +-10%: "
                    f"{100 * stat['within10']:5.1f} %   MAPE: {stat['mape']:6.2f} %"
                )
        if self.meta.get("board"):
            lines.append(f"  board: {self.meta['board']}, threads {self.meta.get('threads')}")
        if self.meta.get("start"):
            st = self.meta["start"]
            lines.append(f"  started from the model of '{st['target']}' ({st.get('board')})")
        padded = f", matmul columns padded to {self.lanes}-lane vectors" if self.lanes else ""
        lines.append(
            f"  latency_ms = sum of (weights over {self.cache_mb:g} MB count as streamed{padded})"
        )
        lines += [f"    {self.coefficients[f]:10.4g} {UNITS[f]:<12} x {f}" for f in FEATURES]
        if self.energy_coefficients is None:
            lines.append(f"  energy_mj = {self.facts.active_watts:g} W x latency_ms (power prior)")
        else:
            lines.append("  energy fitted from measured energy records")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The ``model.json`` content."""
        meta = {k: v for k, v in self.meta.items() if k != "predictions"}
        return {
            "schema": MODEL_SCHEMA,
            "kind": self.kind,
            "target": self.target,
            "tool_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "batch": self.batch,
            "seq_len": self.seq_len,
            "statistic": self.statistic,
            "cache_mb": self.cache_mb,
            "lanes": self.lanes,
            "features": list(FEATURES),
            "units": UNITS,
            "coefficients": self.coefficients,
            "energy": (
                {"kind": "measured", "coefficients": self.energy_coefficients}
                if self.energy_coefficients is not None
                else {
                    "kind": "prior",
                    "watts": self.facts.active_watts,
                    "rule": "energy_mj = active_watts * latency_ms",
                }
            ),
            "prior": {
                "peak_gflops": self.facts.peak_gflops,
                "mem_gbps": self.facts.mem_gbps,
                "idle_watts": self.facts.idle_watts,
                "active_watts": self.facts.active_watts,
            },
            "records": meta.pop("records", []),
            "heldout": meta.pop("heldout", None),
            "prior_heldout": meta.pop("prior_heldout", None),
            "device": meta.pop("device", {}),
            "lookup": [{"key": k, **v} for k, v in sorted(self.lookup.items())],
            **meta,
        }

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], target: Any, source: str = "model file"
    ) -> CalibratedModel:
        """Read a ``model.json``; refuse one made for another target or another schema."""
        facts = TargetFacts.of(target)
        if not isinstance(d, dict) or d.get("schema") != MODEL_SCHEMA:
            raise CalibrationError(
                f"{source} is not a dnsrec-edge cost model of schema {MODEL_SCHEMA}; "
                f"refit it with 'dnsrec-edge calibrate --target {facts.name} --refit'"
            )
        if d.get("target") != facts.name:
            raise CalibrationError(
                f"{source} is a cost model for target '{d.get('target')}', not "
                f"'{facts.name}'; move it away, then refit with "
                f"'dnsrec-edge calibrate --target {facts.name} --refit'"
            )
        kind = str(d.get("kind", "measured"))
        # A prior follows the target's current figures, so it never goes stale.
        coef = prior_coefficients(facts) if kind == "prior" else d.get("coefficients")
        if isinstance(coef, dict) and "stream_gb" not in coef:
            coef = coef | {"stream_gb": 0.0}  # fitted before the feature existed
        if not isinstance(coef, dict) or any(
            not isinstance(coef.get(f), int | float) or coef[f] < 0 for f in FEATURES
        ):
            raise CalibrationError(
                f"{source} needs a non-negative coefficient for each of {', '.join(FEATURES)}; "
                f"refit it with 'dnsrec-edge calibrate --target {facts.name} --refit'"
            )
        energy = d.get("energy") or {}
        known = {
            "statistic",
            "cache_mb",
            "lanes",
            "schema",
            "kind",
            "target",
            "coefficients",
            "energy",
            "lookup",
            "batch",
            "seq_len",
            "features",
            "units",
            "prior",
            "tool_version",
            "created",
        }
        return cls(
            target=facts.name,
            facts=facts,
            coefficients={f: float(coef[f]) for f in FEATURES},
            kind=kind,
            energy_coefficients=energy.get("coefficients")
            if energy.get("kind") == "measured"
            else None,
            lookup={
                e["key"]: {k: v for k, v in e.items() if k != "key"} for e in d.get("lookup", [])
            },
            batch=int(d.get("batch", 1)),
            seq_len=d.get("seq_len"),
            statistic=str(d.get("statistic", "min")),
            cache_mb=float(d.get("cache_mb", DEFAULT_CACHE_MB)),
            lanes=facts.lanes if kind == "prior" else int(d.get("lanes", 0)),
            meta={k: v for k, v in d.items() if k not in known},
        )

    def save(self, calibration_dir: str | Path | None = None) -> Path:
        """Write ``<store>/<target>/model.json`` atomically; return its path."""
        return atomic_write_json(
            store_dir(calibration_dir) / self.target / MODEL_FILE, self.to_dict()
        )


def _fit_cache(
    fitted: FitData, solve: Any, folds: int, seed: int, preferred: float
) -> tuple[float, FitData, np.ndarray]:
    """The cache size (of ``CACHE_MB`` and ``preferred``, the one ``fitted`` has features for)
    whose fit cross-validates best (most records within 10 %, then the lowest MAPE; ties keep
    ``preferred``), its FitData and its out-of-fold predictions."""
    best = None
    for cache_mb in sorted({preferred, *CACHE_MB}, key=lambda c: c != preferred):
        data = fitted if cache_mb == preferred else fitted.with_cache(cache_mb)
        cv = cross_validate(data.x, data.latency, folds, seed, solve)
        err = error_stats(data.latency, cv)
        score = (-err["within10"], round(err["mape"], 2))
        if best is None or score < best[0]:
            best = (score, cache_mb, data, cv)
    return best[1], best[2], best[3]


def _lookup_table(data: FitData) -> dict[str, dict[str, float]]:
    """Exact (arch, batch, seq_len) -> median measured latency and energy over its records."""
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(data.records):
        key = lookup_key(record["arch"], record["batch"], record["seq_len"])
        groups.setdefault(key, []).append(i)
    table = {}
    for key, idx in groups.items():
        energy = data.energy[idx]
        energy = energy[~np.isnan(energy)]
        table[key] = {
            "latency_ms": float(np.median(data.latency[idx])),
            "n": len(idx),
            "energy_mj": float(np.median(energy)) if len(energy) else None,
        }
    return table


def select_records(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Records of the newest record's board and its most common build, and a note.

    A build is (tuned or not, thread count): records of other builds time other code. An
    architecture measured as several libraries (the toolkit's schedules changed between the
    measurements) keeps those of its newest library only.
    """
    if not records:
        return [], ""
    newest = max(records, key=lambda r: str(r.get("time", "")))
    board = board_key(newest.get("device"))
    same = [r for r in records if board_key(r.get("device")) == board]
    builds = Counter(_build(r) for r in same)
    build = max(builds, key=lambda b: (builds[b], b == _build(newest)))
    chosen = [r for r in same if _build(r) == build]
    latest: dict[str, dict[str, Any]] = {}  # architecture -> its newest record
    for r in chosen:
        key = _measured_shape(r)
        if key not in latest or str(r.get("time", "")) > str(latest[key].get("time", "")):
            latest[key] = r
    chosen = [
        r
        for r in chosen
        if not r.get("arch")
        or r.get("artifact_sha256") == latest[_measured_shape(r)].get("artifact_sha256")
    ]
    left = len(records) - len(chosen)
    note = f"; {left} record(s) of other boards, builds or older libraries left out" if left else ""
    return chosen, note


def _measured_shape(record: dict[str, Any]) -> str:
    """What a record measured, whichever library it ran: architecture, batch, length."""
    try:
        return lookup_key(record["arch"], record["batch"], record["seq_len"])
    except (ArchSpecError, KeyError, TypeError, ValueError):  # fit_data skips it with a warning
        return json.dumps([record.get("arch"), record.get("batch"), record.get("seq_len")])


def _build(record: dict[str, Any]) -> tuple[bool, int | None]:
    return bool(record.get("tuned")), record.get("threads")


def read_model_file(path: Path, target: Any) -> CalibratedModel:
    """Load one ``model.json`` for ``target``."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CalibrationError(
            f"cannot read cost model '{path}' ({err}); refit it with "
            f"'dnsrec-edge calibrate --target {TargetFacts.of(target).name} --refit'"
        ) from err
    return CalibratedModel.from_dict(d, target, source=f"'{path}'")


def load_cost_model(target: Any, calibration_dir: str | Path | None = None) -> CalibratedModel:
    """The target's cost model: the store's ``model.json``, else the shipped one, else the prior."""
    facts = TargetFacts.of(target)
    path = model_file(facts.name, calibration_dir)
    if path is not None:
        model = read_model_file(path, facts)
        model.meta["source"] = str(path)
        log.debug("cost model for %s from %s (%s)", facts.name, path, model.kind)
        return model
    model = CalibratedModel.prior(facts)
    model.meta["source"] = "the target's roofline and power figures (no model file)"
    return model
