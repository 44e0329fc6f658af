"""Relax-level rewrites that make the default CPU schedules' kernels fit SIMD registers.

- :func:`pad_constant_matmul_pass`: ``x @ W`` with a constant ``W`` (K, N) whose N is not a
  whole number of register tiles (the scoring matmul against 1,349 or 3,417 items) becomes
  ``(x @ pad(W))[..., :N]``: the matmul then runs in full vectors instead of a scalar loop
  (TVM scalarises a vector loop with a tail), and the slice is one small copy. The padding
  is done once, at compile time.

These run on the imported module before legalisation. The module imports TVM lazily.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def pad_constant_matmul_pass(multiple: int):
    """A Relax pass padding the last axis of constant matmul weights to ``multiple``."""
    import tvm
    from tvm import relax

    matmul_op = tvm.ir.Op.get("relax.matmul")

    @relax.expr_functor.mutator
    class PadWeights(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(matmul_op)):
                return call
            weight = call.args[1]
            if not isinstance(weight, tvm.ir.expr.Constant):
                return call
            value = weight.value.numpy()
            if value.ndim != 2 or value.dtype != np.float32:
                return call
            n = value.shape[1]
            if n % multiple == 0 or n < 2 * multiple:
                return call
            padded = np.zeros((value.shape[0], -(-n // multiple) * multiple), dtype=value.dtype)
            padded[:, :n] = value
            log.debug("padding a constant matmul weight from %d to %d columns", n, padded.shape[1])
            wide = self.builder_.emit(
                relax.op.matmul(call.args[0], relax.const(padded), out_dtype=call.attrs.out_dtype)
            )
            return relax.op.strided_slice(wide, axes=[-1], begin=[0], end=[n])

    @tvm.transform.module_pass(opt_level=0, name="DnsrecPadConstantMatmul")
    def transform(mod, _ctx):
        mutator = PadWeights(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gvar, mutator.visit_expr(func))
        return mutator.builder_.get()

    return transform
