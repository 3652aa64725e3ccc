"""TensorRT: an engine built from the pipeline's ONNX artifacts, run with torch CUDA tensors as
device buffers on a non-default stream.

Precision lives in the artifact. fp32 builds from the simplified ONNX, fp16 from the fp16 ONNX,
int8 from the Q/DQ ONNX (explicit quantization), each after the int64 -> int32 pass unless
`keep_int64` is set. TensorRT 11 is always strongly typed and has no FP16/INT8 builder flags or
calibrators; TensorRT 10 also offers the builder-flag route for fp16 (`trt_fp16_route="flag"`),
and the report says which route ran. TF32 is turned off so that fp32 engines are compared with
fp32 arithmetic.

Engines are cached under a key of the ONNX hash, the TensorRT version, the GPU and compute
capability, and the build settings; a cached engine that does not deserialize is rebuilt.

API checked against the TensorRT Python bindings of release 10.16 and 11.1 (NVIDIA/TensorRT,
python/src/infer/pyCore.cpp and python/src/parsers/pyOnnx.cpp): Builder.create_network(flags),
NetworkDefinitionCreationFlag.STRONGLY_TYPED (10: opt-in, 11: ignored), OnnxParser.parse_from_file,
num_errors/get_error(i), create_builder_config, set_memory_pool_limit(MemoryPoolType.WORKSPACE),
BuilderFlag.TF32/FP16 (FP16 removed in 11), create_optimization_profile/set_shape,
add_optimization_profile, build_serialized_network (None on failure), Runtime.deserialize_cuda_engine
(None on failure), num_io_tensors/get_tensor_name/get_tensor_mode/get_tensor_dtype,
set_input_shape/get_tensor_shape/set_tensor_address, execute_async_v3(stream handle).
No pycuda: torch already owns the CUDA context, allocator and streams (see README).
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from .._util import atomic_write_bytes, atomic_write_json, sha256_json
from ..errors import BackendError, BackendUnavailable, UsageError, first_line
from .base import ONNX, ONNX_FP16, ONNX_FP16_INT32, ONNX_INT8, ONNX_INT8_INT32, ONNX_INT32, Runner

SUPPORTED_MAJORS = (10, 11)
FP16_ROUTES = ("onnx", "flag")
DEFAULT_WORKSPACE_MB = 4096


# ---------------------------------------------------------------------------- pure planning
@dataclass(frozen=True)
class BuildPlan:
    """How an engine is built for one precision, decided before TensorRT is touched."""

    precision: str
    route: str  # for the report
    artifact: str  # artifact kind the engine is built from
    strongly_typed: bool  # TensorRT 10: set the STRONGLY_TYPED network flag (11: always on)
    fp16_flag: bool = False  # TensorRT 10 only: BuilderFlag.FP16 on the fp32 ONNX
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
    if precision == "int8":
        return BuildPlan("int8", "Q/DQ ONNX (explicit quantization), strongly typed",
                         ONNX_INT8 if keep_int64 else ONNX_INT8_INT32, strongly_typed=True)
    raise UsageError(f"TensorRT has no {precision} mode (fp32, fp16, int8)")


Profile = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def derive_profiles(
    onnx_dims: Mapping[str, Sequence[int | None]],
    shapes: Mapping[str, Sequence[int]],
    min_shapes: Mapping[str, Sequence[int]] | None = None,
    max_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Profile]:
    """min/opt/max per input for an optimization profile: static dimensions are fixed; dynamic ones
    (None in the ONNX) take opt from the run's shape and min/max from the input spec (default 1 and
    the run's shape). Only inputs with a dynamic dimension get a profile."""
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
        low = tuple(min_shapes[name]) if min_shapes and name in min_shapes else None
        high = tuple(max_shapes[name]) if max_shapes and name in max_shapes else None
        minimum = tuple(o if d is not None else (low[i] if low else 1) for i, (d, o) in enumerate(zip(dims, opt)))
        maximum = tuple(o if d is not None else (high[i] if high else o) for i, (d, o) in enumerate(zip(dims, opt)))
        if not all(a <= b <= c for a, b, c in zip(minimum, opt, maximum)):
            raise UsageError(f"input '{name}': profile min {minimum} <= opt {opt} <= max {maximum} does not hold")
        profiles[name] = (minimum, opt, maximum)
    return profiles


