"""The one output-comparison rule (dnsrec_edge.compare), as export, compile and bench use it."""

from __future__ import annotations

import numpy as np
import pytest

from dnsrec_edge.compare import compare_scores, differing_rows
from dnsrec_edge.errors import OutputMismatch


def test_near_tie_swaps_within_the_rows_error_are_ties_and_larger_swaps_are_not():
    ref = np.array([[3.0, 2.0, 1.0000004, 1.0, 0.0]])  # columns 2 and 3 are 4e-7 apart
    ref_idx = np.array([[0, 1, 2, 3]])
    swapped = np.array([[0, 1, 3, 2]])
    assert differing_rows(ref, swapped, ref_idx, np.array([3e-7])) == ([], 1)
    assert differing_rows(ref, swapped, ref_idx, np.array([1e-7])) == ([0], 0)
    assert differing_rows(ref, np.array([[1, 0, 2, 3]]), ref_idx, np.array([3e-7])) == ([0], 0)


def test_a_swap_within_twice_the_rows_error_is_a_tie_for_every_caller():
    ref = np.array([[3.0, 2.0, 1.0000004, 1.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    got = ref.copy()
    got[0, 2], got[0, 3] = 1.0000001, 1.0000002  # swapped, each within 3e-7 of the reference
    result = compare_scores(got, ref, atol=1e-4, k=4)
    assert result.ok and result.topk_match and result.tied_rows == 1
    assert result.max_abs_diff == pytest.approx(3e-7, abs=1e-9)


def test_a_real_reorder_and_a_large_error_are_each_listed():
    ref = np.array([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
    got = ref.copy()
    got[0, :2] = [2.0, 3.0]  # a whole-point swap: not a tie
    got[1, 3] = 0.5  # outside the top-2, but beyond the tolerance
    result = compare_scores(got, ref, atol=1e-4, k=2, reference="ONNX Runtime")
    assert not result.ok and not result.topk_match
    assert "row 0: top-2 items [1, 2] != ONNX Runtime's [1, 2]" not in result.mismatches
    assert any(m.startswith("row 0: scores max abs diff 1") for m in result.mismatches)
    assert "row 0: top-2 items [2, 1] != ONNX Runtime's [1, 2]" in result.mismatches
    assert "row 1: scores max abs diff 0.5 > 0.0001" in result.mismatches


def test_nan_scores_and_shape_changes_never_pass():
    ref = np.ones((2, 5))
    got = ref.copy()
    got[1, 0] = np.nan
    result = compare_scores(got, ref)
    assert not result.ok and "row 1: scores max abs diff inf" in result.summary()
    shape = compare_scores(np.ones((2, 4)), ref, reference="PyTorch")
    assert not shape.ok and not shape.topk_match and "PyTorch's (2, 5)" in shape.mismatches[0]


def test_compile_and_bench_use_the_same_rule():
    from dnsrec_edge.compile.build import compare_outputs

    ref = np.array([[3.0, 2.0, 1.0000004, 1.0, 0.0]])
    tied = ref.copy()
    tied[0, 2], tied[0, 3] = 1.0000001, 1.0000002
    assert compare_outputs(tied, ref, "the x86_64 build") < 1e-6  # a tie: accepted
    swapped = ref.copy()
    swapped[0, :2] = [2.0, 3.0]
    with pytest.raises(OutputMismatch, match=r"top-5 items \[2, 1, 3, 4, 5\]"):
        compare_outputs(swapped, ref, "the x86_64 build")
