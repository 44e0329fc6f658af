"""Default CPU schedules for the fused TIR kernels of a SASRec-style model.

TVM's default CPU pipeline leaves every kernel as naive scalar loops (~16x slower than ONNX
Runtime here), and dlight's CPU rules only cover inner-reduction GEMV and norms. These rules
give every kernel a real schedule in one deterministic pass, without search:

- matmul (spatial iters then one reduction): register tile rows x whole vectors of columns
  (up to 10 rows x one vector on AVX-512),
  sized by the target's SIMD width and register count (:func:`simd_bits`), reduction in
  between, accumulators in a local cache, epilogue (bias, relu, mask) folded in; a matmul
  whose columns are not a whole number of vectors (attention scores over 50 or 200 keys) is
  padded with ``pad_einsum`` first, since TVM scalarises a vector loop with a tail (constant
  weights are padded earlier, at the Relax level: :mod:`dnsrec_edge.compile.rewrites`);
- row reductions (LayerNorm, softmax): one row per iteration, vectorised element-wise parts;
- injective kernels (gather, reshape + transpose, masks): inlined into one loop nest,
  flattened and vectorised.

A kernel is parallelised only when its work exceeds :data:`PARALLEL_MIN_WORK`: at batch 1 most
kernels are tiny, and a thread-pool launch then costs more than the work. The module imports
TVM at the top, so import it only inside functions that compile.
"""

from __future__ import annotations

import functools
import logging
import math

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight import normalize_prim_func, try_inline_contiguous_spatial
from tvm.s_tir.schedule import ScheduleError
from tvm.target import Target
from tvm.tirx.analysis import undefined_vars

from dnsrec_edge.compile import targets
from dnsrec_edge.compile.padding import schedule_width, tile_vectors

log = logging.getLogger(__name__)

# Below this many multiply-adds (matmul) or elements x 4 (others) a kernel runs on one thread.
PARALLEL_MIN_WORK = 1 << 17
# Most rows of a one-vector matmul register tile (one accumulator register per row).
MAX_TILE_ROWS = 10
_ERRORS = (ScheduleError, tvm.error.InternalError, ValueError)


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def simd_bits(target: Target) -> int:
    """Width in bits of the vector registers ``target`` has (128 when unknown): what its
    ``mtriple``, ``mcpu`` and ``mattr`` say (``compile.targets.simd_bits``), else LLVM's answer."""
    attrs = target.attrs
    named = targets.simd_bits(
        {
            "mattr": [str(m) for m in attrs.get("mattr", [])],
            "mcpu": str(attrs.get("mcpu", "") or ""),
            "mtriple": str(attrs.get("mtriple", "") or ""),
        }
    )
    if named is not None:
        return named
    from tvm.target.codegen import llvm_get_vector_width

    width = llvm_get_vector_width(target)
    return width if width > 0 else 128


