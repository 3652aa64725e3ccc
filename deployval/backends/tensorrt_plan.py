"""The TensorRT backend's decisions, made without TensorRT: the build route per precision and version,
optimization profiles, engine-cache keys, how each engine tensor is bound (host or device memory),
and reading TensorRT's log. `tensorrt.py` applies them; tests/test_tensorrt_planning.py checks them
on machines without a GPU.

Sources read for the binding rules (NVIDIA/TensorRT, release 10.0 and 11.1): NvInferRuntime.h
(`ICudaEngine::getTensorLocation`, `isShapeInferenceIO`; `IExecutionContext::setTensorAddress`: kHOST
tensors take a host pointer, every tensor a non-null one; `inferShapes`), python/src/infer/pyCore.cpp
(`set_tensor_address` returns the bool of setTensorAddress; `IOptimizationProfile.set_shape_input`;
the `trt.Logger` line format), and Polygraphy's TrtRunner (`backend/trt/runner.py`: shape-tensor
inputs bound from host memory) and `backend/trt/util.py` (`_get_array_on_gpu`: an empty tensor
still gets a buffer, since a null pointer is refused).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._util import atomic_write_bytes, atomic_write_json, sha256_json
from ..errors import BackendError, BackendUnavailable, UsageError
from ..export.artifacts import ONNX, ONNX_FP16, ONNX_FP16_INT32, ONNX_INT8, ONNX_INT8_INT32, ONNX_INT32

SUPPORTED_MAJORS = (10, 11)
FP16_ROUTES = ("onnx", "flag")
DEFAULT_WORKSPACE_MB = 4096


# ---------------------------------------------------------------------------- build route
@dataclass(frozen=True)
class BuildPlan:
    """How an engine is built for one precision, decided before TensorRT is touched."""

    precision: str
    route: str  # for the report
    artifact: str  # artifact kind the engine is built from
    strongly_typed: bool  # TensorRT 10: set the STRONGLY_TYPED network flag (11: always on)
    fp16_flag: bool = False  # TensorRT 10 only: BuilderFlag.FP16 on the fp32 ONNX
    bf16_flag: bool = False  # TensorRT 10 only: BuilderFlag.BF16 on the fp32 ONNX
    tf32: bool = False


def trt_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise BackendUnavailable(f"cannot read the TensorRT version '{version}'") from None


def plan_build(precision: str, trt_version: str | None = None, *, fp16_route: str = "onnx",
               keep_int64: bool = False) -> BuildPlan:
    """The build route for `precision`; with a version, also checks that this TensorRT offers it."""
    if fp16_route not in FP16_ROUTES:
        raise UsageError(f"unknown TensorRT fp16 route '{fp16_route}' (onnx or flag)")
    major = trt_major(trt_version) if trt_version else None
    if major is not None and major not in SUPPORTED_MAJORS:
        raise BackendUnavailable(f"TensorRT {trt_version} is not supported (deployval needs TensorRT 10 or 11)")
    fp32_kind = ONNX if keep_int64 else ONNX_INT32
    if precision == "fp32":
        return BuildPlan("fp32", "fp32 ONNX, strongly typed, TF32 off", fp32_kind, strongly_typed=True)
    if precision == "fp16":
        if fp16_route == "flag":
            if major is not None and major >= 11:
                raise UsageError(
                    f"TensorRT {trt_version} has no FP16 builder flag (strong typing is always on); "
                    "use the fp16 ONNX route (--trt-fp16-route onnx)"
                )
            return BuildPlan("fp16", "builder flag FP16 on the fp32 ONNX (TensorRT 10, weakly typed)", fp32_kind,
                             strongly_typed=False, fp16_flag=True)
        return BuildPlan("fp16", "fp16 ONNX (fp32 I/O), strongly typed", ONNX_FP16 if keep_int64 else ONNX_FP16_INT32,
                         strongly_typed=True)
    if precision == "bf16":
        if major is not None and major >= 11:
            raise BackendUnavailable(
                f"TensorRT {trt_version} has no BF16 builder flag (strong typing is always on) and deployval makes "
                "no bf16 ONNX: bf16 on TensorRT needs TensorRT 10"
            )
        return BuildPlan("bf16", "builder flag BF16 on the fp32 ONNX (TensorRT 10, weakly typed)", fp32_kind,
                         strongly_typed=False, bf16_flag=True)
    if precision == "int8":
        return BuildPlan("int8", "Q/DQ ONNX (explicit quantization), strongly typed",
                         ONNX_INT8 if keep_int64 else ONNX_INT8_INT32, strongly_typed=True)
    raise UsageError(f"TensorRT has no {precision} mode (fp32, fp16, bf16, int8)")


# ---------------------------------------------------------------------------- optimization profiles
Profile = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def _declared(name: str, what: str, given: Sequence[int] | None, rank: int) -> tuple[int, ...] | None:
    if given is None:
        return None
    shape = tuple(int(d) for d in given)
    if len(shape) != rank:
        raise UsageError(f"input '{name}': {what} {shape} has rank {len(shape)}; the ONNX declares rank {rank}")
    return shape


def derive_profiles(
    onnx_dims: Mapping[str, Sequence[int | None]],
    shapes: Mapping[str, Sequence[int]],
    min_shapes: Mapping[str, Sequence[int]] | None = None,
    max_shapes: Mapping[str, Sequence[int]] | None = None,
    multiples: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Profile]:
    """min/opt/max per input for an optimization profile. Static dimensions are fixed; dynamic ones
    (None in the ONNX) take opt from the run's shape, and min/max from the input spec, by default the
    smallest size the network takes (its `multiple_of`, else 1) and the run's shape. A min of 1 would
    make a network that needs multiples of 16 unbuildable. Only inputs with a dynamic dimension get a
    profile."""
    profiles: dict[str, Profile] = {}
    for name, dims in onnx_dims.items():
        if name not in shapes:
            raise UsageError(f"no shape for TensorRT input '{name}'")
        opt = tuple(int(d) for d in shapes[name])
        if len(opt) != len(dims):
            raise UsageError(f"input '{name}' has rank {len(opt)}; the ONNX declares rank {len(dims)}")
        for axis, (declared, actual) in enumerate(zip(dims, opt)):
            if declared is not None and declared != actual:
                raise UsageError(f"input '{name}' dim {axis} is {actual}; the ONNX fixes it at {declared}")
        if all(d is not None for d in dims):
            continue
        step = _declared(name, "multiple_of", (multiples or {}).get(name), len(dims)) or (1,) * len(dims)
        step = tuple(max(m, 1) for m in step)  # 0 and 1 both mean "any size"
        low = _declared(name, "min_shape", (min_shapes or {}).get(name), len(dims))
        high = _declared(name, "max_shape", (max_shapes or {}).get(name), len(dims))
        dynamic = [axis for axis, d in enumerate(dims) if d is None]
        for what, shape in (("shape", opt), ("min_shape", low), ("max_shape", high)):
            for axis in dynamic if shape is not None else ():
                if shape[axis] < 1 or shape[axis] % step[axis]:
                    raise UsageError(f"input '{name}': {what} dim {axis} = {shape[axis]} is not a positive multiple "
                                     f"of {step[axis]}, which the network needs")
        minimum = tuple(o if dims[i] is not None else (low[i] if low else step[i]) for i, o in enumerate(opt))
        maximum = tuple(o if dims[i] is not None else (high[i] if high else o) for i, o in enumerate(opt))
        if not all(a <= b <= c for a, b, c in zip(minimum, opt, maximum)):
            raise UsageError(f"input '{name}': profile min {minimum} <= opt {opt} <= max {maximum} does not hold")
        profiles[name] = (minimum, opt, maximum)
    return profiles


def shape_value_profiles(values: Mapping[str, Iterable[Any]]) -> dict[str, Profile]:
    """min/opt/max values for shape-tensor inputs (IOptimizationProfile.set_shape_input): the run's own
    values for all three, as the build needs real values to size what they shape. An engine built
    this way takes exactly those values."""
    profiles: dict[str, Profile] = {}
    for name, given in values.items():
        flat = tuple(int(v) for v in given)
        profiles[name] = (flat, flat, flat)
    return profiles


# ---------------------------------------------------------------------------- the ONNX's inputs
@dataclass(frozen=True)
class OnnxInput:
    dims: tuple[int | None, ...]  # None: dynamic
    dtype: str  # numpy name: float32, int64, ...


def onnx_inputs(path: Path) -> dict[str, OnnxInput]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    found = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        found[value.name] = OnnxInput(dims, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name)
    return found


def onnx_input_dims(path: Path) -> dict[str, list[int | None]]:
    return {name: list(value.dims) for name, value in onnx_inputs(path).items()}


def shape_tensor_candidates(inputs: Mapping[str, OnnxInput]) -> tuple[str, ...]:
    """Inputs that may be shape tensors: TensorRT requires int32/int64, rank 0 or 1 and fixed dimensions
    (IOptimizationProfile.set_shape_input). Only the parsed network can say which really are."""
    return tuple(name for name, value in inputs.items()
                 if value.dtype in ("int32", "int64") and len(value.dims) <= 1 and None not in value.dims)


# ---------------------------------------------------------------------------- engine cache
def onnx_digest(artifact: Any) -> str:
    """The ONNX file's content hash for the engine cache key: the store's, or read from the file for
    graphs made on the fly (debug's exposed graphs carry none, and an empty hash would let two graphs
    with the same inputs share one cached engine)."""
    if artifact.sha256:
        return str(artifact.sha256)
    from .._util import sha256_file

    return sha256_file(Path(artifact.path)) if artifact.path and Path(artifact.path).is_file() else ""


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu: Mapping[str, Any], plan: BuildPlan,
                     profiles: Mapping[str, Profile], workspace_bytes: int,
                     shape_values: Mapping[str, Profile] | None = None) -> str:
    """Everything an engine depends on: the model bytes, TensorRT, the GPU, and the build settings."""
    key: dict[str, Any] = {
        "onnx": onnx_sha256,
        "tensorrt": trt_version,
        "gpu": gpu.get("gpu"),
        "compute_capability": gpu.get("compute_capability"),
        "plan": asdict(plan),
        "profiles": {k: [list(s) for s in v] for k, v in sorted(profiles.items())},
        "workspace": workspace_bytes,
    }
    if shape_values:  # only then, so that engines without shape-tensor inputs keep their keys
        key["shape_values"] = {k: [list(s) for s in v] for k, v in sorted(shape_values.items())}
    return sha256_json(key)


class EngineCache:
    """Serialized engines on disk, each with a sidecar holding its hash; a damaged entry reads as a
    miss. With no directory nothing is cached."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = Path(directory) if directory else None

    def path(self, key: str) -> Path | None:
        return self.directory / f"{key[:32]}.engine" if self.directory else None

    def load(self, key: str) -> bytes | None:
        path = self.path(key)
        if path is None or not path.exists():
            return None
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            blob = path.read_bytes()
        except (OSError, ValueError):
            return None
        if meta.get("key") != key or meta.get("sha256") != hashlib.sha256(blob).hexdigest():
            return None
        return blob

    def store(self, key: str, blob: bytes, meta: Mapping[str, Any]) -> None:
        path = self.path(key)
        if path is None:
            return
        atomic_write_bytes(path, blob)
        atomic_write_json(path.with_suffix(".json"), {"key": key, "sha256": hashlib.sha256(blob).hexdigest(), **meta})

    def discard(self, key: str) -> None:
        path = self.path(key)
        if path is not None:
            for target in (path, path.with_suffix(".json")):
                target.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- binding engine tensors
