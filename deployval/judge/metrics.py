"""Metrics and the verdict, as pure functions over arrays (see DESIGN.md, "Metrics").

One blockwise pass (stats.ErrorStats: float64 per block, never a float64 copy of a whole output)
gives every exact statistic, the elementwise verdict and the |c - r| histogram; the median and p99
are exact, from one |c - r| array in float32 where the outputs are float32. Elements where the
reference itself is not finite are masked out of the statistics and judged apart (nonfinite.py): the
candidate must have the same NaN/+Inf/-Inf there, and without --allow-nonfinite they fail the output.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metric_table import (
    ARGMAX_AGREEMENT,
    COSINE,
    DICE_DROP,
    DICE_MEAN,
    DICE_MIN,
    ELEMENTS,
    MAX_ABS,
    MAX_REL,
    MEAN_ABS,
    MEDIAN_ABS,
    METRICS,
    MISMATCH,
    P99_ABS,
    REF_ABS_MAX,
    REL_L2,
    SLICE_JUDGED,
    SLICE_REPORTED,
    SQNR_DB,
    STATISTIC_BOUNDS,
    TOPK_DROP,
    cosine_of_sums,
    worst,
)
from ..model.spec import TaskSpec, Tolerance, format_shape
from .nonfinite import OPTION as ALLOW_OPTION
from .nonfinite import count_nonfinite
from .slices import SliceComparison, SliceSpec, for_output, worst_of
from .stats import BLOCK, ErrorStats

__all__ = ["OutputComparison", "argmax_agreement", "compare_output", "compare_slices", "cosine", "cosine_of_sums",
           "dice_per_class", "difference_if_any", "error_metrics", "failure_lines", "label_metrics",
           "min_passing_elementwise", "mismatch_fraction", "task_metrics", "topk_overlap"]

FLOAT_KINDS = "fc"
INT_KINDS = "iub"


def error_metrics(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    """Error statistics of `cand` against `ref` (same shape), over elements finite in both."""
    stats, _ = _streamed(np.asarray(ref), np.asarray(cand), None, None)
    return _float_metrics(stats, np.asarray(ref), np.asarray(cand))


def _finite_abs_max(values: np.ndarray) -> float:
    """max |x| over the finite elements, from min and max (two cheap passes, no |x| copy)."""
    if not values.size:
        return 0.0
    low, high = float(np.min(values)), float(np.max(values))
    if math.isfinite(low) and math.isfinite(high):
        return max(-low, high)
    finite = values[np.isfinite(values)]
    return float(np.abs(finite).max()) if finite.size else 0.0


def _streamed(ref: np.ndarray, cand: np.ndarray, atol: float | None, rtol: float | None) -> tuple[ErrorStats, float]:
    """One blockwise pass (float64 per block, never over the whole array) for every exact statistic,
    the elementwise verdict and the |c - r| histogram; returns the stats and max |ref|."""
    ref_abs_max = _finite_abs_max(ref.ravel())
    scale = max(ref_abs_max, _finite_abs_max(cand.ravel()))
    stats = ErrorStats(atol=atol, rtol=rtol, rel_eps=1e-6 * ref_abs_max or 1e-30,
                       scale=scale if not 1e-100 < scale < 1e100 and scale else 1.0)
    flat_r, flat_c = ref.reshape(-1), cand.reshape(-1)
    for start in range(0, flat_r.size, BLOCK):
        stats.update(flat_r[start:start + BLOCK], flat_c[start:start + BLOCK])
    return stats, ref_abs_max


def _finite_diff(ref: np.ndarray, cand: np.ndarray, stats: ErrorStats) -> np.ndarray:
    """|c - r| over the elements finite in both, in float32 when both are float32 or narrower and
    their values cannot overflow it (the quantiles need every value; a float64 copy would double it)."""
    dtype = np.result_type(ref.dtype, cand.dtype, np.float32)
    if dtype == np.float32 and max(stats.ref_abs_max, stats.max_abs) > 1e37:
        dtype = np.dtype(np.float64)
    r, c = ref.ravel().astype(dtype, copy=False), cand.ravel().astype(dtype, copy=False)
    if stats.n != r.size:
        keep = np.isfinite(r) & np.isfinite(c)
        r, c = r[keep], c[keep]
    diff = np.subtract(c, r)
    return np.abs(diff, out=diff)


def _float_metrics(stats: ErrorStats, ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    """The streamed statistics plus the exact median and p99 of |c - r|."""
    metrics = stats.metrics()
    if stats.n == 0:
        metrics.update({MAX_ABS: 0.0, MEAN_ABS: 0.0, MEDIAN_ABS: 0.0, P99_ABS: 0.0, REL_L2: 0.0, MAX_REL: 0.0,
                        COSINE: 1.0, SQNR_DB: math.inf, REF_ABS_MAX: 0.0})
        return metrics
    diff = _finite_diff(ref, cand, stats)
    metrics[MEDIAN_ABS], metrics[P99_ABS] = (_percentile(diff, q) for q in (50, 99))
    return metrics


def _percentile(diff: np.ndarray, q: float) -> float:
    """np.percentile(diff, q) (linear interpolation), exact: a strided sample brackets the two order
    statistics it needs, the values below the bracket are counted, and only those inside it are
    partitioned (a few passes instead of a partition of every value)."""
    position = q / 100.0 * (diff.size - 1)
    low_rank = math.floor(position)
    high_rank = min(low_rank + 1, diff.size - 1)
    sample = np.sort(diff[::max(1, diff.size // 65536)])
    if diff.size < 4 * 65536:
        return float(np.percentile(diff, q))
    at = low_rank / diff.size * sample.size
    margin = 6.0 * math.sqrt(sample.size) + 2.0
    lo_index, hi_index = math.floor(at - margin), math.ceil(at + margin)
    lo = sample[lo_index] if lo_index >= 0 else -math.inf
    hi = sample[hi_index] if hi_index < sample.size else math.inf
    under = int(np.count_nonzero(diff < lo))
    inside = diff[(diff >= lo) & (diff <= hi)]
    if not under <= low_rank <= high_rank < under + inside.size:
        return float(np.percentile(diff, q))
    low, high = (float(v) for v in np.partition(inside, [low_rank - under, high_rank - under])[
        [low_rank - under, high_rank - under]])
    return low + (high - low) * (position - low_rank) if high != low else low


def cosine(r: np.ndarray, c: np.ndarray, norm_r: float, norm_c: float) -> float:
    return cosine_of_sums(float(np.dot(r.ravel(), c.ravel())), norm_r, norm_c)


def difference_if_any(value: np.ndarray, other: np.ndarray) -> float | None:
    """None when two arrays are bit-identical (NaN in the same places counts as identical), else their
    max |difference| (inf when the shapes differ): for outputs that should not change at all."""
    value, other = np.asarray(value), np.asarray(other)
    if value.shape != other.shape:
        return float("inf")
    if np.array_equal(value, other, equal_nan=value.dtype.kind in "fc" and other.dtype.kind in "fc"):
        return None
    with np.errstate(invalid="ignore"):
        diff = np.abs(other.astype(np.float64) - value.astype(np.float64))
    return float(np.nanmax(diff)) if diff.size else 0.0


def mismatch_fraction(ref: np.ndarray, cand: np.ndarray) -> float:
    """Share of elements that are not exactly equal (for labels and indices)."""
    if ref.size == 0:
        return 0.0
    return float(np.count_nonzero(np.asarray(ref) != np.asarray(cand)) / ref.size)


def min_passing_elementwise(ref: np.ndarray, cand: np.ndarray, atol: float, rtol: float) -> dict[str, float]:
    """The smallest atol (at the given rtol) and rtol (at the given atol) that would have passed."""
    stats, _ = _streamed(np.asarray(ref), np.asarray(cand), atol, rtol)
    return {"atol": stats.min_atol, "rtol": stats.min_rtol}


def argmax_along(values: np.ndarray, axis: int) -> np.ndarray:
    """np.argmax(values, axis) for finite values, fast for a short axis that is not the last one
    (a segmentation's classes): numpy's strided argmax costs ~1 s per 30 M values there; a running
    maximum over the classes is one contiguous pass per class. Ties keep the first index, as numpy."""
    values = np.asarray(values)
    classes = values.shape[axis] if values.ndim else 0
    inner = int(np.prod(values.shape[axis + 1:])) if values.ndim else 1
    if values.ndim == 0 or inner < 64 or classes > 64 or not values.flags.c_contiguous \
            or values.dtype.kind != "f" or not np.isfinite(values).all():
        return np.argmax(values, axis=axis)
    outer = int(np.prod(values.shape[:axis]))
    planes = values.reshape(outer, classes, inner)
    best = planes[:, 0].copy()
    labels = np.zeros((outer, inner), dtype=np.intp)
    for k in range(1, classes):
        higher = planes[:, k] > best
        np.copyto(best, planes[:, k], where=higher)
        labels[higher] = k
    return labels.reshape(values.shape[:axis] + values.shape[axis + 1:])


def argmax_agreement(ref: np.ndarray, cand: np.ndarray, axis: int) -> float:
    a, b = argmax_along(ref, axis), argmax_along(cand, axis)
    return float(np.count_nonzero(a == b) / a.size) if a.size else 1.0


def dice_per_class(ref: np.ndarray, cand: np.ndarray, axis: int) -> dict[int, float]:
    """Dice between the argmax label maps, for every class present in either."""
    a, b = argmax_along(ref, axis).ravel(), argmax_along(cand, axis).ravel()
    return _dice_from_labels(a, b, a == b, int(ref.shape[axis]))


def _dice_from_labels(a: np.ndarray, b: np.ndarray, same: np.ndarray, classes: int) -> dict[int, float]:
    count_a = np.bincount(a, minlength=classes)
    count_b = np.bincount(b, minlength=classes)
    both = np.bincount(a[same], minlength=classes)
    return {k: float(2.0 * both[k] / (count_a[k] + count_b[k])) for k in range(classes) if count_a[k] + count_b[k]}


def topk_overlap(ref: np.ndarray, cand: np.ndarray, axis: int, k: int) -> float:
    """Mean share of the reference's top-k classes that the candidate also ranks top-k."""
    k = max(1, min(k, ref.shape[axis]))
    top_r = np.sort(np.argpartition(-ref, k - 1, axis=axis).take(range(k), axis=axis), axis=axis)
    top_c = np.sort(np.argpartition(-cand, k - 1, axis=axis).take(range(k), axis=axis), axis=axis)
    r = np.moveaxis(top_r, axis, -1).reshape(-1, k)
    c = np.moveaxis(top_c, axis, -1).reshape(-1, k)
    if r.shape[0] == 0:
        return 1.0
    hits = sum(len(np.intersect1d(x, y, assume_unique=True)) for x, y in zip(r, c))
    return float(hits / (k * r.shape[0]))


_labels_memo: list[Any] = [None, -1, None]  # weak reference to the last reference array, its axis, its labels


def _reference_labels(ref: np.ndarray, axis: int) -> np.ndarray:
    """The reference's argmax, kept for the next row judged against the same (never mutated) array."""
    memo_ref, memo_axis, labels = _labels_memo
    if memo_ref is not None and memo_ref() is ref and memo_axis == axis:
        return labels
    labels = argmax_along(ref, axis)
    with contextlib.suppress(TypeError):  # not weakly referenceable: no memo
        _labels_memo[:] = [weakref.ref(ref), axis, labels]
    return labels


def task_metrics(ref: np.ndarray, cand: np.ndarray, task: TaskSpec) -> dict[str, Any]:
    axis = task.axis if task.axis >= 0 else ref.ndim + task.axis
    if ref.ndim == 0 or not 0 <= axis < ref.ndim:
        return {}
    labels_r, labels_c = _reference_labels(ref, axis), argmax_along(cand, axis)  # once, for every metric
    same = labels_r == labels_c
    result: dict[str, Any] = {ARGMAX_AGREEMENT: float(np.count_nonzero(same) / same.size) if same.size else 1.0}
    if task.kind == "segmentation":
        dice = _dice_from_labels(labels_r.ravel(), labels_c.ravel(), same.ravel(), int(ref.shape[axis]))
        result["dice_per_class"] = {str(k): v for k, v in dice.items()}
        result[DICE_MEAN] = float(np.mean(list(dice.values()))) if dice else 1.0
        result[DICE_MIN] = float(min(dice.values())) if dice else 1.0
    else:
        result[f"top{task.topk}_overlap"] = topk_overlap(ref, cand, axis, task.topk)
    return result


def label_metrics(output: np.ndarray, label: int | np.ndarray, task: TaskSpec) -> dict[str, float]:
    """How well one output does against the ground truth: for classification, whether the labelled
    class is its top-1 and among its top-k (over `task.axis`, every item of the batch labelled the
    same); for segmentation, the Dice of its argmax map against the label mask, per class present in
    either, and their mean."""
    output = np.asarray(output)
    axis = task.axis if task.axis >= 0 else output.ndim + task.axis
    if task.kind == "segmentation":
        mask = np.asarray(label)
        predicted = argmax_along(output, axis)
        if mask.shape != predicted.shape:
            mask = mask.reshape(predicted.shape) if mask.size == predicted.size else mask
        if mask.shape != predicted.shape:
            raise ValueError(f"label mask has shape {mask.shape}, the prediction {predicted.shape}")
        dice = _dice_from_labels(predicted.ravel(), mask.ravel().astype(np.intp), predicted.ravel() == mask.ravel(),
                                 int(output.shape[axis]))
        return {"dice": float(np.mean(list(dice.values()))) if dice else 1.0}
    k = max(1, min(task.topk, output.shape[axis]))
    scores = np.moveaxis(output, axis, -1).reshape(-1, output.shape[axis])
    top = np.argpartition(-scores, k - 1, axis=-1)[:, :k]
    best = np.argmax(scores, axis=-1)
    label = int(label)
    return {"top1": float(np.mean(best == label)), f"top{task.topk}": float(np.mean((top == label).any(axis=-1)))}


@dataclass
class OutputComparison:
    """The comparison of one output; true when it passes."""

    name: str
    passed: bool
    shape: tuple[int, ...] | None
    ref_shape: tuple[int, ...]
    dtype: str | None
    ref_dtype: str
    tolerance: Tolerance
    metrics: dict[str, float] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    min_passing: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    histogram: dict[str, Any] | None = field(default=None, repr=False)  # |c - r| counts, for the HTML report
    nonfinite_masked: int = 0  # non-finite reference elements left out of the metrics (judged by kind)
    slices: list[dict[str, Any]] = field(default_factory=list)  # per-slice metrics and verdicts (slices.py)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "shape": list(self.shape) if self.shape is not None else None,
            "reference_shape": list(self.ref_shape),
            "dtype": self.dtype,
            "reference_dtype": self.ref_dtype,
            "metrics": self.metrics,
            "task": self.task,
            "tolerance": self.tolerance.to_dict(),
            "min_passing_tolerance": self.min_passing,
            "failures": self.failures,
            "warnings": self.warnings,
            "nonfinite_masked": self.nonfinite_masked,
            **({"slices": self.slices} if self.slices else {}),
        }


