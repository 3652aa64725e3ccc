"""Result objects. Each carries its statistics and is true when it passes, so an API user can
write `if not deployval.compare(...): ...`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ExitCode
from .metrics import OutputComparison
from .progress import Step
from .record import FORMAT_VERSION as FORMAT_VERSION  # re-exported: suite.py checks merged reports with it
from .record import RunRecord
from .timing import LatencyStats

# Result statuses. "reference" is the run everything is compared against; "skipped" is a
# combination that does not exist (e.g. TorchScript at int8) and affects no verdict.
PASS, FAIL, ERROR, SKIPPED, REFERENCE = "pass", "fail", "error", "skipped", "reference"


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

    @property
    def exit_code(self) -> ExitCode:
        """1 when an accuracy check failed (the strongest finding), else 2 for a usage error found
        while running, else 3 when a requested backend could not run, else 0."""
        statuses = {r.status for r in self.results}
        if FAIL in statuses:
            return ExitCode.ACCURACY
        if any(r.status == ERROR and r.usage_error for r in self.results):
            return ExitCode.USAGE
        if ERROR in statuses:
            return ExitCode.BACKEND
        return ExitCode.OK

    @property
    def verdict(self) -> str:
        return {ExitCode.OK: "PASS", ExitCode.ACCURACY: "FAIL", ExitCode.USAGE: "ERROR",
                ExitCode.BACKEND: "INCOMPLETE"}[self.exit_code]

    def result(self, backend: str, precision: str = "fp32") -> BackendResult:
        for result in self.results:
            if result.backend == backend and result.precision == precision:
                return result
        raise KeyError(f"{backend}:{precision}")

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return {
            **self.record_dict(),
            "gate": self.gate,
            "samples": self.samples,
            "steps": [s.to_dict() for s in self.steps],
            "results": [r.to_dict() for r in self.results],
            "warnings": self.warnings,
            "analysis": self.analysis,
            "timings": self.timings,
            "summary": {"verdict": self.verdict, "exit_code": int(self.exit_code), "counts": counts},
        }
