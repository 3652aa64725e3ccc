"""Every case of the reliability corpus, in the sections docs/reliability.md shows them, and the one way
a case is run and judged: tests/test_corpus.py and scripts/reliability_table.py both use it, so the
table is the tests.

A case is an input or a fault (corpus.py, corpus_*.py) with what must come of it: an exit code and one
error line naming the problem, or, for a verdict case, the verdict line a release pipeline gates on.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import corpus_cache
import corpus_faults
import corpus_incomplete
import corpus_input
import corpus_nonfinite
import corpus_processes
from corpus import CASES, FAULTS, Case, Outcome, injected


@dataclass(frozen=True)
class Section:
    title: str
    intro: str
    cases: list[Case]


SECTIONS: list[Section] = [
    Section("Bad inputs", "Each is refused with exit code 2 and one line naming the problem, before any work "
            "where it can be known before.", [*CASES, *corpus_input.CASES]),
    Section("Injected faults", "Faulty backends (`tests/faulty_backends.py`) run the pipeline's real ONNX in their "
            "own process until they abort or hang; the full disk is simulated (an `OSError(ENOSPC)` raised by the "
            "writer); signals are sent to a real `deployval` process. In every case the other rows and every "
            "requested report survive, marked incomplete where the run did not finish (except when the report "
            "itself cannot be written: then the results are on the console and the error line says which file "
            "failed).", [*FAULTS, *corpus_faults.CASES]),
    Section("Verdicts that cannot lie", "Each of these once ended in PASS (exit 0) for a model that was not "
            "validated, or in a false FAIL. When deployval cannot be sure, the verdict is FAIL, ERROR or "
            "INCOMPLETE with its reason, never PASS.", [*corpus_nonfinite.CASES, *corpus_incomplete.CASES,
                                                          *corpus_cache.STALE, *corpus_processes.CASES]),
    Section("Damaged caches", "A cache entry that does not parse, has the wrong type or the wrong signature is "
            "moved aside and rebuilt (once, with a note), never reported as a backend's error.", corpus_cache.DAMAGED),
]

ALL_CASES: list[Case] = [case for section in SECTIONS for case in section.cases]


def run_case(case: Case, tmp: Path) -> Outcome:
    """Build the case's files in `tmp` and run its command: in this process through `main()`, or as the
    case says (a real process, for signals and hard exits)."""
    from deployval.cli import main

    args = case.build(tmp)
    if case.run is not None:
        return case.run(tmp, args)
    if case.fault:
        args = [*args, "-q"]
    stdout, stderr = io.StringIO(), io.StringIO()
    with injected(case.id), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in args])
    return Outcome(code, stdout.getvalue(), stderr.getvalue())


def problems(case: Case, outcome: Outcome, tmp: Path) -> list[str]:
    """What the outcome got wrong (empty when the case gives its promised result)."""
    found = []
    if outcome.code != case.code:
        found.append(f"exit code {outcome.code}, expected {case.code}: {outcome.err[-1500:]}")
    if "Traceback" in outcome.err or "Traceback" in outcome.out:
        found.append(f"a traceback: {outcome.err[-1500:]}")
    if case.error_line:
        lines = outcome.error_lines
        if len(lines) != 1:
            found.append(f"{len(lines)} error lines, expected 1: {lines}")
        elif case.fragment not in lines[0]:
            found.append(f"'{case.fragment}' not in the error line: {lines[0]}")
    elif case.fragment not in observed_line(case, outcome):
        line = observed_line(case, outcome)
        found.append(f"'{case.fragment}' not in the verdict line: {line!r}\n{outcome.out[-2000:]}")
    if case.check is not None and not found:
        try:
            case.check(tmp, outcome)
        except AssertionError as exc:
            found.append(f"check failed: {exc}")
    return found


def observed_line(case: Case, outcome: Outcome) -> str:
    """The line the table shows: the error line, or a verdict case's verdict line (with its error line, if any)."""
    errors = [ln.removeprefix("deployval: error: ") for ln in outcome.error_lines]
    if case.error_line:
        return errors[-1] if errors else "(no error line)"
    verdict = outcome.verdict_line or "(no verdict line)"
    return f"{verdict} — {errors[-1]}" if errors else verdict
