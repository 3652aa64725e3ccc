"""Metrics and the verdict, as pure functions over arrays (see DESIGN.md, "Metrics").

Reference r and candidate c are upcast to float64. Elements where the reference itself is not
finite are left out of the statistics and checked separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .spec import TaskSpec, Tolerance, format_shape

FLOAT_KINDS = "fc"
INT_KINDS = "iub"


@dataclass
class _Pair:
    """Reference and candidate as float64 over the elements finite in both, with |c - r| computed
    once: every statistic and the verdict read from it (outputs can be tens of millions of values)."""

    r: np.ndarray
    c: np.ndarray
    diff: np.ndarray
    abs_r: np.ndarray
    nan: int
    inf: int
    size: int
    excluded_ref: int  # elements left out because the reference is not finite

    @classmethod
    def of(cls, ref: np.ndarray, cand: np.ndarray) -> _Pair:
        r = np.asarray(ref, dtype=np.float64).ravel()
        c = np.asarray(cand, dtype=np.float64).ravel()
        nan, inf = int(np.isnan(c).sum()), int(np.isinf(c).sum())
        finite_ref = np.isfinite(r)
        excluded = int(r.size - np.count_nonzero(finite_ref))
        keep = finite_ref if excluded else None
        if nan or inf:
            keep = np.isfinite(c) if keep is None else keep & np.isfinite(c)
        if keep is not None:
            r, c = r[keep], c[keep]
        return cls(r, c, np.abs(c - r), np.abs(r), nan, inf, int(np.asarray(ref).size), excluded)


def error_metrics(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    """Error statistics of `cand` against `ref` (same shape), over elements finite in both."""
    return _error_metrics(_Pair.of(ref, cand))


def _error_metrics(pair: _Pair) -> dict[str, float]:
    metrics: dict[str, float] = {"nan": pair.nan, "inf": pair.inf, "elements": pair.size}
    r, c, diff, abs_r = pair.r, pair.c, pair.diff, pair.abs_r
    if r.size == 0:
        metrics.update(max_abs=0.0, mean_abs=0.0, median_abs=0.0, p99_abs=0.0, rel_l2=0.0, max_rel=0.0,
                       cosine=1.0, sqnr_db=math.inf, ref_abs_max=0.0)
        return metrics
    ref_abs_max = float(abs_r.max())
    scale = max(ref_abs_max, float(np.abs(c).max()))
    if not 1e-100 < scale < 1e100:  # squares would overflow or underflow: work on scaled copies
        scale = scale or 1.0
        r, c, diff = r / scale, c / scale, diff / scale
    else:
        scale = 1.0
    norm_r = math.sqrt(float(np.dot(r, r)))
    norm_c = math.sqrt(float(np.dot(c, c)))
    norm_d = math.sqrt(float(np.dot(diff, diff)))
    cos = cosine(r, c, norm_r, norm_c)
    norm_r, norm_c, norm_d = norm_r * scale, norm_c * scale, norm_d * scale
    r, c, diff = pair.r, pair.c, pair.diff
    eps = 1e-6 * ref_abs_max if ref_abs_max > 0 else 1e-30
    with np.errstate(over="ignore", divide="ignore"):
        max_rel = float((diff / (abs_r + eps)).max())
    median, p99 = np.percentile(diff, [50, 99])
    metrics.update(
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        median_abs=float(median),
        p99_abs=float(p99),
        rel_l2=rel_l2(norm_d, norm_r),
        max_rel=max_rel,
        cosine=cos,
        sqnr_db=sqnr_db(norm_r, norm_d),
        ref_abs_max=ref_abs_max,
    )
    return metrics


def rel_l2(norm_diff: float, norm_ref: float) -> float:
    if norm_diff == 0.0:
        return 0.0
    return math.inf if norm_ref == 0.0 else norm_diff / norm_ref


def cosine(r: np.ndarray, c: np.ndarray, norm_r: float, norm_c: float) -> float:
    return cosine_of_sums(float(np.dot(r.ravel(), c.ravel())), norm_r, norm_c)


def cosine_of_sums(dot: float, norm_r: float, norm_c: float) -> float:
    """Cosine from r.c and the two norms (a streamed comparison accumulates them block by block)."""
    if norm_r == 0.0 and norm_c == 0.0:
        return 1.0
    if norm_r == 0.0 or norm_c == 0.0:
        return 0.0
    return dot / (norm_r * norm_c)


def sqnr_db(norm_ref: float, norm_diff: float) -> float:
    if norm_diff == 0.0:
        return math.inf
    if norm_ref == 0.0:
        return -math.inf
    return 20.0 * math.log10(norm_ref / norm_diff)


def mismatch_fraction(ref: np.ndarray, cand: np.ndarray) -> float:
    """Share of elements that are not exactly equal (for labels and indices)."""
    if ref.size == 0:
        return 0.0
    return float(np.count_nonzero(np.asarray(ref) != np.asarray(cand)) / ref.size)


def min_passing_elementwise(ref: np.ndarray, cand: np.ndarray, atol: float, rtol: float) -> dict[str, float]:
    """The smallest atol (at the given rtol) and rtol (at the given atol) that would have passed."""
    return _min_passing(_Pair.of(ref, cand), atol, rtol)


def _min_passing(pair: _Pair, atol: float, rtol: float) -> dict[str, float]:
    if pair.r.size == 0:
        return {"atol": 0.0, "rtol": 0.0}
    diff, abs_r = pair.diff, pair.abs_r
    min_atol = float(max((diff - rtol * abs_r).max(), 0.0))
    excess = diff - atol
    over = excess > 0
    if not over.any():
        min_rtol = 0.0
    elif (abs_r[over] == 0).any():
        min_rtol = math.inf
    else:
        min_rtol = float((excess[over] / abs_r[over]).max())
    return {"atol": min_atol, "rtol": min_rtol}


def argmax_agreement(ref: np.ndarray, cand: np.ndarray, axis: int) -> float:
    a, b = np.argmax(ref, axis=axis), np.argmax(cand, axis=axis)
    return float(np.count_nonzero(a == b) / a.size) if a.size else 1.0


def dice_per_class(ref: np.ndarray, cand: np.ndarray, axis: int) -> dict[int, float]:
    """Dice between the argmax label maps, for every class present in either."""
    a, b = np.argmax(ref, axis=axis).ravel(), np.argmax(cand, axis=axis).ravel()
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


def task_metrics(ref: np.ndarray, cand: np.ndarray, task: TaskSpec) -> dict[str, Any]:
    axis = task.axis if task.axis >= 0 else ref.ndim + task.axis
    if ref.ndim == 0 or not 0 <= axis < ref.ndim:
        return {}
    labels_r, labels_c = np.argmax(ref, axis=axis), np.argmax(cand, axis=axis)  # once, for every metric
    same = labels_r == labels_c
    result: dict[str, Any] = {"argmax_agreement": float(np.count_nonzero(same) / same.size) if same.size else 1.0}
    if task.kind == "segmentation":
        dice = _dice_from_labels(labels_r.ravel(), labels_c.ravel(), same.ravel(), int(ref.shape[axis]))
        result["dice_per_class"] = {str(k): v for k, v in dice.items()}
        result["dice_mean"] = float(np.mean(list(dice.values()))) if dice else 1.0
        result["dice_min"] = float(min(dice.values())) if dice else 1.0
    else:
        result[f"top{task.topk}_overlap"] = topk_overlap(ref, cand, axis, task.topk)
    return result


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
        }


def compare_output(
    name: str,
    ref: np.ndarray,
    cand: np.ndarray | None,
    tolerance: Tolerance,
    task: TaskSpec | None = None,
) -> OutputComparison:
    """Compare one output and judge it against `tolerance`. Missing, misshapen, wrongly typed or
    non-finite outputs fail; nothing here ever passes by default."""
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
        result.metrics = {"mismatch": fraction, "elements": int(ref.size),
                          "max_abs": float(np.abs(cand.astype(np.float64) - ref.astype(np.float64)).max())
                          if ref.size else 0.0}
        bound = tolerance.mismatch if tolerance.mismatch is not None else 0.0
        result.min_passing = {"mismatch": fraction}
        if fraction > bound:
            result.failures.append(f"{fraction:.4%} of elements differ (allowed {bound:.4%})")
        result.passed = not result.failures
        return result

    pair = _Pair.of(ref, cand)
    metrics = _error_metrics(pair)
    result.metrics = metrics
    if metrics["nan"] or metrics["inf"]:
        bad_nonfinite = int((~np.isfinite(cand) & np.isfinite(ref)).sum())
        if bad_nonfinite:
            result.failures.append(f"{bad_nonfinite} non-finite values (NaN {metrics['nan']}, Inf {metrics['inf']}) "
                                   "where the reference is finite")
    if pair.excluded_ref:
        result.warnings.append(f"reference has {pair.excluded_ref} non-finite values, left out of the metrics")
    if task is not None and task.applies_to(name):
        result.task = task_metrics(ref, cand, task)

    if tolerance.elementwise:
        atol, rtol = tolerance.atol or 0.0, tolerance.rtol or 0.0
        result.min_passing = _min_passing(pair, atol, rtol)
        result.min_passing["at_rtol"], result.min_passing["at_atol"] = rtol, atol
        _check_elementwise(ref, cand, pair, atol, rtol, result)
    for stat in ("mean_abs", "p99_abs", "rel_l2"):
        bound = getattr(tolerance, stat)
        result.min_passing.setdefault(stat, metrics[stat])
        if bound is not None and not metrics[stat] <= bound:
            result.failures.append(f"{stat} {metrics[stat]:.3g} exceeds {bound:.3g}")
    if tolerance.cosine is not None:
        result.min_passing["cosine"] = metrics["cosine"]
        if not metrics["cosine"] >= tolerance.cosine:
            result.failures.append(f"cosine {metrics['cosine']:.6f} below {tolerance.cosine:.6f}")
    if tolerance.argmax_agreement is not None and "argmax_agreement" in result.task:
        agreement = result.task["argmax_agreement"]
        result.min_passing["argmax_agreement"] = agreement
        if agreement < tolerance.argmax_agreement:
            result.failures.append(f"argmax agreement {agreement:.4%} below {tolerance.argmax_agreement:.4%}")
    drops = {"dice_drop": ("dice_mean", "Dice"), "topk_drop": (f"top{task.topk}_overlap" if task else "", "top-k")}
    for bound_name, (metric, label) in drops.items():
        bound = getattr(tolerance, bound_name)
        if bound is not None and metric in result.task:
            drop = 1.0 - result.task[metric]
            result.task[bound_name] = drop
            result.min_passing[bound_name] = drop
            if drop > bound:
                result.failures.append(f"{label} drop {drop:.4f} exceeds {bound:.4f}")
    if _has_nonfinite_failure(result):
        result.min_passing = {}  # no tolerance passes NaN or Inf where the reference is finite
    result.passed = not result.failures
    return result


def _has_nonfinite_failure(result: OutputComparison) -> bool:
    return any("non-finite values" in f for f in result.failures)


def _kind(array: np.ndarray) -> str:
    if array.dtype.kind in FLOAT_KINDS:
        return "float"
    if array.dtype.kind in INT_KINDS:
        return "int"
    return array.dtype.kind


def _check_elementwise(ref: np.ndarray, cand: np.ndarray, pair: _Pair, atol: float, rtol: float,
                       out: OutputComparison) -> None:
    excess = pair.diff - (atol + rtol * pair.abs_r)
    violations = int(np.count_nonzero(excess > 0))
    if violations:
        worst = int(np.argmax(excess))
        allowed = atol + rtol * pair.abs_r[worst]
        where = _position(ref, cand, pair, worst)
        out.failures.append(
            f"{violations} of {pair.size} elements exceed atol+rtol*|ref| (worst at {where}: "
            f"|diff| {pair.diff[worst]:.3g} > {allowed:.3g})"
        )


def _position(ref: np.ndarray, cand: np.ndarray, pair: _Pair, flat_index: int) -> str:
    """The index in the original array of the `flat_index`-th compared element."""
    if pair.r.size != pair.size:  # some elements were left out: map back through the finite mask
        finite = (np.isfinite(np.asarray(ref, dtype=np.float64)) & np.isfinite(np.asarray(cand, dtype=np.float64)))
        flat_index = int(np.flatnonzero(finite.ravel())[flat_index])
    index = np.unravel_index(flat_index, np.shape(ref))
    return "[" + ",".join(str(int(i)) for i in index) + "]"