def vector_lanes(target: Target, bits: int = 32) -> int:
    """SIMD lanes of ``bits``-wide elements on ``target`` (at least 4)."""
    return max(simd_bits(target) // bits, 4)


def vector_registers(target: Target) -> int:
    """Architectural vector registers: 32 on AVX-512 and Arm, 16 on SSE/AVX2."""
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple.startswith("x86_64") and simd_bits(target) < 512:
        return 16
    return 32


def _largest_divisor(n: int, candidates: list[int]) -> int:
    for c in candidates:
        if c <= n and n % c == 0:
            return c
    return 1


def _vectorize_innermost(sch: s_tir.Schedule, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    ext = _extent(sch, loops[-1])
    if ext is None or ext < 2:
        return
    if ext > lanes:
        factor = _largest_divisor(ext, [lanes, lanes // 2, lanes // 4])
        if factor < 2:
            return
        loops = sch.split(loops[-1], factors=[None, factor])
    sch.vectorize(loops[-1])


def _register_tile(m: int | None, n: int, lanes: int, registers: int) -> tuple[int, int]:
    """``(rows, columns)`` of a matmul's register tile; columns divide ``n`` exactly.

    A row vector (``m`` 1 or None) takes two vectors of columns when they divide ``n`` (two
    accumulator chains). A matrix takes :func:`tile_vectors` vectors and as many rows as the
    accumulator registers left allow: up to :data:`MAX_TILE_ROWS` on AVX-512 (one vector;
    measured 4-10 % faster than two vectors x 5 rows), up to 6 on narrower SIMD. Odd vector widths
    make LLVM assemble every vector lane by lane, and tails make TVM scalarise the whole loop
    (both measured 10-20x slower).
    """
    first = 2 if not m or m == 1 else tile_vectors(lanes)
    preferred = [first * lanes] + [v * lanes for v in (2, 1, 4) if v != first]
    cols = _largest_divisor(n, [*preferred, lanes // 2, lanes // 4, 2])
    if n < lanes and n & (n - 1) == 0:
        cols = n
    if not m or m == 1:
        return 1, cols
    vecs = -(-cols // lanes)
    cap = MAX_TILE_ROWS if tile_vectors(lanes) == 1 else 6
    max_rows = min(cap, max(1, (registers - 2 * vecs - 2) // vecs))
    rows = _largest_divisor(m, list(range(max_rows, 1, -1)))
    return rows, cols


def _schedule_matmul(
    sch: s_tir.Schedule, infos, target: Target, threads: int, pad: bool = False
) -> s_tir.Schedule | None:
    """Tile one ``S..SR`` reduction block followed by injective epilogue blocks.

    With ``pad``, a matmul whose column count is not a whole number of vectors (attention
    scores over 50 or 200 keys) is padded (``pad_einsum``) to one that is: a zero-filled copy
    of its right operand, full-vector register tiles, and a copy back that carries the
    epilogue. Without it, such a matmul falls back on narrower tiles."""
    red = [i for i, b in enumerate(infos) if not b.is_injective()]
    if len(red) != 1 or red[0] != 0 or not infos[0].dom_kind().endswith("SR"):
        return None
    if infos[0].dom_kind().count("R") != 1:
        return None
    if any(not b.is_injective() for b in infos[1:]):
        return None
    block = infos[0].block_rv
    lanes = vector_lanes(target)
    loops = sch.get_loops(block)
    *spatial, k = loops
    extents = [_extent(sch, lp) for lp in loops]
    if any(e is None for e in extents):
        return None
    *s_ext, k_ext = extents
    n = s_ext[-1]
    m = s_ext[-2] if len(s_ext) >= 2 else 1
    work = math.prod(s_ext) * k_ext
    copy_out = None
    if pad:
        width = schedule_width(n, lanes)
        if width is None:
            return None  # nothing to pad: the plain rule does it
        names = [sch.get(info.block_rv).name_hint for info in infos]
        iters = sch.get(block).iter_vars  # spatial iters, then the reduction (``S..SR``)
        sch.pad_einsum(block, [1] * (len(iters) - 2) + [width, 1])
        block = sch.get_sblock(names[0])
        padded_in = sch.get_producers(block)
        copy_out = sch.get_consumers(block)[0]
        for name in names[1:]:  # the epilogue moves onto the copy back
            sch.reverse_compute_inline(sch.get_sblock(name))
        for producer in padded_in:
            _vectorize_innermost(sch, producer, lanes)
        infos = infos[:1]
        loops = sch.get_loops(block)
        *spatial, k = loops
        n = _extent(sch, spatial[-1])

    # Register tile: up to 6 rows x 1-4 vectors of columns (an exact divisor of n).
    ii, ji = _register_tile(m if len(s_ext) >= 2 else None, n, lanes, vector_registers(target))
    jo, j_in = sch.split(spatial[-1], factors=[None, ji])
    outer = list(spatial[:-2])
    if len(s_ext) >= 2:
        io, i_in = sch.split(spatial[-2], factors=[None, ii])
        outer.append(io)
        inner = [i_in, j_in]
    else:
        inner = [j_in]
    outer.append(jo)
    sch.reorder(*outer, k, *inner)

    # Accumulate in a local tile; write back (with the epilogue folded in) per tile.
    cache = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(cache, outer[-1], preserve_unit_loops=True)
    tail = cache
    for info in infos[1:]:
        try:
            sch.reverse_compute_inline(info.block_rv)
        except _ERRORS:
            sch.reverse_compute_at(info.block_rv, outer[-1], preserve_unit_loops=True)
            tail = info.block_rv
    for wb in [cache] if tail is cache else [cache, tail]:
        _vectorize_innermost(sch, wb, lanes)

    upd = sch.get_loops(block)
    if ji > 1:
        sch.vectorize(upd[-1])
    if len(inner) == 2 and ii > 1:
        sch.unroll(upd[-2])
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if threads > 1 and work >= PARALLEL_MIN_WORK:
        sch.parallel(fused)
    sch.decompose_reduction(block, k)
    if copy_out is not None:
        _vectorize_innermost(sch, copy_out, lanes)
    return sch


def _schedule_reduction(
    sch: s_tir.Schedule, infos, target: Target, threads: int
) -> s_tir.Schedule | None:
    """Row reductions (LayerNorm, softmax): rows outside, SIMD partial sums, vector epilogue."""
    if len(infos) < 2 or all(b.is_injective() for b in infos) or not infos[-1].is_injective():
        return None
    lead = None
    for info in infos:
        kind = info.dom_kind()
        n_lead = len(kind) - len(kind.lstrip("S"))
        if n_lead == 0 or (not info.is_injective() and kind[n_lead:] != "R"):
            return None
        lead = n_lead if lead is None else min(lead, n_lead)
    if len(infos[-1].dom_kind()) <= lead:
        return None  # nothing left inside a row to vectorise: not a row reduction
    lanes = vector_lanes(target)
    # rfactor needs the reduction to lead its loop nest: do it before compute_at.
    partials = []
    for info in infos:
        if not info.is_injective():
            partials.append(_split_reduction(sch, info.block_rv, lanes))
    last = infos[-1].block_rv
    loops = sch.get_loops(last)
    rows = sch.fuse(*loops[:lead]) if lead > 1 else loops[0]
    for blk in reversed(sch.get_child_blocks(sch.get_sblock("root"))[:-1]):
        sch.compute_at(blk, rows, preserve_unit_loops=True)
    elements = math.prod(int(e) for e in infos[-1].dom() if isinstance(e, int | tirx.IntImm))
    if threads > 1 and 4 * elements >= PARALLEL_MIN_WORK and _extent(sch, rows) != 1:
        sch.parallel(rows)
    for info in infos:
        if info.is_injective() and len(info.dom_kind()) > lead:
            _vectorize_innermost(sch, info.block_rv, lanes)
    # Every block now sits under ``rows`` (its loop 0): initialise right below it.
    for rf in partials:
        if rf is not None:
            sch.vectorize(sch.get_loops(rf)[-1])
            sch.decompose_reduction(rf, sch.get_loops(rf)[1])
    for info in infos:
        if not info.is_injective():
            sch.decompose_reduction(info.block_rv, sch.get_loops(info.block_rv)[1])
    return sch


def _split_reduction(sch: s_tir.Schedule, block, lanes: int):
    """rfactor a row reduction into ``lanes`` partial results (SIMD instead of one chain)."""
    loops = sch.get_loops(block)
    ext = _extent(sch, loops[-1])
    vec = _largest_divisor(ext or 0, [lanes, lanes // 2, lanes // 4])
    if ext is None or vec < 2 or ext == vec:
        return None
    _, inner = sch.split(loops[-1], factors=[None, vec])
    rf = sch.rfactor(inner, factor_axis=0)
    # rfactor puts the partial-result iter first; move it last so compute_at regenerates
    # the loops as (row, chunk, lane) and the lane loop can be vectorised.
    n_iters = len(sch.get(rf).iter_vars)
    sch.reorder_block_iter_var(rf, [*range(1, n_iters), 0])
    return rf


def _contiguous_float(sch: s_tir.Schedule, block) -> bool:
    """True if ``block`` writes floats and reads each buffer contiguously along its last axis.

    Vectorising a transpose (strided reads) or a bool kernel makes LLVM emit gathers or
    per-lane bit twiddling that run slower than scalar loops.
    """
    stmt = sch.get(block)
    if not stmt.writes or not str(stmt.writes[0].source.dtype).startswith("float"):
        return False
    inner = stmt.iter_vars[-1].var
    for region in stmt.reads:
        for axis, rng in enumerate(region.region):
            uses = any(v.same_as(inner) for v in undefined_vars(rng.min))
            if uses and axis != len(region.region) - 1:
                return False
    return True


def _schedule_injective(
    sch: s_tir.Schedule, infos, target: Target, threads: int
) -> s_tir.Schedule | None:
    """Spatial-only kernels: one flattened, vectorised loop nest per remaining block."""
    if not all(b.is_injective() for b in infos):
        return None
    lanes = vector_lanes(target)
    for info in infos:
        loops = sch.get_loops(info.block_rv)
        if not loops:
            continue
        extents = [_extent(sch, lp) for lp in loops]
        if any(e is None for e in extents):
            continue
        inner = loops[-1]
        vec = 1
        if extents[-1] >= 4 and _contiguous_float(sch, info.block_rv):
            vec = _largest_divisor(extents[-1], [lanes, lanes // 2, lanes // 4])
        if vec > 1:
            inner, vloop = sch.split(inner, factors=[None, vec])
            sch.vectorize(vloop)
        if threads > 1 and 4 * math.prod(extents) >= PARALLEL_MIN_WORK:
            outer = [*loops[:-1], inner] if vec > 1 else loops[:-1] or [inner]
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    return sch


def _inline_single_use(sch: s_tir.Schedule, infos):
    """Inline spatial blocks read by exactly one block; keep shared ones (e.g. softmax's exp)."""
    kept = []
    for info in infos:
        single_use = info is not infos[-1] and len(sch.get_consumers(info.block_rv)) == 1
        if info.is_injective() and single_use and _try_inline(sch, info.block_rv):
            continue
        kept.append(info)
    return kept


def _try_inline(sch: s_tir.Schedule, block) -> bool:
    try:
        sch.compute_inline(block)
    except _ERRORS as err:
        log.debug("cannot inline: %s", err)
        return False
    return True


def schedule_func(func: tirx.PrimFunc, target: Target, threads: int) -> tirx.PrimFunc | None:
    """Return ``func`` scheduled by the first rule that fits, or None if none does."""
    sch = schedule_func_sch(func, target, threads)
    return None if sch is None else sch.mod["main"].with_attr("tirx.is_scheduled", True)


def schedule_func_sch(func: tirx.PrimFunc, target: Target, threads: int) -> s_tir.Schedule | None:
    """The schedule (with its replayable trace) of the first rule that fits ``func``."""
    rules = (
        (functools.partial(_schedule_matmul, pad=True), try_inline_contiguous_spatial),
        (_schedule_matmul, try_inline_contiguous_spatial),
        (_schedule_reduction, _inline_single_use),
        (_schedule_injective, try_inline_contiguous_spatial),
    )
    for rule, inline in rules:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos:
            return None
        try:
            result = rule(sch, inline(sch, infos), target, threads)
        except _ERRORS as err:
            log.debug("rule %s did not apply: %s", getattr(rule, "__name__", rule), err)
            continue
        if result is not None:
            return result
    return None


def apply_default_schedules(mod: tvm.IRModule, target: Target, threads: int) -> tvm.IRModule:
    """Schedule every not-yet-scheduled PrimFunc of ``mod`` for the CPU ``target``."""
    updates = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", 0):
            continue
        scheduled = schedule_func(func, target, threads)
        if scheduled is None:
            log.debug("no default schedule for %s", gvar.name_hint)
        else:
            updates[gvar] = scheduled
    for gvar, func in updates.items():
        mod[gvar] = func
    return mod


def count_scheduled(mod: tvm.IRModule) -> tuple[int, int]:
    """``(scheduled, total)`` PrimFuncs in ``mod`` (records can silently fail to apply)."""
    funcs = [f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]
    done = sum(1 for f in funcs if int(f.attrs.get("tirx.is_scheduled", 0)) == 1)
    return done, len(funcs)
