"""TensorRT: an engine built from the pipeline's ONNX artifacts, run with torch tensors as buffers
on a non-default stream.

Precision lives in the artifact. fp32 builds from the simplified ONNX, fp16 from the fp16 ONNX,
int8 from the Q/DQ ONNX (explicit quantization), each after the int64 -> int32 pass unless
`keep_int64` is set. TensorRT 11 is always strongly typed and has no FP16/INT8 builder flags or
calibrators; TensorRT 10 also offers the builder-flag route for fp16 (`trt.fp16_route=flag`), and
the report says which route ran. TF32 is turned off so that fp32 engines are compared with
fp32 arithmetic. The decisions (routes, profiles, cache keys, bindings) are in tensorrt_plan.py.

Engines are cached under a key of the ONNX hash, the TensorRT version, the GPU and compute
capability, and the build settings; a cached engine that does not deserialize is rebuilt. A network
whose inputs include shape tensors is built at the first run, from that run's values.

API checked against the TensorRT Python bindings of release 10.0, 10.16 and 11.1 (NVIDIA/TensorRT,
python/src/infer/pyCore.cpp, pyGraph.cpp and python/src/parsers/pyOnnx.cpp): Builder.create_network(flags),
NetworkDefinitionCreationFlag.STRONGLY_TYPED (10: opt-in, 11: ignored), OnnxParser.parse_from_file,
num_errors/get_error(i), INetworkDefinition.num_inputs/get_input(i), ITensor.is_shape_tensor,
create_builder_config, set_memory_pool_limit(MemoryPoolType.WORKSPACE), BuilderFlag.TF32/FP16 (FP16
removed in 11), create_optimization_profile/set_shape/set_shape_input, add_optimization_profile,
build_serialized_network (None on failure), Runtime.deserialize_cuda_engine (None on failure),
num_io_tensors/get_tensor_name/get_tensor_mode/get_tensor_dtype/get_tensor_location/
is_shape_inference_io, set_input_shape/get_tensor_shape/set_tensor_address (bool)/infer_shapes,
execute_async_v3(stream handle), Logger(min_severity) with its min_severity attribute.
No pycuda: torch already owns the CUDA context, allocator and streams (see README).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import BackendError, BackendUnavailable, UsageError, first_line
from ..export.artifacts import ONNX_FP16_INT32, ONNX_INT8_INT32, ONNX_INT32
from .base import Runner
from .tensorrt_plan import (
    DEFAULT_WORKSPACE_MB,
    FP16_ROUTES,
    SUPPORTED_MAJORS,
    Binding,
    BuildPlan,
    EngineCache,
    Profile,
    TensorIO,
    bound_address,
    derive_profiles,
    engine_cache_key,
    onnx_digest,
    onnx_inputs,
    parse_trt_log,
    plan_bindings,
    plan_build,
    set_address,
    shape_tensor_candidates,
    shape_value_profiles,
    trt_major,
)

PLACEHOLDER_BYTES = 256  # stands in for empty tensors; torch's allocators give TensorRT's 256-byte alignment


# ---------------------------------------------------------------------------- TensorRT's log
_LOGGER: Any = None
_LOGGER_LOCK = threading.Lock()
_LOG_LINES: deque[str] = deque(maxlen=200)


def trt_logger(trt: Any) -> Any:
    """One process-wide trt.Logger (TensorRT wants the logger to outlive every builder and runtime).
    Its severity filter runs in C++: a Python trt.ILogger subclass is called for every message of
    every severity (pyCore.cpp, PyLogger::log takes the GIL and forwards each one), so thousands of
    VERBOSE build messages would cross into Python only to be dropped. trt.Logger prints what passes
    to stdout; outside `_collecting` only fatal errors pass."""
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            _LOGGER = trt.Logger(trt.Logger.INTERNAL_ERROR)
        return _LOGGER


def _flush_c_stdout() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:  # no C library handle (Windows): trt.Logger ends each line with std::endl anyway
        pass


@contextmanager
def native_stdout_captured() -> Iterator[list[str]]:
    """What native code writes to file descriptor 1 while the block runs, as lines in the yielded list
    once the block ends (the terminal never sees it)."""
    lines: list[str] = []
    with suppress(AttributeError, OSError, ValueError):
        sys.stdout.flush()
    _flush_c_stdout()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout to redirect: nothing to capture
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield lines
        finally:
            _flush_c_stdout()
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", errors="replace").splitlines())


@contextmanager
def _collecting(trt: Any) -> Iterator[None]:
    """TensorRT's warnings and errors of the block, kept for error messages instead of printed."""
    logger = trt_logger(trt)
    lines: list[str] = []
    logger.min_severity = trt.Logger.WARNING
    try:
        with native_stdout_captured() as lines:
            yield
    finally:
        logger.min_severity = trt.Logger.INTERNAL_ERROR
        _LOG_LINES.extend(parse_trt_log(lines))


