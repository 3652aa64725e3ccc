"""The option groups commands share, each declared once: a dataclass whose fields carry the typer
metadata and which turns itself into what the run needs (RunConfig settings, backend options, the
reproduction arguments, the model's specs). A command takes whole groups through `@grouped`
(grouping.py), or part of one with `Annotated[Group, Omit("field")]`; a command whose option reads
differently overrides the field in a subclass (debug's per-layer tolerances). Light at import; the
annotations are evaluated with the class (no `from __future__ import annotations`): evaluating them
from strings later costs `deployval --help` a few milliseconds.
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UsageError
from .grouping import Group


@dataclass(frozen=True)
class ModelInputs(Group):
    """The model and what defines its inputs; a command that runs or exports a model takes it."""

    panel = "Model and inputs"

    model: Annotated[str, typer.Argument(
        help="A registered model (see `deployval models`), pkg.module:factory, a TorchScript file or an ONNX file.",
        show_default=False, metavar="MODEL")]
    inputs: Annotated[Path | None, typer.Option(
        "--inputs", help=".npy (one input), .npz (one array per input) or .pt (tensors) to use instead of random; "
                         "their shapes and dtypes define the run (no --input-shape needed).")] = None
    input_shape: Annotated[list[str] | None, typer.Option(
        "--input-shape", help="NAME=1x3x224x224[:DTYPE] (repeat per input; NAME may be left out for one "
                              "input).")] = None
    input_range: Annotated[list[str] | None, typer.Option(
        "--input-range", help="NAME=LOW,HIGH: value range of random inputs (repeatable).")] = None
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="Weights for the model (a state_dict, or a dict holding one), loaded "
                             "weights-only.")] = None
    trust_checkpoint: Annotated[bool, typer.Option(
        "--trust-checkpoint", help="Allow a checkpoint that needs arbitrary code to unpickle. Only for files you "
                                   "trust.")] = False
    allow_nonfinite_inputs: Annotated[bool, typer.Option(
        "--allow-nonfinite-inputs", help="Accept NaN/Inf in --inputs (NaN/Inf in the reference's outputs: "
                                         "--allow-nonfinite).")] = False
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")] = 0
    submodule: Annotated[list[str] | None, typer.Option(
        "--submodule", help="Validate a sub-module on its own (declared in the spec, or any attribute path with "
                            "--input-shape); 'all' for every declared one. Repeatable.")] = None
    arg: Annotated[list[str] | None, typer.Option(
        "--arg", help="NAME=VALUE: a non-tensor argument of forward() (int, float, true/false or string), e.g. "
                      "sr=16000; repeatable. Fixed in every export.")] = None

    def settings(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def args(self) -> tuple[str, ...]:
        """The options that define the model's inputs, to ask for them again (the seed only when they
        are random); the model itself and --submodule are the invocation's."""
        args: list[str] = []
        for option, values in (("--arg", self.arg), ("--input-shape", self.input_shape),
                               ("--input-range", self.input_range)):
            for value in values or []:
                args += [option, value]
        if self.checkpoint:
            args += ["--checkpoint", str(self.checkpoint)]
        if self.inputs:
            args += ["--inputs", str(self.inputs)]
        elif self.seed:
            args += ["--seed", str(self.seed)]
        return tuple(args)

    def invocation(self, spec: Any, config: Any, *more: str) -> Any:
        """How to ask for this run again: the model's arguments (and `more`, e.g. the exporter), and the
        run settings from the configuration itself (so a reproduction line cannot drop one);
        --trust-checkpoint is the user's to give again."""
        from ..run.pipeline import Invocation

        sub: tuple[str, ...] = ()
        if self.submodule:  # the attribute path the factory holds: a model named pkg.mod:fn has dots of its own
            sub = ("--submodule", getattr(getattr(spec, "factory", None), "path", None) or spec.name.split(".", 1)[1])
        flags = ("--allow-nonfinite-inputs",) if self.allow_nonfinite_inputs else ()
        return Invocation(self.model, (*sub, *self.args(), *more), (*config.to_args(), *flags))

    def spec(self) -> Any:
        """The model's spec; an --inputs file defines its input shapes, --arg its forward() arguments."""
        from ..catalog.registry import resolve_model
        from ..model.arguments import parse_arguments, parse_input_range, parse_input_shape

        if self.checkpoint is not None and not self.checkpoint.exists():
            raise UsageError(f"checkpoint '{self.checkpoint}' does not exist")
        return resolve_model(
            self.model,
            input_shapes=[parse_input_shape(s) for s in self.input_shape or []],
            input_ranges=[parse_input_range(r) for r in self.input_range or []],
            checkpoint=str(self.checkpoint) if self.checkpoint else None,
            inputs_file=self.inputs,
            arguments=parse_arguments(self.arg),
        )

    def specs(self) -> list[Any]:
        """The model, or the sub-modules asked for (their input shapes from the spec or --input-shape)."""
        if not self.submodule:
            return [self.spec()]
        if self.arg:
            raise UsageError("--arg applies to the model's forward(), not to --submodule")
        from ..catalog.registry import model_entries, resolve_submodules
        from ..model.arguments import parse_input_range, parse_input_shape
        from ..model.spec import ModelSpec

        checkpoint = str(self.checkpoint) if self.checkpoint else None
        if ":" in self.model and self.model not in model_entries():  # a factory: its own inputs do not matter
            parent = ModelSpec(name=self.model, inputs=(), kind="module", factory=self.model, checkpoint=checkpoint)
        else:
            parent = replace(self, inputs=None, input_shape=None, input_range=None, arg=None).spec()
        return resolve_submodules(parent, self.submodule, [parse_input_shape(s) for s in self.input_shape or []],
                                  [parse_input_range(r) for r in self.input_range or []],
                                  trust_checkpoint=self.trust_checkpoint, model_arg=self.model)


