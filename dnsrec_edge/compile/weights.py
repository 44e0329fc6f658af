"""Large constants kept beside the library instead of inside it: the artifact's weight files.

A catalogue of 10^6 items makes the item table 64 MB in int8 and 256 MB in float32. Embedded
in ``lib.so``, TVM holds it three times while it loads (the library's data pages, the
deserialised constant and the VM's own copy), so the process grew by about 3.7x the library.
:func:`lift_weights` turns every constant of ``main`` of at least ``EXTERNAL_MIN_BYTES`` into
a trailing parameter and hands back its value; the artifact stores each as a raw file
(``weight0.bin``, ...), listed in the manifest with its sha256, dtype and shape, and
:func:`load_weights` maps it into memory without a copy (a copy-on-write ``np.memmap`` handed
to TVM by DLPack): the process holds the table once, as pages of the file. A board reached
over RPC gets a copy of each file's values instead (the RPC protocol moves arrays, not files).

Callers pass the weights after the input: ``vm["main"](x, *weights)``; an artifact without
weight files (every catalogue up to a few 10^4 items) has none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

EXTERNAL_MIN_BYTES = 16 << 20  # constants this large leave the library
WEIGHT_FILE = "weight{}.bin"


def lift_weights(mod: Any, min_bytes: int | None = None) -> tuple[Any, list[np.ndarray]]:
    """``mod`` (updated in place) with the constants of ``main`` of at least ``min_bytes``
    (default ``EXTERNAL_MIN_BYTES``) as its trailing parameters, and their values in
    parameter order (none: ``mod`` unchanged)."""
    import tvm
    from tvm import relax

    min_bytes = EXTERNAL_MIN_BYTES if min_bytes is None else min_bytes

    func = mod["main"]
    found: dict[int, Any] = {}

    def visit(expr: Any) -> None:
        if isinstance(expr, tvm.ir.expr.Constant) and _nbytes(expr) >= min_bytes:
            found.setdefault(expr.__chandle__(), expr)

    relax.analysis.post_order_visit(func, visit)
    if not found:
        return mod, []
    index = {handle: i for i, handle in enumerate(found)}
    params = [
        relax.Var(f"weight{i}", relax.TensorType(const.ty.shape, const.ty.dtype))
        for i, const in enumerate(found.values())
    ]

    @relax.expr_functor.mutator
    class Lift(relax.PyExprMutator):
        def visit_generic_const_(self, const):
            i = index.get(const.__chandle__())
            return const if i is None else params[i]

    body = Lift(mod).visit_expr(func.body)
    lifted = relax.Function(
        [*func.params, *params], body, func.ret_ty, func.is_pure, func.attrs, func.span
    )
    mod.update_func(mod.get_global_var("main"), lifted)
    return mod, [const.value.numpy() for const in found.values()]


def _nbytes(const: Any) -> int:
    shape = getattr(const.ty, "shape", None)
    if shape is None:  # a scalar (PrimType) constant
        return 0
    shape = [int(d) for d in shape]
    return int(np.prod(shape)) * np.dtype(str(const.ty.dtype)).itemsize


def write_weights(folder: Path, values: list[np.ndarray]) -> list[dict[str, Any]]:
    """Write each value as a raw file in ``folder``; the manifest's ``weights`` entries."""
    entries = []
    for i, value in enumerate(values):
        name = WEIGHT_FILE.format(i)
        np.ascontiguousarray(value).tofile(folder / name)
        entries.append({"file": name, "dtype": str(value.dtype), "shape": list(value.shape)})
    return entries


def load_weights(folder: Path, manifest: dict[str, Any], dev: Any = None) -> list[Any]:
    """The artifact's weight files as TVM tensors, in ``main``'s parameter order.

    On this host's CPU (``dev`` None or a local CPU) each file is mapped, not read: no copy.
    On a remote device the values are copied there. ``load_artifact`` has checked the files'
    sha256s and that their names stay inside the folder.
    """
    import tvm

    from dnsrec_edge.compile.artifact import member

    out = []
    for entry in manifest.get("weights", []):
        path = member(folder, entry["file"])
        shape, dtype = tuple(entry["shape"]), np.dtype(entry["dtype"])
        if dev is None or _is_local_cpu(dev):
            out.append(tvm.runtime.from_dlpack(np.memmap(path, dtype, mode="c", shape=shape)))
        else:
            out.append(tvm.runtime.tensor(np.fromfile(path, dtype).reshape(shape), dev))
    return out


def _is_local_cpu(dev: Any) -> bool:
    """A CPU of this process (a remote one's device type carries its RPC session's mask)."""
    import tvm

    return int(dev.dlpack_device_type()) == int(tvm.cpu().dlpack_device_type())
