"""Relax-level rewrites that make the default CPU schedules' kernels fit SIMD registers.

- :func:`pad_constant_matmul_pass`: ``x @ W`` with a constant ``W`` (K, N) whose N is not a
  whole number of register tiles (the scoring matmul against 1,349 or 3,417 items) becomes
  ``(x @ pad(W))[..., :N]``: the matmul then runs in full vectors instead of a scalar loop
  (TVM scalarises a vector loop with a tail), and the slice is one small copy. The padding
  is done once, at compile time.
- :func:`share_item_table_pass`: the embedding lookup ``take(E, ids)`` reads the scoring
  matmul's weight instead of its own copy of the item table. The ONNX files store the table
  once, but constant folding gives the scoring a transposed (and, above, padded) copy, so a
  build held the table twice: 50 MB for 100,000 items at hidden 64, where the table is 25 MB.
  The lookup becomes ``take(W, max(ids - 1, 0), axis=1)`` transposed and zeroed where
  ``ids == 0``, exact when row 0 of ``E`` (padding) is zero and ``W[:, :n] == E[1:].T``,
  which the pass checks before it rewrites. Tables under :data:`SHARE_MIN_BYTES` keep their
  own row-major copy: a lookup gathers whole rows from it, 16x fewer cache lines than the
  columns of the transposed weight (at batch 64 the column gather and its transpose took a
  third of a small subnet's call), and the copy costs under 1 MiB.
- :func:`topk_pass`: the in-graph ``TopK`` of a 2-D score matrix becomes one TIR kernel (k
  passes over each row, rows in parallel; ties go to the lower index, as in ONNX Runtime).
  TVM's own lowering calls ``tvm.contrib.sort.topk``, a packed function that only the full
  TVM library has, so a board with the TVM runtime alone could not run such an artifact.

These run on the imported module before legalisation. The module imports TVM lazily.
"""

from __future__ import annotations

import logging

import numpy as np

from dnsrec_edge.compile.padding import constant_columns

log = logging.getLogger(__name__)

# Item tables (float32 bytes) from which the embedding lookup shares the scoring weight.
SHARE_MIN_BYTES = 1 << 20


def calls(expr, op_name: str) -> bool:
    """True when ``expr`` is a call of the Relax operator ``op_name`` (e.g. ``relax.matmul``)."""
    import tvm
    from tvm import relax

    return (
        isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == op_name
    )


def function_pass(name: str, make_mutator):
    """A module pass running ``make_mutator(mod)`` (a Relax ``PyExprMutator``) over every
    Relax function of the module."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=name)
    def transform(mod, _ctx):
        mutator = make_mutator(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gvar, mutator.visit_expr(func))
        return mutator.builder_.get()

    return transform


def pad_constant_matmul_pass(multiple: int):
    """A Relax pass padding the last axis of constant matmul weights to ``multiple``."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class PadWeights(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not calls(call, "relax.matmul"):
                return call
            weight = call.args[1]
            if not isinstance(weight, tvm.ir.expr.Constant):
                return call
            value = weight.value.numpy()
            if value.ndim != 2 or value.dtype != np.float32:
                return call
            n = value.shape[1]
            width = constant_columns(n, multiple)
            if width == n:
                return call
            padded = np.zeros((value.shape[0], width), dtype=value.dtype)
            padded[:, :n] = value
            log.debug("padding a constant matmul weight from %d to %d columns", n, padded.shape[1])
            wide = self.builder_.emit(
                relax.op.matmul(call.args[0], relax.const(padded), out_dtype=call.attrs.out_dtype)
            )
            return relax.op.strided_slice(wide, axes=[-1], begin=[0], end=[n])

    return function_pass("DnsrecPadConstantMatmul", PadWeights)