@dataclass(frozen=True)
class Tolerances(Group):
    panel = "Tolerances and task checks"

    atol: Annotated[float | None, typer.Option(
        "--atol", help="Elementwise absolute tolerance for every output.")] = None
    rtol: Annotated[float | None, typer.Option(
        "--rtol", help="Elementwise relative tolerance for every output.")] = None
    tolerance: Annotated[str | None, typer.Option(
        "--tolerance", help="Judge every row by exactly these bounds instead of the model's tolerances, e.g. "
                            "'rel_l2=0.1,cosine=0.995' (atol, rtol, mean_abs, p99_abs, rel_l2, cosine, "
                            "argmax_agreement, dice_drop, topk_drop, mismatch).")] = None
    slices: Annotated[list[str] | None, typer.Option(
        "--slices", help="Also judge an output slice by slice along an axis, gated on the worst slice: "
                         "NAME:AXIS (each index its own slice) or NAME:AXIS=GROUPS, e.g. output0:1=0:4,4: "
                         "(rows 0-3, then 4 to the end). Repeatable.")] = None
    task: Annotated[str | None, typer.Option(
        "--task", help="Judge each row by what the model is for as well: pkg.module:function (called with "
                       "reference, outputs and inputs, returning metrics and 'passed') or a built-in: ctc, "
                       "sequence:end=ID, detection (options after ':').")] = None
    judge: Annotated[str | None, typer.Option(
        "--judge", help="What gates a row: norms, task or both (default: both with --task, else norms).")] = None
    allow_nonfinite: Annotated[bool, typer.Option(
        "--allow-nonfinite", help="Accept NaN/Inf in the reference's outputs (or --expected): masked out of the "
                                  "metrics, every row must have the same NaN/+Inf/-Inf at the same positions. "
                                  "Without it they are refused. (NaN/Inf in the inputs: "
                                  "--allow-nonfinite-inputs.)")] = False

    def settings(self) -> dict[str, Any]:
        from ..judge.slices import SliceSpec
        from ..judge.task_checks import TaskCheck
        from ..model.spec import Tolerance

        bounds = Tolerance.parse(self.tolerance) if self.offers("tolerance") and self.tolerance else None
        slices = tuple(SliceSpec.parse(s) for s in self.slices or ()) if self.offers("slices") else ()
        check = TaskCheck.parse(self.task) if self.offers("task") and self.task else None
        return {"atol": self.atol, "rtol": self.rtol, "tolerance": bounds, "slices": slices or None,
                "task_check": check, "judge": self.judge if self.offers("judge") else None,
                "allow_nonfinite": self.allow_nonfinite or None}  # None: the spec's run defaults decide


