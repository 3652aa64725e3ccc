"""`deployval compare`: every backend and precision against torch eager."""

from __future__ import annotations

from typing import Any

import typer

from . import common
from .grouping import grouped, run_config, run_settings
from .groups import (
    BackendSettings,
    Cache,
    DataSet,
    Display,
    Export,
    Isolation,
    ModelInputs,
    Quantization,
    ReportFiles,
    Timing,
    Tolerances,
)
from .interrupt import run_guarded
from .options import BackendsOpt, DeviceOpt, ExpectedOpt, PrecisionsOpt, SaveInputsOpt, SaveOutputsOpt
from .partial import RunReports
from .validate import run_each


@grouped
def compare_command(
    *,
    backends: BackendsOpt = None,
    precisions: PrecisionsOpt = "fp32",
    src: ModelInputs,
    save_inputs: SaveInputsOpt = None,
    save_outputs: SaveOutputsOpt = None,
    expected: ExpectedOpt = None,
    tol: Tolerances,
    timing: Timing,
    device: DeviceOpt = "cpu",
    export: Export,
    quant: Quantization,
    backend: BackendSettings,
    isolation: Isolation,
    data: DataSet,
    files: ReportFiles,
    cache: Cache,
    display: Display,
) -> None:
    """Run the same inputs through each backend and precision and judge each against torch eager."""
    from ..backends.base import backend_entries
    from ..model.arguments import parse_list
    from ..model.spec import PRECISIONS

    # None: the model's default (pipeline.default_backends)
    backend_list = parse_list(backends, "backend", tuple(backend_entries())) if backends is not None else None
    precision_list = parse_list(precisions, "precision", PRECISIONS)
    common.check_paths([*files.named(), ("--save-inputs", save_inputs), ("--save-outputs", save_outputs),
                        ("--save-failing", data.save_failing)],
                       [*common.input_paths(src, data, quant), ("the --expected file", expected)])
    files.check()
    dataset = data.options(src.allow_nonfinite_inputs)
    specs = data.shapes_from(src).specs()
    settings = run_settings(src, tol, timing, export, quant, backend, isolation, cache, device=device)
    if len(specs) > 1 and (save_outputs is not None or expected is not None):
        from ..errors import UsageError

        raise UsageError("--save-outputs and --expected hold one model's outputs: give one --submodule at a time")

    def run_one(spec: Any, files: ReportFiles, reports: RunReports) -> int:
        spec, options = data.for_spec(spec, dataset, src)
        config = run_config(spec, settings)
        invocation = src.invocation(spec, config, *export.args(), *data.args())
        if expected is not None:  # a reproduction judges against the same outputs
            invocation.run_args = (*invocation.run_args, "--expected", str(expected))
        return common.run_and_report(
            spec, src, config, backends=backend_list, precisions=precision_list, gate=None, save_inputs=save_inputs,
            display=display, invocation=invocation, files=files, reports=reports, dataset=options,
            save_outputs=save_outputs, expected=expected)

    reports = RunReports(files, f"compare {src.model}", suite=len(specs) > 1)
    raise typer.Exit(run_guarded(reports, lambda: run_each(specs, run_one, files, reports)))
