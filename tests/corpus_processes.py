"""Rows judged in another process: an isolated row rebuilds the model there. Each case once judged a
module other than the one the reference ran (a false FAIL, or a verdict on another model)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from corpus import Case, Outcome

ISOLATED = ["--backends", "torch", "--precisions", "fp16", "--input-shape", "x=1x3x8x8", "--iterations", "1",
            "--isolate", "--no-cache"]


def unseeded_factory(tmp: Path) -> list[str]:
    return ["compare", "dv_test_models:draws_from_the_os", *ISOLATED, "--json", str(tmp / "r.json")]


def other_module(tmp: Path) -> list[str]:
    return ["compare", "dv_test_models:reads_process_globals", *ISOLATED, "--json", str(tmp / "r.json")]


def run_with_changed_global(tmp: Path, args: list[str]) -> Outcome:
    """In this process (the driver) the factory's global is changed; the isolated child does not see it."""
    import dv_test_models

    from deployval.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    saved = dict(dv_test_models.PROCESS_GLOBALS)
    dv_test_models.PROCESS_GLOBALS["scale"] = 2.0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(args)
    finally:
        dv_test_models.PROCESS_GLOBALS.update(saved)
    return Outcome(code, stdout.getvalue(), stderr.getvalue())


def the_row_names_the_mismatch(tmp: Path, outcome: Outcome) -> None:
    row = next(r for r in json.loads((tmp / "r.json").read_text())["results"] if r["precision"] == "fp16")
    assert row["status"] == "error" and not row["outputs"], row
    assert "is not the one the reference ran" in row["reason"], row["reason"]


CASES: list[Case] = [
    Case("isolated-unseeded-factory", "compare --isolate of a factory drawing its weights from the OS's entropy, "
         "which no seed reaches (once: a false FAIL, the child judged its own weights)", unseeded_factory, 0,
         "PASS", error_line=False),
    Case("isolated-other-module", "compare --isolate where the run's factory reads a global the child does not "
         "share (once: the child's model judged)", other_module, 3, "not the one the reference ran", error_line=False,
         run=run_with_changed_global, check=the_row_names_the_mismatch),
]
