"""The command line. Thin: parse -> call the pipeline -> render -> exit code.

Exit codes: 0 every requested check passed; 1 an accuracy check failed; 2 bad usage or bad input
(one line on stderr); 3 a requested backend could not run. Only typer and deployval's light
modules are imported at start-up, so `deployval --help` does not pay for torch.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import DeployvalError, ExitCode, UsageError, first_line
from .options import (
    AllLayersOpt,
    ArgOpt,
    AtolOpt,
    BackendsOpt,
    BitsOpt,
    BudgetOpt,
    CacheDirOpt,
    CalibrationLimitOpt,
    CalibrationMethodOpt,
    CalibrationOpt,
    CalibrationPreprocessOpt,
    CheckpointOpt,
    DeviceOpt,
    ExporterOpt,
    Fp16RouteOpt,
    HtmlOpt,
    InputRangeOpt,
    InputShapeOpt,
    InputsOpt,
    Int8ExcludeOpt,
    Int8MatmulsOpt,
    IsolateOpt,
    IterationsOpt,
    JsonOpt,
    JunitOpt,
    KeepFp32Opt,
    KeepInt64Opt,
    MarkdownOpt,
    ModelArg,
    NoCacheOpt,
    NonfiniteOpt,
    PlotOpt,
    PrecisionsOpt,
    QuietOpt,
    RtolOpt,
    SaveInputsOpt,
    SeedOpt,
    SubmoduleOpt,
    SweepOpt,
    TargetPrecisionOpt,
    TimeoutOpt,
    TrustOpt,
    VerifyOpt,
    WarmupOpt,
    WorkspaceOpt,
)

_ARGV: list[str] = []  # the command line, for the report's `command`

app = typer.Typer(
    name="deployval",
    help="Does the deployed model still compute what the PyTorch model computes, and how fast?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)




def _version(value: bool) -> None:
    if value:
        from ._version import __version__

        typer.echo(f"deployval {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Does the deployed model still compute what the PyTorch model computes, and how fast?"""


def _resolve(model: str, input_shape: list[str] | None, input_range: list[str] | None,
             checkpoint: Path | None, inputs: Path | None = None, arg: list[str] | None = None) -> Any:
    """The model's spec; an --inputs file defines its input shapes, --arg its forward() arguments."""
    from .registry import resolve_model
    from .spec import parse_arguments, parse_input_range, parse_input_shape

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


def _resolve_all(model: str, input_shape: list[str] | None, input_range: list[str] | None,
                 checkpoint: Path | None, submodules: list[str] | None, trust: bool, inputs: Path | None = None,
                 arg: list[str] | None = None) -> list[Any]:
    """The model, or the sub-modules asked for (their input shapes from the spec or --input-shape)."""
    if not submodules:
        return [_resolve(model, input_shape, input_range, checkpoint, inputs, arg)]
    if arg:
        raise UsageError("--arg applies to the model's forward(), not to --submodule")
    from .registry import _apply_ranges, _apply_shapes, _inputs_from_args, model_entries
    from .spec import ModelSpec, parse_input_range, parse_input_shape

    if ":" in model and model not in model_entries():  # a factory: its own inputs do not matter here
        parent = ModelSpec(name=model, inputs=(), kind="module", factory=model,
                           checkpoint=str(checkpoint) if checkpoint else None)
    else:
        parent = _resolve(model, None, None, checkpoint)
    shapes = [parse_input_shape(s) for s in input_shape or []]
    ranges = [parse_input_range(r) for r in input_range or []]
    names = [s.name for s in parent.submodules] if submodules == ["all"] else list(dict.fromkeys(submodules))
    if not names:
        raise UsageError(f"'{parent.name}' declares no sub-modules; name one with --submodule PATH --input-shape ...")
    specs = []
    for name in names:
        declared = any(s.name == name for s in parent.submodules)
        inputs = () if declared or not shapes else _inputs_from_args(f"{model} --submodule {name}", shapes)
        spec = parent.submodule(name, inputs, trust_checkpoint=trust)
        if declared and shapes:
            spec = _apply_shapes(spec, shapes)
        specs.append(_apply_ranges(spec, ranges) if ranges else spec)
    return specs


