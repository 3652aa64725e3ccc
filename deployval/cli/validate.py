"""`deployval validate`: a model's release gate, or with --all every model of the manifest; and the
suite reports (several models or sub-modules in one file) that `report merge` writes too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UsageError
from ..options import (
    ArgOpt,
    BackendOptionOpt,
    BudgetOpt,
    CacheDirOpt,
    CalibrationLimitOpt,
    CalibrationMethodOpt,
    CalibrationOpt,
    CalibrationPreprocessOpt,
    CheckpointOpt,
    DeviceOpt,
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
    NoCacheOpt,
    QuietOpt,
    SeedOpt,
    SubmoduleOpt,
    TimeoutOpt,
    TrustOpt,
    WorkspaceOpt,
)
from . import common
from .common import ReportWriteError


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
    backend_option: BackendOptionOpt = None,
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

    common.check_report_paths(json=json_path, junit=junit, markdown=markdown, html=html)
    backend_options = common.backend_options(keep_int64, trt_workspace, trt_fp16_route, int8_activation_matmuls,
                                             backend_option)
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
        raise typer.Exit(validate_all(manifest, shard, overrides, trust_checkpoint, quiet, json_path, junit,
                                       markdown))
    if model is None:
        raise UsageError("name a MODEL to validate, or pass --all to validate the manifest")
    specs = common.resolve_all(model, input_shape, input_range, checkpoint, submodule, trust_checkpoint, inputs, arg)
    for spec in specs:
        if not spec.gate_for(device):
            raise UsageError(f"model '{spec.name}' declares no release gate for {device}")
    options = dict(device=device, seed=seed, iterations=iterations, time_budget_s=time_budget, cache_dir=cache_dir,
                   use_cache=not no_cache, calibration=calibration,
                   calibration_preprocess=calibration_preprocess, calibration_limit=calibration_limit,
                   calibration_method=calibration_method, int8_exclude=tuple(int8_exclude or ()),
                   keep_fp32=tuple(keep_fp32 or ()), isolate=isolate, timeout_s=timeout,
                   backend_options=backend_options)
    args = common.invocation_args(input_shape, input_range, checkpoint, inputs, seed, None, arg)

    def run_one(spec: Any, json_path: Path | None, junit: Path | None, markdown: Path | None,
                html: Path | None) -> int:
        gate = spec.gate_for(device)
        sub = ("--submodule", spec.name.split(".", 1)[1]) if submodule else ()
        run_config = common.config(spec, **options)
        return common.run_and_report(
            spec, backends=tuple(dict.fromkeys(item.partition(":")[0] for item in gate)), precisions=(),
            config=run_config, gate=gate, inputs=inputs, save_inputs=None, allow_nonfinite=False,
            trust=trust_checkpoint, quiet=quiet, invocation=common.invocation(model, (*sub, *args), run_config),
            json_path=json_path, junit=junit, markdown=markdown, html=html)

    raise typer.Exit(run_each(specs, run_one, json_path, junit, markdown, html))


def run_each(specs: list[Any], run_one: Any, json_path: Path | None, junit: Path | None,
             markdown: Path | None, html: Path | None) -> int:
    """One spec: its own reports. Several (sub-modules): each is run and shown, and the files are
    one combined suite report, as for a manifest."""
    if len(specs) == 1:
        return int(run_one(specs[0], json_path, junit, markdown, html))
    if html:
        raise UsageError("--html writes one model's report; with several sub-modules use --markdown or --json")
    import json
    import tempfile

    from ..report.console import render_suite
    from ..suite import suite_dict

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
    write_suite(suite, reports, json_path, junit, markdown)
    return int(suite["summary"]["exit_code"])


def validate_all(manifest_path: Path, shard_text: str | None, overrides: dict[str, Any], trust: bool, quiet: bool,
                 json_path: Path | None, junit: Path | None, markdown: Path | None) -> int:
    from ..manifest import load_manifest, parse_shard, shard
    from ..pipeline import Invocation
    from ..pipeline import compare as run_compare
    from ..report.console import render, render_suite
    from ..suite import run_manifest, suite_dict

    manifest = load_manifest(manifest_path)
    entries = list(manifest.entries)
    if shard_text:
        entries = shard(entries, *parse_shard(shard_text))
    progress = common.progress(quiet)

    def run(spec: Any, checks: tuple[str, ...], config: Any, entry: Any) -> Any:
        report = run_compare(
            spec, tuple(dict.fromkeys(c.partition(":")[0] for c in checks)), (), config, inputs=entry.inputs,
            trust_checkpoint=trust, progress=progress, invocation=Invocation(entry.model, entry.command_args()),
            command=common.command_line(), gate=checks,
        )
        render(report)
        return report

    reports, errors = run_manifest(manifest, entries, run=run, overrides=overrides)
    suite = suite_dict(reports, errors, manifest=str(manifest_path), shard=shard_text)
    render_suite(suite)
    write_suite(suite, reports, json_path, junit, markdown)
    return int(suite["summary"]["exit_code"])


def write_suite(suite: dict[str, Any], reports: list[dict[str, Any]], json_path: Path | None,
                junit: Path | None, markdown: Path | None) -> None:
    from .._util import atomic_write_json

    failures = []
    for what, path, write in (
        ("JSON", json_path, lambda p: atomic_write_json(p, suite)),
        ("JUnit", junit, lambda p: junit_suite(reports, p)),
        ("Markdown", markdown, lambda p: markdown_suite(suite, reports, p)),
    ):
        if path is not None:
            try:
                write(path)
            except OSError as exc:
                failures.append(f"cannot write the {what} report '{path}': {exc.strerror or exc}")
    if failures:
        raise ReportWriteError("; ".join(failures))


def junit_suite(reports: list[dict[str, Any]], path: Path) -> None:
    from ..report.junit import write_junit

    write_junit(reports, path)


def markdown_suite(suite: dict[str, Any], reports: list[dict[str, Any]], path: Path) -> None:
    from .._util import atomic_write_text
    from ..report.markdown import suite_markdown

    atomic_write_text(path, suite_markdown(suite, reports))
