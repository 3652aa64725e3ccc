"""The metric table: every metric deployval judges or reports, once. Per metric its name, what computes
it (a pure function here, or the place that computes it from arrays), which direction is worse, how a
value of it is written in a verdict, whether a Tolerance bound of the same name takes it, and what it
means. Directions, verdict wording, the bounds a tolerance describes and the statistics a slice is
judged by are all read from here.

Adding a metric is one entry in METRICS (and, for a new bound, the Tolerance field of the same name:
tests/test_metric_table.py checks the two agree). Plain data and scalar math only: no numpy, no torch,
so spec.py at the bottom of the layers can read it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

HIGHER = "higher"  # a higher value is worse (an error, a count of failures)
LOWER = "lower"  # a lower value is worse (a similarity, an agreement, a signal-to-noise ratio)

# The names, for code that means one metric.
ELEMENTS = "elements"
NAN = "nan"
INF = "inf"
MAX_ABS = "max_abs"
MEAN_ABS = "mean_abs"
MEDIAN_ABS = "median_abs"
P99_ABS = "p99_abs"
REL_L2 = "rel_l2"
MAX_REL = "max_rel"
COSINE = "cosine"
SQNR_DB = "sqnr_db"
REF_ABS_MAX = "ref_abs_max"
MISMATCH = "mismatch"
ARGMAX_AGREEMENT = "argmax_agreement"
DICE_MEAN = "dice_mean"
DICE_MIN = "dice_min"
TOPK_OVERLAP = "topk_overlap"  # written as top{k}_overlap (top5_overlap)
DICE_DROP = "dice_drop"
TOPK_DROP = "topk_drop"
MIN_IOU = "min_iou"
MATCHED = "matched"


def rel_l2(norm_diff: float, norm_ref: float) -> float:
    """||c - r|| / ||r|| from the two norms."""
    if norm_diff == 0.0:
        return 0.0
    return math.inf if norm_ref == 0.0 else norm_diff / norm_ref


def cosine_of_sums(dot: float, norm_r: float, norm_c: float) -> float:
    """Cosine from r.c and the two norms (accumulated block by block)."""
    if norm_r == 0.0 and norm_c == 0.0:
        return 1.0
    if norm_r == 0.0 or norm_c == 0.0:
        return 0.0
    return dot / (norm_r * norm_c)


def sqnr_db(norm_ref: float, norm_diff: float) -> float:
    """Signal to quantization noise, 20 log10(||r|| / ||c - r||), in dB."""
    if norm_diff == 0.0:
        return math.inf
    if norm_ref == 0.0:
        return -math.inf
    return 20.0 * math.log10(norm_ref / norm_diff)


@dataclass(frozen=True)
class Metric:
    """One metric. `computed` is the pure function that computes it from accumulated sums, or where it is
    computed from arrays ("module.function"). `fmt` writes a value (and its bound) in a verdict line."""

    name: str
    description: str
    worse: str  # HIGHER or LOWER
    computed: Callable[..., float] | str
    fmt: str = ".3g"
    bound: bool = False  # a Tolerance field of this name bounds it
    statistic: bool = False  # a statistic of |c - r| over a float output (judged per slice when bounded)
    sliced: bool = False  # reported per slice under --slices, and as worst_slice_<name>
    suffix: str = ""  # names that end with this are this metric (top5_overlap); "": the name itself

    @property
    def lower_is_worse(self) -> bool:
        return self.worse == LOWER

    def exceeds(self, value: float, bound: float) -> bool:
        """Whether `value` is past `bound` in the worse direction (NaN always is)."""
        return not value >= bound if self.lower_is_worse else not value <= bound

    def verdict(self, value: float, bound: float) -> str:
        """The failure line of a value past its bound: 'rel_l2 0.2 exceeds 0.1', 'cosine 0.9 below 0.99'."""
        word = "below" if self.lower_is_worse else "exceeds"
        return f"{self.name} {value:{self.fmt}} {word} {bound:{self.fmt}}"

    def describe_bound(self, bound: float) -> str:
        """A bound as a tolerance is described: upper bounds to three digits, lower bounds (close to 1)
        with every digit that matters."""
        return f"{self.name}>={bound:.8g}" if self.lower_is_worse else f"{self.name}<={bound:.3g}"


_STATS = "stats.ErrorStats.metrics"
_TASK = "metrics.task_metrics"

METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric(ELEMENTS, "elements compared", HIGHER, _STATS, fmt="d"),
    Metric(NAN, "NaN values in the candidate where the reference is finite", HIGHER, _STATS, fmt="d"),
    Metric(INF, "Inf values in the candidate where the reference is finite", HIGHER, _STATS, fmt="d"),
    Metric(MAX_ABS, "largest |c - r|", HIGHER, _STATS, sliced=True),
    Metric(MEAN_ABS, "mean |c - r|", HIGHER, _STATS, bound=True, statistic=True, sliced=True),
    Metric(MEDIAN_ABS, "median |c - r|", HIGHER, "metrics.error_metrics"),
    Metric(P99_ABS, "99th percentile of |c - r|", HIGHER, "metrics.error_metrics", bound=True, statistic=True,
           sliced=True),
    Metric(REL_L2, "relative L2 error ||c - r|| / ||r||", HIGHER, rel_l2, bound=True, statistic=True, sliced=True),
    Metric(COSINE, "cosine similarity of c and r", LOWER, cosine_of_sums, fmt=".6f", bound=True, statistic=True,
           sliced=True),
    Metric(ARGMAX_AGREEMENT, "share of positions where the argmax over the task axis agrees", LOWER, _TASK,
           fmt=".4%", bound=True),
    Metric(DICE_DROP, "1 - mean Dice against the reference's own label map", HIGHER, "metrics.compare_output",
           fmt=".4f", bound=True),
    Metric(TOPK_DROP, "1 - top-k overlap against the reference's own top-k", HIGHER, "metrics.compare_output",
           fmt=".4f", bound=True),
    Metric(MISMATCH, "share of elements that differ (integer outputs)", HIGHER, "metrics.mismatch_fraction",
           fmt=".4%", bound=True),
    Metric(MAX_REL, "largest |c - r| / |r| (|r| above a floor)", HIGHER, _STATS),
    Metric(SQNR_DB, "signal to quantization noise, dB", LOWER, sqnr_db, fmt=".1f"),
    Metric(REF_ABS_MAX, "largest |r| over the finite elements (the output's scale)", HIGHER, _STATS),
    Metric(DICE_MEAN, "mean Dice over the classes present, candidate vs reference label maps", LOWER, _TASK,
           fmt=".4f"),
    Metric(DICE_MIN, "worst class's Dice, candidate vs reference label maps", LOWER, _TASK, fmt=".4f"),
    Metric(TOPK_OVERLAP, "share of the reference's top-k classes the candidate also ranks top-k", LOWER,
           "metrics.topk_overlap", fmt=".3%", suffix="overlap"),
    Metric(MIN_IOU, "smallest IoU of a matched detection (--task detection)", LOWER, "task_builtin.detection",
           suffix="iou"),
    Metric(MATCHED, "reference detections matched by the candidate (--task detection)", LOWER,
           "task_builtin.detection", fmt="d"),
)}

PRIMARY = METRICS[REL_L2]  # the headline error: ranks layers, samples and slices, and is judged first on a slice
BOUNDS = tuple(m for m in METRICS.values() if m.bound)  # what a Tolerance bounds, besides atol/rtol
UPPER_BOUNDS = tuple(m for m in BOUNDS if not m.lower_is_worse)  # mean_abs ... mismatch: value <= bound
LOWER_BOUNDS = tuple(m for m in BOUNDS if m.lower_is_worse)  # cosine, argmax_agreement: value >= bound
STATISTIC_BOUNDS = tuple(m for m in BOUNDS if m.statistic)  # mean_abs, p99_abs, rel_l2, cosine
SLICE_JUDGED = (PRIMARY, *(m for m in STATISTIC_BOUNDS if m is not PRIMARY))
SLICE_REPORTED = tuple(m.name for m in METRICS.values() if m.sliced)
_LOWER_SUFFIXES = tuple(m.suffix or m.name for m in METRICS.values() if m.lower_is_worse)


def lower_is_worse(name: str) -> bool:
    """Whether the lower value of the metric `name` is the worse one; it may be derived from one
    (worst_slice_cosine, top5_overlap, a task check's min_iou). Every other metric: the higher."""
    return name.endswith(_LOWER_SUFFIXES)


def worst(name: str, values: Iterable[float]) -> float:
    """The worst of several values of the metric `name`."""
    return min(values) if lower_is_worse(name) else max(values)
