"""`deployval precision`: which layers cannot take int8 or fp16, and with --sweep how many bits the
weights need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ExitCode, UsageError
from .common import ReportWriteError
from .grouping import Omit, grouped, run_config, run_settings
from .groups import Cache, DataSet, Display, Export, ModelInputs, Quantization, ReportFiles, Tolerances
from .options import AllLayersOpt, BitsOpt, PlotOpt, SweepOpt, TargetPrecisionOpt, VerifyOpt

# The sweep takes a data set (and its labels); what else DataSet offers judges compare's rows.
SWEEP_DATA_ONLY = ("save_failing", "worst", "pass_fraction", "max_top1_drop", "max_dice_drop", "shape_grid",
                   "batch_invariance", "ray", "ray_address", "ray_workers")


@grouped
def precision_command(
    *,
    precision: TargetPrecisionOpt = "int8",
    sweep: SweepOpt = False,
    bits: BitsOpt = "2-8",
    plot: PlotOpt = None,
    src: Annotated[ModelInputs, Omit("submodule")],
    tol: Annotated[Tolerances, Omit("allow_nonfinite", "task", "judge")],
    quant: Annotated[Quantization, Omit("int8_exclude", "keep_fp32")],  # what to exclude is the answer
    export: Export,
    data: Annotated[DataSet, Omit(*SWEEP_DATA_ONLY)],
    verify: VerifyOpt = True,
    all_layers: AllLayersOpt = False,
    files: Annotated[ReportFiles, Omit("junit", "markdown", "html")],
    cache: Cache,
    display: Annotated[Display, Omit("verbose")],  # -v speaks for Ray, which this command does not start
) -> None:
    """Which layers cannot take int8 or fp16: lower one layer at a time, rank them, and propose (and
    verify) the smallest set to keep in fp32. With --sweep: how many bits the weights need."""
    files.check()
    if plot is not None and not sweep:
        raise UsageError("--plot draws the --sweep results; add --sweep")
    if sweep:
        if plot is not None:
            from .._util import check_writable

            check_writable(plot, "plot report")
        bit_widths = parse_bits(bits)
    dataset = data.options(src.allow_nonfinite_inputs)
    if dataset is not None and dataset.labels is not None and not sweep:
        raise UsageError("--labels goes with --sweep (the sensitivity analysis judges against the reference's outputs)")
    spec = data.shapes_from(src).spec()
    if sweep:
        raise typer.Exit(run_sweep(spec, bit_widths, plot, src, files.json_path, display, dataset))
    from ..precision.sensitivity import analyze
    from ..report.precision import render_sensitivity

    config = run_config(spec, run_settings(src, tol, quant, export, cache))
    # The verification and the printed lines carry the run's settings as compare takes them.
    invocation = src.invocation(spec, config, *export.args())
    result = analyze(spec, precision, config, inputs=src.inputs, trust_checkpoint=src.trust_checkpoint,
                     progress=display.progress(), model_arg=src.model,
                     extra_args=[*invocation.args, *invocation.run_args, *data.args()], verify=verify,
                     allow_nonfinite_inputs=src.allow_nonfinite_inputs, dataset=dataset)
    data = result.to_dict()
    render_sensitivity(data, all_layers=all_layers)
    if files.json_path:
        from .._util import atomic_write_json

        try:
            atomic_write_json(files.json_path, data)
        except OSError as exc:
            raise ReportWriteError(f"cannot write the JSON report '{files.json_path}': {exc.strerror or exc}") from None
    raise typer.Exit(int(ExitCode.OK if result else ExitCode.ACCURACY))


def run_sweep(spec: Any, bits: list[int], plot: Path | None, src: ModelInputs, json_path: Path | None,
              display: Display, dataset: Any = None) -> int:
    """The weight fake-quantization sweep: a table (and plot) of output error per bit width; over a
    data set, each width's mean over the samples (held in memory: use --limit), and with --labels
    its task score against them."""
    from ..model.spec import RunConfig
    from ..precision.sweep import plot_sweep, render_sweep, weight_sweep
    from ..report.console import make_console
    from ..run.session import Session

    progress = display.progress()
    inputs: Any = src.inputs
    samples: list[Any] = []
    scorer = None
    if dataset is not None:
        first, _, inputs = dataset.dataset.first(spec)
    session = Session(spec, RunConfig(seed=src.seed), inputs, allow_nonfinite=src.allow_nonfinite_inputs,
                      trust_checkpoint=src.trust_checkpoint, progress=progress)
    spec = session.spec
    if dataset is not None:
        from ..run.dataset_run import Scorer

        scorer = Scorer.of(dataset.labels, spec) if dataset.labels is not None else None
        label = (lambda name: dataset.labels.for_sample(name)) if dataset.labels is not None else (lambda name: None)
        samples = [(s.feeds, label(s.name)) for s in dataset.dataset.samples(spec, after=first) if not s.fault]
        first_label = label(first.name)
    reference = session.reference().outputs
    with progress.step(f"weight sweep over {len(bits)} bit widths x 2 schemes"
                       + (f", {len(samples) + 1} samples" if dataset is not None else "")):
        if spec.kind == "onnx":  # its Conv/Gemm/MatMul initializers, on ONNX Runtime against ONNX Runtime fp32
            from ..precision.sensitivity import reference_outputs
            from ..precision.sweep import onnx_weight_sweep

            references = [reference, *reference_outputs(session, [feeds for feeds, _ in samples])]
            result = onnx_weight_sweep(Path(spec.path or ""), session.feeds, references, bits=bits, task=spec.task,
                                       samples=samples, scorer=scorer,
                                       first_label=first_label if dataset is not None else None)
        else:
            result = weight_sweep(session.module(), session.feeds, bits=bits, task=spec.task,
                                  output_names=spec.output_names, input_names=spec.input_names, reference=reference,
                                  samples=samples, scorer=scorer,
                                  first_label=first_label if dataset is not None else None)
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
