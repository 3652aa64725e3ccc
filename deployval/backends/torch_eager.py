"""PyTorch eager: the reference at fp32, and a real half-precision run at fp16 (`module.half()`,
inputs halved, outputs cast back to fp32 for the comparison; modules named by --keep-fp32 stay in
fp32, as in the fp16 ONNX artifact) and at bf16 (`module.to(torch.bfloat16)`: fp32's range with 8
bits of mantissa, so rounding, never overflow)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

from ..export.artifacts import MODULE
from ..model.spec import KeepFp32
from . import torch_common


class TorchEagerRunner(torch_common.TorchModuleRunner):
    name: ClassVar[str] = "torch"
    description: ClassVar[str] = "PyTorch eager (the reference at fp32); fp16 via module.half(), bf16"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": MODULE, "fp16": MODULE, "bf16": MODULE}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        return torch_common.torch_available(device)

    def trace_impl(self, feeds: list[Any]) -> tuple[Any, dict[str, Any]]:
        """One run under torch.jit.trace: this run's outputs and the TorchScript it recorded, so that a
        TorchScript row does not cost a forward pass of its own. Hooks that only read tensors (the
        activation ranges) leave no node in the trace."""
        from ..export.torchscript import trace_module

        captured: list[Any] = []
        handle = self.module.register_forward_hook(lambda mod, args, output: captured.append(output))
        try:
            traced = trace_module(self.module, tuple(feeds))
        finally:
            handle.remove()
        named = torch_common.name_outputs(captured[-1], self.output_names)
        self.output_names = tuple(named)
        return traced, named

    def load_module(self) -> Any:
        module = self.artifact.obj
        if self.precision == "fp16":
            from ..export.mixed import half_except, matching_modules
            from ..judge.weight_ranges import module_findings

            keep = list(KeepFp32.of(self.options.get("keep_fp32", ())).modules)  # op: and node: are ONNX's
            kept = matching_modules(module, keep) if keep else []
            # the parameters and buffers half() cannot hold, named before they become inf or zero
            self.details["fp16_weights"] = [f.to_dict() for f in module_findings(module, kept)]
            if keep:  # --keep-fp32: the same mixed precision as the fp16 ONNX artifact
                self.details["kept_fp32"] = kept
                module = half_except(module, kept)
            else:
                module = copy.deepcopy(module).half()  # a copy: the fp32 module stays the reference
        elif self.precision == "bf16":
            import torch

            module = copy.deepcopy(module).to(torch.bfloat16)
        elif self.device != "cpu":
            module = copy.deepcopy(module)  # moving the reference's own module would move it for everyone
        return module.to(self.device).eval()
