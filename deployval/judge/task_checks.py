"""Task checks: a row judged by what the model is for (the decoded text, the detected boxes, the
predicted sequence), beside or instead of the norms over its outputs.

A check is a function a user plugs in with `--task pkg.module:function`, or a built-in (task_builtin.py:
`ctc`, `sequence`, `detection`, with options after a colon: `sequence:end=3`). Its contract:

    def check(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
              inputs: dict[str, np.ndarray]) -> dict

returning named float metrics and `"passed": bool` (and optionally `"reason": str`, said when it fails).
A check that raises, or returns anything else, makes that row an ERROR with its message: never a pass.
`--judge task|norms|both` says what gates a row (default: both when a check is given, else norms); it is
stated in every report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError, first_line


@dataclass(frozen=True)
class TaskCheck:
    """A check as given (`text`): a built-in's name and options, or a plug-in's 'pkg.module:function'."""

    text: str

    @property
    def builtin(self) -> str | None:
        from .task_builtin import BUILTINS

        name = self.text.partition(":")[0].strip()
        return name if name in BUILTINS else None

    @classmethod
    def parse(cls, text: str) -> TaskCheck:
        """Checked at once: a built-in's options (names and values), or the plug-in's import and callable."""
        check = cls(text.strip())
        check.resolve()
        return check

    def resolve(self) -> Callable[..., Any]:
        """The function to call with (reference, outputs, inputs)."""
        from .task_builtin import builtin_check

        if self.builtin is not None:
            return builtin_check(self.text)
        from ..model.loading import resolve_callable

        return resolve_callable(self.text, "--task")


@dataclass
class TaskOutcome:
    """What a check said of one row (on one input): its metrics, its verdict, and why."""

    check: str
    passed: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    error: str = ""  # it raised or broke its contract: the row is an ERROR

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "passed": self.passed, "metrics": self.metrics, "reason": self.reason,
                "error": self.error}

    @property
    def failure(self) -> str:
        """The row's reason when this outcome fails it."""
        if self.error:
            return f"task check {self.check}: {self.error}"
        return f"task {self.check}: {self.reason or _metrics_text(self.metrics)}"


def run_check(check: TaskCheck, function: Callable[..., Any], reference: Mapping[str, np.ndarray],
              outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray]) -> TaskOutcome:
    """Call the check and hold it to its contract; whatever goes wrong is the outcome's error."""
    outcome = TaskOutcome(check.text)
    try:
        returned = function(dict(reference), dict(outputs), dict(inputs))
    except UsageError as exc:
        outcome.error = exc.one_line()
        return outcome
    except Exception as exc:
        outcome.error = f"raised {first_line(exc)}"
        return outcome
    if not isinstance(returned, Mapping):
        outcome.error = f"returned a {type(returned).__name__}, not a dict of metrics with 'passed'"
        return outcome
    if "passed" not in returned or not isinstance(returned["passed"], bool | np.bool_):
        outcome.error = "returned no 'passed': True or False"
        return outcome
    for name, value in returned.items():
        if name in ("passed", "reason"):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            outcome.error = f"returned '{name}': {value!r}, which is not a number"
            return outcome
        outcome.metrics[str(name)] = number
    outcome.passed = bool(returned["passed"])
    outcome.reason = str(returned.get("reason") or "")
    return outcome


def combine(norm_failures: list[str], outcome: Mapping[str, Any] | None, judge: str) -> tuple[list[str], str]:
    """(failures that gate the row, an error that makes it an ERROR) under `judge`. A check's error is
    an error in every mode: the user's check said nothing that could be trusted."""
    failures = list(norm_failures) if judge in ("norms", "both") else []
    if outcome is None:
        return failures, ""
    result = TaskOutcome(**outcome) if not isinstance(outcome, TaskOutcome) else outcome
    if result.error:
        return failures, result.failure
    if judge in ("task", "both") and not result.passed:
        failures.append(result.failure)
    return failures, ""


def _metrics_text(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" if math.isfinite(v) else f"{k} {v}" for k, v in metrics.items()) or "failed"
