"""What the torch-based backends, and the analyses that run torch modules (debug, precision), share:
availability without importing torch, feeds as tensors, and naming of a module's outputs."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..model.spec import HALF_DTYPES
from .base import Runner


def torch_cuda_build() -> str | None:
    """CUDA version this torch was built with (None for CPU builds), read without importing torch."""
    if "torch" in sys.modules:
        return sys.modules["torch"].version.cuda
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return None
    version_file = Path(spec.origin).parent / "version.py"
    try:
        match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", version_file.read_text(), re.M)
    except OSError:
        return None
    return match.group(1) if match else None


def nvidia_device_present() -> bool:
    return os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/version")


def torch_available(device: str) -> tuple[bool, str]:
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed"
    if device == "cpu":
        return True, ""
    cuda = torch_cuda_build()
    if not cuda:
        from .._util import package_version

        return False, f"torch {package_version('torch')} is a CPU-only build"
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if not torch.cuda.is_available():
            return False, f"torch (CUDA {cuda}) finds no usable CUDA device"
        return True, ""
    if not nvidia_device_present():
        return False, "no NVIDIA GPU or driver found"
    return True, ""


def inductor_available(device: str, what: str) -> tuple[bool, str]:
    """torch_available, and on the CPU a C++ compiler: inductor (torch.compile, AOTInductor) compiles C++."""
    ok, reason = torch_available(device)
    if ok and device == "cpu" and shutil.which("g++") is None and shutil.which("c++") is None:
        return False, f"{what} needs a C++ compiler on the CPU (g++ or c++ on PATH)"
    return ok, reason


def to_tensors(feeds: Mapping[str, Any], names: Sequence[str], device: str, precision: str = "fp32") -> list[Any]:
    """Feeds in the model's positional order, as tensors on `device`; floats in the precision's half
    dtype at fp16 and bf16."""
    import torch

    dtype = HALF_DTYPES.get(precision)
    tensors = []
    for name in names:
        tensor = torch.from_numpy(feeds[name])
        if device != "cpu":
            tensor = tensor.to(device, non_blocking=True)
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(getattr(torch, dtype))
        tensors.append(tensor)
    return tensors


def output_names_of(outputs: Any) -> tuple[str, ...]:
    """Names for a module's outputs when the spec declares none: 'output', 'output_i' or dict keys."""
    import torch

    if isinstance(outputs, torch.Tensor):
        return ("output",)
    if isinstance(outputs, Mapping):
        return tuple(str(k) for k in outputs)
    if isinstance(outputs, (tuple, list)):
        return tuple(f"output_{i}" for i in range(len(outputs)))
    raise UsageError(
        f"the model returned {type(outputs).__name__}; deployval needs a tensor, a tuple/list of tensors "
        "or a dict of tensors"
    )


def name_outputs(outputs: Any, names: Sequence[str]) -> dict[str, Any]:
    """Pair a module's outputs with their names (derived from the structure when none are
    declared), refusing structures that do not fit."""
    import torch

    if not names:
        names = output_names_of(outputs)

    if isinstance(outputs, torch.Tensor):
        values = [outputs]
    elif isinstance(outputs, Mapping):
        values = list(outputs.values())
    elif isinstance(outputs, (tuple, list)):
        values = list(outputs)
    else:
        output_names_of(outputs)  # raises the explanatory error
        values = []
    if len(values) != len(names):
        raise UsageError(f"the model returned {len(values)} outputs but {len(names)} names are declared "
                         f"({', '.join(names)})")
    for name, value in zip(names, values):
        if not isinstance(value, torch.Tensor):
            raise UsageError(f"output '{name}' is a {type(value).__name__}, not a tensor")
    return dict(zip(names, values))


def tensors_to_host(outputs: Mapping[str, Any], as_float32: bool = False) -> dict[str, Any]:
    """Outputs as numpy arrays on the host; fp16 results are cast back to fp32 for comparison."""
    import torch

    host = {}
    for name, tensor in outputs.items():
        tensor = tensor.detach()
        if as_float32 and tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        host[name] = tensor.cpu().numpy()
    return host


class TorchModuleRunner(Runner):
    """What eager and TorchScript share: tensors in, a module call, named tensors out; on CUDA the
    call runs on a side stream between timing events."""

    def load_module(self) -> Any:
        raise NotImplementedError

    def activate_impl(self) -> None:
        import torch

        self._torch = torch
        self.module = self.load_module()
        self.timer = None
        self._tf32: tuple[bool, bool] | None = None
        if self.device == "cuda":
            from ._cuda import CudaStreamTimer, device_description

            self.timer = CudaStreamTimer()
            self.details.update(device_description())
            # cuDNN convolutions default to TF32 in PyTorch: fp32 must mean fp32 for a reference.
            backends = torch.backends
            self._tf32 = (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32)
            backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = False

    def deactivate_impl(self) -> None:
        del self.module
        self.timer = None
        if self.device == "cuda":
            if self._tf32 is not None:
                self._torch.backends.cudnn.allow_tf32, self._torch.backends.cuda.matmul.allow_tf32 = self._tf32
            self._torch.cuda.empty_cache()

    def to_device(self, feeds: Mapping[str, Any]) -> list[Any]:
        return to_tensors(feeds, self.input_names, self.device, precision=self.precision)

    def infer_impl(self, feeds: list[Any]) -> dict[str, Any]:
        with self._torch.inference_mode():
            if self.timer is None:
                raw = self.module(*feeds)
            else:
                with self.timer.timed():
                    raw = self.module(*feeds)
        named = name_outputs(raw, self.output_names)
        self.output_names = tuple(named)
        return named

    def synchronize(self) -> None:
        if self.timer is not None:
            self.timer.synchronize()

    def device_time_ms(self) -> float | None:
        return self.timer.elapsed_ms() if self.timer is not None else None

    def to_host(self, outputs: dict[str, Any]) -> dict[str, Any]:
        return tensors_to_host(outputs, as_float32=True)