def onnx_digest(artifact: Any) -> str:
    """The ONNX file's content hash for the engine cache key: the store's, or read from the file for
    graphs made on the fly (debug's exposed graphs carry none, and an empty hash would let two graphs
    with the same inputs share one cached engine)."""
    if artifact.sha256:
        return str(artifact.sha256)
    from .._util import sha256_file

    return sha256_file(Path(artifact.path)) if artifact.path and Path(artifact.path).is_file() else ""


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu: Mapping[str, Any], plan: BuildPlan,
                     profiles: Mapping[str, Profile], workspace_bytes: int) -> str:
    """Everything an engine depends on: the model bytes, TensorRT, the GPU, and the build settings."""
    return sha256_json({
        "onnx": onnx_sha256,
        "tensorrt": trt_version,
        "gpu": gpu.get("gpu"),
        "compute_capability": gpu.get("compute_capability"),
        "plan": asdict(plan),
        "profiles": {k: [list(s) for s in v] for k, v in sorted(profiles.items())},
        "workspace": workspace_bytes,
    })


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
        import hashlib

        if meta.get("key") != key or meta.get("sha256") != hashlib.sha256(blob).hexdigest():
            return None
        return blob

    def store(self, key: str, blob: bytes, meta: Mapping[str, Any]) -> None:
        path = self.path(key)
        if path is None:
            return
        import hashlib

        atomic_write_bytes(path, blob)
        atomic_write_json(path.with_suffix(".json"), {"key": key, "sha256": hashlib.sha256(blob).hexdigest(), **meta})

    def discard(self, key: str) -> None:
        path = self.path(key)
        if path is not None:
            for target in (path, path.with_suffix(".json")):
                target.unlink(missing_ok=True)


