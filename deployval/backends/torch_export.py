"""torch.export -> AOTInductor: the `.pt2` package the pipeline compiled (export/aoti.py), loaded with
`torch._inductor.aoti_load_package` and run as a deployment runs it, at fp32, fp16 or bf16 (the package
of the module cast to that precision). Compile time is the artifact's step, apart from latency."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..export.artifacts import PT2_KINDS
from . import torch_common


class TorchExportRunner(torch_common.TorchModuleRunner):
    name: ClassVar[str] = "export"
    description: ClassVar[str] = "torch.export -> AOTInductor package (.pt2) run with aoti_load_package"
    artifacts: ClassVar[Mapping[str, str]] = dict(PT2_KINDS)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        return torch_common.inductor_available(device, "AOTInductor")

    @classmethod
    def supports(cls, precision: str, device: str) -> tuple[bool, str]:
        if precision == "int8" and device in cls.devices:
            return False, ("export has no int8 mode: PyTorch's PT2E quantization moved out of torch into torchao, "
                           "which deployval does not install (openvino, ort and trt have int8)")
        return super().supports(precision, device)

    def load_module(self) -> Any:
        from ..export.aoti import load_package

        return load_package(self.artifact.path)
