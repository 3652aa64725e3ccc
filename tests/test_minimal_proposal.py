"""Minimal proposals: backward elimination drops the exclusions of the search's prefix that the others
make redundant, and says what each one left buys (its error with and without it)."""

from __future__ import annotations

from deployval.precision.minimal import minimize
from deployval.precision.sensitivity import Trial


def _judge(needed: list[set[str]]):
    """A model that meets its tolerance when any of `needed` is kept at full precision; the error falls
    with every layer kept. Records what was asked."""
    asked: list[list[str]] = []

    def evaluate(kept: list[str]) -> Trial:
        asked.append(kept)
        passed = any(group <= set(kept) for group in needed)
        score = 0.05 if passed else 0.4 - 0.1 * len(kept)
        return Trial(kept=kept, lowered=None, passed=passed, score=score,
                     failures=[] if passed else [f"rel_l2 {score:.3g} exceeds 0.1"])

    return evaluate, asked


def test_a_redundant_exclusion_is_dropped_and_each_kept_one_says_what_it_buys():
    evaluate, asked = _judge([{"gemm_b"}, {"gemm_a", "gemm_c"}])
    baseline = evaluate([])
    passing = evaluate(["gemm_a", "gemm_b"])  # the search's prefix: ranked a, b, ...
    kept, dropped, effects, ran = minimize(["gemm_a", "gemm_b"], evaluate, passing, baseline)
    assert (kept, dropped) == (["gemm_b"], ["gemm_a"])
    assert asked[2:] == [["gemm_a"], ["gemm_b"]]  # b dropped first fails; a dropped passes
    assert [(e.layer, e.score_with, e.score_without, e.failure_without) for e in effects] == [
        ("gemm_b", 0.05, 0.4, "rel_l2 0.4 exceeds 0.1")]  # without it: the baseline
    assert len(ran) == 2


def test_a_proposal_that_is_minimal_already_is_kept_whole():
    evaluate, _ = _judge([{"a", "b"}])
    kept, dropped, effects, _ = minimize(["a", "b"], evaluate, evaluate(["a", "b"]), evaluate([]))
    assert (kept, dropped) == (["a", "b"], [])
    assert [e.layer for e in effects] == ["a", "b"] and all(e.score_without > 0.1 for e in effects)