def _log_tail(count: int = 8) -> str:
    lines = list(_LOG_LINES)
    errors = [ln for ln in lines if ln.startswith(("[ERROR]", "[INTERNAL_ERROR]"))]
    return " | ".join((errors or lines)[-count:]) or "TensorRT logged no warning or error"


def _explain(trt: Any, call: Callable[[], Any]) -> str:
    """TensorRT's own words for a failed call: the call again, with its log collected (failed enqueues
    and refused shapes or addresses are deterministic)."""
    _LOG_LINES.clear()
    try:
        with _collecting(trt):
            call()
    except Exception as exc:
        return f" ({first_line(exc)})"
    return f" ({_log_tail()})" if _LOG_LINES else ""


def create(trt: Any, factory: Callable[[Any], Any], what: str) -> Any:
    """A Builder or Runtime. Where TensorRT cannot start (no GPU, a driver or CUDA mismatch), pybind11
    only says `factory function returned nullptr`: the error carries what TensorRT logged as it failed."""
    _LOG_LINES.clear()
    failure: Exception | None = None
    with _collecting(trt):
        try:
            made = factory(trt_logger(trt))
        except Exception as exc:
            failure = exc
    if failure is not None:
        raise BackendError(f"TensorRT could not create its {what} ({first_line(failure)}): {_log_tail()}")
    return made


# ---------------------------------------------------------------------------- building
def _parse(trt: Any, builder: Any, plan: BuildPlan, onnx_path: Path) -> tuple[Any, Any, list[str]]:
    """The network and its parser (which owns the weights: keep it alive until the build is done)."""
    flags = 0
    if plan.strongly_typed and trt_major(trt.__version__) == 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger(trt))
    if parser.parse_from_file(str(onnx_path)):
        return network, parser, []
    return network, parser, [str(parser.get_error(i)) for i in range(parser.num_errors)] or [""]


def _shape_inputs(network: Any) -> tuple[str, ...]:
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    return tuple(t.name for t in inputs if t.is_shape_tensor)


def probe_shape_inputs(trt: Any, onnx_path: Path, plan: BuildPlan) -> tuple[str, ...]:
    """The inputs the parsed network uses as shape tensors (ITensor.is_shape_tensor is reliable once
    the network is complete). A model that does not parse has none here; the build says why."""
    builder = create(trt, trt.Builder, "builder")
    with _collecting(trt):
        network, _parser, errors = _parse(trt, builder, plan, onnx_path)
        return () if errors else _shape_inputs(network)


def _build(trt: Any, builder: Any, onnx_path: Path, plan: BuildPlan, profiles: Mapping[str, Profile],
           workspace_bytes: int, shape_values: Mapping[str, Profile]) -> tuple[Any, str]:
    network, _parser, errors = _parse(trt, builder, plan, onnx_path)
    if errors:  # the parser's own errors say it best; without them, the log will
        return None, "TensorRT's ONNX parser refused the model" + (f": {' | '.join(errors[:3])}" if errors[0] else "")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not plan.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.bf16_flag:
        config.set_flag(trt.BuilderFlag.BF16)
    shape_inputs = _shape_inputs(network)
    missing = [n for n in shape_inputs if n not in shape_values]
    if missing:
        return None, f"no values were given for the shape-tensor inputs {', '.join(missing)}"
    if profiles or shape_inputs:
        profile = builder.create_optimization_profile()
        try:
            for name, (minimum, opt, maximum) in profiles.items():
                profile.set_shape(name, minimum, opt, maximum)
            for name in shape_inputs:  # set_shape_input is for shape tensors only
                minimum, opt, maximum = shape_values[name]
                profile.set_shape_input(name, list(minimum), list(opt), list(maximum))
        except (RuntimeError, TypeError) as exc:
            return None, f"TensorRT rejected the optimization profile ({first_line(exc)})"
        if config.add_optimization_profile(profile) < 0:
            return None, f"TensorRT rejected the optimization profile {dict(profiles)} {dict(shape_values)}"
    serialized = builder.build_serialized_network(network, config)
    return (serialized, "") if serialized is not None else (None, "TensorRT could not build the engine")


