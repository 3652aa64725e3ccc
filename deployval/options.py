"""Command-line option types shared by every command (typer only: no heavy import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelArg = Annotated[str, typer.Argument(
    help="A registered model (see `deployval models`), pkg.module:factory, a TorchScript file or an ONNX file.",
    show_default=False, metavar="MODEL")]
InputShapeOpt = Annotated[list[str] | None, typer.Option(
    "--input-shape", help="NAME=1x3x224x224[:DTYPE] (repeat per input; NAME may be left out for one input).")]
InputRangeOpt = Annotated[list[str] | None, typer.Option(
    "--input-range", help="NAME=LOW,HIGH: value range of random inputs (repeatable).")]
CheckpointOpt = Annotated[Path | None, typer.Option(
    "--checkpoint", help="Weights for the model (a state_dict, or a dict holding one), loaded weights-only.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-checkpoint", help="Allow a checkpoint that needs arbitrary code to unpickle. Only for files you trust.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
CacheDirOpt = Annotated[Path | None, typer.Option(
    "--cache-dir", help="Artifact cache (default: $DEPLOYVAL_CACHE_DIR or ~/.cache/deployval).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Build every artifact afresh and keep none.")]
ExporterOpt = Annotated[str | None, typer.Option("--exporter", help="dynamo (default) or legacy.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")]
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here.")]
MarkdownOpt = Annotated[Path | None, typer.Option("--markdown", help="Write a Markdown summary here.")]
BackendsOpt = Annotated[str, typer.Option(
    "--backends", "-b", help="Comma-separated backends (see `deployval backends`).")]
PrecisionsOpt = Annotated[str, typer.Option("--precisions", "-p", help="fp32, fp16, int8 (comma-separated).")]
HtmlOpt = Annotated[Path | None, typer.Option(
    "--html", help="Write a self-contained HTML report (tables and error histograms) here.")]
SubmoduleOpt = Annotated[list[str] | None, typer.Option(
    "--submodule", help="Validate a sub-module on its own (declared in the spec, or any attribute path with "
                        "--input-shape); 'all' for every declared one. Repeatable.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")]
AtolOpt = Annotated[float | None, typer.Option("--atol", help="Elementwise absolute tolerance for every output.")]
RtolOpt = Annotated[float | None, typer.Option("--rtol", help="Elementwise relative tolerance for every output.")]
WarmupOpt = Annotated[int, typer.Option("--warmup", help="Warm-up runs; the correctness run is the first.")]
IterationsOpt = Annotated[int | None, typer.Option(
    "--iterations", help="Timed runs (default: as many as fit in --time-budget, at least one).")]
BudgetOpt = Annotated[float | None, typer.Option(
    "--time-budget", help="Seconds of timed runs per backend when --iterations is not given [default: 2].")]
InputsOpt = Annotated[Path | None, typer.Option(
    "--inputs", help=".npy (one input), .npz (one array per input) or .pt (tensors) to use instead of random; "
                     "their shapes and dtypes define the run (no --input-shape needed).")]
ArgOpt = Annotated[list[str] | None, typer.Option(
    "--arg", help="NAME=VALUE: a non-tensor argument of forward() (int, float, true/false or string), e.g. "
                  "sr=16000; repeatable. Fixed in every export.")]
SaveInputsOpt = Annotated[Path | None, typer.Option("--save-inputs", help="Write the inputs used (.npz) for replay.")]
NonfiniteOpt = Annotated[bool, typer.Option("--allow-nonfinite-inputs", help="Accept NaN/Inf in --inputs.")]
CalibrationLimitOpt = Annotated[int | None, typer.Option(
    "--calibration-limit", help="Calibrate on the first N samples of --calibration (by file name).")]
CalibrationMethodOpt = Annotated[str, typer.Option(
    "--calibration-method", help="int8 calibration: minmax, entropy or percentile.")]
Int8ExcludeOpt = Annotated[list[str] | None, typer.Option(
    "--int8-exclude", help="Keep ONNX nodes out of int8 (fnmatch over node names, or op:TYPE); repeatable.")]
KeepFp32Opt = Annotated[list[str] | None, typer.Option(
    "--keep-fp32", help="Keep modules (fnmatch over module names) or op:TYPE in fp32 in the fp16 artifact; "
                        "repeatable.")]
Int8MatmulsOpt = Annotated[bool, typer.Option(
    "--int8-activation-matmuls", help="Also quantize MatMuls of two activations (attention QK^T and AV); by "
                                      "default only MatMuls with a weight are int8.")]
KeepInt64Opt = Annotated[bool, typer.Option(
    "--keep-int64", help="Build TensorRT engines from the ONNX as is, without the int64 -> int32 pass.")]
WorkspaceOpt = Annotated[int | None, typer.Option(
    "--trt-workspace", help="TensorRT builder workspace limit in MiB [default: 4096].")]
Fp16RouteOpt = Annotated[str, typer.Option(
    "--trt-fp16-route", help="TensorRT fp16 from the fp16 ONNX ('onnx', strongly typed) or, on TensorRT 10, "
                             "from the BuilderFlag.FP16 ('flag').")]
BackendOptionOpt = Annotated[list[str] | None, typer.Option(
    "--backend-option", help="NAME.FIELD=VALUE: a backend's own option (int, float, true/false or string), e.g. "
                             "trt.workspace_mb=8192; repeatable. `deployval backends` lists them.")]
IsolateOpt = Annotated[bool | None, typer.Option(
    "--isolate/--no-isolate", help="Run each backend in its own process, so a crash or hang costs only its row "
                                   "[default: TensorRT backends, or all when --timeout is set].")]
TimeoutOpt = Annotated[float | None, typer.Option(
    "--timeout", help="Seconds each isolated backend may take before it is killed and reported.")]
CalibrationOpt = Annotated[Path | None, typer.Option(
    "--calibration", help="Directory of samples to calibrate int8 with: .npy/.npz/.pt files, or images for one "
                          "NCHW input (default: the run's inputs).")]
CalibrationPreprocessOpt = Annotated[str | None, typer.Option(
    "--calibration-preprocess", help="How calibration images become inputs, e.g. "
                                     "'scale=0.003922,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,order=rgb' "
                                     "[default: resize to the input size, scale 1/255].")]

TargetPrecisionOpt = Annotated[str, typer.Option(
    "--precision", "-p", help="int8 (Q/DQ on ONNX Runtime) or fp16 (torch half): the precision to analyse.")]
SweepOpt = Annotated[bool, typer.Option(
    "--sweep", help="Instead: fake-quantize every weight to N bits (per tensor and per channel) and measure the "
                    "outputs for each N.")]
BitsOpt = Annotated[str, typer.Option("--bits", help="With --sweep: the bit widths, e.g. 2-8 or 4,6,8.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="With --sweep: write the error-vs-bits plot (PNG).")]
VerifyOpt = Annotated[bool, typer.Option(
    "--verify/--no-verify", help="Build and compare the proposal exactly as `deployval compare` would.")]
AllLayersOpt = Annotated[bool, typer.Option("--all-layers", help="Show every layer, not only the most sensitive.")]
