"""Result objects. Each carries its statistics and is true when it passes, so an API user can
write `if not deployval.compare(...): ...`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExitCode
from ..progress import Step
from ..timing import LatencyStats
from .metrics import OutputComparison
from .record import FORMAT_VERSION as FORMAT_VERSION  # re-exported: suite.py checks merged reports with it
from .record import RunRecord

# Result statuses. "reference" is the run everything is compared against; "skipped" is a
# combination that does not exist (e.g. TorchScript at int8) and affects no verdict.
PASS, FAIL, ERROR, SKIPPED, REFERENCE = "pass", "fail", "error", "skipped", "reference"
VERDICTS = {ExitCode.OK: "PASS", ExitCode.ACCURACY: "FAIL", ExitCode.USAGE: "ERROR", ExitCode.BACKEND: "INCOMPLETE"}
UNFINISHED = "the run did not finish"
NOTHING_JUDGED = ("nothing was judged: every row is the reference itself or skipped (compare it with another "
                  "backend or precision, e.g. --precisions fp32,fp16)")


def gate_label(item: str) -> str:
    """A gate item as the row label it requires ('ort' means ort:fp32, as the pipeline plans it)."""
    backend, _, precision = item.partition(":")
    return f"{backend}:{precision or 'fp32'}"


@dataclass(frozen=True)
class Verdict:
    """What a report's rows, gate and completeness come to. The same rules judge a live `Report` and a
    JSON report read back (`judge_dict`), so a merge or a renderer never has to trust a stored summary."""

    exit_code: ExitCode
    unfinished: bool = False  # the run stopped before its end (a partial report)
    missing: tuple[str, ...] = ()  # rows the gate requires that the report does not hold
    not_run: tuple[str, ...] = ()  # rows that could not run (error rows)
    nothing_judged: bool = False  # every row is the reference or skipped: no verdict on anything

    @property
    def verdict(self) -> str:
        return VERDICTS[self.exit_code]

    @property
    def incomplete(self) -> str:
        """Why the work is incomplete, in words; '' when nothing is missing."""
        parts = [UNFINISHED] if self.unfinished else []
        if self.missing:
            parts.append(f"the gate's {', '.join(self.missing)} did not run")
        if self.not_run:
            parts.append(f"{', '.join(self.not_run)} could not run")
        if self.nothing_judged:
            parts.append(NOTHING_JUDGED)
        return "; ".join(parts)

    @property
    def gap(self) -> str:
        """What the reports print as the run's gap (rows that could not run are named in their own rows)."""
        parts = [UNFINISHED] if self.unfinished else []
        parts += [f"the gate's {', '.join(self.missing)} did not run"] if self.missing else []
        return "; ".join(parts + ([NOTHING_JUDGED] if self.nothing_judged else []))

    def summary(self, counts: Mapping[str, int]) -> dict[str, Any]:
        """A report's `summary` object: verdict, exit code, row counts, and why it is incomplete."""
        summary: dict[str, Any] = {"verdict": self.verdict, "exit_code": int(self.exit_code), "counts": dict(counts)}
        if self.incomplete:
            summary["incomplete"] = self.incomplete
        return summary


def judge(rows: Sequence[tuple[str, str, bool]], *, complete: bool, gate: Sequence[str] | None,
          saved_outputs: bool = False) -> Verdict:
    """The verdict of rows given as (label, status, usage_error). A run that did not finish is
    INCOMPLETE whatever its rows say (what did not run could have failed, or the run's end could).
    Otherwise a failed check is the strongest finding, then a usage error, then work left undone: a
    row the gate requires that is missing, a row that could not run, or no row judged at all (only the
    reference, or rows skipped: a PASS would say something was checked), unless the run's product is the
    reference's outputs saved as golden outputs (`saved_outputs`, --save-outputs): nothing was to be judged."""
    labels = {label for label, _, _ in rows}
    missing = tuple(dict.fromkeys(g for g in map(gate_label, gate or ()) if g not in labels))
    not_run = tuple(label for label, status, _ in rows if status == ERROR)
    nothing_judged = complete and not saved_outputs and not any(status in (PASS, FAIL, ERROR) for _, status, _ in rows)
    if not complete:
        code = ExitCode.BACKEND
    elif any(status == FAIL for _, status, _ in rows):
        code = ExitCode.ACCURACY
    elif any(status == ERROR and usage for _, status, usage in rows):
        code = ExitCode.USAGE
    elif missing or not_run or nothing_judged:
        code = ExitCode.BACKEND
    else:
        code = ExitCode.OK
    return Verdict(code, unfinished=not complete, missing=missing, not_run=not_run, nothing_judged=nothing_judged)