def failure_lines(comparisons: Sequence[OutputComparison]) -> list[str]:
    """'output: its first failure' for each output that failed: how a row's or a sample's reason names them."""
    return [f"{c.name}: {c.failures[0]}" for c in comparisons if not c.passed]


def compare_output(
    name: str,
    ref: np.ndarray,
    cand: np.ndarray | None,
    tolerance: Tolerance,
    task: TaskSpec | None = None,
    *,
    allow_nonfinite: bool = False,
    slices: Sequence[SliceSpec] = (),
) -> OutputComparison:
    """Compare one output and judge it against `tolerance`. Missing, misshapen, wrongly typed or
    non-finite outputs fail; nothing here ever passes by default. A non-finite reference fails the
    output unless `allow_nonfinite`; with it, its NaN/Inf positions are masked out of the metrics and
    must hold the same kind in the candidate, and an output with nothing finite to compare fails."""
    ref = np.asarray(ref)
    result = OutputComparison(
        name=name, passed=False, shape=None, ref_shape=tuple(ref.shape), dtype=None,
        ref_dtype=str(ref.dtype), tolerance=tolerance,
    )
    if cand is None:
        result.failures.append("output missing")
        return result
    cand = np.asarray(cand)
    result.shape, result.dtype = tuple(cand.shape), str(cand.dtype)
    if cand.shape != ref.shape:
        result.failures.append(f"shape {format_shape(cand.shape)} differs from reference {format_shape(ref.shape)}")
        return result
    if _kind(cand) != _kind(ref):
        result.failures.append(f"dtype {cand.dtype} is not of the reference's kind ({ref.dtype})")
        return result
    if cand.dtype != ref.dtype:
        result.warnings.append(f"dtype {cand.dtype} differs from reference {ref.dtype}")

    if _kind(ref) == "int":
        fraction = mismatch_fraction(ref, cand)
        result.metrics = {MISMATCH: fraction, ELEMENTS: int(ref.size),
                          MAX_ABS: float(np.abs(cand.astype(np.float64) - ref.astype(np.float64)).max())
                          if ref.size else 0.0}
        bound = tolerance.mismatch if tolerance.mismatch is not None else 0.0
        result.min_passing = {MISMATCH: fraction}
        if fraction > bound:
            result.failures.append(f"{fraction:.4%} of elements differ (allowed {bound:.4%})")
        result.passed = not result.failures
        return result

    atol, rtol = (tolerance.atol or 0.0, tolerance.rtol or 0.0) if tolerance.elementwise else (None, None)
    stats, _ = _streamed(ref, cand, atol, rtol)
    metrics = _float_metrics(stats, ref, cand)
    result.metrics = metrics
    result.histogram = stats.histogram()
    if stats.nonfinite_bad:
        bad = count_nonfinite(cand[np.isfinite(ref) & ~np.isfinite(cand)])  # only failing outputs pay for it
        result.failures.append(f"{stats.nonfinite_bad} non-finite values ({bad.describe()}) where the reference is "
                               "finite")
    nonfinite = _judge_masked(result, ref, stats, allow_nonfinite) or bool(stats.nonfinite_bad)
    if task is not None and task.applies_to(name):
        result.task = task_metrics(ref, cand, task)
    _judge_slices(result, ref, cand, for_output(slices, name), tolerance)

    if atol is not None and rtol is not None:
        result.min_passing = {"atol": stats.min_atol, "rtol": stats.min_rtol, "at_rtol": rtol, "at_atol": atol}
        if stats.violations:
            where, diff, allowed = _worst_violation(ref, cand, atol, rtol)
            result.failures.append(f"{stats.violations} of {stats.elements} elements exceed atol+rtol*|ref| "
                                   f"(worst at {where}: |diff| {diff:.3g} > {allowed:.3g})")
    for stat in STATISTIC_BOUNDS:  # an upper bound's smallest passing value is shown even when unset
        bound = getattr(tolerance, stat.name)
        if bound is not None or not stat.lower_is_worse:
            result.min_passing.setdefault(stat.name, metrics[stat.name])
        if bound is not None and stat.exceeds(metrics[stat.name], bound):
            result.failures.append(stat.verdict(metrics[stat.name], bound))
    agreement_format = METRICS[ARGMAX_AGREEMENT].fmt
    if tolerance.argmax_agreement is not None and ARGMAX_AGREEMENT in result.task:
        agreement = result.task[ARGMAX_AGREEMENT]
        result.min_passing[ARGMAX_AGREEMENT] = agreement
        if agreement < tolerance.argmax_agreement:
            result.failures.append(f"argmax agreement {agreement:{agreement_format}} below "
                                   f"{tolerance.argmax_agreement:{agreement_format}}")
    drops = {DICE_DROP: (DICE_MEAN, "Dice"), TOPK_DROP: (f"top{task.topk}_overlap" if task else "", "top-k")}
    for bound_name, (metric, label) in drops.items():
        bound, drop_format = getattr(tolerance, bound_name), METRICS[bound_name].fmt
        if bound is not None and metric in result.task:
            drop = 1.0 - result.task[metric]
            result.task[bound_name] = drop
            result.min_passing[bound_name] = drop
            if drop > bound:
                result.failures.append(f"{label} drop {drop:{drop_format}} exceeds {bound:{drop_format}}")
    if nonfinite:
        result.min_passing = {}  # no tolerance passes a NaN or Inf that does not match the reference
    result.passed = not result.failures
    return result