@dataclass(frozen=True)
class TensorIO:
    """One engine I/O tensor as TensorRT describes it (get_tensor_mode, get_tensor_location,
    is_shape_inference_io, get_tensor_shape, get_tensor_dtype)."""

    name: str
    mode: str  # "input" | "output"
    location: str  # "device" | "host"
    is_shape: bool
    shape: tuple[int, ...]  # -1 for dimensions set at run time
    dtype: str


@dataclass(frozen=True)
class Binding:
    name: str
    host: bool  # bind a host pointer (the values themselves), not a device one
    why: str = ""  # for error messages: why host memory


@dataclass(frozen=True)
class BindingPlan:
    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]
    # Shape-tensor inputs: their values (host) must be bound before output shapes are asked for,
    # then context.infer_shapes() says whether anything is still missing.
    shape_inputs: tuple[str, ...] = ()
    # Shape-tensor outputs: context.infer_shapes() writes their values once their addresses are set.
    shape_outputs: tuple[str, ...] = ()

    @property
    def infer_shapes(self) -> bool:
        return bool(self.shape_inputs or self.shape_outputs)

    def host(self, name: str) -> bool:
        return any(b.host for b in (*self.inputs, *self.outputs) if b.name == name)


def plan_bindings(tensors: Sequence[TensorIO]) -> BindingPlan:
    """Where each tensor's buffer lives. Shape tensors (is_shape_inference_io) are read or written by
    TensorRT's shape calculations on the CPU, and tensors TensorRT places on the host
    (TensorLocation.HOST) are accessed there: both take host memory; everything else device memory."""
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise BackendError(f"the engine lists an I/O tensor twice: {names}")
    inputs, outputs, shape_inputs, shape_outputs = [], [], [], []
    for tensor in tensors:
        if tensor.location not in ("device", "host"):
            raise BackendError(f"TensorRT tensor '{tensor.name}' has an unknown location '{tensor.location}'")
        why = "shape tensor" if tensor.is_shape else ("TensorRT keeps it on the host" if tensor.location == "host"
                                                       else "")
        binding = Binding(tensor.name, host=bool(why), why=why)
        if tensor.mode == "input":
            inputs.append(binding)
            if tensor.is_shape:
                shape_inputs.append(tensor.name)
        elif tensor.mode == "output":
            outputs.append(binding)
            if tensor.is_shape:
                shape_outputs.append(tensor.name)
        else:
            raise BackendError(f"TensorRT tensor '{tensor.name}' is neither an input nor an output ({tensor.mode})")
    return BindingPlan(tuple(inputs), tuple(outputs), tuple(shape_inputs), tuple(shape_outputs))


