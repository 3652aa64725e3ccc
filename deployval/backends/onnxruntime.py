"""ONNX Runtime: the exported ONNX at fp32, fp16 (the fp16 ONNX) or int8 (the Q/DQ ONNX); the CPU
provider, or the CUDA provider with `--device cuda`.

ONNX Runtime silently falls back to the CPU when a GPU provider cannot load, so the session's
active providers are checked: a CUDA result that ran on the CPU would be a lie.
API checked against onnxruntime 1.31: InferenceSession(path, options, providers=[(name, options)]),
session.get_providers(), io_binding() / bind_input(...) / bind_output(name, "cuda") /
run_with_iobinding / get_outputs(); CUDA provider options device_id, user_compute_stream.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import BackendUnavailable
from .base import ONNX, ONNX_FP16, ONNX_INT8, Runner

ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32",
    "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


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
            from ._torch import torch_available

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
        cuda_options = {"device_id": 0, "user_compute_stream": str(self.timer.handle)}
        return [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]

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
        self.session = onnxruntime.InferenceSession(str(self.artifact.path), options, providers=self.provider_list())
        active = self.session.get_providers()
        self.details["providers"] = active
        if self.required_provider() not in active:
            raise BackendUnavailable(
                f"ONNX Runtime did not enable {self.required_provider()} (active: {', '.join(active)}); "
                "its libraries (CUDA, cuDNN, TensorRT) are probably missing or do not match this onnxruntime build"
            )
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

        # ORT's io binding wants the numpy element type next to the device pointer.
        return {name: (to_cuda(value), value.dtype) for name, value in feeds.items()}

    def infer_impl(self, feeds: Any) -> Any:
        if self.timer is None:
            return self.session.run(None, dict(feeds))
        binding = self.session.io_binding()
        for name, (tensor, dtype) in feeds.items():
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