def topk_pass():
    """A Relax pass replacing ``relax.topk`` over the last axis of a static 2-D float32
    tensor (largest first, values and indices) by :func:`_topk_kernel`."""
    from tvm import relax

    @relax.expr_functor.mutator
    class TopK(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not calls(call, "relax.topk"):
                return call
            a, ty = call.attrs, call.args[0].ty
            shape = [int(d) for d in ty.shape] if ty.shape is not None else []
            if not (
                len(shape) == 2
                and ty.dtype == "float32"
                and int(a.axis) in (-1, 1)
                and a.ret_type == "both"
                and bool(a.largest)
            ):
                return call
            rows, n = shape
            k, index_dtype = int(a.k), str(a.dtype)
            kernel = _topk_kernel(rows, n, k, index_dtype)
            gvar = self.builder_.add_func(kernel, f"dnsrec_topk_{rows}x{n}_k{k}")
            out = [relax.TensorType((rows, k), "float32"), relax.TensorType((rows, k), index_dtype)]
            return relax.call_tir(gvar, [call.args[0]], out)

    return function_pass("DnsrecTopK", TopK)


def _topk_kernel(rows: int, n: int, k: int, index_dtype: str):
    """TIR: the ``k`` largest of each row of ``x`` (rows, n), best first. Pass ``j`` takes the
    largest element ordered after pass ``j - 1``'s pick (smaller value, or the same value at a
    higher index), so no scratch copy of the row is needed."""
    import tvm.tirx  # noqa: F401  (registers the tirx script dialect)
    from tvm.script import tirx as T

    @T.prim_func(check_well_formed=False)  # a root block, as the S-TIR passes expect
    def topk(
        x: T.Buffer((rows, n), "float32"),
        values: T.Buffer((rows, k), "float32"),
        indices: T.Buffer((rows, k), index_dtype),
    ):
        T.func_attr({"tir.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            best_v = T.alloc_buffer((rows,), "float32")  # one slot per row: rows run in parallel
            best_i = T.alloc_buffer((rows,), index_dtype)
            for r in T.parallel(rows):
                for j in range(k):
                    best_v[r] = T.min_value("float32")
                    best_i[r] = T.Cast(index_dtype, -1)
                    for e in range(n):
                        v = x[r, e]
                        after = j == 0 or (
                            v < values[r, j - 1]
                            or (
                                v == values[r, j - 1] and T.Cast(index_dtype, e) > indices[r, j - 1]
                            )
                        )
                        if after and (best_i[r] < 0 or v > best_v[r]):
                            best_v[r] = v
                            best_i[r] = T.Cast(index_dtype, e)
                    values[r, j] = best_v[r]
                    indices[r, j] = best_i[r]

    return topk


def share_item_table_pass(min_bytes: int = SHARE_MIN_BYTES):
    """A Relax pass pointing the embedding ``take`` of a table of at least ``min_bytes`` at
    the scoring matmul's weight (see the module docstring); run it after
    :func:`pad_constant_matmul_pass`."""
    import tvm
    from tvm import relax

    def weights(func) -> list:
        found = []

        def visit(e):
            if (
                calls(e, "relax.matmul")
                and isinstance(e.args[1], tvm.ir.expr.Constant)
                and e.args[1].value.numpy().ndim == 2
            ):
                found.append(e.args[1])

        relax.analysis.post_order_visit(func, visit)
        return found

    @relax.expr_functor.mutator
    class ShareTable(relax.PyExprMutator):
        def __init__(self, mod, candidates):
            super().__init__(mod)
            self.candidates = candidates

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (
                calls(call, "relax.take")
                and isinstance(call.args[0], tvm.ir.expr.Constant)
                and int(call.attrs.axis) == 0
            ):
                return call
            table = call.args[0].value.numpy()
            if table.nbytes < min_bytes:
                return call
            weight = _matching_weight(table, self.candidates)
            if weight is None:
                return call
            rows, real = lookup_columns(weight, call.args[1])
            log.debug("embedding lookup shares the scoring weight (%s)", table.shape)
            return relax.op.multiply(rows, real)

    def make(mod):
        candidates = [
            w for _, f in mod.functions_items() if isinstance(f, relax.Function) for w in weights(f)
        ]
        return ShareTable(mod, candidates)

    return function_pass("DnsrecShareItemTable", make)


def lookup_columns(table_t, ids):
    """The embedding lookup of ``ids`` in a transposed item table ``table_t`` (d, >= n) whose
    column ``j`` is item ``j + 1``: ``(rows, real)``, the rows ``table_t[:, ids - 1].T``
    (*ids.shape, d; padding ids read column 0) and the float32 mask that zeroes them where
    ``ids == 0``."""
    from tvm import relax

    ndim = len(ids.ty.shape)
    one, zero = relax.const(1, ids.ty.dtype), relax.const(0, ids.ty.dtype)
    cols = relax.op.maximum(relax.op.subtract(ids, one), zero)
    rows = relax.op.permute_dims(relax.op.take(table_t, cols, axis=1), [*range(1, ndim + 1), 0])
    real = relax.op.astype(relax.op.expand_dims(relax.op.greater(ids, zero), -1), "float32")
    return rows, real


def _matching_weight(table: np.ndarray, candidates: list):
    """The constant ``W`` (d, >= n) with ``W[:, :n] == table[1:].T`` and ``table[0] == 0``."""
    if table.ndim != 2 or table.dtype != np.float32 or np.any(table[0]):
        return None
    n, d = table.shape[0] - 1, table.shape[1]
    for const in candidates:
        w = const.value.numpy()
        fits = w.dtype == np.float32 and w.shape[0] == d and w.shape[1] >= n
        if fits and np.array_equal(w[:, :n], table[1:].T):
            return const
    return None
