"""Worst-slice metrics: one output judged part by part along an axis (`--slices NAME:AXIS[=GROUPS]`).

A norm over a whole tensor is dominated by its largest values: a detector's output that holds box
coordinates in pixels beside class scores in 0..1 passes by rel L2 while its scores moved by 20 %. Each
slice is compared on its own and judged by the output's statistical bounds (rel_l2, mean_abs, p99_abs,
cosine); the output passes only if its worst slice does. The elementwise rule (atol + rtol * |ref|)
holds element by element already, so slicing adds nothing to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..metric_table import SLICE_REPORTED, worst

WORST_PREFIX = "worst_slice_"  # the output's metrics gain worst_slice_rel_l2 etc.: data sets and diffs see them


@dataclass(frozen=True)
class SliceSpec:
    """Slices of one output along `axis`: every index its own slice (`groups` None), or the given
    half-open ranges (`stop` None: to the end)."""

    output: str
    axis: int
    groups: tuple[tuple[int, int | None], ...] | None = None

    @classmethod
    def parse(cls, text: str) -> SliceSpec:
        """'NAME:AXIS' or 'NAME:AXIS=START:STOP,START:,INDEX' (an output name may itself hold ':')."""
        where, has_groups, groups_text = text.partition("=")
        name, sep, axis_text = where.rpartition(":")
        if not sep or not name:
            raise UsageError(f"--slices '{text}': expected NAME:AXIS or NAME:AXIS=GROUPS (e.g. output0:1=0:4,4:)")
        try:
            axis = int(axis_text)
        except ValueError:
            raise UsageError(f"--slices '{text}': axis '{axis_text}' is not an integer") from None
        if not has_groups:
            return cls(name, axis)
        groups = []
        for part in (p.strip() for p in groups_text.split(",")):
            start_text, colon, stop_text = part.partition(":")
            try:
                start = int(start_text) if start_text.strip() else 0
                stop = (int(stop_text) if stop_text.strip() else None) if colon else start + 1
            except ValueError:
                raise UsageError(f"--slices '{text}': group '{part}' is not START:STOP, START: or INDEX") from None
            if start < 0 or (stop is not None and stop <= start):
                raise UsageError(f"--slices '{text}': group '{part}' is empty or negative")
            groups.append((start, stop))
        if not groups:
            raise UsageError(f"--slices '{text}': no groups after '='")
        return cls(name, axis, tuple(groups))

    @property
    def text(self) -> str:
        """The --slices value that makes this spec (reports, reproduction lines)."""
        if self.groups is None:
            return f"{self.output}:{self.axis}"
        parts = [f"{a}" if b == a + 1 else f"{a}:{'' if b is None else b}" for a, b in self.groups]
        return f"{self.output}:{self.axis}={','.join(parts)}"

    def ranges(self, shape: Sequence[int]) -> list[tuple[str, int, int]]:
        """(label, start, stop) of every slice for an output of `shape`; a spec that does not fit it is a
        UsageError naming the shape."""
        axis = self.axis if self.axis >= 0 else len(shape) + self.axis
        if not 0 <= axis < len(shape):
            raise UsageError(f"--slices {self.text}: output '{self.output}' has {len(shape)} axes "
                             f"(shape {list(shape)}), no axis {self.axis}")
        size = int(shape[axis])
        if self.groups is None:
            return [(f"{axis}[{i}]", i, i + 1) for i in range(size)]
        out = []
        for start, stop in self.groups:
            end = size if stop is None else stop
            if start >= size or end > size:
                raise UsageError(f"--slices {self.text}: group {start}:{'' if stop is None else stop} is outside "
                                 f"axis {axis} of '{self.output}' (size {size})")
            out.append((f"{axis}[{start}:{end}]", start, end))
        return out


@dataclass
class SliceComparison:
    """One slice's metrics and verdict."""

    label: str
    metrics: dict[str, float]
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"slice": self.label, "metrics": self.metrics, "passed": not self.failures, "failures": self.failures}


def worst_of(comparisons: Sequence[SliceComparison]) -> dict[str, float]:
    """The worst value of each reported statistic over the slices, as `worst_slice_<stat>` metrics."""
    worst_values: dict[str, float] = {}
    for stat in SLICE_REPORTED:
        values = [c.metrics[stat] for c in comparisons]
        if values:
            worst_values[WORST_PREFIX + stat] = float(worst(stat, values))
    return worst_values


def for_output(slices: Sequence[SliceSpec], name: str) -> list[SliceSpec]:
    return [s for s in slices if s.output == name]


def check_outputs(slices: Sequence[SliceSpec], outputs: Mapping[str, Any]) -> None:
    """Refuse, once the reference ran, a --slices naming no output, a non-float output (judged by its
    mismatch fraction, which slicing does not change) or one whose shape it does not fit."""
    for spec in slices:
        if spec.output not in outputs:
            raise UsageError(f"--slices {spec.text}: the model has no output '{spec.output}' "
                             f"(outputs: {', '.join(outputs)})")
        value = outputs[spec.output]
        if value.dtype.kind not in "fc":
            raise UsageError(f"--slices {spec.text}: output '{spec.output}' is {value.dtype}, judged by the share "
                             "of elements that differ; slices judge float outputs")
        spec.ranges(value.shape)
