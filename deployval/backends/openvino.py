"""OpenVINO from the pipeline's simplified ONNX, on its CPU plugin (`--backend-option openvino.device=GPU`
for another of its devices).

OpenVINO chooses the arithmetic itself: its INFERENCE_PRECISION_HINT defaults to bf16 on CPUs with
AVX512-BF16 or AMX (f16 on some others), so a plain "fp32" deployment of a model computes in bf16 there
and a validator that did not pin it would judge whatever the CPU chose. Each row therefore pins the hint
to its precision (fp32 -> f32, fp16 -> f16, bf16 -> bf16), checks that the compiled model took it (a
device that cannot makes the row an ERROR, never a row judged at another precision), records the
device's default, and when that default is not f32 the fp32 row says what a deployment that keeps it
computes in (run the bf16 row to see its error).

API checked against openvino 2026.4 (python/src/openvino/_ov_api.py): Core(), Core.read_model(path),
Core.compile_model(model, device, {"INFERENCE_PRECISION_HINT": "f32"}), Core.get_property(device,
"INFERENCE_PRECISION_HINT") and CompiledModel.get_property(...) (an openvino Type: f32, f16, bf16),
CompiledModel.inputs/outputs[i].get_any_name(), CompiledModel.create_infer_request(),
InferRequest.infer({name: array}) -> results by output port.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import BackendError, UsageError, first_line
from ..export.artifacts import ONNX, ONNX_INT8_NNCF
from .base import Runner

# A row's precision -> INFERENCE_PRECISION_HINT; int8 keeps what NNCF did not quantize in f32, so int8 is
# the only reduction that row measures.
HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}
TYPE_NAMES = {"f32": "f32", "float32": "f32", "f16": "f16", "float16": "f16", "bf16": "bf16", "bfloat16": "bf16"}
PRECISION_OF_HINT = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}
INT8_TYPES = ("i8", "u8")  # what the compiled model's runtime info says a quantized layer runs in


def hint_name(value: Any) -> str:
    """An openvino Type (`<Type: 'bfloat16'>`, or its string) as a hint name: f32, f16, bf16."""
    text = str(getattr(value, "get_type_name", lambda: value)())
    text = text.split("'")[1] if "'" in text else text
    return TYPE_NAMES.get(text, text)


def openvino_reason(exc: BaseException) -> str:
    """OpenVINO's own reason from one of its exceptions, whose first lines only say where in its sources
    the check failed ("Exception from src/inference/...", "Check '...' failed at src/..."); a conversion
    report's summary names the operations that failed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not re.match(r"(Exception from|Check '.*' failed at) \S*src/", line)]
    summary = next((lines[i + 1].lstrip("- ") for i, line in enumerate(lines[:-1]) if line == "Summary:"), "")
    reason = " ".join(said[:1] + ([summary] if summary else []))
    return (reason or first_line(exc))[:300]


def default_precision_warning(default: str, device: str) -> str | None:
    """What an fp32 row must say where OpenVINO's default arithmetic on the device is not f32."""
    if default == "f32":
        return None
    precision = PRECISION_OF_HINT.get(default, default)
    return (f"OpenVINO's default inference precision on this {device} is {default}: this row pins f32, but a "
            f"deployment that keeps the default computes in {default} (its error is the {precision} row's)")


class OpenVinoRunner(Runner):
    name: ClassVar[str] = "openvino"
    description: ClassVar[str] = "OpenVINO from the simplified ONNX, the inference precision pinned per row"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": ONNX, "fp16": ONNX, "bf16": ONNX, "int8": ONNX_INT8_NNCF}
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    @dataclass(frozen=True)
    class Options:
        """OpenVINO's settings (`--backend-option openvino.FIELD=VALUE`)."""

        device: str = field(default="CPU", metadata={"help": "the OpenVINO device to compile for (CPU, GPU, NPU)"})

        def __post_init__(self) -> None:
            if not self.device.strip():
                raise UsageError("openvino.device must name an OpenVINO device, e.g. CPU")

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        if importlib.util.find_spec("openvino") is None:
            return False, "openvino is not installed (pip install 'deployval[openvino]')"
        try:
            import openvino  # noqa: F401
        except Exception as exc:  # a broken install is a reason, not a crash
            return False, f"openvino fails to import: {first_line(exc)}"
        return True, ""

    def activate_impl(self) -> None:
        import openvino as ov

        device, wanted = self.backend_options.device, HINTS[self.precision]
        core = ov.Core()
        try:
            model = core.read_model(str(self.artifact.path))
            self.compiled = core.compile_model(model, device, {"INFERENCE_PRECISION_HINT": wanted})
            got = hint_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
            default = hint_name(core.get_property(device, "INFERENCE_PRECISION_HINT"))
        except Exception as exc:
            raise BackendError(f"OpenVINO could not compile the model for {device}: {openvino_reason(exc)}") from None
        self.details.update(openvino=ov.__version__, device=device, inference_precision=got,
                            device_default_precision=default)
        if got != wanted:  # judged at another precision than the row's would be a lie
            raise BackendError(f"OpenVINO on {device} computes this model in {got}, not {wanted}")
        if self.precision == "int8":
            self._check_int8()
        if self.precision == "fp32":
            warning = default_precision_warning(default, device)
            if warning:
                self.warnings.append(warning)
        self.request = self.compiled.create_infer_request()
        self.input_names = tuple(port.get_any_name() for port in self.compiled.inputs)
        self.output_names = tuple(port.get_any_name() for port in self.compiled.outputs)

    def _check_int8(self) -> None:
        """An int8 row whose compiled model runs no layer in int8 would judge fp32 arithmetic as int8."""
        layers = [(info["layerType"].astype(str), info["runtimePrecision"].astype(str))
                  for info in (op.get_rt_info() for op in self.compiled.get_runtime_model().get_ops())]
        computing = [(kind, runs_in) for kind, runs_in in layers if kind not in ("Const", "Input", "Output", "Reorder")]
        int8 = [kind for kind, runs_in in computing if runs_in in INT8_TYPES]
        self.details["int8_layers"] = f"{len(int8)} of {len(computing)}"
        if not int8:
            raise BackendError("OpenVINO runs no layer of the NNCF-quantized model in int8 on "
                               f"{self.backend_options.device}: it would be judged as int8 without being int8")

    def deactivate_impl(self) -> None:
        del self.request
        del self.compiled

    def input_dtypes(self) -> Mapping[str, str]:
        return {port.get_any_name(): str(port.get_element_type().to_dtype()) for port in self.compiled.inputs}

    def infer_impl(self, feeds: Mapping[str, Any]) -> Any:
        try:
            results = self.request.infer(dict(feeds))
        except Exception as exc:
            raise BackendError(f"OpenVINO could not run the model: {openvino_reason(exc)}") from None
        return {port.get_any_name(): results[port] for port in self.compiled.outputs}

    def to_host(self, outputs: Any) -> dict[str, Any]:
        import numpy as np

        return {name: np.array(value, copy=True) for name, value in outputs.items()}
