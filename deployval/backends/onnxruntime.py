"""ONNX Runtime: the exported ONNX at fp32, fp16 (fp16 ONNX) or int8 (Q/DQ ONNX); CPU provider,
or the CUDA provider with `--device cuda`."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any, ClassVar

from .base import ONNX, ONNX_FP16, ONNX_INT8, Runner

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32",
    "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OnnxRuntimeRunner(Runner):
    name: ClassVar[str] = "ort"
    description: ClassVar[str] = "ONNX Runtime (CPU provider; CUDA provider with --device cuda)"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": ONNX, "fp16": ONNX_FP16, "int8": ONNX_INT8}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for CUDA)"
        try:
            import onnxruntime
        except Exception as exc:  # a broken install is a reason, not a crash
            return False, f"onnxruntime fails to import: {exc}"
        provider = PROVIDERS[device]
        providers = onnxruntime.get_available_providers()
        if provider not in providers:
            hint = " (install onnxruntime-gpu instead of onnxruntime)" if device == "cuda" else ""
            return False, f"onnxruntime {onnxruntime.__version__} has no {provider}{hint}"
        return True, ""

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

    def activate_impl(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: warnings are not ours to print
        providers = [PROVIDERS[self.device]]
        if self.device != "cpu":
            providers.append(PROVIDERS["cpu"])
        self.session = onnxruntime.InferenceSession(str(self.artifact.path), options, providers=providers)
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.providers = self.session.get_providers()

    def deactivate_impl(self) -> None:
        del self.session

    def input_dtypes(self) -> Mapping[str, str]:
        return {i.name: _ORT_TYPES.get(i.type, i.type) for i in self.session.get_inputs()}

    def infer_impl(self, feeds: Mapping[str, Any]) -> list[Any]:
        return self.session.run(None, dict(feeds))

    def to_host(self, outputs: list[Any]) -> dict[str, Any]:
        return dict(zip(self.output_names, outputs))
