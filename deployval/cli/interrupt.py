"""Stopping a run without losing its reports.

SIGINT and SIGTERM raise `Interrupted` in the main thread; the command unwinds (isolated children are
killed on the way), writes every requested report from the last snapshot, marked incomplete
(partial.py), says in one line what was interrupted and which reports were written, and exits 130
(SIGINT) or 143 (SIGTERM).

Python runs a signal handler only between bytecodes: a native call (a long torch or ONNX Runtime
operation) delays it until it returns, which may be minutes. So the signal is also written to a
wakeup file descriptor (`signal.set_wakeup_fd`), which a watcher thread reads: when the main thread
has not begun to unwind within `GRACE_S`, or has not finished within `UNWIND_S` after it began, or a
second signal comes, the watcher writes the reports itself from the last snapshot, kills the isolated
children and ends the process with the same exit code and a line that says it stopped during a native
operation. That needs a native call that releases Python's lock, as torch's and ONNX Runtime's do; one
that holds it delays the stop until it returns.

An unexpected exception, or a `sys.exit()` that escaped the model or a backend outside a row, also
writes the reports first, and is one error line with exit code 3.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import DeployvalError, ExitCode, first_line, print_error
from .partial import RunReports

GRACE_S = 1.0  # the main thread has this long to start unwinding after a signal
UNWIND_S = 10.0  # and this long, once started, to write the reports and return
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_STOP = b"\0"  # written to the wakeup pipe by this module: the watcher ends


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (a BaseException: no `except Exception` on the way may swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class RunStopped(DeployvalError):
    """The run did not finish for a reason that is not the user's input (exit code 3)."""

    exit_code = ExitCode.BACKEND


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


def written_text(written: list[str], failures: list[str]) -> str:
    parts = []
    if written:
        parts.append("wrote the incomplete reports: " + ", ".join(written))
    if failures:
        parts.append("could not write " + "; ".join(failures))
    return "; ".join(parts) if parts else "no report was written"


def run_guarded(reports: RunReports, work: Callable[[], int]) -> int:
    """Run a command's work so that SIGINT, SIGTERM, an unexpected exception or a stray exit still leave
    every requested report, marked incomplete. Returns the work's exit code, or 130/143 when interrupted."""
    from ..run.execution import describe_exit, exits_guarded

    watch = _Watch(reports)
    with watch.installed(), exits_guarded():
        try:
            return work()
        except (Interrupted, KeyboardInterrupt) as exc:
            return watch.stopped(exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)
        except SystemExit as exc:  # its code would become the run's (sys.exit(0): a silent PASS)
            text = written_text(*reports.write_all())
            raise RunStopped(f"{describe_exit(exc)} was called during {reports.where()} (outside a backend's "
                             f"row): the run did not finish; {text}") from None
        except DeployvalError:  # its own one line; the results so far are kept
            if reports.has_results():
                reports.write_all()
            raise
        except Exception as exc:
            text = written_text(*reports.write_all())
            if os.environ.get("DEPLOYVAL_DEBUG"):
                raise
            raise RunStopped(f"internal error during {reports.where()}: {first_line(exc)} (set DEPLOYVAL_DEBUG=1 "
                             f"for the traceback); {text}") from None


class _Watch:
    """The signal handlers of one run and the watcher thread behind them."""

    def __init__(self, reports: RunReports) -> None:
        self.reports = reports
        self.signum: int | None = None  # the first signal
        self.handled_at: float | None = None  # when the main thread began to unwind
        self.done = False
        self.read_fd = self.write_fd = -1

    def installed(self) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def scope() -> Any:
            if threading.current_thread() is not threading.main_thread():
                yield  # signals reach the main thread only: a run elsewhere keeps the caller's handling
                return
            self.read_fd, self.write_fd = os.pipe()
            os.set_blocking(self.write_fd, False)
            previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
            old_fd = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
            for sig in SIGNALS:
                signal.signal(sig, self._handler)
            watcher = threading.Thread(target=self._watch, name="deployval-signal-watcher", daemon=True)
            watcher.start()
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                signal.set_wakeup_fd(old_fd)
                self.done = True
                with contextlib.suppress(OSError):
                    os.write(self.write_fd, _STOP)
                watcher.join(timeout=2.0)
                for fd in (self.read_fd, self.write_fd):
                    os.close(fd)

        return scope()

    def _handler(self, signum: int, frame: Any) -> None:
        """In the main thread, between bytecodes: unwind (once; a second signal is the watcher's)."""
        if self.handled_at is not None:
            return
        self.signum = self.signum or signum
        self.handled_at = time.monotonic()
        if self.reports.final:  # the complete reports are being written: let them be
            return
        raise Interrupted(signum)

    def stopped(self, signum: int) -> int:
        """The main thread has unwound: write the reports, say so, and return the exit code."""
        self.signum = self.signum or signum
        name = signal.Signals(self.signum).name
        with self.reports.lock:  # the watcher writes nothing once this is done
            text = written_text(*self.reports.write_all())
            self.done = True
        print_error(f"interrupted ({name}) during {self.reports.where()}; {text}")
        return exit_code(self.signum)

    def _watch(self) -> None:
        received_at: float | None = None
        while True:
            timeout = None
            if received_at is not None:
                start, limit = (received_at, GRACE_S) if self.handled_at is None else (self.handled_at, UNWIND_S)
                timeout = max(0.0, start + limit - time.monotonic())
            try:
                ready, _, _ = select.select([self.read_fd], [], [], timeout)
                data = os.read(self.read_fd, 64) if ready else b""
            except OSError:
                return
            if self.done or _STOP in data:
                return
            signals = [b for b in data if b in SIGNALS]
            if signals and received_at is None:
                received_at = time.monotonic()
                self.signum = self.signum or signals[0]
                signals = signals[1:]
            if signals or (received_at is not None and not ready):
                self._force(again=bool(signals))  # a second signal, or the main thread did not unwind in time

    def _force(self, again: bool) -> None:
        """From the watcher thread: write the reports from the last snapshot and end the process now."""
        if self.done:
            return
        signum = self.signum or signal.SIGINT
        name = signal.Signals(signum).name
        if again:
            why = f"a second {name} stopped it at once"
        elif self.handled_at is None:
            why = f"a native operation did not return within {GRACE_S:g} s, so the run stopped at once"
        else:
            why = f"the run did not wind down within {UNWIND_S:g} s, so it stopped at once"
        text = "the reports could not be written in time"
        if self.reports.lock.acquire(timeout=UNWIND_S):
            if self.done:  # the main thread wrote them and is returning
                self.reports.lock.release()
                return
            text = written_text(*self.reports.write_all())
            if self.reports.final:
                text = "the complete reports were being written"
        isolation = sys.modules.get("deployval.run.isolation")
        if isolation is not None:
            isolation.stop_children()
        print_error(f"interrupted ({name}) during {self.reports.where()}: {why}; {text}")
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(exit_code(signum))  # from this thread the real exit (execution.exits_guarded)
