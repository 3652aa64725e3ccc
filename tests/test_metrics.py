"""Metrics and verdicts: the definitions of DESIGN.md, on arrays small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from deployval.judge.metrics import (
    argmax_agreement,
    compare_output,
    dice_per_class,
    error_metrics,
    min_passing_elementwise,
    topk_overlap,
)
from deployval.model.spec import TaskSpec, Tolerance


def test_metrics_by_hand():
    ref = np.array([1.0, -2.0, 0.0, 4.0], dtype=np.float32)
    cand = np.array([1.5, -2.0, 0.1, 4.0], dtype=np.float32)
    m = error_metrics(ref, cand)
    assert m["max_abs"] == pytest.approx(0.5)
    assert m["mean_abs"] == pytest.approx(0.15, rel=1e-6)
    assert m["rel_l2"] == pytest.approx(math.sqrt(0.25 + 0.01) / math.sqrt(1 + 4 + 16), rel=1e-6)
    # max_rel uses eps = 1e-6 * max|r|: the element with r = 0 gives 0.1 / 4e-6, never a bare division.
    assert m["max_rel"] == pytest.approx(0.1 / 4e-6, rel=1e-5)
    assert m["cosine"] == pytest.approx(np.dot(ref, cand) / np.linalg.norm(ref) / np.linalg.norm(cand), rel=1e-6)
    assert m["sqnr_db"] == pytest.approx(20 * math.log10(math.sqrt(21) / math.sqrt(0.26)), rel=1e-6)
    assert m["nan"] == 0 and m["inf"] == 0


def test_identical_outputs_have_zero_error():
    ref = np.linspace(-3, 3, 50).reshape(5, 10)
    m = error_metrics(ref, ref.copy())
    assert m["max_abs"] == 0 and m["rel_l2"] == 0 and m["cosine"] == pytest.approx(1.0)
    assert m["sqnr_db"] == math.inf


def test_all_zero_reference_and_candidate():
    zeros = np.zeros((3, 3))
    m = error_metrics(zeros, zeros)
    assert m["rel_l2"] == 0.0 and m["cosine"] == 1.0
    m = error_metrics(zeros, zeros + 1e-3)
    assert m["rel_l2"] == math.inf and m["cosine"] == 0.0


def test_nan_in_candidate_fails_even_with_huge_tolerance():
    ref = np.ones(10, dtype=np.float32)
    cand = ref.copy()
    cand[3] = np.nan
    result = compare_output("y", ref, cand, Tolerance(atol=1e9, rtol=1e9))
    assert not result
    assert "non-finite" in result.failures[0]
    assert result.metrics["nan"] == 1


def test_inf_in_candidate_fails_statistic_tolerance():
    ref = np.ones(10, dtype=np.float32)
    cand = ref.copy()
    cand[0] = np.inf
    assert not compare_output("y", ref, cand, Tolerance(rel_l2=1.0))


def test_shape_mismatch_and_missing_output_fail():
    ref = np.ones((2, 3))
    assert "shape" in compare_output("y", ref, np.ones((3, 2)), Tolerance(atol=1)).failures[0]
    assert "missing" in compare_output("y", ref, None, Tolerance(atol=1)).failures[0]


def test_dtype_kind_mismatch_fails_width_mismatch_warns():
    ref = np.arange(4, dtype=np.int64)
    assert not compare_output("y", ref, ref.astype(np.float32), Tolerance(atol=1))
    same = compare_output("y", ref, ref.astype(np.int32), Tolerance())
    assert same and "differs from reference" in same.warnings[0]


def test_elementwise_rule_is_numpy_allclose():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=1000)
    cand = ref + rng.normal(scale=1e-3, size=1000)
    for atol, rtol in [(1e-3, 1e-3), (1e-4, 1e-2), (5e-3, 0.0)]:
        result = compare_output("y", ref, cand, Tolerance(atol=atol, rtol=rtol))
        assert result.passed == np.allclose(cand, ref, atol=atol, rtol=rtol)


def test_failure_names_worst_element():
    ref = np.zeros((2, 2))
    cand = np.array([[0.0, 0.0], [0.0, 0.5]])
    result = compare_output("y", ref, cand, Tolerance(atol=0.1, rtol=0.0))
    assert "1 of 4 elements" in result.failures[0] and "[1,1]" in result.failures[0]


def test_min_passing_tolerance_passes_and_is_minimal():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=200)
    cand = ref * (1 + rng.normal(scale=1e-3, size=200)) + rng.normal(scale=1e-5, size=200)
    rtol = 1e-4
    minimum = min_passing_elementwise(ref, cand, atol=1e-6, rtol=rtol)
    assert compare_output("y", ref, cand, Tolerance(atol=minimum["atol"] * (1 + 1e-9), rtol=rtol))
    assert not compare_output("y", ref, cand, Tolerance(atol=minimum["atol"] * 0.99, rtol=rtol))
    assert compare_output("y", ref, cand, Tolerance(atol=1e-6, rtol=minimum["rtol"] * (1 + 1e-9)))
    assert not compare_output("y", ref, cand, Tolerance(atol=1e-6, rtol=minimum["rtol"] * 0.99))


def test_min_rtol_is_infinite_when_reference_zero_exceeds_atol():
    assert min_passing_elementwise(np.zeros(3), np.array([0, 0, 1.0]), atol=0.1, rtol=0)["rtol"] == math.inf


def test_statistic_bounds():
    ref = np.linspace(1, 2, 100)
    cand = ref * 1.01
    assert compare_output("y", ref, cand, Tolerance(rel_l2=0.02))
    failed = compare_output("y", ref, cand, Tolerance(rel_l2=0.005, cosine=0.9))
    assert not failed and "rel_l2" in failed.failures[0]
    assert failed.min_passing["rel_l2"] == pytest.approx(0.01, rel=1e-6)


def test_integer_outputs_judged_by_mismatch():
    ref = np.array([1, 2, 3, 4], dtype=np.int64)
    cand = np.array([1, 2, 9, 4], dtype=np.int64)
    assert not compare_output("tags", ref, cand, Tolerance(atol=100))  # elementwise does not apply to labels
    assert compare_output("tags", ref, cand, Tolerance(mismatch=0.25))
    assert compare_output("tags", ref, cand, Tolerance(mismatch=0.25)).metrics["mismatch"] == 0.25


def test_task_metrics_segmentation():
    ref = np.zeros((1, 3, 2, 2))
    ref[0, 0] = 1.0  # every voxel class 0
    cand = ref.copy()
    cand[0, 2, 0, 0] = 2.0  # one voxel becomes class 2
    result = compare_output("logits", ref, cand, Tolerance(argmax_agreement=0.8), TaskSpec("segmentation"))
    assert result.task["argmax_agreement"] == 0.75
    assert result.task["dice_per_class"] == {"0": pytest.approx(2 * 3 / 7), "2": 0.0}
    assert not result and "argmax agreement" in result.failures[0]


def test_dice_and_topk():
    ref = np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1]])
    cand = np.array([[0.1, 0.9, 0.0], [0.1, 0.8, 0.1]])
    assert argmax_agreement(ref, cand, axis=1) == 0.5
    assert dice_per_class(ref, cand, axis=1) == {0: 0.0, 1: pytest.approx(2 / 3)}
    assert topk_overlap(ref, cand, axis=1, k=2) == 1.0
    assert topk_overlap(ref, cand, axis=1, k=1) == 0.5


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.integers(1, 50), elements=finite), st.floats(0.1, 100))
def test_metrics_scale_with_both_arrays(ref, scale):
    ref = ref.astype(np.float64)
    cand = ref + 0.5
    m1 = error_metrics(ref, cand)
    m2 = error_metrics(ref * scale, cand * scale)
    assert m2["max_abs"] == pytest.approx(m1["max_abs"] * scale, rel=1e-4)
    if m1["rel_l2"] not in (0.0, math.inf):
        assert m2["rel_l2"] == pytest.approx(m1["rel_l2"], rel=1e-4)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e3, 1e3)),
       arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e3, 1e3)))
def test_absolute_errors_are_symmetric(a, b):
    n = min(a.size, b.size)
    a, b = a[:n], b[:n]
    assert error_metrics(a, b)["max_abs"] == error_metrics(b, a)["max_abs"]
    assert error_metrics(a, b)["mean_abs"] == pytest.approx(error_metrics(b, a)["mean_abs"])


@settings(max_examples=80, deadline=None)
@given(st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False), st.integers(1, 40))
def test_constant_reference_and_identical_candidate(value, size):
    ref = np.full(size, value)
    result = compare_output("y", ref, ref.copy(), Tolerance(atol=0.0, rtol=0.0, rel_l2=0.0))
    assert result and result.metrics["max_abs"] == 0.0 and result.metrics["rel_l2"] == 0.0


@settings(max_examples=80, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e-30, 1e-30)),
       st.floats(1e-40, 1e-20))
def test_tiny_references_never_divide_by_zero(ref, offset):
    m = error_metrics(ref, ref + offset)
    assert all(np.isfinite(m[k]) or m[k] == np.inf for k in ("max_rel", "rel_l2"))
    assert not np.isnan(m["max_rel"]) and not np.isnan(m["cosine"]) and not np.isnan(m["rel_l2"])


@settings(max_examples=80, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e300, 1e300)))
def test_huge_values_do_not_overflow_into_nan(ref):
    m = error_metrics(ref, ref * (1 + 1e-9))
    assert not any(np.isnan(m[k]) for k in ("max_abs", "mean_abs", "rel_l2", "cosine", "max_rel"))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(2, 40), elements=st.floats(-10, 10)), st.integers(0, 39),
       st.sampled_from([np.nan, np.inf, -np.inf]))
def test_nonfinite_reference_elements_are_masked_and_must_match(ref, index, bad):
    index %= ref.size
    ref = ref.copy()
    ref[index] = bad
    cand = np.where(np.isfinite(ref), ref, 0.0)
    assert not compare_output("y", ref, ref.copy(), Tolerance(atol=0.0, rtol=0.0))  # refused without the option
    assert not compare_output("y", ref, cand, Tolerance(atol=0.0, rtol=0.0), allow_nonfinite=True)  # 0 for NaN/Inf
    result = compare_output("y", ref, ref.copy(), Tolerance(atol=0.0, rtol=0.0), allow_nonfinite=True)
    assert result.passed == (ref.size > 1)  # the same NaN/Inf; a lone non-finite element judges nothing
    assert "non-finite" in result.warnings[0]
    assert result.metrics["max_abs"] == 0.0 and result.nonfinite_masked == 1


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(-10, 10)), st.integers(0, 39),
       st.sampled_from([np.nan, np.inf, -np.inf]))
def test_nonfinite_candidate_always_fails(ref, index, bad):
    cand = ref.copy()
    cand[index % ref.size] = bad
    assert not compare_output("y", ref, cand, Tolerance(atol=1e300, rtol=1e300, rel_l2=1e300))


def test_task_metric_drops_as_gates():
    ref = np.zeros((1, 3, 10, 10))
    ref[0, 0] = 1.0
    ref[0, 1, :5] = 2.0  # classes 0 and 1, half each
    cand = ref.copy()
    cand[0, 2, 0, :4] = 3.0  # 4 voxels of class 1 become class 2
    seg = TaskSpec("segmentation")
    loose = compare_output("logits", ref, cand, Tolerance(dice_drop=0.5), seg)
    assert loose and loose.task["dice_drop"] == pytest.approx(1 - loose.task["dice_mean"])
    strict = compare_output("logits", ref, cand, Tolerance(dice_drop=0.01), seg)
    assert not strict and "Dice drop" in strict.failures[0]
    logits = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    swapped = np.array([[3.0, 0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    cls = TaskSpec("classification", axis=-1, topk=2)
    assert not compare_output("y", logits, swapped, Tolerance(topk_drop=0.1), cls)
    assert compare_output("y", logits, swapped, Tolerance(topk_drop=0.25), cls)
