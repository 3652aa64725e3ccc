"""TorchScript: the traced (or scripted) module saved to a file and loaded back, as a C++ or
Triton deployment would load it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from . import _torch
from .base import TORCHSCRIPT, Runner


class TorchScriptRunner(Runner):
    name: ClassVar[str] = "torchscript"
    description: ClassVar[str] = "TorchScript file loaded with torch.jit.load (trace by default, script on request)"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": TORCHSCRIPT}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        return _torch.torch_available(device)

    def activate_impl(self) -> None:
        import torch

        self._torch = torch
        self.module = torch.jit.load(str(self.artifact.path), map_location=self.device).eval()

    def deactivate_impl(self) -> None:
        del self.module

    def to_device(self, feeds: Mapping[str, Any]) -> list[Any]:
        return _torch.to_tensors(feeds, self.input_names, self.device)

    def infer_impl(self, feeds: list[Any]) -> dict[str, Any]:
        with self._torch.inference_mode():
            named = _torch.name_outputs(self.module(*feeds), self.output_names)
        self.output_names = tuple(named)
        return named

    def synchronize(self) -> None:
        if self.device == "cuda":
            self._torch.cuda.synchronize()

    def to_host(self, outputs: dict[str, Any]) -> dict[str, Any]:
        return _torch.tensors_to_host(outputs)
