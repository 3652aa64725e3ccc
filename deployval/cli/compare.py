"""`deployval compare`: every backend and precision against torch eager."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..options import (
    ArgOpt,
    AtolOpt,
    BackendOptionOpt,
    BackendsOpt,
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
    PrecisionsOpt,
    QuietOpt,
    RtolOpt,
    SaveInputsOpt,
    SeedOpt,
    SubmoduleOpt,
    TimeoutOpt,
    TrustOpt,
    WarmupOpt,
    WorkspaceOpt,
)
from . import common
from .validate import run_each


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
    """Run the same inputs through each backend and precision and judge each against torch eager."""
    from ..backends.base import backend_entries
    from ..spec import PRECISIONS, parse_list

    backend_list = parse_list(backends, "backend", tuple(backend_entries()))
    precision_list = parse_list(precisions, "precision", PRECISIONS)
    common.check_report_paths(json=json_path, junit=junit, markdown=markdown, html=html)
    specs = common.resolve_all(model, input_shape, input_range, checkpoint, submodule, trust_checkpoint, inputs, arg)
    options = dict(device=device, seed=seed, atol=atol, rtol=rtol, warmup=warmup, iterations=iterations,
                   time_budget_s=time_budget, cache_dir=cache_dir, use_cache=not no_cache, exporter=exporter,
                   calibration=calibration,
                   calibration_preprocess=calibration_preprocess, calibration_limit=calibration_limit,
                   calibration_method=calibration_method, int8_exclude=tuple(int8_exclude or ()),
                   keep_fp32=tuple(keep_fp32 or ()), isolate=isolate, timeout_s=timeout,
                   backend_options=common.backend_options(keep_int64, trt_workspace, trt_fp16_route,
                                                          int8_activation_matmuls, backend_option))
    args = common.invocation_args(input_shape, input_range, checkpoint, inputs, seed, exporter, arg)

    def run_one(spec: Any, json_path: Path | None, junit: Path | None, markdown: Path | None,
                html: Path | None) -> int:
        sub = ("--submodule", spec.name.split(".", 1)[1]) if len(specs) > 1 or submodule else ()
        run_config = common.config(spec, **options)
        return common.run_and_report(
            spec, backends=backend_list, precisions=precision_list, config=run_config, gate=None,
            inputs=inputs, save_inputs=save_inputs, allow_nonfinite=allow_nonfinite_inputs, trust=trust_checkpoint,
            quiet=quiet, invocation=common.invocation(model, (*sub, *args), run_config, allow_nonfinite_inputs),
            json_path=json_path, junit=junit, markdown=markdown, html=html)

    raise typer.Exit(run_each(specs, run_one, json_path, junit, markdown, html))