def onnx_input_dims(path: Path) -> dict[str, list[int | None]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return {
        value.name: [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        for value in model.graph.input
        if value.name not in initializers
    }


# ---------------------------------------------------------------------------- TensorRT glue
_LOGGER: Any = None
_LOGGER_LOCK = threading.Lock()


def _logger(trt: Any) -> Any:
    """One process-wide logger (TensorRT wants it to outlive every builder and runtime) that keeps
    the recent messages so that a failed build can show its log."""
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            class CapturingLogger(trt.ILogger):  # pattern from the ILogger docstring
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)
                    self.lines: deque[str] = deque(maxlen=200)

                def log(self, severity: Any, msg: str) -> None:
                    if severity <= trt.ILogger.Severity.INFO:
                        self.lines.append(f"[{str(severity).rsplit('.', 1)[-1]}] {msg}")

            _LOGGER = CapturingLogger()
        return _LOGGER


def _log_tail(logger: Any, count: int = 8) -> str:
    lines = list(logger.lines)
    errors = [ln for ln in lines if ln.startswith(("[ERROR]", "[INTERNAL_ERROR]"))]
    return " | ".join((errors or lines)[-count:])


def build_engine(trt: Any, onnx_path: Path, plan: BuildPlan, profiles: Mapping[str, Profile],
                 workspace_bytes: int) -> bytes:
    logger = _logger(trt)
    logger.lines.clear()
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed and trt_major(trt.__version__) == 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(f"TensorRT's ONNX parser refused the model: {' | '.join(errors[:3]) or _log_tail(logger)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not plan.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (minimum, opt, maximum) in profiles.items():
            profile.set_shape(name, minimum, opt, maximum)
        if config.add_optimization_profile(profile) < 0:
            raise BackendError(f"TensorRT rejected the optimization profile {dict(profiles)}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT could not build the engine: {_log_tail(logger)}")
    return bytes(serialized)


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {getattr(trt, n): getattr(torch, t) for n, t in (
        ("float32", "float32"), ("float16", "float16"), ("bfloat16", "bfloat16"), ("int8", "int8"),
        ("int32", "int32"), ("int64", "int64"), ("bool", "bool"), ("uint8", "uint8")) if hasattr(trt, n)}
    if dtype not in table:
        raise BackendError(f"TensorRT I/O type {dtype} has no torch equivalent")
    return table[dtype]


class TensorRTRunner(Runner):
    name: ClassVar[str] = "trt"
    description: ClassVar[str] = "TensorRT engine from the pipeline's ONNX (fp32, fp16 ONNX, Q/DQ int8), torch buffers"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": ONNX_INT32, "fp16": ONNX_FP16_INT32, "int8": ONNX_INT8_INT32}
    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    isolate_by_default: ClassVar[bool] = True

    @classmethod
    def available(cls, device: str = "cuda") -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, ("the tensorrt Python package is not installed (TensorRT runs where it is preinstalled, "
                           "e.g. NVIDIA's TensorRT containers; see README, 'Running on a GPU')")
        try:
            import tensorrt
        except Exception as exc:  # bindings without libnvinfer raise ImportError/OSError
            return False, f"tensorrt is installed but does not load: {first_line(exc)}"
        version = getattr(tensorrt, "__version__", "?")
        try:
            if trt_major(version) not in SUPPORTED_MAJORS:
                return False, f"TensorRT {version} is not supported (deployval needs TensorRT 10 or 11)"
        except BackendUnavailable as exc:
            return False, exc.one_line()
        from ._torch import torch_available

        ok, reason = torch_available("cuda")
        return (ok, reason if ok else f"{reason} (TensorRT's buffers are torch CUDA tensors)")

    @classmethod
    def artifact_for(cls, precision: str, options: Mapping[str, Any]) -> str:
        return plan_build(precision, fp16_route=options.get("trt_fp16_route", "onnx"),
                          keep_int64=bool(options.get("keep_int64"))).artifact

    # ------------------------------------------------------------------ hooks
    def activate_impl(self) -> None:
        import tensorrt as trt
        import torch

        from ._cuda import CudaStreamTimer, device_description

        self._torch, self._trt = torch, trt
        self.timer = CudaStreamTimer()
        gpu = device_description()
        plan = plan_build(self.precision, trt.__version__, fp16_route=self.options.get("trt_fp16_route", "onnx"),
                          keep_int64=bool(self.options.get("keep_int64")))
        specs = {s.name: s for s in self.options.get("input_specs", ())}
        profiles = derive_profiles(
            onnx_input_dims(Path(self.artifact.path or "")),
            {name: spec.shape for name, spec in specs.items()},
            {n: s.min_shape for n, s in specs.items() if getattr(s, "min_shape", None)},
            {n: s.max_shape for n, s in specs.items() if getattr(s, "max_shape", None)},
        )
        workspace = int(self.options.get("trt_workspace_mb") or DEFAULT_WORKSPACE_MB) * 2**20
        key = engine_cache_key(onnx_digest(self.artifact), trt.__version__, gpu, plan, profiles, workspace)
        cache = EngineCache(self.options.get("engine_cache_dir"))
        runtime = trt.Runtime(_logger(trt))
        self.details.update(gpu, tensorrt=trt.__version__, route=plan.route, engine_key=key[:16])
        engine = None
        blob = cache.load(key)
        if blob is not None:
            engine = runtime.deserialize_cuda_engine(blob)
            if engine is None:
                cache.discard(key)
                self.details["engine_cache"] = "cached engine did not deserialize; rebuilt"
            else:
                self.details["engine_cache"] = "hit"
        if engine is None:
            start = time.perf_counter()
            blob = build_engine(trt, Path(self.artifact.path or ""), plan, profiles, workspace)
            self.details["engine_build_s"] = round(time.perf_counter() - start, 3)
            self.details.setdefault("engine_cache", "miss" if cache.directory else "off")
            engine = runtime.deserialize_cuda_engine(blob)
            if engine is None:
                raise BackendError(f"TensorRT could not load the engine it built: {_log_tail(_logger(trt))}")
            cache.store(key, blob, {"tensorrt": trt.__version__, **gpu, "route": plan.route})
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError("TensorRT could not create an execution context (out of device memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._dtypes = {n: _torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}

    def deactivate_impl(self) -> None:
        del self.context
        del self.engine
        self.timer = None
        self._torch.cuda.empty_cache()

    def input_dtypes(self) -> Mapping[str, str]:
        return {n: str(self._dtypes[n]).replace("torch.", "") for n in self.input_names}

    def to_device(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        from ._cuda import to_cuda

        return {name: to_cuda(feeds[name]).contiguous() for name in self.input_names}

    def infer_impl(self, feeds: dict[str, Any]) -> dict[str, Any]:
        torch, context = self._torch, self.context
        for name, tensor in feeds.items():
            if not context.set_input_shape(name, tuple(tensor.shape)):
                raise BackendError(f"TensorRT refused shape {tuple(tensor.shape)} for input '{name}'")
            context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"output '{name}' has a data-dependent shape {shape}, which this backend "
                                   "does not support")
            outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device="cuda")
            context.set_tensor_address(name, outputs[name].data_ptr())
        with self.timer.timed():
            ok = context.execute_async_v3(self.timer.handle)
        if not ok:
            raise BackendError(f"TensorRT execution failed: {_log_tail(_logger(self._trt))}")
        return outputs

    def synchronize(self) -> None:
        self.timer.synchronize()

    def device_time_ms(self) -> float | None:
        return self.timer.elapsed_ms()

    def to_host(self, outputs: dict[str, Any]) -> dict[str, Any]:
        from ._torch import tensors_to_host

        return tensors_to_host(outputs, as_float32=True)
