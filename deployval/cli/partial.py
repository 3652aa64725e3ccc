"""The reports of a run as they stand, so that a run cut short (Ctrl-C, SIGTERM, kill -9, an internal
error) still leaves every requested report behind, marked incomplete.

The command keeps one `RunReports`: the pipeline hands it the report after every row and, for a suite
(`validate --all`, several sub-modules), each finished model. The JSON report is rewritten at once
(what a kill -9 leaves); on an interruption every requested report (JSON, JUnit, Markdown, HTML) is
written from the last snapshot, with `complete: false` and a verdict that cannot read PASS. The
snapshots are plain dicts made by the main thread, so the watcher thread of interrupt.py can write
them while the main thread is stuck in a native call. Light at import.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..progress import Progress
from .groups import ReportFiles

INCOMPLETE_VERDICT = {"verdict": "INCOMPLETE", "exit_code": 3}


def mark_incomplete(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary of work that did not finish: what it found stands (a FAIL stays FAIL, an ERROR
    ERROR), but nothing found is not a PASS."""
    summary = dict(summary)
    if int(summary.get("exit_code", 0)) == 0:
        summary.update(INCOMPLETE_VERDICT)
    return summary


def partial(data: Mapping[str, Any]) -> dict[str, Any]:
    """A report (or suite) dict as a copy written while its run is still going, or after it was cut short."""
    return {**data, "complete": False, "summary": mark_incomplete(data["summary"])}


class TrackingProgress(Progress):
    """The command's progress display, remembering the step that is running (to say what was interrupted)."""

    def __init__(self, inner: Progress, reports: RunReports) -> None:
        self.inner, self.reports = inner, reports

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        outer, self.reports.activity = self.reports.activity, description
        with self.inner.step(description):
            yield
        self.reports.activity = outer

    @contextmanager
    def part(self, index: int, total: int) -> Iterator[None]:
        with self.inner.part(index, total):
            yield

    def note(self, message: str) -> None:
        self.inner.note(message)


class RunReports:
    """What a command has found so far and where its reports go. Single (`compare`, `validate` of one
    model): the current report. Suite (`validate --all`, several sub-modules): the finished models, the
    ones that could not run, and the current model's report so far."""

    def __init__(self, files: ReportFiles, what: str, *, suite: bool = False, manifest: str | None = None,
                 shard: str | None = None, total: int | None = None) -> None:
        self.files, self.what, self.suite = files, what, suite
        self.manifest, self.shard, self.total = manifest, shard, total
        self.finished: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None
        self.entry: str | None = None
        self.activity = ""  # the step running now (TrackingProgress)
        self.final = False  # the complete reports are being written: no snapshot may replace them
        self.lock = threading.RLock()
        self._ready = False

    def track(self, progress: Progress) -> Progress:
        return TrackingProgress(progress, self)

    def begin(self, entry: str) -> None:
        """A suite's next model starts."""
        self.entry, self.current = entry, None

    def update(self, report: Any) -> None:
        """The current model's report so far (after each row): kept, and the JSON report rewritten once
        it holds a result."""
        data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        if self.suite and self.entry is not None:
            data["entry"] = self.entry
        with self.lock:
            if self.final:
                return
            self._prepare()
            self.current = data
            if data.get("results"):
                self._write_json()

    def finish(self, data: dict[str, Any]) -> None:
        """A suite's model is done (its complete report)."""
        with self.lock:
            self.finished.append(data)
            self.current = None
            self._prepare()
            self._write_json()

    def failed(self, error: dict[str, Any]) -> None:
        """A suite's model could not run (its error entry)."""
        with self.lock:
            self.errors.append(error)
            self.current = None
            self._write_json()

    def mark_final(self) -> None:
        """The run is over: from now on only its complete reports are written."""
        with self.lock:
            self.final = True

    def has_results(self) -> bool:
        return bool(self.finished or self.errors or (self.current and self.current.get("results")))

    def where(self) -> str:
        """What was running, for the line that says the run was stopped."""
        doing = f": {self.activity}" if self.activity else ""
        if not self.suite:
            return f"{self.what}{doing}"
        done = len(self.finished) + len(self.errors)
        of = f" of {self.total}" if self.total else ""
        if self.current is None and not self.activity:
            return f"{self.what} after {done}{of} models"
        return f"{self.what}, model {done + 1}{of} ('{self.entry}'{doing}); {done} finished"

    def write_all(self) -> tuple[list[str], list[str]]:
        """Every requested report from the last snapshot, marked incomplete: (what was written, what
        could not be). Nothing when the complete reports are being written already."""
        with self.lock:
            if self.final:
                return [], []
            written, failures = [], []
            for what, path, write in self._writers():
                try:
                    write(path)
                except OSError as exc:
                    failures.append(f"{what} '{path}': {exc.strerror or exc}")
                else:
                    written.append(f"{what} {path}")
            return written, failures

    def _prepare(self) -> None:
        """Import the writers now, in the main thread: the watcher must not import while the main
        thread may hold the import lock."""
        if self._ready:
            return
        from .._util import atomic_write_json  # noqa: F401
        from ..report import junit, markdown  # noqa: F401

        if self.files.html:
            from ..report import html  # noqa: F401
        if self.suite:
            from ..run import suite  # noqa: F401
        self._ready = True

    def _suite(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from ..run.suite import suite_dict

        reports = [*self.finished, *([partial(self.current)] if self.current is not None else [])]
        done = len(self.finished) + len(self.errors)
        gap = "the run did not finish" + (f" ({done} of {self.total} models done)" if self.total else "")
        suite = partial(suite_dict(reports, self.errors, manifest=self.manifest, shard=self.shard, complete=False,
                                   gaps=[gap]))
        return suite, reports

    def _write_json(self) -> None:
        """Best effort: the final write reports its own failure."""
        if self.files.json_path is None:
            return
        from .._util import atomic_write_json

        data = self._suite()[0] if self.suite else partial(self.current) if self.current is not None else None
        if data is not None:
            with contextlib.suppress(OSError):
                atomic_write_json(self.files.json_path, data)

    def _writers(self) -> list[tuple[str, Path, Any]]:
        """(what, path, write) for every requested report. The renderers mark an unfinished report
        themselves (INCOMPLETE, an error case in JUnit, a line in Markdown and HTML)."""
        from .._util import atomic_write_json, atomic_write_text
        from ..report.junit import write_junit
        from ..report.markdown import suite_markdown, to_markdown

        files = self.files
        candidates: list[tuple[str, Path | None, Any]] = []
        if self.suite:
            suite, reports = self._suite()
            candidates = [
                ("JSON", files.json_path, lambda p: atomic_write_json(p, suite)),
                ("JUnit", files.junit, lambda p: write_junit(suite, p)),
                ("Markdown", files.markdown, lambda p: atomic_write_text(p, suite_markdown(suite, reports))),
            ]
        elif self.current is not None:
            data = partial(self.current)

            def html(path: Path) -> None:
                from ..report.html import write_html

                write_html(data, path)

            candidates = [
                ("JSON", files.json_path, lambda p: atomic_write_json(p, data)),
                ("JUnit", files.junit, lambda p: write_junit(data, p)),
                ("Markdown", files.markdown, lambda p: atomic_write_text(p, to_markdown(data))),
                ("HTML", files.html, html),
            ]
        return [(what, Path(path), write) for what, path, write in candidates if path is not None]
