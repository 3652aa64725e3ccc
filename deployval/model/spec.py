"""What to validate: model, inputs, export options, tolerances and the release gate.

Everything here is plain data (no torch, no numpy) so that specs can be declared, listed and
parsed without paying for heavy imports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..metric_table import LOWER_BOUNDS, UPPER_BOUNDS
from .preprocess import ImagePreprocess

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
HALF_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}  # precision -> the dtype a half-width run computes in
DEVICES = ("cpu", "cuda")
FLOAT_DTYPES = ("float32", "float16", "float64", "bfloat16")
INT_DTYPES = ("int64", "int32", "int16", "int8", "uint8")
DTYPES = FLOAT_DTYPES + INT_DTYPES + ("bool",)


@dataclass(frozen=True)
class InputSpec:
    """One model input. Random inputs are drawn uniformly from [low, high) in `dtype`."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    low: float = 0.0
    high: float = 1.0
    # Per-dimension divisor the network needs (e.g. the product of its pooling strides);
    # 1 or 0 means "any size".
    multiple_of: tuple[int, ...] | None = None
    # Range of shapes a dynamic-shape engine must accept (TensorRT optimization profile min/max);
    # the run's own shape is the optimum. None: the run's shape.
    min_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise UsageError(f"input '{self.name}': unknown dtype '{self.dtype}' (one of {', '.join(DTYPES)})")
        if not self.high > self.low:
            raise UsageError(f"input '{self.name}': empty value range [{self.low}, {self.high})")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        for name in ("multiple_of", "min_shape", "max_shape"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(int(d) for d in getattr(self, name)))

    @property
    def is_integer(self) -> bool:
        return self.dtype in INT_DTYPES or self.dtype == "bool"

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Refuse shapes the network cannot take, before any expensive work starts."""
        shape = tuple(int(d) for d in shape)
        if any(d <= 0 for d in shape):
            raise UsageError(f"input '{self.name}': shape {format_shape(shape)} has an empty dimension")
        if self.multiple_of is None:
            return
        if len(shape) != len(self.multiple_of):
            raise UsageError(
                f"input '{self.name}': expected {len(self.multiple_of)} dimensions, got shape {format_shape(shape)}"
            )
        bad = [(i, d, m) for i, (d, m) in enumerate(zip(shape, self.multiple_of)) if m > 1 and d % m]
        if bad:
            constrained = [(i, m) for i, m in enumerate(self.multiple_of) if m > 1]
            need = ", ".join(f"dim {i}: {m}" for i, m in constrained)
            dims = ", ".join(f"dim {i} = {d} is not a multiple of {m}" for i, d, m in bad)
            raise UsageError(
                f"input '{self.name}': shape {format_shape(shape)} does not fit the network ({dims}; "
                f"it needs multiples of {need})"
            )

    def with_shape(self, shape: tuple[int, ...]) -> InputSpec:
        self.check_shape(shape)
        return replace(self, shape=tuple(shape))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "low": self.low,
            "high": self.high,
            "multiple_of": list(self.multiple_of) if self.multiple_of else None,
        }


@dataclass(frozen=True)
class Tolerance:
    """Accuracy bounds for one output. Every bound that is set must hold for a pass.

    `atol`/`rtol` form the elementwise rule |c - r| <= atol + rtol * |r| (numpy's). The other
    fields bound a statistic instead, for precisions where single elements may legitimately
    drift (fp16, int8). Integer outputs (labels, indices) are judged by `mismatch`: the
    largest allowed fraction of elements that differ (0 when unset).
    """

    atol: float | None = None
    rtol: float | None = None
    mean_abs: float | None = None
    p99_abs: float | None = None
    rel_l2: float | None = None
    cosine: float | None = None  # lower bound
    argmax_agreement: float | None = None  # lower bound; needs a task that defines argmax
    # Task-metric drops against the reference's own prediction (1 - mean Dice for segmentation,
    # 1 - top-k overlap for classification): "Dice drop <= 0.01".
    dice_drop: float | None = None
    topk_drop: float | None = None
    mismatch: float | None = None  # upper bound, integer outputs

    @property
    def elementwise(self) -> bool:
        return self.atol is not None or self.rtol is not None

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        """`rel_l2=0.1,cosine=0.995` (the --tolerance syntax; field names as in the JSON report)."""
        names, bounds = {f.name for f in fields(cls)}, {}
        for item in (part.strip() for part in text.split(",")):
            name, _, value = item.partition("=")
            if name.strip() not in names:
                raise UsageError(f"--tolerance '{text}': '{name.strip()}' is not a bound ({', '.join(sorted(names))})")
            try:
                bounds[name.strip()] = float(value)
            except ValueError:
                raise UsageError(f"--tolerance '{text}': {name.strip()} needs a number, not '{value}'") from None
        return cls(**bounds)

    def describe(self) -> str:
        parts = []
        if self.elementwise:
            parts.append(f"atol={_g(self.atol or 0.0)} rtol={_g(self.rtol or 0.0)}")
        for metric in UPPER_BOUNDS + LOWER_BOUNDS:
            if getattr(self, metric.name) is not None:
                parts.append(metric.describe_bound(getattr(self, metric.name)))
        return ", ".join(parts) or "none"


def _g(value: float) -> str:
    return f"{value:.3g}"


# Defaults per precision, from measurements on the zoo (README, "Default tolerances"; bench/tolerances.py):
# fp32 across runtimes stays below 8e-5 relative L2 with a worst element of 7.3e-4 (fine_organs
# 96x160x160 on ORT), so 1e-3/1e-3 passes with margin and still catches a changed layer. fp16 and
# int8 are judged by statistics, because single elements near zero drift by design: fp16 measured
# 3e-4..8e-3 relative L2 and cosine >= 0.99996; int8 with representative calibration 0.016..0.035.
# bf16 keeps fp32's range with 8 mantissa bits (fp16: 11), so about 8x fp16's error: torch eager bf16
# measured 4.9e-3 (srcnn), 7.9e-3 (convs), 6.1e-2 relative L2 and cosine 0.99814 (fine_organs 48x80x80).
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "*:fp32": Tolerance(atol=1e-3, rtol=1e-3),
    "*:fp16": Tolerance(rel_l2=1e-2, cosine=0.9999),
    "*:bf16": Tolerance(rel_l2=8e-2, cosine=0.997),
    "*:int8": Tolerance(rel_l2=0.1, cosine=0.995),
}


@dataclass(frozen=True)
class ToleranceTable:
    """Tolerances keyed by "backend:precision:output" patterns; `*` matches anything.

    The most specific matching pattern wins (most non-`*` parts; later entries win ties),
    so a spec can say "*:fp16" once and still tighten "ort:fp16:logits".
    """

    entries: Mapping[str, Tolerance] = field(default_factory=dict)

    def resolve(self, backend: str, precision: str, output: str) -> Tolerance:
        best: tuple[int, int] | None = None
        chosen: Tolerance | None = None
        for order, (pattern, tolerance) in enumerate(
            list(DEFAULT_TOLERANCES.items()) + list(self.entries.items())
        ):
            parts = [*pattern.split(":"), "*", "*", "*"][:3]
            if all(p in ("*", v) for p, v in zip(parts, (backend, precision, output))):
                rank = (sum(p != "*" for p in parts), order)
                if best is None or rank > best:
                    best, chosen = rank, tolerance
        return chosen if chosen is not None else Tolerance(atol=1e-3, rtol=1e-3)


@dataclass(frozen=True)
class TaskSpec:
    """A task metric that says whether the model still does its job, beyond raw error.

    segmentation: argmax over `axis` (agreement, Dice per class); classification: argmax and
    top-k overlap over `axis`.
    """

    kind: str = "segmentation"
    axis: int = 1
    outputs: tuple[str, ...] | None = None  # None: every floating-point output
    topk: int = 5

    def __post_init__(self) -> None:
        if self.kind not in ("segmentation", "classification"):
            raise UsageError(f"unknown task '{self.kind}' (segmentation or classification)")

    def applies_to(self, output: str) -> bool:
        return self.outputs is None or output in self.outputs


@dataclass(frozen=True)
class ExportOptions:
    exporter: str = "dynamo"  # or "legacy" (TorchScript-based torch.onnx exporter)
    opset: int | None = None  # None: the exporter's default
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None
    torchscript: str = "trace"  # or "script"
    simplify: bool = True

    def __post_init__(self) -> None:
        if self.exporter not in ("dynamo", "legacy"):
            raise UsageError(f"unknown exporter '{self.exporter}' (dynamo or legacy)")
        if self.torchscript not in ("trace", "script"):
            raise UsageError(f"unknown TorchScript mode '{self.torchscript}' (trace or script)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "exporter": self.exporter,
            "opset": self.opset,
            "dynamic_axes": {k: dict(v) for k, v in (self.dynamic_axes or {}).items()} or None,
            "torchscript": self.torchscript,
            "simplify": self.simplify,
        }


@dataclass(frozen=True)
class SubmoduleSpec:
    """A part of a model that is deployed (and validated) on its own, with its own inputs: a codec's
    encoder and decoder, a detector's backbone. `name` is its attribute path in the model."""

    name: str
    inputs: tuple[InputSpec, ...]
    output_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SubmoduleFactory:
    """The factory of a sub-module spec: the parent model (checkpoint included) and the attribute path
    of one of its sub-modules. Plain data, so the sub-module spec can cross into an isolated process;
    loading.build_submodule builds it."""

    parent: ModelSpec
    path: str
    trust_checkpoint: bool = False

    @property
    def label(self) -> str:  # names the factory in reports and cache keys
        return f"{self.parent.name}.{self.path}"


# The gate used when a spec names none: the exported artifacts at full precision.
DEFAULT_GATE: Mapping[str, tuple[str, ...]] = {
    "cpu": ("torch:fp32", "torchscript:fp32", "ort:fp32"),
    "cuda": ("torch:fp32", "torchscript:fp32", "ort:fp32", "trt:fp32", "trt:fp16"),
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything deployval needs to know about a model to validate its deployment.

    `kind` says what `factory`/`path` holds: "module" (a callable returning an nn.Module, or its
    "pkg.module:function" path, or a SubmoduleFactory), "torchscript" or "onnx" (a file). For ONNX models the reference
    is ONNX Runtime fp32 on the CPU.
    """

    name: str
    inputs: tuple[InputSpec, ...]
    kind: str = "module"
    factory: str | Callable[..., Any] | SubmoduleFactory | None = None
    path: str | None = None
    checkpoint: str | None = None
    # "pkg.module:function" or callable (module, checkpoint_object) -> None; default: load a
    # state_dict (or a dict holding one under "state_dict"/"model"), strict.
    checkpoint_loader: str | Callable[..., Any] | None = None
    output_names: tuple[str, ...] | None = None
    description: str = ""
    export: ExportOptions = field(default_factory=ExportOptions)
    tolerances: ToleranceTable = field(default_factory=ToleranceTable)
    task: TaskSpec | None = None
    gate: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_GATE))
    # Run settings a heavy model wants by default (e.g. fewer timed iterations).
    run_defaults: Mapping[str, Any] = field(default_factory=dict)
    # Parts deployed on their own, validated with --submodule NAME (or all).
    submodules: tuple[SubmoduleSpec, ...] = ()
    # Non-tensor arguments of forward() (int, float, bool, str), passed by name on every call and
    # fixed in every export: `forward(x, sr=16000)` (--arg sr=16000).
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("module", "torchscript", "onnx"):
            raise UsageError(f"model '{self.name}': unknown kind '{self.kind}'")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise UsageError(f"model '{self.name}': duplicate input names {names}")

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise UsageError(f"model '{self.name}' has no input '{name}' (inputs: {', '.join(self.input_names)})")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    def with_input_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> ModelSpec:
        """A copy with some input shapes overridden; shapes the network cannot take are refused."""
        for name in shapes:
            self.input(name)
        return replace(
            self,
            inputs=tuple(i.with_shape(shapes[i.name]) if i.name in shapes else i for i in self.inputs),
        )

    def submodule(self, name: str, inputs: tuple[InputSpec, ...] = (), trust_checkpoint: bool = False) -> ModelSpec:
        """The spec of one sub-module: declared ones bring their input specs, any other attribute
        path needs `inputs`."""
        if self.kind != "module":
            raise UsageError(f"--submodule needs a PyTorch model; '{self.name}' is a {self.kind} file")
        declared = next((s for s in self.submodules if s.name == name), None)
        if declared is None and not inputs:
            known = ", ".join(s.name for s in self.submodules) or "none declared"
            raise UsageError(f"'{self.name}' declares no sub-module '{name}' (declared: {known}); for another "
                             "part give its input shapes with --input-shape")
        return ModelSpec(
            name=f"{self.name}.{name}",
            inputs=inputs or declared.inputs,  # type: ignore[union-attr]
            kind="module",
            factory=SubmoduleFactory(self, name, trust_checkpoint),
            output_names=declared.output_names if declared else None,
            description=f"sub-module '{name}' of {self.name}",
            export=self.export,
            tolerances=self.tolerances,
            gate=self.gate,
            run_defaults=self.run_defaults,
        )

    def gate_for(self, device: str) -> tuple[str, ...]:
        return tuple(self.gate.get(device, DEFAULT_GATE.get(device, ())))

    def to_dict(self) -> dict[str, Any]:
        factory = self.factory if isinstance(self.factory, str) or self.factory is None else _qualname(self.factory)
        return {
            "name": self.name,
            "kind": self.kind,
            "factory": factory,
            "path": self.path,
            "checkpoint": self.checkpoint,
            "description": self.description,
            "inputs": [i.to_dict() for i in self.inputs],
            "output_names": list(self.output_names) if self.output_names else None,
            "export": self.export.to_dict(),
            "task": None if self.task is None else {"kind": self.task.kind, "axis": self.task.axis},
            "arguments": dict(self.arguments) or None,
        }


def _qualname(obj: Any) -> str:
    if hasattr(obj, "label"):
        return str(obj.label)
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


@dataclass(frozen=True)
class RunConfig:
    """How to run a comparison: device, inputs, timing and caching."""

    device: str = "cpu"
    seed: int = 0
    # Each backend's own settings under its name, the fields of its typed `Options` ({"trt": {"workspace_mb":
    # 8192}}), from --backend-option or the dedicated flags that set them (--trt-workspace, --keep-int64...).
    backend_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    warmup: int = 1  # the correctness run counts as the first warm-up
    iterations: int | None = None  # None: as many as fit in time_budget_s (at least 1)
    time_budget_s: float = 2.0
    max_iterations: int = 1000
    atol: float | None = None  # override every tolerance's elementwise rule
    rtol: float | None = None
    tolerance: Tolerance | None = None  # judge every row by exactly these bounds (the spec's table aside)
    cache_dir: Path | None = None
    use_cache: bool = True
    exporter: str | None = None  # override the spec's exporter
    calibration: Path | None = None  # directory of .npy/.npz/.pt or image calibration samples for int8
    calibration_limit: int | None = None  # use the first N samples (by file name)
    calibration_preprocess: str | None = None  # how calibration images become inputs (preprocess.py)
    calibration_method: str = "minmax"  # or entropy, percentile
    # Nodes kept out of int8 quantization: fnmatch patterns over ONNX node names, or "op:Type".
    int8_exclude: tuple[str, ...] = ()
    int8_activation_matmuls: bool = False  # also quantize MatMuls of two activations (attention QK^T and AV)
    # Run backends in their own process: None = those that build native engines (TensorRT), or all
    # when a timeout is set; True = all; False = none.
    isolate: bool | None = None
    timeout_s: float | None = None  # per isolated backend; None = no limit
    # Modules (fnmatch patterns over module names) or ONNX op types ("op:InstanceNormalization") kept
    # in fp32 in the fp16 artifact; such modules are also exempt from the fp16 range findings.
    keep_fp32: tuple[str, ...] = ()
    repeat: int = 1  # correctness runs per row (and of the reference): any difference between them is reported
    # NaN/Inf in the reference (or golden outputs) are expected: masked out of the metrics and required at
    # the same positions, of the same kind, in every row (nonfinite.py); without it they are refused.
    allow_nonfinite: bool = False
    # Outputs judged slice by slice along an axis as well as whole (slices.py): --slices NAME:AXIS[=GROUPS]
    slices: tuple[Any, ...] = ()
    # What the model is for (task_checks.py): a check of each row's outputs, and what gates a row (norms,
    # task or both; None: both with a check, else norms)
    task_check: Any = None
    judge: str | None = None

    def to_args(self) -> list[str]:
        """The command-line options that make this configuration: every run setting that differs from
        the default, so a row's reproduction line cannot drop one. The model, its inputs and seed, the
        exporter (shared with `deployval export`), the device and the artifact cache are the
        invocation's, not the configuration's."""
        default = RunConfig()
        args: list[str] = []

        def flag(name: str, value: Any) -> None:
            args.extend([name, str(value)])

        for name, option in (("warmup", "--warmup"), ("iterations", "--iterations"), ("atol", "--atol"),
                             ("rtol", "--rtol"), ("calibration", "--calibration"),
                             ("calibration_limit", "--calibration-limit"),
                             ("calibration_preprocess", "--calibration-preprocess"),
                             ("calibration_method", "--calibration-method"), ("timeout_s", "--timeout"),
                             ("repeat", "--repeat")):
            value = getattr(self, name)
            if value is not None and value != getattr(default, name):
                flag(option, value)
        if self.tolerance is not None:
            flag("--tolerance", ",".join(f"{k}={v!r}" for k, v in self.tolerance.to_dict().items()))
        if self.iterations is None and self.time_budget_s != default.time_budget_s:
            flag("--time-budget", self.time_budget_s)
        for pattern in self.int8_exclude:
            flag("--int8-exclude", pattern)
        for pattern in self.keep_fp32:
            flag("--keep-fp32", pattern)
        if self.isolate is not None:
            args.append("--isolate" if self.isolate else "--no-isolate")
        if self.allow_nonfinite:
            args.append("--allow-nonfinite")
        for spec in self.slices:
            flag("--slices", spec.text)
        if self.task_check is not None:
            flag("--task", self.task_check.text)
        if self.judge is not None:
            flag("--judge", self.judge)
        return args + self.backend_args()

    def backend_args(self) -> list[str]:
        """The options that set how backends build and run, each as `--backend-option NAME.FIELD=VALUE`
        (what a dedicated flag set included: the same field, one way of writing it)."""
        args = ["--int8-activation-matmuls"] if self.int8_activation_matmuls else []
        return args + option_args(self.backend_options)

    def isolates(self, isolate_by_default: bool) -> bool:
        if self.isolate is not None:
            return self.isolate
        return isolate_by_default or self.timeout_s is not None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise UsageError(f"unknown device '{self.device}' ({' or '.join(DEVICES)})")
        for name, settings in self.backend_options.items():
            if not isinstance(settings, Mapping):  # a setting outside any backend's name reaches none of them
                raise UsageError(f"backend_options['{name}'] is not a backend's settings: give them under the "
                                 "backend's name, e.g. {'trt': {'keep_int64': True}} (deployval backends lists them)")
        if self.warmup < 1:
            raise UsageError("--warmup must be at least 1 (the correctness run is the first warm-up)")
        if self.iterations is not None and self.iterations < 0:
            raise UsageError("--iterations must be 0 or more")
        if not (self.time_budget_s > 0 and math.isfinite(self.time_budget_s)):
            raise UsageError("--time-budget must be a positive number of seconds")
        if self.calibration_preprocess:
            ImagePreprocess.parse(self.calibration_preprocess)  # a bad string fails before any work
        if self.calibration_limit is not None and self.calibration_limit < 1:
            raise UsageError("--calibration-limit must be at least 1")
        if self.calibration_method not in ("minmax", "entropy", "percentile"):
            raise UsageError(f"unknown calibration method '{self.calibration_method}' (minmax, entropy, percentile)")
        if self.calibration_limit is not None and self.calibration_limit < 1:
            raise UsageError("--calibration-limit must be at least 1")
        if self.timeout_s is not None and not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise UsageError("--timeout must be a positive number of seconds")
        if self.timeout_s is not None and self.isolate is False:
            raise UsageError("--timeout needs backends in their own process; drop --no-isolate")
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and math.isfinite(value)):
                raise UsageError(f"--{name} must be a finite number >= 0")
        judge_mode(self.judge, self.task_check)  # an unknown --judge, or one with no check to judge by, fails here

    @property
    def judging(self) -> str:
        """What gates a row: 'norms', 'task' or 'both'."""
        return judge_mode(self.judge, self.task_check)


def format_shape(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


JUDGE_MODES = ("norms", "task", "both")


def judge_mode(judge: str | None, check: Any) -> str:
    """The mode a run judges by (task_checks.py): the one given, else both with a check and norms without."""
    if judge is None:
        return "both" if check is not None else "norms"
    if judge not in JUDGE_MODES:
        raise UsageError(f"--judge '{judge}': choose from {', '.join(JUDGE_MODES)}")
    if judge != "norms" and check is None:
        raise UsageError(f"--judge {judge} needs a task check: --task pkg.module:function or a built-in "
                         "(ctc, sequence, detection)")
    return judge


@dataclass(frozen=True)
class KeepFp32:
    """--keep-fp32 patterns by what they name: modules (fnmatch over module names), ONNX nodes
    ("node:NAME", fnmatch over node names) and op types ("op:TYPE")."""

    modules: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()

    @classmethod
    def of(cls, patterns: Sequence[str]) -> KeepFp32:
        return cls(modules=tuple(p for p in patterns if not p.startswith(("op:", "node:"))),
                   nodes=tuple(p[5:] for p in patterns if p.startswith("node:")),
                   op_types=tuple(p[3:] for p in patterns if p.startswith("op:")))


# A run's per-backend options written back as flags (RunConfig.to_args); backends/options.py parses them.
def format_value(value: Any) -> str:
    """A value as `--backend-option` reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def option_args(options: Mapping[str, Any]) -> list[str]:
    """`--backend-option NAME.FIELD=VALUE` for every per-backend value in a run's backend options."""
    args: list[str] = []
    for backend, settings in options.items():
        if isinstance(settings, Mapping):
            for name, value in settings.items():
                args += ["--backend-option", f"{backend}.{name}={format_value(value)}"]
    return args