@dataclass(frozen=True)
class Timing(Group):
    panel = "Timing"

    warmup: Annotated[int, typer.Option("--warmup", help="Warm-up runs; the correctness run is the first.")] = 1
    iterations: Annotated[int | None, typer.Option(
        "--iterations", help="Timed runs (default: as many as fit in --time-budget, at least one).")] = None
    time_budget: Annotated[float | None, typer.Option(
        "--time-budget", help="Seconds of timed runs per backend when --iterations is not given [default: 2].")] = None
    repeat: Annotated[int, typer.Option(
        "--repeat", help="Correctness runs per row and of the reference (2: report any difference between "
                         "runs of the same inputs).")] = 1

    def settings(self) -> dict[str, Any]:
        if self.repeat < 1:
            raise UsageError(f"--repeat must be at least 1, not {self.repeat}")
        warmup = {"warmup": self.warmup} if self.offers("warmup") else {}  # else the spec's
        return {**warmup, "iterations": self.iterations, "time_budget_s": self.time_budget, "repeat": self.repeat}


@dataclass(frozen=True)
class Export(Group):
    panel = "Backends and precisions"

    exporter: Annotated[str | None, typer.Option("--exporter", help="dynamo (default) or legacy.")] = None

    def settings(self) -> dict[str, Any]:
        return {"exporter": self.exporter}

    def args(self) -> tuple[str, ...]:
        """Reproduction: the exporter belongs with the model's arguments (shared with `deployval export`)."""
        return ("--exporter", self.exporter) if self.exporter else ()


@dataclass(frozen=True)
class Quantization(Group):
    """int8 calibration and what stays out of int8 (and in fp32 for fp16)."""

    panel = "int8 and fp16"

    calibration: Annotated[Path | None, typer.Option(
        "--calibration", help="Directory of samples to calibrate int8 with: .npy/.npz/.pt files, or images for one "
                              "NCHW input (default: the run's inputs).")] = None
    calibration_preprocess: Annotated[str | None, typer.Option(
        "--calibration-preprocess", help="How calibration images become inputs, e.g. "
                                         "'scale=0.003922,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,order=rgb' "
                                         "[default: resize to the input size, scale 1/255].")] = None
    calibration_limit: Annotated[int | None, typer.Option(
        "--calibration-limit", help="Calibrate on the first N samples of --calibration (by file name).")] = None
    calibration_method: Annotated[str, typer.Option(
        "--calibration-method", help="int8 calibration: minmax, entropy or percentile.")] = "minmax"
    int8_exclude: Annotated[list[str] | None, typer.Option(
        "--int8-exclude", help="Keep ONNX nodes out of int8 (fnmatch over node names, or op:TYPE); repeatable.")] = None
    int8_activation_matmuls: Annotated[bool, typer.Option(
        "--int8-activation-matmuls", help="Also quantize MatMuls of two activations (attention QK^T and AV); by "
                                          "default only MatMuls with a weight are int8.")] = False
    keep_fp32: Annotated[list[str] | None, typer.Option(
        "--keep-fp32", help="Keep modules (fnmatch over module names), ONNX nodes (node:NAME) or op:TYPE in fp32 "
                            "in the fp16 artifact; repeatable.")] = None

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "calibration": self.calibration, "calibration_preprocess": self.calibration_preprocess,
            "calibration_limit": self.calibration_limit, "calibration_method": self.calibration_method,
            "int8_activation_matmuls": self.int8_activation_matmuls}
        for name in ("int8_exclude", "keep_fp32"):
            if self.offers(name):  # else the spec's
                settings[name] = tuple(getattr(self, name) or ())
        return settings


