"""Error statistics streamed block by block, so that comparing a 300 MB activation never allocates
its float64 copies at once (the metrics module's `error_metrics` upcasts whole arrays, which is right
for final outputs and too much for every activation of a 3D network). The debugger compares layers
with it; the pipeline and the HTML report take the |c - r| histogram of final outputs from it.

Exact: max_abs, mean_abs, rel_l2, cosine, sqnr_db, NaN/Inf counts, elementwise violations and the
minimum passing atol/rtol. Approximate, and only when asked (or when a tolerance bounds p99_abs):
median_abs and p99_abs, read from a histogram of log10 |c - r| with quarter-decade bins (the upper
edge of the bin holding the quantile, so a bound on p99_abs is checked conservatively).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metric_table import (
    COSINE,
    ELEMENTS,
    INF,
    MAX_ABS,
    MAX_REL,
    MEAN_ABS,
    MEDIAN_ABS,
    MISMATCH,
    NAN,
    P99_ABS,
    REF_ABS_MAX,
    REL_L2,
    SQNR_DB,
    STATISTIC_BOUNDS,
    cosine_of_sums,
    rel_l2,
    sqnr_db,
)
from ..model.spec import Tolerance
from .nonfinite import kind_mismatches

BLOCK = 1 << 18  # elements per block: 2 MB per float64 temporary, cache-friendly
LOG10_LOW, LOG10_HIGH, BINS_PER_DECADE = -12, 6, 4
N_BINS = (LOG10_HIGH - LOG10_LOW) * BINS_PER_DECADE


def log_bin_edges() -> np.ndarray:
    """Edges of the |c - r| histogram: 10**-12 ... 10**6, four bins per decade. Values below the
    first edge (including exact zeros) are counted apart as `below`, values above in the last bin."""
    return np.logspace(LOG10_LOW, LOG10_HIGH, N_BINS + 1)


def _bin_index(diff: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        index = np.floor((np.log10(diff) - LOG10_LOW) * BINS_PER_DECADE)
    return np.clip(index, 0, N_BINS - 1).astype(np.int64)


@dataclass
class ErrorStats:
    """Accumulates the comparison of one tensor; `update` may be called per block."""

    atol: float | None = None
    rtol: float | None = None
    integer: bool = False
    n: int = 0  # elements compared (finite in both)
    elements: int = 0
    nan: int = 0
    inf: int = 0
    nonfinite_bad: int = 0  # non-finite candidate where the reference is finite
    excluded_ref: int = 0  # non-finite reference elements: masked out of the statistics
    nonfinite_mismatch: int = 0  # of those, where the candidate is not the same kind (NaN, +Inf, -Inf)
    sum_abs: float = 0.0
    max_abs: float = 0.0
    sum_d2: float = 0.0
    sum_r2: float = 0.0
    sum_c2: float = 0.0
    sum_rc: float = 0.0
    ref_abs_max: float = 0.0
    mismatches: int = 0
    violations: int = 0
    min_atol: float = 0.0
    min_rtol: float = 0.0
    below: int = 0
    rel_eps: float | None = None  # with it, max |c - r| / (|r| + rel_eps) is accumulated too
    max_rel: float = 0.0
    scale: float = 1.0  # sums of squares are taken of values / scale (float64 would overflow beyond ~1e154)
    histogram_wanted: bool = True  # the |c - r| histogram (median, p99, plots) costs a log10 per element
    hist: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS, dtype=np.int64))

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        ref, cand = np.asarray(ref).ravel(), np.asarray(cand).ravel()
        self.elements += int(ref.size)
        if self.integer:
            self.mismatches += int(np.count_nonzero(ref != cand))
            self._accumulate(ref.astype(np.float64), cand.astype(np.float64))
            return
        finite_r, finite_c = np.isfinite(ref), np.isfinite(cand)
        if finite_r.all() and finite_c.all():  # the common case: no masks, no copies
            self._accumulate(ref.astype(np.float64), cand.astype(np.float64))
            return
        self.nan += int(np.count_nonzero(np.isnan(cand)))
        self.inf += int(np.count_nonzero(np.isinf(cand)))
        self.nonfinite_bad += int(np.count_nonzero(finite_r & ~finite_c))
        self.excluded_ref += int(ref.size - np.count_nonzero(finite_r))
        if not finite_r.all():
            self.nonfinite_mismatch += kind_mismatches(ref[~finite_r], cand[~finite_r])
        keep = finite_r & finite_c
        self._accumulate(ref[keep].astype(np.float64), cand[keep].astype(np.float64))

    def _accumulate(self, r: np.ndarray, c: np.ndarray) -> None:
        """r and c are float64 copies (owned here): reused in place to keep the passes few."""
        if not r.size:
            return
        self.n += int(r.size)
        if self.scale != 1.0:
            rs, cs = r / self.scale, c / self.scale
            self.sum_r2 += float(np.dot(rs, rs))
            self.sum_c2 += float(np.dot(cs, cs))
            self.sum_rc += float(np.dot(rs, cs))
        else:
            self.sum_r2 += float(np.dot(r, r))
            self.sum_c2 += float(np.dot(c, c))
            self.sum_rc += float(np.dot(r, c))
        d = np.subtract(c, r, out=c)
        np.abs(d, out=d)
        abs_r = np.abs(r, out=r)
        self.sum_abs += float(d.sum())
        self.max_abs = max(self.max_abs, float(d.max()))
        ds = d / self.scale if self.scale != 1.0 else d
        self.sum_d2 += float(np.dot(ds, ds))
        self.ref_abs_max = max(self.ref_abs_max, float(abs_r.max()))
        if self.rel_eps is not None:
            with np.errstate(over="ignore", divide="ignore"):
                self.max_rel = max(self.max_rel, float((d / (abs_r + self.rel_eps)).max()))
        if self.atol is not None or self.rtol is not None:
            atol, rtol = self.atol or 0.0, self.rtol or 0.0
            excess = d - rtol * abs_r if rtol else d
            self.min_atol = max(self.min_atol, float(excess.max()))
            self.violations += int(np.count_nonzero(excess > atol))
            over = d > atol  # where some rtol is needed at this atol
            if over.any():
                needed = abs_r[over]
                if (needed == 0).any():
                    self.min_rtol = math.inf
                else:
                    self.min_rtol = max(self.min_rtol, float(((d[over] - atol) / needed).max()))
        if self.histogram_wanted:
            tiny = d < 10.0**LOG10_LOW
            self.below += int(np.count_nonzero(tiny))
            positive = d[~tiny]
            if positive.size:
                self.hist += np.bincount(_bin_index(positive), minlength=N_BINS)

    # ------------------------------------------------------------------ results
    def quantile(self, q: float) -> float:
        """Upper bin edge of the q-quantile of |c - r| (0 when it falls among the exact zeros)."""
        if self.n == 0:
            return 0.0
        rank = q * self.n
        if rank <= self.below:
            return 0.0
        cumulative = self.below + np.cumsum(self.hist)
        index = int(np.searchsorted(cumulative, rank))
        return float(min(10.0 ** (LOG10_LOW + (index + 1) / BINS_PER_DECADE), self.max_abs))

    def metrics(self) -> dict[str, float]:
        norm_r, norm_c, norm_d = math.sqrt(self.sum_r2), math.sqrt(self.sum_c2), math.sqrt(self.sum_d2)
        metrics = {
            ELEMENTS: self.elements, NAN: self.nan, INF: self.inf,
            MAX_ABS: self.max_abs, MEAN_ABS: self.sum_abs / self.n if self.n else 0.0,
            REL_L2: rel_l2(norm_d, norm_r), COSINE: cosine_of_sums(self.sum_rc, norm_r, norm_c),
            SQNR_DB: sqnr_db(norm_r, norm_d), REF_ABS_MAX: self.ref_abs_max,
        }
        if self.rel_eps is not None:
            metrics[MAX_REL] = self.max_rel
        if self.histogram_wanted:
            metrics[MEDIAN_ABS], metrics[P99_ABS] = self.quantile(0.5), self.quantile(0.99)
        if self.integer:
            metrics[MISMATCH] = self.mismatches / self.elements if self.elements else 0.0
        return metrics

    def histogram(self) -> dict[str, Any]:
        return {"log10_low": LOG10_LOW, "log10_high": LOG10_HIGH, "bins_per_decade": BINS_PER_DECADE,
                "below": self.below, "counts": self.hist.tolist(), "nonfinite": self.nonfinite_bad}

    def failures(self, tolerance: Tolerance) -> list[str]:
        """Why this tensor exceeds `tolerance` (argmax agreement is a task metric and is not applied
        to layers); empty when it passes."""
        out: list[str] = []
        m = self.metrics()
        if self.integer:
            bound = tolerance.mismatch if tolerance.mismatch is not None else 0.0
            if m[MISMATCH] > bound:
                out.append(f"{m[MISMATCH]:.4%} of elements differ (allowed {bound:.4%})")
            return out
        if self.nonfinite_bad:
            out.append(f"{self.nonfinite_bad} non-finite values where the reference is finite")
        if self.nonfinite_mismatch:
            out.append(f"{self.nonfinite_mismatch} of {self.excluded_ref} positions where the reference is "
                       "non-finite differ in the candidate (NaN, +Inf, -Inf must match)")
        if tolerance.elementwise and self.violations:
            out.append(f"{self.violations} of {self.elements} elements exceed atol+rtol*|ref| "
                       f"(max |diff| {self.max_abs:.3g})")
        for metric in STATISTIC_BOUNDS:  # p99_abs only where the histogram was taken
            bound = getattr(tolerance, metric.name)
            if bound is not None and metric.name in m and metric.exceeds(m[metric.name], bound):
                out.append(metric.verdict(m[metric.name], bound))
        return out


def compare_tensors(ref: Any, cand: Any, tolerance: Tolerance, *, block: int = BLOCK,
                    histogram: bool | None = None) -> tuple[ErrorStats, list[str]]:
    """Compare two arrays block by block; returns the statistics and the failures against `tolerance`
    (shape and dtype-kind mismatches are failures too). The |c - r| histogram (median and p99) is
    computed when asked, or when the tolerance bounds p99_abs."""
    ref, cand = np.asarray(ref), np.asarray(cand)
    integer = ref.dtype.kind in "iub" and cand.dtype.kind in "iub"
    wanted = histogram if histogram is not None else tolerance.p99_abs is not None
    stats = ErrorStats(atol=tolerance.atol, rtol=tolerance.rtol, integer=integer, histogram_wanted=wanted)
    if ref.shape != cand.shape:
        return stats, [f"shape {tuple(cand.shape)} differs from reference {tuple(ref.shape)}"]
    if (ref.dtype.kind in "iub") != (cand.dtype.kind in "iub"):
        return stats, [f"dtype {cand.dtype} is not of the reference's kind ({ref.dtype})"]
    flat_r, flat_c = ref.reshape(-1), cand.reshape(-1)
    for start in range(0, max(flat_r.size, 1), block):
        stats.update(flat_r[start:start + block], flat_c[start:start + block])
    return stats, stats.failures(tolerance)


def passes(ref: Any, cand: Any, tolerance: Tolerance) -> tuple[bool, dict[str, float]]:
    stats, failures = compare_tensors(ref, cand, tolerance)
    return not failures, stats.metrics()


def error_histogram(ref: Any, cand: Any) -> dict[str, Any]:
    """Counts of |cand - ref| on log-spaced bins (10**-12 … 10**6, four per decade), plus the count
    below the first edge (exact zeros) and of non-finite candidates: small enough to keep in a report."""
    stats, _ = compare_tensors(ref, cand, Tolerance(), histogram=True)
    return stats.histogram()
