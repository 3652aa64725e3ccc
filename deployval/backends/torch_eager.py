"""PyTorch eager: the reference at fp32, and a real half-precision run at fp16 (`module.half()`)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

from . import _torch
from .base import MODULE, Runner


class TorchEagerRunner(Runner):
    name: ClassVar[str] = "torch"
    description: ClassVar[str] = "PyTorch eager (the reference at fp32); fp16 via module.half()"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": MODULE, "fp16": MODULE}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        return _torch.torch_available(device)

    def activate_impl(self) -> None:
        import torch

        module = self.artifact.obj
        if self.precision == "fp16":
            # A copy: the fp32 module stays the reference for everyone else.
            module = copy.deepcopy(module).half()
        self.module = module.to(self.device).eval()
        self._torch = torch

    def deactivate_impl(self) -> None:
        del self.module
        if self.device == "cuda":
            self._torch.cuda.empty_cache()

    def to_device(self, feeds: Mapping[str, Any]) -> list[Any]:
        return _torch.to_tensors(feeds, self.input_names, self.device, half=self.precision == "fp16")

    def infer_impl(self, feeds: list[Any]) -> dict[str, Any]:
        with self._torch.inference_mode():
            named = _torch.name_outputs(self.module(*feeds), self.output_names)
        self.output_names = tuple(named)
        return named

    def synchronize(self) -> None:
        if self.device == "cuda":
            self._torch.cuda.synchronize()

    def to_host(self, outputs: dict[str, Any]) -> dict[str, Any]:
        return _torch.tensors_to_host(outputs, as_float32=True)
