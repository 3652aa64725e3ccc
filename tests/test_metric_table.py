"""The metric table: one entry per metric, and every reader agrees with it."""

from __future__ import annotations

import math
from dataclasses import fields

from deployval.metric_table import (
    BOUNDS,
    METRICS,
    REL_L2,
    SLICE_JUDGED,
    SLICE_REPORTED,
    cosine_of_sums,
    lower_is_worse,
    rel_l2,
    sqnr_db,
    worst,
)
from deployval.model.spec import Tolerance


def test_every_bound_is_a_tolerance_field_and_back():
    assert {f.name for f in fields(Tolerance)} == {"atol", "rtol"} | {m.name for m in BOUNDS}


def test_names_are_their_keys_and_directions_are_known():
    for name, metric in METRICS.items():
        assert metric.name == name
        assert metric.worse in ("higher", "lower")
        assert callable(metric.computed) or isinstance(metric.computed, str)
        assert metric.description


def test_directions():
    for name in ("cosine", "worst_slice_cosine", "sqnr_db", "argmax_agreement", "dice_mean", "dice_min",
                 "top5_overlap", "min_iou", "matched"):
        assert lower_is_worse(name), name
    for name in ("rel_l2", "max_abs", "mean_abs", "p99_abs", "worst_slice_rel_l2", "mismatch", "dice_drop",
                 "topk_drop", "missed", "max_score_drop"):
        assert not lower_is_worse(name), name
    assert worst("cosine", [0.9, 0.99]) == 0.9
    assert worst("rel_l2", [0.1, 0.2]) == 0.2


def test_slices_and_verdicts():
    assert [m.name for m in SLICE_JUDGED] == ["rel_l2", "mean_abs", "p99_abs", "cosine"]
    assert SLICE_REPORTED == ("max_abs", "mean_abs", "p99_abs", "rel_l2", "cosine")
    assert METRICS[REL_L2].verdict(0.25, 0.1) == "rel_l2 0.25 exceeds 0.1"
    assert METRICS["cosine"].verdict(0.9, 0.99) == "cosine 0.900000 below 0.990000"
    assert METRICS[REL_L2].exceeds(math.nan, 1.0) and METRICS["cosine"].exceeds(math.nan, 0.5)
    assert Tolerance(rel_l2=1e-2, cosine=0.9999, mismatch=0.0).describe() == \
        "rel_l2<=0.01, mismatch<=0, cosine>=0.9999"


def test_pure_functions():
    assert rel_l2(0.0, 0.0) == 0.0 and rel_l2(1.0, 0.0) == math.inf and rel_l2(1.0, 4.0) == 0.25
    assert cosine_of_sums(0.0, 0.0, 0.0) == 1.0 and cosine_of_sums(2.0, 1.0, 2.0) == 1.0
    assert sqnr_db(10.0, 1.0) == 20.0 and sqnr_db(1.0, 0.0) == math.inf
