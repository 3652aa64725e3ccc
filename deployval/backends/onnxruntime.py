"""ONNX Runtime: the exported ONNX at fp32, fp16 (the fp16 ONNX) or int8 (the Q/DQ ONNX); the CPU
provider, or the CUDA provider with `--device cuda`.

ONNX Runtime silently falls back to the CPU when a GPU provider cannot load, and its Python layer
retries a session whose provider failed to build with the remaining providers (printing the cause
on stdout), so fallback is switched off, that print is kept, and the session's active providers are
checked: a CUDA result that ran on the CPU would be a lie.
API checked against onnxruntime 1.32 (python/onnxruntime_inference_collection.py):
InferenceSession(path, options, providers=[(name, options)], enable_fallback=0) (the keyword is read
from **kwargs; older versions ignore it), Session.disable_fallback(), get_providers(),
get_provider_options(), io_binding() / bind_input(...) / bind_output(name, "cuda") /
run_with_iobinding / get_outputs(). CUDA provider options (cuda_execution_provider_info.cc):
device_id, user_compute_stream, use_tf32 (a bool parsed from "0"/"1"; onnxruntime >= 1.18).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..errors import BackendError, BackendUnavailable, first_line
from ..export.artifacts import ONNX, ONNX_FP16, ONNX_INT8
from .base import Runner

ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32",
    "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
FALLBACK_MARK = "EP Error"  # what onnxruntime's Python layer prints before it retries with other providers


def cuda_provider_options(stream: int | None = None) -> dict[str, str]:
    """The CUDA provider's options. TF32 is off at every precision: `use_tf32` defaults to on, and
    TF32 rounds the inputs of fp32 MatMul/Gemm (cuBLAS) and Conv (cuDNN) to 10 mantissa bits, so an
    fp32 row would carry an error fp32 does not have, and so would the fp32 compute inside the fp16
    ONNX (ops kept fp32) and the Q/DQ ONNX (the CUDA provider runs DequantizeLinear then a float op).
    fp16 kernels are not affected."""
    options = {"device_id": "0", "use_tf32": "0"}
    if stream is not None:
        options["user_compute_stream"] = str(stream)
    return options


def fallback_message(printed: str) -> str:
    """The cause onnxruntime printed when its Python layer retried a failed session (or run) with the
    remaining providers ("EP Error <cause> when using [...]" / "EP Error: <cause> using [...]"), or ''."""
    for line in printed.splitlines():
        text = " ".join(line.split())
        if text.startswith(FALLBACK_MARK):  # not the "***** EP Error *****" banner around it
            cause = text[len(FALLBACK_MARK):].lstrip(": ")
            for tail in (" when using [", " using ["):
                cause = cause.split(tail)[0]
            return cause or text
    return ""


def provider_problem(required: str, active: Sequence[str], fallback: str = "", hint: str = "") -> str | None:
    """Why a session that must run on `required` does not (None when it does): the printed cause of a
    fallback when there was one, else the provider did not load (its libraries)."""
    if required in active:
        return None
    got = ", ".join(active) or "none"
    if fallback:
        return f"ONNX Runtime could not use {required} and fell back to {got}: {fallback}"
    return (f"ONNX Runtime did not enable {required} (active: {got}); "
            + (hint or "its libraries (CUDA, cuDNN) are probably missing or do not match this onnxruntime build"))


def onnxruntime_available(provider: str, hint: str = "") -> tuple[bool, str]:
    """Whether onnxruntime imports and was built with `provider` (its libraries are checked when a
    session starts, see OnnxRuntimeRunner.activate_impl)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False, "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for CUDA)"
    try:
        import onnxruntime
    except Exception as exc:  # a broken install is a reason, not a crash
        return False, f"onnxruntime fails to import: {exc}"
    if provider not in onnxruntime.get_available_providers():
        return False, f"onnxruntime {onnxruntime.__version__} has no {provider}{hint}"
    return True, ""


def effective_options(session: Any, providers: Sequence[Any]) -> dict[str, dict[str, str]]:
    """The options each configured provider reports back (what it really uses), for the report; only
    the keys deployval set, without the stream pointer."""
    reported = session.get_provider_options()
    out: dict[str, dict[str, str]] = {}
    for entry in providers:
        if isinstance(entry, tuple):
            name, given = entry
            if name in reported:
                out[name] = {k: reported[name].get(k, "?") for k in given if k != "user_compute_stream"}
    return out