def compare_slices(ref: np.ndarray, cand: np.ndarray, spec: SliceSpec, bounds: dict[str, float | None]
                   ) -> list[SliceComparison]:
    """Every slice of `spec` compared and judged by `bounds` (the output's tolerance: rel_l2, mean_abs,
    p99_abs as upper bounds, cosine as a lower bound; None: not judged)."""
    axis = spec.axis if spec.axis >= 0 else ref.ndim + spec.axis
    out = []
    for label, start, stop in spec.ranges(ref.shape):
        index = (slice(None),) * axis + (slice(start, stop),)
        metrics = error_metrics(ref[index], cand[index])
        comparison = SliceComparison(label, {k: metrics[k] for k in SLICE_REPORTED})
        for stat in SLICE_JUDGED:
            bound, value = bounds.get(stat.name), metrics[stat.name]
            if bound is not None and stat.exceeds(value, bound):
                comparison.failures.append(f"slice {label} {stat.verdict(value, bound)}")
        out.append(comparison)
    return out


def _judge_slices(result: OutputComparison, ref: np.ndarray, cand: np.ndarray, specs: Sequence[SliceSpec],
                  tolerance: Tolerance) -> None:
    """Each slice judged by the output's statistical bounds; the worst slice's statistics join the
    output's metrics (worst_slice_rel_l2, ...), and each failing slice spec adds its worst failure."""
    bounds = {stat.name: getattr(tolerance, stat.name) for stat in SLICE_JUDGED}
    for spec in specs:
        compared = compare_slices(ref, cand, spec, bounds)
        result.slices += [{"spec": spec.text, **c.to_dict()} for c in compared]
        for key, value in worst_of(compared).items():
            result.metrics[key] = worst(key, (value, result.metrics.get(key, value)))
        failing = [c for c in compared if c.failures]
        if failing:
            worst_slice = max(failing, key=lambda c: c.metrics[REL_L2])
            more = f" (and {len(failing) - 1} other slice{'s' * (len(failing) > 2)})" if len(failing) > 1 else ""
            result.failures.append(worst_slice.failures[0] + more)