@dataclass(frozen=True)
class BackendSettings(Group):
    """The backends' own settings: the dedicated TensorRT flags and `--backend-option NAME.FIELD=VALUE`."""

    panel = "Backends and precisions"

    keep_int64: Annotated[bool, typer.Option(
        "--keep-int64", help="Build TensorRT engines from the ONNX as is, without the int64 -> int32 pass.")] = False
    trt_workspace: Annotated[int | None, typer.Option(
        "--trt-workspace", help="TensorRT builder workspace limit in MiB [default: 4096].")] = None
    trt_fp16_route: Annotated[str, typer.Option(
        "--trt-fp16-route", help="TensorRT fp16 from the fp16 ONNX ('onnx', strongly typed) or, on TensorRT 10, "
                                 "from the BuilderFlag.FP16 ('flag').")] = "onnx"
    backend_option: Annotated[list[str] | None, typer.Option(
        "--backend-option", help="NAME.FIELD=VALUE: a backend's own option (int, float, true/false or string), e.g. "
                                 "trt.workspace_mb=8192; repeatable. `deployval backends` lists them.")] = None

    def settings(self) -> dict[str, Any]:
        return {"backend_options": self.options()}

    def options(self) -> dict[str, Any]:
        """`--backend-option NAME.FIELD=VALUE` as `{backend: {field: value}}` (typed by the backend's
        `Options`), with the dedicated flags that were given written into the fields that name them (the
        TensorRT backends'); a flag and `--backend-option` setting one field is an error."""
        from ..backends.base import get_backend
        from ..backends.options import parse_backend_options, with_flags
        from ..backends.tensorrt_plan import FP16_ROUTES

        if self.trt_fp16_route not in FP16_ROUTES:
            raise UsageError(f"unknown --trt-fp16-route '{self.trt_fp16_route}' ({' or '.join(FP16_ROUTES)})")
        if self.trt_workspace is not None and self.trt_workspace <= 0:
            raise UsageError("--trt-workspace must be a positive number of MiB")
        flags = {flag: value for flag, value, default in (
            ("--keep-int64", self.keep_int64, False), ("--trt-workspace", self.trt_workspace, None),
            ("--trt-fp16-route", self.trt_fp16_route, "onnx")) if value != default}
        parsed = parse_backend_options(self.backend_option, get_backend)
        return with_flags(flags, parsed, [get_backend("trt"), get_backend("ort-trt")])


@dataclass(frozen=True)
class Isolation(Group):
    panel = "Cache and isolation"

    isolate: Annotated[bool | None, typer.Option(
        "--isolate/--no-isolate", help="Run each backend in its own process, so a crash or hang costs only its row "
                                       "[default: TensorRT backends, or all when --timeout is set].")] = None
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="Seconds each isolated backend may take before it is killed and reported.")] = None

    def settings(self) -> dict[str, Any]:
        return {"isolate": self.isolate, "timeout_s": self.timeout}


BATCH_COPIES = 4  # --batch-invariance: copies of the input in one batch


