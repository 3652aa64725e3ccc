"""PyTorch eager: the reference at fp32, and a real half-precision run at fp16 (`module.half()`,
inputs halved, outputs cast back to fp32 for the comparison)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

from . import _torch
from .base import MODULE


class TorchEagerRunner(_torch.TorchModuleRunner):
    name: ClassVar[str] = "torch"
    description: ClassVar[str] = "PyTorch eager (the reference at fp32); fp16 via module.half()"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": MODULE, "fp16": MODULE}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        return _torch.torch_available(device)

    def load_module(self) -> Any:
        module = self.artifact.obj
        if self.precision == "fp16":
            module = copy.deepcopy(module).half()  # a copy: the fp32 module stays the reference
        elif self.device != "cpu":
            module = copy.deepcopy(module)  # moving the reference's own module would move it for everyone
        return module.to(self.device).eval()
