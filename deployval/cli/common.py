"""Helpers several commands share: the command line, running and reporting a comparison, writing
reports. What the options mean to the run is the option groups' (groups.py). Light at import.
"""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path
from typing import Any

from ..errors import DeployvalError, ExitCode
from .groups import BackendSettings, Display, ModelInputs, Quantization, ReportFiles

_argv: list[str] = []  # the command line, for the report's `command` (set by main())


def set_argv(argv: list[str]) -> None:
    """Remember the command line main() was given: a report's `command` is the whole of it."""
    _argv[:] = argv


def command_line() -> str:
    """The command as the user typed it (`deployval ...`), for the report's `command`."""
    return shlex.join(["deployval", *_argv])


def backend_options(keep_int64: bool, trt_workspace: int | None, trt_fp16_route: str,
                    int8_activation_matmuls: bool = False, backend_option: list[str] | None = None) -> dict[str, Any]:
    """The run's backend options from the flags' values (for callers outside the CLI's groups)."""
    return {**BackendSettings(keep_int64, trt_workspace, trt_fp16_route, backend_option).options(),
            **Quantization(int8_activation_matmuls=int8_activation_matmuls).backend_options()}


def write_reports(report: Any, files: ReportFiles) -> None:
    """Write every requested report; a report that cannot be written (disk full, permissions changed
    since the start) is one error line and exit code 3, after the others were written."""
    from ..report.json import write_json
    from ..report.junit import write_junit
    from ..report.markdown import write_markdown

    def write_html(data: Any, path: Path) -> None:
        from ..report.html import write_html as write

        write(data, path)

    failures = []
    for what, path, writer in (("JSON", files.json_path, write_json), ("JUnit", files.junit, write_junit),
                               ("Markdown", files.markdown, write_markdown), ("HTML", files.html, write_html)):
        if path is None:
            continue
        try:
            writer(report, path)
        except OSError as exc:
            failures.append(f"cannot write the {what} report '{path}': {exc.strerror or exc}")
    if failures:
        raise ReportWriteError("; ".join(failures))


class ReportWriteError(DeployvalError):
    exit_code = ExitCode.BACKEND


def run_and_report(spec: Any, src: ModelInputs, config: Any, *, backends: tuple[str, ...] | None,
                   precisions: tuple[str, ...], gate: tuple[str, ...] | None, save_inputs: Path | None,
                   display: Display, invocation: Any, files: ReportFiles, dataset: Any = None,
                   save_outputs: Path | None = None, expected: Path | None = None) -> int:
    from .._util import timed_import

    timed_import("numpy")  # counted as an import (torch would pay for it otherwise)
    from ..pipeline import compare as run_compare
    from ..report.console import render

    def partial(report: Any) -> None:  # results survive a crash or Ctrl-C in a later backend
        if files.json_path:
            from ..report.json import write_json

            with contextlib.suppress(OSError):  # best effort; the final write reports its failure
                write_json(report, files.json_path)

    report = run_compare(
        spec, backends, precisions, config, inputs=src.inputs, save_inputs=save_inputs,
        allow_nonfinite_inputs=src.allow_nonfinite_inputs, trust_checkpoint=src.trust_checkpoint,
        progress=display.progress(), invocation=invocation, command=command_line(), gate=gate, on_progress=partial,
        dataset=dataset, save_outputs=save_outputs, expected=expected,
    )
    render(report)
    write_reports(report, files)
    if report.exit_code in (ExitCode.BACKEND, ExitCode.USAGE):
        from ..errors import print_error

        errors = [f"{r.label}: {r.reason}" for r in report.results if r.status == "error"]
        print_error("could not run " + "; ".join(errors))
    return int(report.exit_code)