def _config(spec: Any, **options: Any) -> Any:
    from .spec import RunConfig

    settings = dict(spec.run_defaults)
    settings.update({k: v for k, v in options.items() if v is not None})
    return RunConfig(**settings)


def _backend_options(keep_int64: bool, trt_workspace: int | None, trt_fp16_route: str,
                     int8_activation_matmuls: bool = False) -> dict[str, Any]:
    from .backends.tensorrt import FP16_ROUTES

    if trt_fp16_route not in FP16_ROUTES:
        raise UsageError(f"unknown --trt-fp16-route '{trt_fp16_route}' ({' or '.join(FP16_ROUTES)})")
    if trt_workspace is not None and trt_workspace <= 0:
        raise UsageError("--trt-workspace must be a positive number of MiB")
    return {"keep_int64": keep_int64, "trt_workspace_mb": trt_workspace, "trt_fp16_route": trt_fp16_route,
            **_int8_options(int8_activation_matmuls)}


def _int8_options(activation_matmuls: bool) -> dict[str, Any]:
    from .export.int8 import ACTIVATION_MATMULS_OPTION

    return {ACTIVATION_MATMULS_OPTION: True} if activation_matmuls else {}


def _check_report_paths(**paths: Path | None) -> None:
    from ._util import check_writable

    for what, path in paths.items():
        if path is not None:
            check_writable(path, f"{what} report")