def build_engine(trt: Any, onnx_path: Path, plan: BuildPlan, profiles: Mapping[str, Profile],
                 workspace_bytes: int, shape_values: Mapping[str, Profile] | None = None) -> bytes:
    builder = create(trt, trt.Builder, "builder")
    _LOG_LINES.clear()
    with _collecting(trt):
        serialized, problem = _build(trt, builder, onnx_path, plan, profiles, workspace_bytes, shape_values or {})
    if serialized is None:
        raise BackendError(problem if "parser refused the model:" in problem else f"{problem}: {_log_tail()}")
    return bytes(serialized)


def describe_io(trt: Any, engine: Any) -> list[TensorIO]:
    """The engine's I/O tensors as plan_bindings reads them."""
    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        mode = engine.get_tensor_mode(name)
        tensors.append(TensorIO(
            name=name,
            mode={trt.TensorIOMode.INPUT: "input", trt.TensorIOMode.OUTPUT: "output"}.get(mode, str(mode)),
            location="host" if engine.get_tensor_location(name) == trt.TensorLocation.HOST else "device",
            is_shape=bool(engine.is_shape_inference_io(name)),
            shape=tuple(engine.get_tensor_shape(name)),
            dtype=str(engine.get_tensor_dtype(name)).rsplit(".", 1)[-1],
        ))
    return tensors


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {getattr(trt, n): getattr(torch, t) for n, t in (
        ("float32", "float32"), ("float16", "float16"), ("bfloat16", "bfloat16"), ("int8", "int8"),
        ("int32", "int32"), ("int64", "int64"), ("bool", "bool"), ("uint8", "uint8")) if hasattr(trt, n)}
    if dtype not in table:
        raise BackendError(f"TensorRT I/O type {dtype} has no torch equivalent")
    return table[dtype]