def judge_dict(data: Mapping[str, Any]) -> Verdict:
    """The verdict of a compare/validate report in its JSON form, recomputed from `complete`, its rows and
    its gate (never from its own summary). A report that does not say it is complete is not."""
    rows = [(f"{r.get('backend')}:{r.get('precision')}", str(r.get("status")), bool(r.get("usage_error")))
            for r in data.get("results") or []]
    gate = data.get("gate")
    analysis = data.get("analysis")
    saved = isinstance(analysis, Mapping) and bool(analysis.get("saved_outputs"))
    return judge(rows, complete=data.get("complete") is True, gate=gate if isinstance(gate, list) else None,
                 saved_outputs=saved)


def row_counts(statuses: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts


@dataclass
class BackendResult:
    backend: str
    precision: str
    device: str
    status: str
    reason: str = ""
    outputs: list[OutputComparison] = field(default_factory=list)
    latency: LatencyStats | None = None
    artifact: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    faithful: bool = True
    reproduce: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    usage_error: bool = False  # the error came from the user's input (exit code 2)
    samples: int = 1  # inputs the verdict is over (a --dataset run: every usable sample)
    task_check: dict[str, Any] | None = None  # TaskOutcome.to_dict() of the run's --task on this row

    def __bool__(self) -> bool:
        return self.status in (PASS, REFERENCE, SKIPPED)

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "device": self.device,
            "status": self.status,
            "reason": self.reason,
            "faithful": self.faithful,
            "warnings": self.warnings,
            "outputs": [o.to_dict() for o in self.outputs],
            "latency": self.latency.to_dict() if self.latency else None,
            "artifact": self.artifact,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "details": self.details,
            "reproduce": self.reproduce,
            "samples": self.samples,
            "usage_error": self.usage_error,
            **({"task_check": self.task_check} if self.task_check is not None else {}),
        }


@dataclass(kw_only=True)
class Report(RunRecord):
    """Everything one comparison found, after the run record's header; `exit_code` is what a release
    gate acts on."""

    steps: list[Step] = field(default_factory=list)
    results: list[BackendResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)  # e.g. activation ranges against fp16
    gate: list[str] | None = None
    samples: int = 1  # inputs the verdicts are over (a --dataset run: every usable sample)

    def __bool__(self) -> bool:
        return self.exit_code == ExitCode.OK

    def judged(self) -> Verdict:
        """The verdict of the rows so far (a report still being filled is not complete)."""
        rows = [(r.label, r.status, r.usage_error) for r in self.results]
        return judge(rows, complete=self.complete, gate=self.gate,
                     saved_outputs=bool(self.analysis.get("saved_outputs")))

    @property
    def exit_code(self) -> ExitCode:
        """3 while the report is not complete; else 1 when an accuracy check failed (the strongest
        finding), 2 for a usage error found while running, 3 when a requested or gated row did not run,
        else 0."""
        return self.judged().exit_code

    @property
    def verdict(self) -> str:
        return VERDICTS[self.exit_code]

    def result(self, backend: str, precision: str = "fp32") -> BackendResult:
        for result in self.results:
            if result.backend == backend and result.precision == precision:
                return result
        raise KeyError(f"{backend}:{precision}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; usable at any point of the run (a partial report says INCOMPLETE and why)."""
        return {
            **self.record_dict(),
            "gate": self.gate,
            "samples": self.samples,
            "steps": [s.to_dict() for s in self.steps],
            "results": [r.to_dict() for r in self.results],
            "warnings": self.warnings,
            "analysis": self.analysis,
            "timings": self.timings,
            "summary": self.judged().summary(row_counts([r.status for r in self.results])),
        }
