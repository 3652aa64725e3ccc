"""Helpers several commands share: the command line, running and reporting a comparison, writing
reports. What the options mean to the run is the option groups' (groups.py). Light at import.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DeployvalError, ExitCode, UsageError
from .groups import BackendSettings, Display, ModelInputs, Quantization, ReportFiles
from .partial import RunReports

_argv: list[str] = []  # the command line, for the report's `command` (set by main())


def set_argv(argv: list[str]) -> None:
    """Remember the command line main() was given: a report's `command` is the whole of it."""
    _argv[:] = argv


def command_line() -> str:
    """The command as the user typed it (`deployval ...`), for the report's `command`."""
    return shlex.join(["deployval", *_argv])


def backend_options(keep_int64: bool, trt_workspace: int | None, trt_fp16_route: str,
                    backend_option: list[str] | None = None) -> dict[str, Any]:
    """The run's backend options from the flags' values (for callers outside the CLI's groups)."""
    return BackendSettings(keep_int64, trt_workspace, trt_fp16_route, backend_option).options()


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
                   display: Display, invocation: Any, files: ReportFiles, reports: RunReports, dataset: Any = None,
                   save_outputs: Path | None = None, expected: Path | None = None) -> int:
    """Run one model's comparison, show it and write its reports. Every row's result goes to `reports`
    as it comes (the JSON report is rewritten; a run cut short writes them all, marked incomplete)."""
    from .._util import timed_import

    timed_import("numpy")  # counted as an import (torch would pay for it otherwise)
    from ..report.console import render
    from ..run.pipeline import compare as run_compare

    if dataset is not None and display.verbose:
        dataset = dataclasses.replace(dataset, ray_logs=True)
    report = run_compare(
        spec, backends, precisions, config, inputs=src.inputs, save_inputs=save_inputs,
        allow_nonfinite_inputs=src.allow_nonfinite_inputs, trust_checkpoint=src.trust_checkpoint,
        progress=reports.track(display.progress()), invocation=invocation, command=command_line(), gate=gate,
        on_progress=reports.update, dataset=dataset, save_outputs=save_outputs, expected=expected,
    )
    if not reports.suite:  # a suite writes its own reports when every model is done
        reports.mark_final()
    render(report)
    write_reports(report, files)
    if report.exit_code in (ExitCode.BACKEND, ExitCode.USAGE):
        from ..errors import print_error

        if "reference_failed" in report.analysis:
            print_error(f"{report.analysis['reference_failed']}; no row could be judged")
        elif report.judged().nothing_judged:
            print_error(report.judged().gap)
        else:
            errors = [f"{r.label}: {r.reason}" for r in report.results if r.status == "error"]
            print_error("could not run " + "; ".join(errors))
    return int(report.exit_code)


def check_paths(outputs: Sequence[tuple[str, Path | None]], inputs: Sequence[tuple[str, Path | None]] = ()) -> None:
    """Refuse, before any work, an output path that another output or an input names too (the paths
    compared resolved, and by inode where both exist): one would silently overwrite the other
    (`--json X --junit X` kept only the JUnit; `--json` naming the `--inputs` file destroyed it)."""
    seen: list[tuple[str, Path, Path, bool]] = []
    for option, path in inputs:
        if path is not None:
            seen.append((option, Path(path), _resolved(path), True))
    for option, path in outputs:
        if path is None:
            continue
        key = _resolved(path)
        for other, _, other_key, is_input in seen:
            if _same(key, other_key):
                if is_input:
                    raise UsageError(f"{option} '{path}' is {other}: writing it would overwrite that input")
                raise UsageError(f"{other} and {option} both name '{path}': each output needs a path of its own")
        seen.append((option, Path(path), key, False))


def input_paths(src: ModelInputs, data: Any, quant: Quantization) -> list[tuple[str, Path | None]]:
    """The files and directories a run reads, which no output may name."""
    model = Path(src.model) if src.model is not None and Path(src.model).is_file() else None
    return [("the model file", model), ("the --inputs file", src.inputs), ("the --checkpoint file", src.checkpoint),
            ("the --calibration directory", quant.calibration), ("the --dataset directory", data.dataset),
            ("the --labels file", data.labels)]


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)  # a hard link, or a path that differs only in a case-blind file system
    except OSError:
        return False
