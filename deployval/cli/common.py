"""Helpers several commands share: the model's spec, its run configuration, backend options, the
reproduction line, progress and report writing. Light at import: typer and deployval's errors only.
"""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path
from typing import Any

from ..errors import DeployvalError, ExitCode, UsageError

_argv: list[str] = []  # the command line, for the report's `command` (set by main())


def set_argv(argv: list[str]) -> None:
    """Remember the command line main() was given: a report's `command` is the whole of it."""
    _argv[:] = argv


def command_line() -> str:
    """The command as the user typed it (`deployval ...`), for the report's `command`."""
    return shlex.join(["deployval", *_argv])


def resolve(model: str, input_shape: list[str] | None, input_range: list[str] | None,
            checkpoint: Path | None, inputs: Path | None = None, arg: list[str] | None = None) -> Any:
    """The model's spec; an --inputs file defines its input shapes, --arg its forward() arguments."""
    from ..registry import resolve_model
    from ..spec import parse_arguments, parse_input_range, parse_input_shape

    if checkpoint is not None and not checkpoint.exists():
        raise UsageError(f"checkpoint '{checkpoint}' does not exist")
    return resolve_model(
        model,
        input_shapes=[parse_input_shape(s) for s in input_shape or []],
        input_ranges=[parse_input_range(r) for r in input_range or []],
        checkpoint=str(checkpoint) if checkpoint else None,
        inputs_file=inputs,
        arguments=parse_arguments(arg),
    )


def resolve_all(model: str, input_shape: list[str] | None, input_range: list[str] | None,
                checkpoint: Path | None, submodules: list[str] | None, trust: bool, inputs: Path | None = None,
                arg: list[str] | None = None) -> list[Any]:
    """The model, or the sub-modules asked for (their input shapes from the spec or --input-shape)."""
    if not submodules:
        return [resolve(model, input_shape, input_range, checkpoint, inputs, arg)]
    if arg:
        raise UsageError("--arg applies to the model's forward(), not to --submodule")
    from ..registry import apply_ranges, apply_shapes, inputs_from_args, model_entries
    from ..spec import ModelSpec, parse_input_range, parse_input_shape

    if ":" in model and model not in model_entries():  # a factory: its own inputs do not matter here
        parent = ModelSpec(name=model, inputs=(), kind="module", factory=model,
                           checkpoint=str(checkpoint) if checkpoint else None)
    else:
        parent = resolve(model, None, None, checkpoint)
    shapes = [parse_input_shape(s) for s in input_shape or []]
    ranges = [parse_input_range(r) for r in input_range or []]
    names = [s.name for s in parent.submodules] if submodules == ["all"] else list(dict.fromkeys(submodules))
    if not names:
        raise UsageError(f"'{parent.name}' declares no sub-modules; name one with --submodule PATH --input-shape ...")
    specs = []
    for name in names:
        declared = any(s.name == name for s in parent.submodules)
        inputs = () if declared or not shapes else inputs_from_args(f"{model} --submodule {name}", shapes)
        spec = parent.submodule(name, inputs, trust_checkpoint=trust)
        if declared and shapes:
            spec = apply_shapes(spec, shapes)
        specs.append(apply_ranges(spec, ranges) if ranges else spec)
    return specs


def config(spec: Any, **options: Any) -> Any:
    from ..spec import RunConfig

    settings = dict(spec.run_defaults)
    settings.update({k: v for k, v in options.items() if v is not None})
    return RunConfig(**settings)


def backend_options(keep_int64: bool, trt_workspace: int | None, trt_fp16_route: str,
                    int8_activation_matmuls: bool = False, backend_option: list[str] | None = None) -> dict[str, Any]:
    """The run's backend options: the dedicated flags' flat keys, and `--backend-option NAME.FIELD=VALUE`
    as `{backend: {field: value}}` (typed by the backend's `Options`); both setting one field is an error."""
    from ..backends.base import get_backend
    from ..backends.options import check_conflicts, parse_backend_options
    from ..backends.tensorrt_plan import FP16_ROUTES

    if trt_fp16_route not in FP16_ROUTES:
        raise UsageError(f"unknown --trt-fp16-route '{trt_fp16_route}' ({' or '.join(FP16_ROUTES)})")
    if trt_workspace is not None and trt_workspace <= 0:
        raise UsageError("--trt-workspace must be a positive number of MiB")
    flat = {"keep_int64": keep_int64, "trt_workspace_mb": trt_workspace, "trt_fp16_route": trt_fp16_route}
    typed = parse_backend_options(backend_option, get_backend)
    check_conflicts(flat, typed, {"keep_int64": False, "trt_fp16_route": "onnx"}, get_backend)
    return {**flat, **int8_options(int8_activation_matmuls), **typed}


