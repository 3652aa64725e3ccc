"""Errors that map onto the exit-code contract (0 pass, 1 accuracy, 2 usage, 3 could not run)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ACCURACY = 1
    USAGE = 2
    BACKEND = 3


class DeployvalError(Exception):
    """An error with a one-line message meant for the user, and the exit code it implies."""

    exit_code: ExitCode = ExitCode.BACKEND

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def one_line(self) -> str:
        return " ".join(self.message.split())


class UsageError(DeployvalError):
    """Bad usage or bad input: a wrong path, a malformed file, a shape that does not fit."""

    exit_code = ExitCode.USAGE


class BackendUnavailable(DeployvalError):
    """A requested backend cannot run here (not installed, no device)."""

    exit_code = ExitCode.BACKEND


class BackendError(DeployvalError):
    """A backend refused the model or failed while running it (an engine build, a parser error)."""

    exit_code = ExitCode.BACKEND


class ExportError(DeployvalError):
    """An export or ONNX pass failed for a reason that is not the user's input."""

    exit_code = ExitCode.BACKEND


def print_error(message: str) -> None:
    """One line on stderr: the contract for bad input (exit code 2) and for fatal errors."""
    import sys

    sys.stderr.write(f"deployval: error: {message}\n")
    sys.stderr.flush()


def first_line(exc: BaseException, limit: int = 300, *, named: bool = True) -> str:
    """The first meaningful line of an exception, for one-line error reports: the one helper every
    "why did it fail" sentence uses. `named`: prefix the exception's type (never for a DeployvalError,
    whose message is meant for the user as it is); False where the sentence around it names the cause."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else text
    if line.startswith("The following operation failed in the TorchScript interpreter") and len(lines) > 1:
        line = lines[-1]  # the interpreter's own traceback comes first; the error itself is last
    if len(line) > limit:  # runtimes put the cause at the end: keep both ends
        head = limit // 3
        line = line[:head] + " … " + line[-(limit - head - 3):]
    if not named or isinstance(exc, DeployvalError) or line.startswith(f"{type(exc).__name__}: "):
        return line
    return f"{type(exc).__name__}: {line}"
