"""`deployval export`: write every deployable artifact to a directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ExitCode, UsageError
from ..options import (
    ArgOpt,
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
    Int8ExcludeOpt,
    Int8MatmulsOpt,
    KeepFp32Opt,
    ModelArg,
    NoCacheOpt,
    QuietOpt,
    SeedOpt,
    TrustOpt,
)
from . import common


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
    from ..backends.base import ARTIFACT_KINDS
    from ..pipeline import export
    from ..report.console import make_console
    from ..spec import parse_list

    exportable = tuple(k for k in ARTIFACT_KINDS if k != "module")
    kind_list = parse_list(kinds, "artifact kind", exportable) if kinds else None
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' exists and is not a directory")
    spec = common.resolve(model, input_shape, input_range, checkpoint, inputs, arg)
    config = common.config(spec, seed=seed, cache_dir=cache_dir, use_cache=not no_cache, exporter=exporter,
                     calibration=calibration, calibration_preprocess=calibration_preprocess,
                     calibration_limit=calibration_limit, calibration_method=calibration_method,
                     int8_exclude=tuple(int8_exclude or ()), keep_fp32=tuple(keep_fp32 or ()),
                     backend_options=common.int8_options(int8_activation_matmuls))
    written, errors, steps = export(spec, out, config, kinds=kind_list, progress=common.progress(quiet),
                                    trust_checkpoint=trust_checkpoint, inputs=inputs)
    console = make_console()
    for step in steps:
        style = {"ok": "green", "fail": "red", "skipped": "dim"}.get(step.status, "")
        cached = " (cached)" if step.cached else ""
        console.print(f"[{style}]{step.status:>7}[/] {step.name}{cached}" + (f": {step.reason}" if step.reason else ""))
    for kind, path in written.items():
        console.print(f"  {kind:<12} {path}")
    if errors:
        from ..errors import print_error

        by_message: dict[str, list[str]] = {}
        for kind, error in errors.items():  # one failed export fails everything built on it
            by_message.setdefault(error.one_line(), []).append(kind)
        for message, kinds_failed in by_message.items():
            print_error(f"{', '.join(kinds_failed)}: {message}")
        usage = any(isinstance(e, UsageError) for e in errors.values())
        raise typer.Exit(int(ExitCode.USAGE if usage else ExitCode.BACKEND))
