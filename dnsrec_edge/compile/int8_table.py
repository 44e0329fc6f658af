"""A Relax rewrite that keeps a quantized item table in 8 bits inside the built artifact.

An int8 ONNX file (``export --quantize int8``) stores the item table once, as 8-bit codes
read by two ``DequantizeLinear`` nodes: one feeds the embedding lookup, the other (sliced
past the padding row and transposed) the scoring matmul. TVM's constant folding turns both
into float32 constants, so the artifact held the table twice in float32: 8x the int8 file's
bytes (51 MB for 100,000 items at hidden 64), larger than the float32 build.

:func:`int8_item_table_pass` replaces both with one int8 constant ``QT`` (hidden, items)
(the codes of rows 1..n, transposed, padded to whole register tiles with the zero point):

- the scoring ``h @ dequantize(Q)[1:].T`` becomes one kernel,
  ``sum_k h[.., k] * (QT[k, j] - zp)``, times the scale, that reads the 8-bit codes directly;
- the lookup ``take(dequantize(Q), ids)`` becomes ``dequantize(take(QT, ids - 1, axis=1))``
  transposed and zeroed where ``ids == 0`` (exact when row 0 of the table dequantizes to 0,
  which the pass checks).

Only a per-tensor quantized table (scalar scale and zero point) is rewritten; anything else
is left to TVM's own lowering. The module imports TVM lazily.
"""

from __future__ import annotations

import logging

import numpy as np

from dnsrec_edge.compile.rewrites import calls, function_pass, lookup_columns

log = logging.getLogger(__name__)


def int8_item_table_pass(multiple: int):
    """The Relax pass of the module docstring; ``multiple`` pads the item axis of ``QT``."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Int8Table(relax.PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.tables: dict[int, tuple] = {}  # Q node -> (QT, n, scale, zp, row 0 is 0)

        def bound(self, expr):
            """The expression a dataflow variable is bound to (``expr`` itself otherwise)."""
            if isinstance(expr, relax.Var):
                value = self.lookup_binding(expr)
                return expr if value is None else value
            return expr

        def dequantized(self, expr):
            """``(Q constant, scale, zero point)`` when ``expr`` is a per-tensor dequantize of a
            2-D 8-bit constant, else None."""
            call = self.bound(expr)
            if not calls(call, "relax.dequantize"):
                return None
            q, scale, zp = call.args
            if not all(isinstance(a, tvm.ir.expr.Constant) for a in (q, scale, zp)):
                return None
            codes = q.value.numpy()
            s, z = scale.value.numpy(), zp.value.numpy()
            if codes.ndim != 2 or codes.dtype not in (np.int8, np.uint8) or s.size != 1:
                return None
            if z.size != 1 or str(call.attrs.out_dtype) != "float32":
                return None
            return q, float(s.reshape(())), int(z.reshape(()))

        def table(self, q, s: float, zp: int):
            """The shared ``QT`` constant for the codes ``q`` (built once per table)."""
            key = q.__chandle__()  # the node, not its (per-access) Python wrapper
            if key not in self.tables:
                codes = q.value.numpy()
                n, d = codes.shape[0] - 1, codes.shape[1]
                width = -(-n // multiple) * multiple
                qt = np.full((d, width), zp, dtype=codes.dtype)
                qt[:, :n] = codes[1:].T
                self.tables[key] = (relax.const(qt), n, s, zp, bool(np.all(codes[0] == zp)))
            return self.tables[key]

        def visit_call_(self, call):
            call = super().visit_call_(call)
            new = None
            if calls(call, "relax.matmul"):
                new = self.scoring(call)
            elif calls(call, "relax.take") and int(call.attrs.axis) == 0:
                new = self.lookup(call)
            return call if new is None else new

        def scoring(self, call):
            h, w = call.args
            t = self.bound(w)
            if not (calls(t, "relax.permute_dims") and [int(a) for a in t.attrs.axes] == [1, 0]):
                return None
            sl = self.bound(t.args[0])
            if not calls(sl, "relax.strided_slice") or not _slices_off_row_0(sl):
                return None
            found = self.dequantized(sl.args[0])
            if found is None or h.ty.dtype != "float32":
                return None
            qt, n, s, zp, _ = self.table(*found)
            if int(h.ty.shape[-1]) != int(qt.value.shape[0]):
                return None
            log.debug("scoring reads the int8 item table (%d items)", n)
            wide = self.builder_.emit(self.builder_.call_te(_te_scores, h, qt, s, zp))
            return relax.op.strided_slice(wide, axes=[-1], begin=[0], end=[n])

        def lookup(self, call):
            found = self.dequantized(call.args[0])
            if found is None:
                return None
            qt, _n, s, zp, zero_row = self.table(*found)
            if not zero_row:
                return None
            codes, real = lookup_columns(qt, call.args[1])
            rows = relax.op.dequantize(
                codes,
                relax.const(s, "float32"),
                relax.const(zp, str(qt.value.dtype)),
                axis=-1,
                out_dtype="float32",
            )
            log.debug("embedding lookup reads the int8 item table")
            return relax.op.multiply(rows, real)

    return function_pass("DnsrecInt8ItemTable", Int8Table)


def _slices_off_row_0(call) -> bool:
    """True for ``x[1:]`` along axis 0 (begin 1, to the end, stride 1)."""
    if len(call.args) != 5:
        return False
    try:
        axes, begin, end, strides = ([int(v.value) for v in t.fields] for t in call.args[1:])
    except (AttributeError, TypeError):  # symbolic bounds
        return False
    return axes == [0] and begin == [1] and end[0] >= 2**31 - 1 and strides == [1]


def _te_scores(h, qt, scale: float, zero_point: int):
    """TE: ``h @ ((QT - zp) * scale)`` with the codes converted inside the reduction."""
    from tvm import te

    d = qt.shape[0]
    k = te.reduce_axis((0, d), name="k")
    zp = float(zero_point)
    acc = te.compute(
        (*h.shape[:-1], qt.shape[1]),
        lambda *i: te.sum(h[(*i[:-1], k)] * (qt[k, i[-1]].astype("float32") - zp), axis=k),
        name="int8_scores",
    )
    return te.compute(acc.shape, lambda *i: acc(*i) * scale, name="int8_scores_scaled")
