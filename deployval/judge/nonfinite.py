"""NaN and Inf in what rows are judged against: counted, refused, or (with --allow-nonfinite) masked.

A reference output with NaN/Inf cannot say what a candidate should compute there, and leaving those
elements out of the statistics silently would let an output that is NaN everywhere pass on zero
compared elements. So a non-finite reference (the reference run's outputs, or a golden file) is the
user's problem to acknowledge: refused, unless --allow-nonfinite says its NaN/Inf are expected. Then
those positions are masked out of the error metrics and the candidate must have the same kind there
(NaN where NaN, +Inf where +Inf, -Inf where -Inf). An output that is non-finite everywhere judges
nothing and is refused even then. Pure functions over arrays; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError

OPTION = "--allow-nonfinite"
BLOCK = 1 << 20  # elements per block of the kind comparison: a few MB of masks at a time


@dataclass(frozen=True)
class NonFinite:
    """How many elements of one array are NaN, +Inf and -Inf."""

    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    elements: int = 0

    @property
    def total(self) -> int:
        return self.nan + self.posinf + self.neginf

    @property
    def everywhere(self) -> bool:
        """Nothing finite left to compare (an empty array has nothing non-finite either)."""
        return self.elements > 0 and self.total == self.elements

    def describe(self) -> str:
        return f"NaN {self.nan}, +Inf {self.posinf}, -Inf {self.neginf}"

    def to_dict(self) -> dict[str, int]:
        return {"nan": self.nan, "posinf": self.posinf, "neginf": self.neginf, "elements": self.elements}


def count_nonfinite(values: np.ndarray) -> NonFinite:
    """NaN, +Inf and -Inf counts of `values`; integer and boolean arrays are finite by kind. The common
    all-finite case costs a min and a max (both propagate NaN; an Inf is the min or the max), no masks."""
    values = np.asarray(values)
    if values.dtype.kind not in "fc" or values.size == 0:
        return NonFinite(elements=int(values.size))
    if values.dtype.kind == "c":
        values = np.concatenate([values.real.ravel(), values.imag.ravel()])
    low, high = np.min(values), np.max(values)
    if math.isfinite(float(low)) and math.isfinite(float(high)):
        return NonFinite(elements=int(values.size))
    nan = int(np.count_nonzero(np.isnan(values)))
    posinf = int(np.count_nonzero(values == np.inf))
    neginf = int(np.count_nonzero(values == -np.inf))
    return NonFinite(nan, posinf, neginf, int(values.size))


def kind_mismatches(ref: np.ndarray, cand: np.ndarray) -> int:
    """Positions where the reference is non-finite and the candidate is not the same kind (NaN where
    NaN, +Inf where +Inf, -Inf where -Inf). Same shapes; only the reference's non-finite positions count
    (a non-finite candidate where the reference is finite is a failure of its own)."""
    flat_r, flat_c = np.asarray(ref).reshape(-1), np.asarray(cand).reshape(-1)
    if flat_r.dtype.kind not in "fc":
        return 0
    mismatched = 0
    for start in range(0, flat_r.size, BLOCK):
        r, c = flat_r[start:start + BLOCK], flat_c[start:start + BLOCK]
        bad = ~np.isfinite(r)
        if not bad.any():
            continue
        r, c = r[bad], c[bad]
        same = (np.isnan(r) & np.isnan(c)) | (np.isinf(r) & (c == r))
        mismatched += int(r.size - np.count_nonzero(same))
    return mismatched


def check_reference(outputs: Mapping[str, np.ndarray], source: str, allow: bool) -> dict[str, NonFinite]:
    """The non-finite counts of every output that has any; refused (UsageError, one line) where the
    outputs cannot be judged against: any NaN/Inf without `allow`, an output with nothing finite even
    with it. `source` says where the outputs come from ("the reference (torch fp32)", "--expected F")."""
    found = {name: count for name, value in outputs.items() if (count := count_nonfinite(value)).total}
    if not found:
        return {}
    everywhere = [name for name, count in found.items() if count.everywhere]
    if not allow:
        name, count = next(iter(found.items()))
        more = f" (and {len(found) - 1} more outputs)" if len(found) > 1 else ""
        raise UsageError(f"{source}: output '{name}' has {count.total} non-finite values of {count.elements} "
                         f"({count.describe()}){more}; rows cannot be judged there: pass {OPTION} to mask them "
                         "out and require the same NaN/Inf at the same positions")
    if everywhere:
        name, count = everywhere[0], found[everywhere[0]]
        raise UsageError(f"{source}: output '{name}' is non-finite everywhere ({count.describe()} of "
                         f"{count.elements}): nothing left to judge, even with {OPTION}")
    return found


def policy_statement(allow: bool, found: Mapping[str, NonFinite]) -> str:
    """The run's non-finite policy in one line, for the report's warnings."""
    if not allow:
        return "NaN/Inf in the reference are refused; a NaN/Inf where the reference is finite fails"
    if not found:
        return f"{OPTION}: the reference is finite, nothing was masked; a NaN/Inf where it is finite fails"
    counts = "; ".join(f"'{name}': {count.describe()}" for name, count in found.items())
    return (f"{OPTION}: the reference's non-finite positions ({counts}) are masked out of the metrics; every row "
            "must have the same NaN/+Inf/-Inf there, and a NaN/Inf where the reference is finite fails")


def reference_source(kind: str) -> str:
    """How an error line names the reference run of a model of this kind."""
    return f"the reference ({'onnxruntime' if kind == 'onnx' else 'torch eager'} fp32)"


def state_policy(reference: Mapping[str, np.ndarray], allow: bool) -> tuple[dict[str, Any], str | None]:
    """The policy every report states: the option's value and the reference's non-finite counts (JSON,
    analysis.nonfinite), and with the option a warning line (console, HTML, Markdown, JUnit)."""
    found = {name: count for name, value in reference.items() if (count := count_nonfinite(value)).total}
    analysis = {"allow_nonfinite": allow, "reference": {name: count.to_dict() for name, count in found.items()}}
    return analysis, policy_statement(allow, found) if allow or found else None