def int8_options(activation_matmuls: bool) -> dict[str, Any]:
    from ..export.int8 import ACTIVATION_MATMULS_OPTION

    return {ACTIVATION_MATMULS_OPTION: True} if activation_matmuls else {}


def check_report_paths(**paths: Path | None) -> None:
    from .._util import check_writable

    for what, path in paths.items():
        if path is not None:
            check_writable(path, f"{what} report")


def invocation_args(input_shape: list[str] | None, input_range: list[str] | None, checkpoint: Path | None,
                    inputs: Path | None, seed: int, exporter: str | None,
                    arg: list[str] | None = None) -> tuple[str, ...]:
    args: list[str] = []
    for argument in arg or []:
        args += ["--arg", argument]
    for shape in input_shape or []:
        args += ["--input-shape", shape]
    for value_range in input_range or []:
        args += ["--input-range", value_range]
    if checkpoint:
        args += ["--checkpoint", str(checkpoint)]
    if inputs:
        args += ["--inputs", str(inputs)]
    elif seed:
        args += ["--seed", str(seed)]
    if exporter:
        args += ["--exporter", exporter]
    return tuple(args)


def invocation(model: str, args: tuple[str, ...], run_config: Any, allow_nonfinite: bool = False) -> Any:
    """How to ask for this run again: the model's arguments, and the run settings from the configuration
    itself (so a reproduction line cannot drop one); --trust-checkpoint is the user's to give again."""
    from ..pipeline import Invocation

    flags = ("--allow-nonfinite-inputs",) if allow_nonfinite else ()
    return Invocation(model, args, (*run_config.to_args(), *flags))


def write_reports(report: Any, json_path: Path | None, junit: Path | None, markdown: Path | None,
                  html: Path | None = None) -> None:
    """Write every requested report; a report that cannot be written (disk full, permissions changed
    since the start) is one error line and exit code 3, after the others were written."""
    from ..report.json import write_json
    from ..report.junit import write_junit
    from ..report.markdown import write_markdown

    def write_html(data: Any, path: Path) -> None:
        from ..report.html import write_html as write

        write(data, path)

    failures = []
    for what, path, writer in (("JSON", json_path, write_json), ("JUnit", junit, write_junit),
                               ("Markdown", markdown, write_markdown), ("HTML", html, write_html)):
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


def progress(quiet: bool) -> Any:
    from ..progress import Progress
    from ..report.console import ConsoleProgress

    return Progress() if quiet else ConsoleProgress()


def run_and_report(spec: Any, *, backends: tuple[str, ...], precisions: tuple[str, ...], config: Any,
                   gate: tuple[str, ...] | None, inputs: Path | None, save_inputs: Path | None,
                   allow_nonfinite: bool, trust: bool, quiet: bool, invocation: Any, json_path: Path | None,
                   junit: Path | None, markdown: Path | None, html: Path | None = None) -> int:
    from .._util import timed_import

    timed_import("numpy")  # counted as an import (torch would pay for it otherwise)
    from ..pipeline import compare as run_compare
    from ..report.console import render

    def partial(report: Any) -> None:  # results survive a crash or Ctrl-C in a later backend
        if json_path:
            from ..report.json import write_json

            with contextlib.suppress(OSError):  # best effort; the final write reports its failure
                write_json(report, json_path)

    report = run_compare(
        spec, backends, precisions, config, inputs=inputs, save_inputs=save_inputs,
        allow_nonfinite_inputs=allow_nonfinite, trust_checkpoint=trust, progress=progress(quiet),
        invocation=invocation, command=command_line(), gate=gate, on_progress=partial,
    )
    render(report)
    write_reports(report, json_path, junit, markdown, html)
    if report.exit_code in (ExitCode.BACKEND, ExitCode.USAGE):
        from ..errors import print_error

        errors = [f"{r.label}: {r.reason}" for r in report.results if r.status == "error"]
        print_error("could not run " + "; ".join(errors))
    return int(report.exit_code)