# ---------------------------------------------------------------------------- the runner
class TensorRTRunner(Runner):
    name: ClassVar[str] = "trt"
    description: ClassVar[str] = "TensorRT engine from the pipeline's ONNX (fp32, fp16 ONNX, Q/DQ int8), torch buffers"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": ONNX_INT32, "fp16": ONNX_FP16_INT32, "bf16": ONNX_INT32,
                                              "int8": ONNX_INT8_INT32}
    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    isolate_by_default: ClassVar[bool] = True
    builds_engine: ClassVar[bool] = True

    @dataclass(frozen=True)
    class Options:
        """TensorRT's build settings (`--backend-option trt.FIELD=VALUE`, or the dedicated flags)."""

        workspace_mb: int = field(default=DEFAULT_WORKSPACE_MB, metadata={
            "help": "builder workspace limit in MiB", "flag": "--trt-workspace"})
        fp16_route: str = field(default="onnx", metadata={
            "help": "fp16 from the fp16 ONNX (onnx) or, TensorRT 10, BuilderFlag.FP16 (flag)",
            "flag": "--trt-fp16-route"})
        keep_int64: bool = field(default=False, metadata={
            "help": "build from the ONNX as is, without the int64 -> int32 pass",
            "flag": "--keep-int64"})

        def __post_init__(self) -> None:
            if self.fp16_route not in FP16_ROUTES:
                raise UsageError(f"unknown TensorRT fp16 route '{self.fp16_route}' ({' or '.join(FP16_ROUTES)})")
            if self.workspace_mb <= 0:
                raise UsageError("the TensorRT workspace must be a positive number of MiB")

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
        from .torch_common import torch_available

        ok, reason = torch_available("cuda")
        return (ok, reason if ok else f"{reason} (TensorRT's buffers are torch CUDA tensors)")

    @classmethod
    def artifact_for(cls, precision: str, options: Mapping[str, Any]) -> str:
        typed = cls.typed_options(options)
        return plan_build(precision, fp16_route=typed.fp16_route, keep_int64=typed.keep_int64).artifact

    # ------------------------------------------------------------------ hooks
    def activate_impl(self) -> None:
        import tensorrt as trt
        import torch

        from ._cuda import CudaStreamTimer, device_description

        self._torch, self._trt = torch, trt
        self.timer = CudaStreamTimer()
        self._gpu = device_description()
        self._plan = plan_build(self.precision, trt.__version__,
                                fp16_route=self.backend_options.fp16_route,
                                keep_int64=self.backend_options.keep_int64)
        onnx_path = Path(self.artifact.path or "")
        graph = onnx_inputs(onnx_path)
        specs = {s.name: s for s in self.options.get("input_specs", ())}
        self._profiles = derive_profiles(
            {name: list(value.dims) for name, value in graph.items()},
            {name: spec.shape for name, spec in specs.items()},
            {n: s.min_shape for n, s in specs.items() if getattr(s, "min_shape", None)},
            {n: s.max_shape for n, s in specs.items() if getattr(s, "max_shape", None)},
            {n: s.multiple_of for n, s in specs.items() if getattr(s, "multiple_of", None)},
        )
        self._workspace = int(self.backend_options.workspace_mb) * 2**20
        self._graph_dtypes = {name: value.dtype for name, value in graph.items()}
        self.input_names = tuple(graph)
        self.engine = self.context = self._runtime = self._bindings = None
        self._dtypes: dict[str, Any] = {}
        self._placeholders: dict[bool, Any] = {}
        self._in_flight: tuple[Any, ...] = ()
        self._shape_values: dict[str, Profile] = {}
        self.details.update(self._gpu, tensorrt=trt.__version__, route=self._plan.route)
        if self._profiles:
            self.details["profiles"] = {n: [list(s) for s in p] for n, p in self._profiles.items()}
        candidates = shape_tensor_candidates(graph)
        self._shape_inputs = probe_shape_inputs(trt, onnx_path, self._plan) if candidates else ()
        if self._shape_inputs:
            self.details["engine_built"] = ("at the first run: the build needs the values of the shape-tensor "
                                            f"inputs {', '.join(self._shape_inputs)}")
            return
        self._load_engine({})

    def _load_engine(self, shape_values: dict[str, Profile]) -> None:
        trt = self._trt
        key = engine_cache_key(onnx_digest(self.artifact), trt.__version__, self._gpu, self._plan, self._profiles,
                               self._workspace, shape_values)
        cache = EngineCache(self.options.get("engine_cache_dir"))
        runtime = create(trt, trt.Runtime, "runtime")
        self.details["engine_key"] = key[:16]
        engine = None
        blob = cache.load(key)
        if blob is not None:
            with _collecting(trt):
                engine = runtime.deserialize_cuda_engine(blob)
            if engine is None:
                cache.discard(key)
                self.details["engine_cache"] = "cached engine did not deserialize; rebuilt"
            else:
                self.details["engine_cache"] = "hit"
        if engine is None:
            start = time.perf_counter()
            blob = build_engine(trt, Path(self.artifact.path or ""), self._plan, self._profiles, self._workspace,
                                shape_values)
            self.details["engine_build_s"] = round(time.perf_counter() - start, 3)
            self.details.setdefault("engine_cache", "miss" if cache.directory else "off")
            with _collecting(trt):
                engine = runtime.deserialize_cuda_engine(blob)
            if engine is None:
                raise BackendError(f"TensorRT could not load the engine it built: {_log_tail()}")
            cache.store(key, blob, {"tensorrt": trt.__version__, **self._gpu, "route": self._plan.route})
        self.details["engine_bytes"] = len(blob)
        device_memory = getattr(engine, "device_memory_size_v2", None) or getattr(engine, "device_memory_size", None)
        if isinstance(device_memory, int):
            self.details["engine_device_memory_bytes"] = device_memory
        with _collecting(trt):
            context = engine.create_execution_context()
        if context is None:
            raise BackendError(f"TensorRT could not create an execution context (out of device memory?): "
                               f"{_log_tail()}")
        self._runtime, self.engine, self.context = runtime, engine, context
        self._bindings = plan_bindings(describe_io(trt, engine))
        self.input_names = tuple(b.name for b in self._bindings.inputs)
        self.output_names = tuple(b.name for b in self._bindings.outputs)
        self._dtypes = {b.name: _torch_dtype(trt, engine.get_tensor_dtype(b.name))
                        for b in (*self._bindings.inputs, *self._bindings.outputs)}
        self._shape_values = shape_values
        host = [f"{b.name} ({b.why})" for b in (*self._bindings.inputs, *self._bindings.outputs) if b.host]
        if host:
            self.details["host_tensors"] = host

    def deactivate_impl(self) -> None:
        self._in_flight = ()
        self._placeholders = {}
        del self.context
        del self.engine
        del self._runtime
        self.timer = None
        self._torch.cuda.empty_cache()

    def input_dtypes(self) -> Mapping[str, str]:
        if self._dtypes:
            return {n: str(self._dtypes[n]).replace("torch.", "") for n in self.input_names}
        return {n: self._graph_dtypes[n] for n in self.input_names}  # engine built at the first run

    def _on_host(self, name: str) -> bool:
        return self._bindings.host(name) if self._bindings else name in self._shape_inputs

    def to_device(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        from ._cuda import to_cuda

        placed = {}
        for name in self.input_names:
            if self._on_host(name):  # pinned: TensorRT may copy it to the device asynchronously
                array = feeds[name] if feeds[name].flags.c_contiguous else feeds[name].copy(order="C")
                placed[name] = self._torch.from_numpy(array).pin_memory()
            else:
                placed[name] = to_cuda(feeds[name]).contiguous()
        return placed

    def _placeholder(self, host: bool) -> int:
        """A small buffer standing in for empty tensors, whose own data_ptr() is 0."""
        if host not in self._placeholders:
            torch = self._torch
            self._placeholders[host] = (torch.empty(PLACEHOLDER_BYTES, dtype=torch.uint8, pin_memory=True) if host
                                        else torch.empty(PLACEHOLDER_BYTES, dtype=torch.uint8, device="cuda"))
        return int(self._placeholders[host].data_ptr())

    def _bind(self, binding: Binding, tensor: Any) -> None:
        name, memory = binding.name, ("host" if binding.host else "device")
        address = bound_address(name, tensor.data_ptr(), tensor.numel(), self._placeholder(binding.host))
        try:
            set_address(self.context, name, address, memory)
        except BackendError as exc:
            raise BackendError(exc.one_line() + _explain(self._trt, lambda: self.context.set_tensor_address(
                name, address))) from None

    def _infer_shapes(self) -> None:
        try:
            missing = self.context.infer_shapes()
        except RuntimeError as exc:
            raise BackendError(f"TensorRT's shape inference failed: {first_line(exc)}") from None
        if missing:
            raise BackendError(f"TensorRT lacks the shapes or values of {', '.join(missing)}")

    def _place(self, binding: Binding, tensor: Any) -> Any:
        """The feed where the engine wants it (before the first run the engine's bindings were unknown)."""
        if binding.host and tensor.is_cuda:
            return tensor.cpu().pin_memory()
        if not binding.host and not tensor.is_cuda:
            return tensor.to("cuda")
        return tensor

    def infer_impl(self, feeds: dict[str, Any]) -> dict[str, Any]:
        torch, trt = self._torch, self._trt
        if self.engine is None:  # shape-tensor inputs: built from this run's values
            self._load_engine(shape_value_profiles({n: feeds[n].reshape(-1).tolist() for n in self._shape_inputs}))
        for name, (values, _, _) in self._shape_values.items():
            given = tuple(feeds[name].reshape(-1).tolist())
            if given != values:
                raise BackendError(f"shape-tensor input '{name}' is {list(given)}; the engine was built for "
                                   f"{list(values)}")
        plan, context = self._bindings, self.context
        bound = {}
        for binding in plan.inputs:
            name = binding.name
            tensor = bound[name] = self._place(binding, feeds[name])
            shape = tuple(tensor.shape)
            if not context.set_input_shape(name, shape):
                raise BackendError(f"TensorRT refused shape {shape} for input '{name}'"
                                   + _explain(trt, lambda n=name, s=shape: context.set_input_shape(n, s)))
            self._bind(binding, tensor)
        if plan.infer_shapes:
            self._infer_shapes()  # shape-tensor values are bound: now output shapes can be known
        outputs = {}
        for binding in plan.outputs:
            name = binding.name
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"output '{name}' has a data-dependent shape {shape}, which this backend "
                                   "does not support")
            outputs[name] = (torch.empty(shape, dtype=self._dtypes[name], pin_memory=True) if binding.host
                             else torch.empty(shape, dtype=self._dtypes[name], device="cuda"))
            self._bind(binding, outputs[name])
        if plan.shape_outputs:
            self._infer_shapes()  # writes the values of shape-tensor outputs, now that they have addresses
        self._in_flight = (bound, outputs)  # buffers stay alive until the next run, after synchronize()
        with self.timer.timed():
            ok = context.execute_async_v3(self.timer.handle)
        if not ok:
            raise BackendError("TensorRT execution failed"
                               + (_explain(trt, lambda: context.execute_async_v3(self.timer.handle))
                                  or ": TensorRT logged no error"))
        return outputs

    def synchronize(self) -> None:
        self.timer.synchronize()

    def device_time_ms(self) -> float | None:
        return self.timer.elapsed_ms()

    def to_host(self, outputs: dict[str, Any]) -> dict[str, Any]:
        from .torch_common import tensors_to_host

        return tensors_to_host(outputs, as_float32=True)
