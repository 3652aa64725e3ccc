"""`deployval precision`: which layers cannot take int8 or fp16, and with --sweep how many bits the
weights need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..errors import ExitCode, UsageError
from ..options import (
    AllLayersOpt,
    ArgOpt,
    AtolOpt,
    BitsOpt,
    CacheDirOpt,
    CalibrationLimitOpt,
    CalibrationMethodOpt,
    CalibrationOpt,
    CalibrationPreprocessOpt,
    CheckpointOpt,
    ExporterOpt,
    InputRangeOpt,
    InputShapeOpt,
    InputsOpt,
    Int8MatmulsOpt,
    JsonOpt,
    ModelArg,
    NoCacheOpt,
    NonfiniteOpt,
    PlotOpt,
    QuietOpt,
    RtolOpt,
    SeedOpt,
    SweepOpt,
    TargetPrecisionOpt,
    TrustOpt,
    VerifyOpt,
)
from . import common
from .common import ReportWriteError


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
    allow_nonfinite_inputs: NonfiniteOpt = False,
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
    common.check_report_paths(json=json_path)
    if plot is not None and not sweep:
        raise UsageError("--plot draws the --sweep results; add --sweep")
    if sweep:
        common.check_report_paths(plot=plot)
        bit_widths = parse_bits(bits)
    spec = common.resolve(model, input_shape, input_range, checkpoint, inputs, arg)
    if sweep:
        raise typer.Exit(run_sweep(spec, bit_widths, plot, inputs, seed, trust_checkpoint, json_path, quiet,
                                   allow_nonfinite=allow_nonfinite_inputs))
    from ..precision.sensitivity import analyze
    from ..report.precision import render_sensitivity

    config = common.config(spec, seed=seed, atol=atol, rtol=rtol, cache_dir=cache_dir, use_cache=not no_cache,
                     exporter=exporter, calibration=calibration, calibration_preprocess=calibration_preprocess,
                     calibration_limit=calibration_limit, calibration_method=calibration_method,
                     backend_options=common.int8_options(int8_activation_matmuls))
    # The verification and the printed lines carry the run's settings as compare takes them.
    args = [*common.invocation_args(input_shape, input_range, checkpoint, inputs, seed, exporter, arg),
            *config.to_args()]
    if allow_nonfinite_inputs:
        args.append("--allow-nonfinite-inputs")
    result = analyze(spec, precision, config, inputs=inputs, trust_checkpoint=trust_checkpoint,
                     progress=common.progress(quiet), model_arg=model, extra_args=args, verify=verify,
                     allow_nonfinite_inputs=allow_nonfinite_inputs)
    data = result.to_dict()
    render_sensitivity(data, all_layers=all_layers)
    if json_path:
        from .._util import atomic_write_json

        try:
            atomic_write_json(json_path, data)
        except OSError as exc:
            raise ReportWriteError(f"cannot write the JSON report '{json_path}': {exc.strerror or exc}") from None
    raise typer.Exit(int(ExitCode.OK if result else ExitCode.ACCURACY))


def run_sweep(spec: Any, bits: list[int], plot: Path | None, inputs: Path | None, seed: int, trust: bool,
               json_path: Path | None, quiet: bool, *, allow_nonfinite: bool = False) -> int:
    """The weight fake-quantization sweep: a table (and plot) of output error per bit width."""
    from ..precision.sweep import plot_sweep, render_sweep, weight_sweep
    from ..report.console import make_console
    from ..session import Session
    from ..spec import RunConfig

    progress = common.progress(quiet)
    session = Session(spec, RunConfig(seed=seed), inputs, allow_nonfinite=allow_nonfinite, trust_checkpoint=trust,
                      progress=progress)
    spec = session.spec
    module = session.module()
    with progress.step(f"weight sweep over {len(bits)} bit widths x 2 schemes"):
        result = weight_sweep(module, session.feeds, bits=bits, task=spec.task, output_names=spec.output_names,
                              input_names=spec.input_names)
    render_sweep(result, make_console())
    if plot is not None:
        plot_sweep(result, plot)
    if json_path:
        from .._util import atomic_write_json

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
