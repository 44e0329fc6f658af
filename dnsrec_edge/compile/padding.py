"""How the default CPU build pads matmul columns to whole vectors: the rules that the Relax
rewrite (``rewrites.pad_constant_matmul_pass``), the matmul schedule
(``schedules._schedule_matmul``) and the cost model (``cost.calibrated.built_columns``) all
follow, written once. Plain integers; no TVM import.

Example::

    constant_columns(3416, 32)   # 3424: a scoring weight padded to whole 32-column tiles
    schedule_width(200, 16)      # 16: attention scores over 200 keys padded to whole AVX-512 vectors
"""

from __future__ import annotations


def constant_columns(n: int, multiple: int) -> int:
    """The columns a constant weight of ``n`` columns gets at compile time: whole ``multiple``s
    once it spans at least two of them, else ``n`` as it is."""
    if n % multiple == 0 or n < 2 * multiple:
        return n
    return -(-n // multiple) * multiple


def tile_vectors(lanes: int) -> int:
    """Vectors of columns in the register tile of a matmul over several rows: one where a
    vector holds 16 floats (AVX-512; then up to 10 rows share each loaded vector), two on
    narrower SIMD (one was measured 1.2x slower on SSE, neutral on AVX2)."""
    return 1 if lanes >= 16 else 2


def schedule_width(n: int, lanes: int) -> int | None:
    """The column multiple the matmul schedule pads ``n`` columns to: the register tile's
    vectors (:func:`tile_vectors`), one below two; None when ``n`` is whole vectors or under
    one, which it leaves alone."""
    if n % lanes == 0 or n < lanes:
        return None
    return tile_vectors(lanes) * lanes if n >= 2 * lanes else lanes