class OnnxRuntimeRunner(Runner):
    name: ClassVar[str] = "ort"
    description: ClassVar[str] = "ONNX Runtime (CPU provider; CUDA provider with --device cuda)"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": ONNX, "fp16": ONNX_FP16, "int8": ONNX_INT8}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        hint = " (install onnxruntime-gpu instead of onnxruntime)" if device == "cuda" else ""
        ok, reason = onnxruntime_available(PROVIDERS[device], hint)
        if ok and device == "cuda":
            from .torch_common import torch_available

            return torch_available("cuda")  # device buffers and timing events are torch CUDA tensors/events
        return ok, reason

    @classmethod
    def faithful(cls, precision: str, device: str) -> bool:
        return not (precision == "fp16" and device == "cpu")

    @classmethod
    def caveats(cls, precision: str, device: str) -> list[str]:
        if not cls.faithful(precision, device):
            return [
                "not faithful to fp16 arithmetic: ONNX Runtime's CPU provider computes most fp16 ops in fp32 "
                "(it inserts Casts and removes the Cast pairs), so fp16 overflow and underflow cannot show; "
                "this result reflects fp16 weight rounding only"
            ]
        return []

    # ------------------------------------------------------------------ providers
    def required_provider(self) -> str:
        return PROVIDERS[self.device]

    def provider_list(self) -> list[Any]:
        if self.device == "cpu":
            return ["CPUExecutionProvider"]
        return [("CUDAExecutionProvider", cuda_provider_options(self.timer.handle)), "CPUExecutionProvider"]

    def provider_hint(self) -> str:
        """What this machine lacks for the required provider, if that is known ('' otherwise)."""
        return ""

    # ------------------------------------------------------------------ hooks
    def activate_impl(self) -> None:
        import onnxruntime

        self.timer = None
        if self.device == "cuda":
            from ._cuda import CudaStreamTimer, device_description

            self.timer = CudaStreamTimer()
            self.details.update(device_description())
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: warnings are not ours to print
        providers = self.provider_list()
        required = self.required_provider()
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                self.session = onnxruntime.InferenceSession(str(self.artifact.path), options, providers=providers,
                                                            enable_fallback=0)
        except Exception as exc:  # a provider that fails to build the model says why, instead of a silent retry
            hint = self.provider_hint()
            raise BackendError(f"ONNX Runtime could not create a session with {required}: {first_line(exc)}"
                               + (f" ({hint})" if hint else "")) from None
        self.session.disable_fallback()  # nor retry a run that fails in the provider with the others
        active = self.session.get_providers()
        self.details["providers"] = active
        self.details["provider_options"] = effective_options(self.session, providers)
        fallback = fallback_message(printed.getvalue())
        problem = provider_problem(required, active, fallback, self.provider_hint())
        if problem:  # a provider that failed on this model is an error; one that did not load is missing
            raise BackendError(problem) if fallback else BackendUnavailable(problem)
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def deactivate_impl(self) -> None:
        del self.session
        self.timer = None

    def input_dtypes(self) -> Mapping[str, str]:
        return {i.name: ORT_TYPES.get(i.type, i.type) for i in self.session.get_inputs()}

    def to_device(self, feeds: Mapping[str, Any]) -> Any:
        if self.timer is None:
            return feeds
        from ._cuda import to_cuda

        # ORT's io binding takes a bare pointer, a shape and the numpy element type: the buffer must be in
        # C order, which to_cuda guarantees (a Fortran-ordered or transposed feed is copied first).
        return {name: (to_cuda(value), value.dtype) for name, value in feeds.items()}

    def infer_impl(self, feeds: Any) -> Any:
        if self.timer is None:
            return self.session.run(None, dict(feeds))
        binding = self.session.io_binding()
        for name, (tensor, dtype) in feeds.items():
            if not tensor.is_contiguous():  # to_cuda's contract; a strided buffer would be read as C order
                raise BackendError(f"input '{name}' is not contiguous on the device")
            binding.bind_input(name=name, device_type="cuda", device_id=0, element_type=dtype,
                               shape=tuple(tensor.shape), buffer_ptr=tensor.data_ptr())
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        with self.timer.timed():
            self.session.run_with_iobinding(binding)
        return binding

    def synchronize(self) -> None:
        if self.timer is not None:
            self.timer.synchronize()

    def device_time_ms(self) -> float | None:
        return self.timer.elapsed_ms() if self.timer is not None else None

    def to_host(self, outputs: Any) -> dict[str, Any]:
        if self.timer is None:
            return dict(zip(self.output_names, outputs))
        return {name: value.numpy() for name, value in zip(self.output_names, outputs.get_outputs())}
