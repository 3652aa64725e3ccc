"""TorchScript: the traced (or scripted) module saved to a file and loaded back, as a C++ or Triton
deployment loads it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..export.artifacts import TORCHSCRIPT
from . import torch_common


class TorchScriptRunner(torch_common.TorchModuleRunner):
    name: ClassVar[str] = "torchscript"
    description: ClassVar[str] = "TorchScript file loaded with torch.jit.load (trace by default, script on request)"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": TORCHSCRIPT}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        return torch_common.torch_available(device)

    def load_module(self) -> Any:
        module = self._torch.jit.load(str(self.artifact.path), map_location=self.device).eval()
        arguments = self.options.get("forward_arguments")
        if arguments:  # a TorchScript file whose forward() takes non-tensor arguments (--arg)
            from ..model.loading import bind_arguments

            module = bind_arguments(module, arguments)
        return module