@dataclass(frozen=True)
class DataSet(Group):
    """Judge every row over a directory of samples instead of one input."""

    panel = "Data sets"

    dataset: Annotated[Path | None, typer.Option(
        "--dataset", help="A directory of samples, one per file: .npy/.npz/.pt (as --inputs) or images (with "
                          "--preprocess). Every row is judged on every sample, one at a time.")] = None
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N samples (sorted by name).")] = None
    preprocess: Annotated[str | None, typer.Option(
        "--preprocess", help="How images become the input, as for --calibration-preprocess (e.g. "
                             "'resize=224x224,scale=0.003922,mean=0.485/0.456/0.406,std=0.229/0.224/0.225').")] = None
    save_failing: Annotated[Path | None, typer.Option(
        "--save-failing", help="Write every failing sample here as .npz, to replay with --inputs.")] = None
    worst: Annotated[int, typer.Option("--worst", help="Name the K worst samples of each row.")] = 5
    pass_fraction: Annotated[float, typer.Option(
        "--pass-fraction", help="Share of the samples that must pass for a row to pass (default: all).")] = 1.0
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="Ground truth for --dataset: CSV 'sample,label' or JSON {sample: label}; a class index, "
                         "or a mask .npy for segmentation. Reports top-1/top-5 (or Dice) of the reference and "
                         "every row.")] = None
    max_top1_drop: Annotated[str | None, typer.Option(
        "--max-top1-drop", help="Fail a row whose top-1 accuracy is lower than the reference's by more than "
                                "this (e.g. 0.5%).")] = None
    max_dice_drop: Annotated[str | None, typer.Option(
        "--max-dice-drop", help="Fail a row whose mean Dice against the label masks is lower than the "
                                "reference's by more than this (e.g. 0.01).")] = None
    shape_grid: Annotated[list[str] | None, typer.Option(
        "--shape-grid", help="NAME=S1,S2,... (once per input, zipped by position): export once with dynamic axes "
                             "where the shapes vary and judge every row at every shape; the grid alone defines "
                             "the shapes.")] = None
    ray: Annotated[bool, typer.Option(
        "--ray", help="Judge the --dataset on Ray: a pool of actors, each with every row loaded (pip install "
                      "'deployval[ray]'); a local Ray instance unless --ray-address.")] = False
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="Join this Ray cluster (e.g. 'auto', or ray://HOST:10001) instead of starting "
                              "one.")] = None
    ray_workers: Annotated[int, typer.Option(
        "--ray-workers", help="Actors in the pool (on CUDA, one GPU each).")] = 2
    batch_invariance: Annotated[bool, typer.Option(
        "--batch-invariance", help="Run a batch of 4 copies of the input through every row: each copy must get "
                                   "the same outputs (exports with a dynamic batch dimension).")] = False

    def options(self, allow_nonfinite: bool = False) -> Any:
        """What the pipeline takes (dataset_run.DatasetOptions), or None without --dataset."""
        if self.dataset is None:
            if self.ray or self.ray_address:
                raise UsageError("--ray distributes a --dataset; give --dataset DIR")
            for option, value, default in (("--limit", self.limit, None), ("--preprocess", self.preprocess, None),
                                           ("--save-failing", self.save_failing, None), ("--labels", self.labels, None),
                                           ("--max-top1-drop", self.max_top1_drop, None),
                                           ("--max-dice-drop", self.max_dice_drop, None)):
                if value != default:
                    raise UsageError(f"{option} applies to --dataset; give --dataset DIR")
            return None
        if not 0.0 < self.pass_fraction <= 1.0:
            raise UsageError(f"--pass-fraction must be in (0, 1], not {self.pass_fraction}")
        if self.worst < 0:
            raise UsageError(f"--worst must be at least 0, not {self.worst}")
        from ..model.dataset import Dataset
        from ..model.preprocess import ImagePreprocess
        from ..run.dataset_run import DatasetOptions

        if self.preprocess:
            ImagePreprocess.parse(self.preprocess, "--preprocess")  # a bad spec stops the run before any work

        if self.save_failing is not None:
            try:
                self.save_failing.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"--save-failing '{self.save_failing}': {exc.strerror or exc}") from None
        from ..model.labels import Labels

        drops = {metric: _share(option, value) for metric, option, value in (
            ("top1", "--max-top1-drop", self.max_top1_drop), ("dice", "--max-dice-drop", self.max_dice_drop))
            if value is not None}
        if drops and self.labels is None:
            raise UsageError(f"{', '.join('--max-' + m + '-drop' for m in drops)} needs --labels")
        return DatasetOptions(dataset=Dataset(self.dataset, self.limit, self.preprocess, allow_nonfinite),
                              save_failing=self.save_failing, worst=self.worst, pass_fraction=self.pass_fraction,
                              labels=Labels.read(self.labels) if self.labels else None, max_drop=drops,
                              ray=self.ray or self.ray_address is not None, ray_address=self.ray_address,
                              workers=self._workers())

    def _workers(self) -> int:
        if self.ray_workers < 1:
            raise UsageError(f"--ray-workers must be at least 1, not {self.ray_workers}")
        return self.ray_workers

    def for_spec(self, spec: Any, options: Any, src: "ModelInputs") -> tuple[Any, Any]:
        """The spec and the data-set options of one model: a shape grid sets the shapes and the dynamic
        axes, batch invariance a dynamic batch dimension."""
        if not self.shape_grid and not self.batch_invariance:
            return spec, options
        from dataclasses import replace as replace_options

        from ..model.shape_grid import ShapeGrid
        from ..run.dataset_run import DatasetOptions

        options = options or DatasetOptions()
        if self.shape_grid:
            if self.dataset is not None or src.inputs is not None or src.input_shape:
                raise UsageError("--shape-grid alone defines the shapes: drop --dataset, --inputs and --input-shape")
            grid = ShapeGrid.parse(self.shape_grid, spec)
            spec = grid.apply(spec, batch=BATCH_COPIES if self.batch_invariance else 0)
            options = replace_options(options, grid=grid, worst=max(options.worst, len(grid)))  # a verdict per shape
        elif self.batch_invariance:
            spec = ShapeGrid({i.name: (i.shape,) for i in spec.inputs}).apply(spec, batch=BATCH_COPIES)
        return spec, replace_options(options, batch=BATCH_COPIES if self.batch_invariance else 0)

    def shapes_from(self, src: "ModelInputs") -> "ModelInputs":
        """The model inputs whose spec the data set's first array file shapes (as --inputs would, for a
        model that declares no input shapes), or the grid's first shapes; unchanged without either or
        with images only."""
        if self.shape_grid and not src.input_shape:
            first = [entry.split(",")[0] for entry in self.shape_grid]
            return replace(src, input_shape=first)
        if self.dataset is None or src.inputs is not None or not self.dataset.is_dir():
            return src
        from ..errors import DeployvalError
        from ..model.inputs import INPUT_SUFFIXES, read_inputs_file

        for path in sorted(p for p in self.dataset.iterdir() if p.suffix.lower() in INPUT_SUFFIXES):
            try:
                read_inputs_file(path)
            except DeployvalError:
                continue  # a damaged sample: the run names it later
            return replace(src, inputs=path)
        return src

    def args(self) -> tuple[str, ...]:
        """The options that ask for this data set again (for reproduction lines)."""
        if self.dataset is None:
            return tuple(arg for entry in self.shape_grid or [] for arg in ("--shape-grid", entry)) + (
                ("--batch-invariance",) if self.batch_invariance else ())
        args = ["--dataset", str(self.dataset)]
        if self.limit is not None:
            args += ["--limit", str(self.limit)]
        if self.preprocess:
            args += ["--preprocess", self.preprocess]
        if self.pass_fraction != 1.0:
            args += ["--pass-fraction", repr(self.pass_fraction)]
        for entry in self.shape_grid or []:
            args += ["--shape-grid", entry]
        if self.batch_invariance:
            args.append("--batch-invariance")
        for option, value in (("--labels", self.labels), ("--max-top1-drop", self.max_top1_drop),
                              ("--max-dice-drop", self.max_dice_drop)):
            if value is not None:
                args += [option, str(value)]
        return tuple(args)