def _judge_masked(result: OutputComparison, ref: np.ndarray, stats: ErrorStats, allow: bool) -> bool:
    """The reference's non-finite positions, masked out of the metrics: a failure without `allow`, where
    the candidate has another kind there, or where nothing finite is left; true when one failed."""
    result.nonfinite_masked = stats.excluded_ref
    if not stats.excluded_ref:
        return False
    counts = count_nonfinite(ref)
    failures = len(result.failures)
    if not allow:
        result.failures.append(f"the reference has {counts.total} non-finite values ({counts.describe()}): judged "
                               f"only with {ALLOW_OPTION}")
    elif stats.n == 0:
        result.failures.append(f"the reference is non-finite everywhere ({counts.describe()}): nothing to judge")
    if stats.nonfinite_mismatch:
        result.failures.append(f"{stats.nonfinite_mismatch} of {stats.excluded_ref} positions where the reference is "
                               "non-finite differ in the candidate (NaN, +Inf, -Inf must match)")
    result.warnings.append(f"{stats.excluded_ref} non-finite reference values ({counts.describe()}) masked out of "
                           "the metrics")
    return len(result.failures) > failures


def _kind(array: np.ndarray) -> str:
    if array.dtype.kind in FLOAT_KINDS:
        return "float"
    if array.dtype.kind in INT_KINDS:
        return "int"
    return array.dtype.kind


def _worst_violation(ref: np.ndarray, cand: np.ndarray, atol: float, rtol: float) -> tuple[str, float, float]:
    """Where |c - r| exceeds atol + rtol*|r| the most (elements finite in both), blockwise in float64:
    only failing outputs pay for this second pass."""
    flat_r, flat_c = ref.reshape(-1), cand.reshape(-1)
    best, best_index, best_diff, best_allowed = -math.inf, 0, 0.0, 0.0
    for start in range(0, flat_r.size, BLOCK):
        r = flat_r[start:start + BLOCK].astype(np.float64)
        c = flat_c[start:start + BLOCK].astype(np.float64)
        with np.errstate(invalid="ignore"):
            diff = np.abs(c - r)
            excess = np.where(np.isfinite(r) & np.isfinite(c), diff - (atol + rtol * np.abs(r)), -math.inf)
        index = int(np.argmax(excess))
        if excess[index] > best:
            best, best_index = float(excess[index]), start + index
            best_diff, best_allowed = float(diff[index]), atol + rtol * abs(float(r[index]))
    position = np.unravel_index(best_index, np.shape(ref))
    return "[" + ",".join(str(int(i)) for i in position) + "]", best_diff, best_allowed
