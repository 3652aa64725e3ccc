"""`deployval debug MODEL --backend ort`: layer-by-layer localization of a divergence. Only typer is
imported at module level; everything else (torch, the debug run) when the command runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from . import common
from .grouping import Omit, grouped, run_config, run_settings
from .groups import Cache, DataSet, Display, Export, ModelInputs, Quantization, ReportFiles, Tolerances
from .options import DeviceOpt


@dataclass(frozen=True)
class DebugInputs(ModelInputs):
    model: Annotated[str, typer.Argument(
        help="A registered model (see `deployval models`), pkg.module:factory (a PyTorch module), or an ONNX file "
             "(its nodes are the layers, ONNX Runtime fp32 on the file the reference).",
        show_default=False, metavar="MODEL")]


@dataclass(frozen=True)
class LayerTolerances(Tolerances):
    atol: Annotated[float | None, typer.Option(
        "--atol", help="Elementwise absolute tolerance for every layer.")] = None
    rtol: Annotated[float | None, typer.Option(
        "--rtol", help="Elementwise relative tolerance for every layer.")] = None


@dataclass(frozen=True)
class DebugDataSet(DataSet):
    dataset: Annotated[Path | None, typer.Option(
        "--dataset", help="The data set of the compare run to reproduce: int8 is calibrated as compare calibrates "
                          "on it (its first sample, unless --calibration), so the artifact is the one compare "
                          "judged. Debugs that first sample, or the one given with --inputs (compare "
                          "--save-failing writes the failing ones).")] = None


# Of the data-set options, debug takes those that say which samples compare read.
DATASET_ONLY = Omit("save_failing", "worst", "pass_fraction", "labels", "max_top1_drop", "max_dice_drop",
                    "shape_grid", "ray", "ray_address", "ray_workers", "batch_invariance")


@dataclass(frozen=True)
class DebugReports(ReportFiles):
    html: Annotated[Path | None, typer.Option(
        "--html", help="Write a self-contained HTML report here (per-layer error curve, output histograms).")] = None
    repro: Annotated[Path | None, typer.Option(
        "--repro", help="Write the first divergent layer as a model of its own into this directory: model.onnx (cut "
                        "out of the artifact that diverged), inputs.npz and expected.npz (the reference's values), "
                        "README.md with the `compare --expected` command that fails on it.")] = None
    model_explorer: Annotated[Path | None, typer.Option(
        "--model-explorer", help="Write per-node data for Google Model Explorer (FILE.json: status; FILE.rel_l2.json, "
                                 "FILE.max_abs.json, FILE.own_rel_l2.json, FILE.new_share.json), keyed by the "
                                 "artifact's node ids.")] = None

    def check(self) -> None:
        from .._util import check_writable
        from ..errors import UsageError

        super().check()
        if self.model_explorer is not None:
            if self.model_explorer.suffix.lower() != ".json":
                raise UsageError(f"--model-explorer '{self.model_explorer}': use a .json file name")
            check_writable(self.model_explorer, "model explorer node data")
        if self.repro is not None:
            if self.repro.exists() and not self.repro.is_dir():
                raise UsageError(f"--repro '{self.repro}' is a file, not a directory")
            if not self.repro.exists() and not self.repro.parent.is_dir():
                raise UsageError(f"--repro '{self.repro}': directory '{self.repro.parent}' does not exist")


BackendOpt = Annotated[str, typer.Option(
    "--backend", "-b", help="The backend to localize (one that runs ONNX: ort, trt, ort-trt, ...).")]
PrecisionOpt = Annotated[str, typer.Option("--precision", "-p", help="fp32, fp16 or int8.")]
ModulesOpt = Annotated[list[str] | None, typer.Option(
    "--modules", "-m", help="Module names to report, as fnmatch patterns (comma-separated or repeated), e.g. "
                            "'encoder.*,head' (for an ONNX file: node names or op types). Default: every submodule, "
                            "leaves and containers; marks always.")]
MemoryOpt = Annotated[float | None, typer.Option(
    "--memory-budget", help="MiB of activations one backend run may return; more are streamed in chunks "
                            "[default: 512, at most a quarter of the free memory; $DEPLOYVAL_DEBUG_MEMORY_MB].")]
OwnOpt = Annotated[str, typer.Option(
    "--own-errors", help="Which layers get their own (new) error by a replay with the reference inputs: auto (all "
                         "when the model is small, else around the first divergent layer), all, divergent.")]
TriageOpt = Annotated[bool, typer.Option(
    "--triage/--no-triage", help="Replay the region where the error is new on onnx.reference to blame the export "
                                 "or the runtime.")]


@grouped
def debug_command(
    *,
    backend: BackendOpt = "ort",
    precision: PrecisionOpt = "fp32",
    modules: ModulesOpt = None,
    src: Annotated[DebugInputs, Omit("submodule")],
    tol: Annotated[LayerTolerances, Omit("tolerance", "allow_nonfinite", "task", "judge")],
    device: DeviceOpt = "cpu",
    export: Export,
    quant: Quantization,
    data: Annotated[DebugDataSet, DATASET_ONLY],
    files: Annotated[DebugReports, Omit("junit", "markdown")],
    cache: Cache,
    memory_budget: MemoryOpt = None,
    own_errors: OwnOpt = "auto",
    triage: TriageOpt = True,
    display: Annotated[Display, Omit("verbose")],  # -v speaks for Ray, which this command does not start
) -> None:
    """Localize a divergence layer by layer: the first divergent layer, where the error is new, and
    whether the export or the runtime is to blame. Exit code 1 when a layer exceeds its tolerance.
    A compare row's reproduction line becomes a debug line by --backend/--precision for --backends/
    --precisions, its model, input, calibration and --dataset options kept (the same int8 artifact),
    and --inputs for the failing sample."""
    from ..errors import UsageError
    from ..model.spec import PRECISIONS

    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if memory_budget is not None and not memory_budget > 0:
        raise UsageError("--memory-budget must be a positive number of MiB")
    patterns = [p.strip() for item in modules or [] for p in item.split(",") if p.strip()] or None
    files.check()
    options = data.options(src.allow_nonfinite_inputs)  # the data set, checked as compare checks it
    spec = data.shapes_from(src).spec()
    config = run_config(spec, run_settings(src, tol, export, quant, cache, device=device))

    from .._util import atomic_write_json, timed_import

    timed_import("numpy")
    from ..debug.report import render_debug
    from ..debug.run import run_debug

    report = run_debug(
        spec, backend, precision, config, modules=patterns, inputs=src.inputs,
        allow_nonfinite_inputs=src.allow_nonfinite_inputs, trust_checkpoint=src.trust_checkpoint,
        progress=display.progress(), command=common.command_line(),
        memory_budget_bytes=int(memory_budget * (1 << 20)) if memory_budget else None, own_errors=own_errors,
        triage=triage, repro=files.repro, model_explorer=files.model_explorer,
        dataset=options.dataset if options is not None else None,
    )
    if files.json_path:
        atomic_write_json(files.json_path, report.to_dict())
    if files.html:
        from ..report.html import write_html

        write_html(report, files.html)
    render_debug(report)
    raise typer.Exit(int(report.exit_code))