def bound_address(name: str, data_ptr: int, numel: int, placeholder: int) -> int:
    """The address to give TensorRT: a tensor with no elements has no storage (data_ptr 0), which
    enqueueV3 refuses, so it gets a small placeholder buffer that nothing reads or writes."""
    if numel == 0:
        if not placeholder:
            raise BackendError(f"no placeholder buffer for the empty tensor '{name}'")
        return placeholder
    if not data_ptr:
        raise BackendError(f"tensor '{name}' has {numel} elements but no memory")
    return data_ptr


def set_address(context: Any, name: str, address: int, memory: str) -> None:
    """IExecutionContext.set_tensor_address returns False when TensorRT refuses the address."""
    if not context.set_tensor_address(name, address):
        raise BackendError(f"TensorRT refused the {memory} address {address:#x} for tensor '{name}'")


# ---------------------------------------------------------------------------- TensorRT's log
_TRT_LINE = re.compile(r"^\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\] \[TRT\] \[([FEWIV])\] ?(.*)$")
_SEVERITY = {"F": "INTERNAL_ERROR", "E": "ERROR", "W": "WARNING", "I": "INFO", "V": "VERBOSE"}


def parse_trt_log(lines: Iterable[str]) -> list[str]:
    """`[SEVERITY] message` per message from what trt.Logger printed ("[MM/DD/YYYY-HH:MM:SS] [TRT] [W]
    message", python/src/infer/pyCore.cpp DefaultLogger::log); lines without the prefix continue the
    message before them (multi-line messages) or, first, stand alone."""
    messages: list[str] = []
    for line in lines:
        line = line.rstrip("\r\n")
        match = _TRT_LINE.match(line)
        if match:
            messages.append(f"[{_SEVERITY[match.group(1)]}] {match.group(2)}")
        elif line.strip():
            if messages:
                messages[-1] += f" {line.strip()}"
            else:
                messages.append(line.strip())
    return messages