def _share(option: str, text: str) -> float:
    """'0.5%' or '0.005' as 0.005."""
    try:
        value = float(text[:-1]) / 100.0 if text.strip().endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"{option} takes a share such as 0.5% or 0.005, not '{text}'") from None
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"{option} must be between 0 and 100%, not '{text}'")
    return value


@dataclass(frozen=True)
class ReportFiles(Group):
    panel = "Reports"

    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")] = None
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here.")] = None
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Write a Markdown summary here.")] = None
    html: Annotated[Path | None, typer.Option(
        "--html", help="Write a self-contained HTML report (tables and error histograms) here.")] = None

    def check(self) -> None:
        """Fail before any work when a report could not be written."""
        from .._util import check_writable

        for what, path in (("json", self.json_path), ("junit", self.junit), ("markdown", self.markdown),
                           ("html", self.html)):
            if path is not None:
                check_writable(path, f"{what} report")

    def json_only(self, path: Path) -> "ReportFiles":
        return replace(self, json_path=path, junit=None, markdown=None, html=None)

    def named(self) -> list[tuple[str, Path | None]]:
        """Each report's option and path (None: not asked for), to check that no two collide."""
        return [("--json", self.json_path), ("--junit", self.junit), ("--markdown", self.markdown),
                ("--html", self.html)]


@dataclass(frozen=True)
class Cache(Group):
    panel = "Cache and isolation"

    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Artifact cache (default: $DEPLOYVAL_CACHE_DIR or ~/.cache/deployval).")] = None
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Build every artifact afresh and keep none.")] = False

    def settings(self) -> dict[str, Any]:
        return {"cache_dir": self.cache_dir, "use_cache": not self.no_cache}


@dataclass(frozen=True)
class Display(Group):
    panel = "Reports"

    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Let the libraries speak too: Ray's own INFO lines, progress logs and warnings "
                                "(quiet by default).")] = False

    def progress(self) -> Any:
        from ..progress import Progress
        from ..report.console import ConsoleProgress

        return Progress() if self.quiet else ConsoleProgress()