def _invocation_args(input_shape: list[str] | None, input_range: list[str] | None, checkpoint: Path | None,
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


def _invocation(model: str, args: tuple[str, ...], spec: Any, options: dict[str, Any],
                allow_nonfinite: bool = False) -> Any:
    """How to ask for this run again: the model's arguments, and the run settings from the configuration
    itself (so a reproduction line cannot drop one); --trust-checkpoint is the user's to give again."""
    from .pipeline import Invocation

    flags = ("--allow-nonfinite-inputs",) if allow_nonfinite else ()
    return Invocation(model, args, (*_config(spec, **options).to_args(), *flags))


def _write_reports(report: Any, json_path: Path | None, junit: Path | None, markdown: Path | None,
                   html: Path | None = None) -> None:
    """Write every requested report; a report that cannot be written (disk full, permissions changed
    since the start) is one error line and exit code 3, after the others were written."""
    from .report.json import write_json
    from .report.junit import write_junit
    from .report.markdown import write_markdown

    def write_html(data: Any, path: Path) -> None:
        from .report.html import write_html as write

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


def _progress(quiet: bool) -> Any:
    from .progress import Progress
    from .report.console import ConsoleProgress

    return Progress() if quiet else ConsoleProgress()


def _run_and_report(spec: Any, *, backends: tuple[str, ...], precisions: tuple[str, ...], config: Any,
                    gate: tuple[str, ...] | None, inputs: Path | None, save_inputs: Path | None,
                    allow_nonfinite: bool, trust: bool, quiet: bool, invocation: Any, json_path: Path | None,
                    junit: Path | None, markdown: Path | None, html: Path | None = None) -> int:
    from ._util import timed_import

    timed_import("numpy")  # counted as an import (torch would pay for it otherwise)
    from .pipeline import compare as run_compare
    from .report.console import render

    def partial(report: Any) -> None:  # results survive a crash or Ctrl-C in a later backend
        if json_path:
            from .report.json import write_json

            with contextlib.suppress(OSError):  # best effort; the final write reports its failure
                write_json(report, json_path)

    report = run_compare(
        spec, backends, precisions, config, inputs=inputs, save_inputs=save_inputs,
        allow_nonfinite_inputs=allow_nonfinite, trust_checkpoint=trust, progress=_progress(quiet),
        invocation=invocation, command=shlex.join(["deployval", *_ARGV]), gate=gate, on_progress=partial,
    )
    render(report)
    _write_reports(report, json_path, junit, markdown, html)
    if report.exit_code in (ExitCode.BACKEND, ExitCode.USAGE):
        from .errors import print_error

        errors = [f"{r.label}: {r.reason}" for r in report.results if r.status == "error"]
        print_error("could not run " + "; ".join(errors))
    return int(report.exit_code)


@app.command("compare")
def compare_command(
    model: ModelArg,
    backends: BackendsOpt = "torch,torchscript,ort",
    precisions: PrecisionsOpt = "fp32",
    inputs: InputsOpt = None,
    save_inputs: SaveInputsOpt = None,
    input_shape: InputShapeOpt = None,
    input_range: InputRangeOpt = None,
    checkpoint: CheckpointOpt = None,
    trust_checkpoint: TrustOpt = False,
    allow_nonfinite_inputs: NonfiniteOpt = False,
    seed: SeedOpt = 0,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    warmup: WarmupOpt = 1,
    iterations: IterationsOpt = None,
    time_budget: BudgetOpt = None,
    device: DeviceOpt = "cpu",
    exporter: ExporterOpt = None,
    calibration: CalibrationOpt = None,
    calibration_preprocess: CalibrationPreprocessOpt = None,
    calibration_limit: CalibrationLimitOpt = None,
    calibration_method: CalibrationMethodOpt = "minmax",
    int8_exclude: Int8ExcludeOpt = None,
    int8_activation_matmuls: Int8MatmulsOpt = False,
    keep_fp32: KeepFp32Opt = None,
    keep_int64: KeepInt64Opt = False,
    trt_workspace: WorkspaceOpt = None,
    trt_fp16_route: Fp16RouteOpt = "onnx",
    isolate: IsolateOpt = None,
    timeout: TimeoutOpt = None,
    submodule: SubmoduleOpt = None,
    arg: ArgOpt = None,
    json_path: JsonOpt = None,
    junit: JunitOpt = None,
    markdown: MarkdownOpt = None,
    html: HtmlOpt = None,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run the same inputs through each backend and precision and judge each against torch eager."""
    from .backends.base import backend_entries
    from .spec import PRECISIONS, parse_list

    backend_list = parse_list(backends, "backend", tuple(backend_entries()))
    precision_list = parse_list(precisions, "precision", PRECISIONS)
    _check_report_paths(json=json_path, junit=junit, markdown=markdown, html=html)
    specs = _resolve_all(model, input_shape, input_range, checkpoint, submodule, trust_checkpoint, inputs, arg)
    options = dict(device=device, seed=seed, atol=atol, rtol=rtol, warmup=warmup, iterations=iterations,
                   time_budget_s=time_budget, cache_dir=cache_dir, use_cache=not no_cache, exporter=exporter,
                   calibration=calibration,
                   calibration_preprocess=calibration_preprocess, calibration_limit=calibration_limit,
                   calibration_method=calibration_method, int8_exclude=tuple(int8_exclude or ()),
                   keep_fp32=tuple(keep_fp32 or ()), isolate=isolate, timeout_s=timeout,
                   backend_options=_backend_options(keep_int64, trt_workspace, trt_fp16_route, int8_activation_matmuls))
    args = _invocation_args(input_shape, input_range, checkpoint, inputs, seed, exporter, arg)

    def run_one(spec: Any, json_path: Path | None, junit: Path | None, markdown: Path | None,
                html: Path | None) -> int:
        sub = ("--submodule", spec.name.split(".", 1)[1]) if len(specs) > 1 or submodule else ()
        return _run_and_report(
            spec, backends=backend_list, precisions=precision_list, config=_config(spec, **options), gate=None,
            inputs=inputs, save_inputs=save_inputs, allow_nonfinite=allow_nonfinite_inputs, trust=trust_checkpoint,
            quiet=quiet, invocation=_invocation(model, (*sub, *args), spec, options, allow_nonfinite_inputs),
            json_path=json_path, junit=junit,
            markdown=markdown, html=html)

    raise typer.Exit(_run_each(specs, run_one, json_path, junit, markdown, html))


@app.command("validate")
def validate_command(
    model: Annotated[str | None, typer.Argument(
        help="A registered model, pkg.module:factory or file; leave out with --all.", show_default=False,
        metavar="MODEL")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Validate every model of the manifest.")] = False,
    manifest: Annotated[Path, typer.Option("--manifest", help="The release manifest (TOML).")] = Path("deployval.toml"),
    shard: Annotated[str | None, typer.Option(
        "--shard", help="With --all: run only shard I of N (e.g. 2/4), for parallel CI jobs.")] = None,
    device: DeviceOpt = "cpu",
    inputs: InputsOpt = None,
    input_shape: InputShapeOpt = None,
    input_range: InputRangeOpt = None,
    checkpoint: CheckpointOpt = None,
    trust_checkpoint: TrustOpt = False,
    seed: SeedOpt = 0,
    iterations: IterationsOpt = None,
    time_budget: BudgetOpt = None,
    calibration: CalibrationOpt = None,
    calibration_preprocess: CalibrationPreprocessOpt = None,
    calibration_limit: CalibrationLimitOpt = None,
    calibration_method: CalibrationMethodOpt = "minmax",
    int8_exclude: Int8ExcludeOpt = None,
    int8_activation_matmuls: Int8MatmulsOpt = False,
    keep_fp32: KeepFp32Opt = None,
    keep_int64: KeepInt64Opt = False,
    trt_workspace: WorkspaceOpt = None,
    trt_fp16_route: Fp16RouteOpt = "onnx",
    isolate: IsolateOpt = None,
    timeout: TimeoutOpt = None,
    submodule: SubmoduleOpt = None,
    arg: ArgOpt = None,
    json_path: JsonOpt = None,
    junit: JunitOpt = None,
    markdown: MarkdownOpt = None,
    html: HtmlOpt = None,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run the model's release gate (the backends, precisions and tolerances its spec requires), or with
    --all every model of the release manifest."""

    _check_report_paths(json=json_path, junit=junit, markdown=markdown, html=html)
    backend_options = _backend_options(keep_int64, trt_workspace, trt_fp16_route, int8_activation_matmuls)
    if all_models or shard:
        if not all_models:
            raise UsageError("--shard works with --all")
        if html:
            raise UsageError("--html writes one model's report; use --markdown for a manifest run")
        if model is not None or inputs or input_shape or input_range or checkpoint or submodule or arg:
            raise UsageError("--all takes the models, inputs and checkpoints from the manifest; drop MODEL and "
                             "the per-model options")
        overrides = {k: v for k, v in {
            "iterations": iterations, "time_budget_s": time_budget, "cache_dir": cache_dir,
            "use_cache": False if no_cache else None, "calibration": calibration,
            "calibration_preprocess": calibration_preprocess, "isolate": isolate,
            "timeout_s": timeout, "backend_options": backend_options,
            "device": device if device != "cpu" else None}.items() if v is not None}
        raise typer.Exit(_validate_all(manifest, shard, overrides, trust_checkpoint, quiet, json_path, junit,
                                       markdown))
    if model is None:
        raise UsageError("name a MODEL to validate, or pass --all to validate the manifest")
    specs = _resolve_all(model, input_shape, input_range, checkpoint, submodule, trust_checkpoint, inputs, arg)
    for spec in specs:
        if not spec.gate_for(device):
            raise UsageError(f"model '{spec.name}' declares no release gate for {device}")
    options = dict(device=device, seed=seed, iterations=iterations, time_budget_s=time_budget, cache_dir=cache_dir,
                   use_cache=not no_cache, calibration=calibration,
                   calibration_preprocess=calibration_preprocess, calibration_limit=calibration_limit,
                   calibration_method=calibration_method, int8_exclude=tuple(int8_exclude or ()),
                   keep_fp32=tuple(keep_fp32 or ()), isolate=isolate, timeout_s=timeout,
                   backend_options=backend_options)
    args = _invocation_args(input_shape, input_range, checkpoint, inputs, seed, None, arg)

    def run_one(spec: Any, json_path: Path | None, junit: Path | None, markdown: Path | None,
                html: Path | None) -> int:
        gate = spec.gate_for(device)
        sub = ("--submodule", spec.name.split(".", 1)[1]) if submodule else ()
        return _run_and_report(
            spec, backends=tuple(dict.fromkeys(item.partition(":")[0] for item in gate)), precisions=(),
            config=_config(spec, **options), gate=gate, inputs=inputs, save_inputs=None, allow_nonfinite=False,
            trust=trust_checkpoint, quiet=quiet, invocation=_invocation(model, (*sub, *args), spec, options),
            json_path=json_path,
            junit=junit, markdown=markdown, html=html)

    raise typer.Exit(_run_each(specs, run_one, json_path, junit, markdown, html))


def _run_each(specs: list[Any], run_one: Any, json_path: Path | None, junit: Path | None,
              markdown: Path | None, html: Path | None) -> int:
    """One spec: its own reports. Several (sub-modules): each is run and shown, and the files are
    one combined suite report, as for a manifest."""
    if len(specs) == 1:
        return int(run_one(specs[0], json_path, junit, markdown, html))
    if html:
        raise UsageError("--html writes one model's report; with several sub-modules use --markdown or --json")
    import json
    import tempfile

    from .report.console import render_suite
    from .suite import suite_dict

    reports = []
    with tempfile.TemporaryDirectory(prefix="deployval-suite-") as tmp:
        for index, spec in enumerate(specs):
            path = Path(tmp) / f"{index}.json"
            run_one(spec, path, None, None, None)
            data = json.loads(path.read_text())
            data["entry"] = spec.name
            reports.append(data)
    suite = suite_dict(reports, [], manifest=None, shard=None)
    render_suite(suite)
    _write_suite(suite, reports, json_path, junit, markdown)
    return int(suite["summary"]["exit_code"])


def _validate_all(manifest_path: Path, shard_text: str | None, overrides: dict[str, Any], trust: bool, quiet: bool,
                  json_path: Path | None, junit: Path | None, markdown: Path | None) -> int:
    from .manifest import load_manifest, parse_shard, shard
    from .pipeline import Invocation
    from .pipeline import compare as run_compare
    from .report.console import render, render_suite
    from .suite import run_manifest, suite_dict

    manifest = load_manifest(manifest_path)
    entries = list(manifest.entries)
    if shard_text:
        entries = shard(entries, *parse_shard(shard_text))
    progress = _progress(quiet)

    def run(spec: Any, checks: tuple[str, ...], config: Any, entry: Any) -> Any:
        report = run_compare(
            spec, tuple(dict.fromkeys(c.partition(":")[0] for c in checks)), (), config, inputs=entry.inputs,
            trust_checkpoint=trust, progress=progress, invocation=Invocation(entry.model, entry.command_args()),
            command=shlex.join(["deployval", *_ARGV]), gate=checks,
        )
        render(report)
        return report

    reports, errors = run_manifest(manifest, entries, run=run, overrides=overrides)
    suite = suite_dict(reports, errors, manifest=str(manifest_path), shard=shard_text)
    render_suite(suite)
    _write_suite(suite, reports, json_path, junit, markdown)
    return int(suite["summary"]["exit_code"])


def _write_suite(suite: dict[str, Any], reports: list[dict[str, Any]], json_path: Path | None,
                 junit: Path | None, markdown: Path | None) -> None:
    from ._util import atomic_write_json

    failures = []
    for what, path, write in (
        ("JSON", json_path, lambda p: atomic_write_json(p, suite)),
        ("JUnit", junit, lambda p: _junit_suite(reports, p)),
        ("Markdown", markdown, lambda p: _markdown_suite(suite, reports, p)),
    ):
        if path is not None:
            try:
                write(path)
            except OSError as exc:
                failures.append(f"cannot write the {what} report '{path}': {exc.strerror or exc}")
    if failures:
        raise ReportWriteError("; ".join(failures))


def _junit_suite(reports: list[dict[str, Any]], path: Path) -> None:
    from .report.junit import write_junit

    write_junit(reports, path)


def _markdown_suite(suite: dict[str, Any], reports: list[dict[str, Any]], path: Path) -> None:
    from ._util import atomic_write_text
    from .report.markdown import suite_markdown

    atomic_write_text(path, suite_markdown(suite, reports))


report_app = typer.Typer(help="Work with JSON reports.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(report_app, name="report")


@report_app.command("merge")
def report_merge_command(
    reports: Annotated[list[Path], typer.Argument(help="JSON reports (shards of validate --all, or compare/validate).",
                                                  show_default=False, metavar="REPORT")],
    json_path: JsonOpt = None,
    junit: JunitOpt = None,
    markdown: MarkdownOpt = None,
) -> None:
    """Merge shard reports into one and recompute the overall verdict (its exit code is the merged one)."""
    from .report.console import render_suite
    from .suite import load_reports, suite_dict

    _check_report_paths(json=json_path, junit=junit, markdown=markdown)
    merged, errors = load_reports(reports)
    suite = suite_dict(merged, errors, manifest=None, shard=None)
    suite["merged_from"] = [str(p) for p in reports]
    render_suite(suite)
    _write_suite(suite, merged, json_path, junit, markdown)
    raise typer.Exit(int(suite["summary"]["exit_code"]))


@app.command("precision")
def precision_command(
    model: ModelArg,
    precision: TargetPrecisionOpt = "int8",
    sweep: SweepOpt = False,
    bits: BitsOpt = "2-8",
    plot: PlotOpt = None,
    inputs: InputsOpt = None,
    input_shape: InputShapeOpt = None,
    input_range: InputRangeOpt = None,
    checkpoint: CheckpointOpt = None,
    trust_checkpoint: TrustOpt = False,
    seed: SeedOpt = 0,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    calibration: CalibrationOpt = None,
    calibration_preprocess: CalibrationPreprocessOpt = None,
    calibration_limit: CalibrationLimitOpt = None,
    calibration_method: CalibrationMethodOpt = "minmax",
    exporter: ExporterOpt = None,
    verify: VerifyOpt = True,
    all_layers: AllLayersOpt = False,
    arg: ArgOpt = None,
    int8_activation_matmuls: Int8MatmulsOpt = False,
    json_path: JsonOpt = None,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Which layers cannot take int8 or fp16: lower one layer at a time, rank them, and propose (and
    verify) the smallest set to keep in fp32. With --sweep: how many bits the weights need."""
    _check_report_paths(json=json_path)
    if plot is not None and not sweep:
        raise UsageError("--plot draws the --sweep results; add --sweep")
    if sweep:
        _check_report_paths(plot=plot)
        bit_widths = parse_bits(bits)
    spec = _resolve(model, input_shape, input_range, checkpoint, inputs, arg)
    if sweep:
        raise typer.Exit(_sweep(spec, bit_widths, plot, inputs, seed, trust_checkpoint, json_path, quiet))
    from .precision.sensitivity import analyze
    from .report.precision import render_sensitivity

    config = _config(spec, seed=seed, atol=atol, rtol=rtol, cache_dir=cache_dir, use_cache=not no_cache,
                     exporter=exporter, calibration=calibration, calibration_preprocess=calibration_preprocess,
                     calibration_limit=calibration_limit, calibration_method=calibration_method,
                     backend_options=_int8_options(int8_activation_matmuls))
    args = list(_invocation_args(input_shape, input_range, checkpoint, inputs, seed, exporter, arg))
    if int8_activation_matmuls:
        args.append("--int8-activation-matmuls")
    if precision == "int8" and calibration:
        args += ["--calibration", str(calibration), "--calibration-method", calibration_method]
        if calibration_limit:
            args += ["--calibration-limit", str(calibration_limit)]
        if calibration_preprocess:
            args += ["--calibration-preprocess", calibration_preprocess]
    for flag, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None:
            args += [flag, str(value)]
    result = analyze(spec, precision, config, inputs=inputs, trust_checkpoint=trust_checkpoint,
                     progress=_progress(quiet), model_arg=model, extra_args=args, verify=verify)
    data = result.to_dict()
    render_sensitivity(data, all_layers=all_layers)
    if json_path:
        from ._util import atomic_write_json

        try:
            atomic_write_json(json_path, data)
        except OSError as exc:
            raise ReportWriteError(f"cannot write the JSON report '{json_path}': {exc.strerror or exc}") from None
    raise typer.Exit(int(ExitCode.OK if result else ExitCode.ACCURACY))


def _sweep(spec: Any, bits: list[int], plot: Path | None, inputs: Path | None, seed: int, trust: bool,
           json_path: Path | None, quiet: bool) -> int:
    """The weight fake-quantization sweep: a table (and plot) of output error per bit width."""
    from . import inputs as inputs_mod
    from .loading import build_module
    from .precision.sweep import plot_sweep, render_sweep, weight_sweep
    from .report.console import _console

    progress = _progress(quiet)
    if inputs is not None:
        loaded = inputs_mod.load_inputs(Path(inputs), spec.inputs)
        feeds = inputs_mod.check_inputs(loaded, spec.inputs, exact_shapes=False, source=str(inputs))
    else:
        for input_spec in spec.inputs:
            input_spec.check_shape(input_spec.shape)
        feeds = inputs_mod.make_inputs(spec.inputs, seed)
    with progress.step(f"building {spec.name}"):
        module = build_module(spec, trust_checkpoint=trust)
    with progress.step(f"weight sweep over {len(bits)} bit widths x 2 schemes"):
        result = weight_sweep(module, feeds, bits=bits, task=spec.task, output_names=spec.output_names,
                              input_names=spec.input_names)
    render_sweep(result, _console())
    if plot is not None:
        plot_sweep(result, plot)
    if json_path:
        from ._util import atomic_write_json

        try:
            atomic_write_json(json_path, result.to_dict())
        except OSError as exc:
            raise ReportWriteError(f"cannot write the JSON report '{json_path}': {exc.strerror or exc}") from None
    return int(ExitCode.OK)


def parse_bits(text: str) -> list[int]:
    """'2-8' or '4,6,8' -> bit widths; 2..16 (1 bit has no symmetric level besides zero)."""
    try:
        if "-" in text:
            low, high = (int(p) for p in text.split("-", 1))
            values = list(range(low, high + 1))
        else:
            values = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise UsageError(f"--bits '{text}': expected a range such as 2-8 or a list such as 4,6,8") from None
    if not values or any(not 2 <= b <= 16 for b in values):
        raise UsageError(f"--bits '{text}': bit widths go from 2 to 16")
    return values


@app.command("export")
def export_command(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the artifacts to.")],
    kinds: Annotated[str | None, typer.Option(
        "--kinds", help="Artifacts to write (default all): torchscript, onnx-raw, onnx, onnx-int32, onnx-fp16, "
                        "onnx-int8.")] = None,
    inputs: InputsOpt = None,
    input_shape: InputShapeOpt = None,
    input_range: InputRangeOpt = None,
    checkpoint: CheckpointOpt = None,
    trust_checkpoint: TrustOpt = False,
    seed: SeedOpt = 0,
    arg: ArgOpt = None,
    exporter: ExporterOpt = None,
    calibration: CalibrationOpt = None,
    calibration_preprocess: CalibrationPreprocessOpt = None,
    calibration_limit: CalibrationLimitOpt = None,
    calibration_method: CalibrationMethodOpt = "minmax",
    int8_exclude: Int8ExcludeOpt = None,
    int8_activation_matmuls: Int8MatmulsOpt = False,
    keep_fp32: KeepFp32Opt = None,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write every deployable artifact (TorchScript, ONNX raw/simplified/int32/fp16/int8) to a directory."""
    from .backends.base import ARTIFACT_KINDS
    from .pipeline import export
    from .report.console import _console
    from .spec import parse_list

    exportable = tuple(k for k in ARTIFACT_KINDS if k != "module")
    kind_list = parse_list(kinds, "artifact kind", exportable) if kinds else None
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' exists and is not a directory")
    spec = _resolve(model, input_shape, input_range, checkpoint, inputs, arg)
    config = _config(spec, seed=seed, cache_dir=cache_dir, use_cache=not no_cache, exporter=exporter,
                     calibration=calibration, calibration_preprocess=calibration_preprocess,
                     calibration_limit=calibration_limit, calibration_method=calibration_method,
                     int8_exclude=tuple(int8_exclude or ()), keep_fp32=tuple(keep_fp32 or ()),
                     backend_options=_int8_options(int8_activation_matmuls))
    written, errors, steps = export(spec, out, config, kinds=kind_list, progress=_progress(quiet),
                                    trust_checkpoint=trust_checkpoint, inputs=inputs)
    console = _console()
    for step in steps:
        style = {"ok": "green", "fail": "red", "skipped": "dim"}.get(step.status, "")
        cached = " (cached)" if step.cached else ""
        console.print(f"[{style}]{step.status:>7}[/] {step.name}{cached}" + (f": {step.reason}" if step.reason else ""))
    for kind, path in written.items():
        console.print(f"  {kind:<12} {path}")
    if errors:
        from .errors import print_error

        by_message: dict[str, list[str]] = {}
        for kind, error in errors.items():  # one failed export fails everything built on it
            by_message.setdefault(error.one_line(), []).append(kind)
        for message, kinds_failed in by_message.items():
            print_error(f"{', '.join(kinds_failed)}: {message}")
        usage = any(isinstance(e, UsageError) for e in errors.values())
        raise typer.Exit(int(ExitCode.USAGE if usage else ExitCode.BACKEND))


@app.command("models")
def models_command() -> None:
    """List the registered models."""
    from rich.table import Table

    from .registry import model_entries
    from .report.console import _console
    from .spec import ModelSpec, format_shape

    table = Table(title="models", title_justify="left")
    for column in ("name", "inputs", "gate (cpu)", "description"):
        table.add_column(column)
    for name, entry in model_entries().items():
        if isinstance(entry, ModelSpec):
            inputs = ", ".join(f"{i.name} {format_shape(i.shape)} {i.dtype}" for i in entry.inputs)
            table.add_row(name, inputs, " ".join(entry.gate_for("cpu")), entry.description)
        else:
            table.add_row(name, "-", "-", f"entry point {entry}")
    _console().print(table)


@app.command("backends")
def backends_command() -> None:
    """List every backend, its precisions and devices, and whether it can run here (and why not)."""
    from rich.table import Table

    from .backends.base import backend_entries, check_available
    from .report.console import _console

    table = Table(title="backends", title_justify="left")
    for column in ("name", "precisions", "cpu", "cuda", "origin", "description"):
        table.add_column(column, overflow="fold")
    for name, entry in backend_entries().items():
        try:
            cls = entry.load()
        except Exception as exc:
            table.add_row(name, "-", f"[red]no[/]: {first_line(exc)}", "-", entry.origin, "")
            continue
        cells = []
        for device in ("cpu", "cuda"):
            if device not in cls.devices:
                cells.append("[dim]n/a[/]")
                continue
            ok, reason = check_available(cls, device)
            cells.append("[green]yes[/]" if ok else f"[red]no[/]: {reason}")
        table.add_row(name, ", ".join(cls.artifacts), *cells, entry.origin, cls.description)
    _console().print(table)


from .debug.command import debug_command  # noqa: E402 (typer only at import)

app.command("debug")(debug_command)


def _click_exceptions() -> Any:
    try:  # typer >= 0.20 carries its own copy of click
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older typer on top of click
        from click import exceptions
    return exceptions


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error becomes one line on stderr and its exit code, never a traceback."""
    from .errors import print_error

    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    click_exceptions = _click_exceptions()
    exit_types = (typer.Exit, getattr(click_exceptions, "Exit", typer.Exit))
    abort_types = (typer.Abort, getattr(click_exceptions, "Abort", typer.Abort))
    try:
        code = app(args=argv, standalone_mode=False, prog_name="deployval")
        return int(code) if isinstance(code, int) else 0
    except exit_types as exc:
        return int(exc.exit_code or 0)
    except abort_types:
        print_error("aborted")
        return 130
    except click_exceptions.ClickException as exc:  # bad option, missing argument, wrong type
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print_error(f"{' '.join(exc.format_message().split())}{hint}")
        return int(ExitCode.USAGE)
    except DeployvalError as exc:
        print_error(exc.one_line())
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except Exception as exc:
        if os.environ.get("DEPLOYVAL_DEBUG"):
            raise
        print_error(f"internal error: {first_line(exc)} (set DEPLOYVAL_DEBUG=1 for the traceback)")
        return int(ExitCode.BACKEND)


def run() -> None:
    code = main()
    # Tearing down torch, onnxscript and their thread pools takes ~1.5 s at interpreter exit, and
    # nothing is left to flush: reports are written (fsync'd) and temp directories removed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
