"""ONNX Runtime's TensorRT execution provider: TensorRT engines built by ONNX Runtime from the same
ONNX artifacts, with the CUDA provider taking the nodes TensorRT cannot.

onnxruntime-gpu lists the provider whether or not TensorRT's libraries can be loaded, so
availability also looks for libnvinfer, and activation checks that the provider is really active.
Provider options checked against the onnxruntime TensorRT EP documentation: device_id,
trt_engine_cache_enable, trt_engine_cache_path, trt_max_workspace_size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from .base import ONNX, ONNX_FP16, ONNX_INT8
from .onnxruntime import OnnxRuntimeRunner, onnxruntime_available

PROVIDER = "TensorrtExecutionProvider"


def nvinfer_loadable() -> tuple[bool, str]:
    """Whether TensorRT's runtime library can be loaded by this process."""
    names = ["libnvinfer.so.10", "libnvinfer.so.11", ctypes.util.find_library("nvinfer")]
    for name in [n for n in names if n]:
        try:
            ctypes.CDLL(name)
            return True, name
        except OSError:
            continue
    return False, "TensorRT's library libnvinfer cannot be loaded (not installed or not on LD_LIBRARY_PATH)"


class OnnxRuntimeTensorRTRunner(OnnxRuntimeRunner):
    name: ClassVar[str] = "ort-trt"
    description: ClassVar[str] = "ONNX Runtime with the TensorRT execution provider (CUDA provider as fallback)"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": ONNX, "fp16": ONNX_FP16, "int8": ONNX_INT8}
    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    isolate_by_default: ClassVar[bool] = True

    @classmethod
    def available(cls, device: str = "cuda") -> tuple[bool, str]:
        ok, reason = onnxruntime_available(PROVIDER, " (it comes with onnxruntime-gpu)")
        if not ok:
            return ok, reason
        ok, reason = nvinfer_loadable()
        if not ok:
            return ok, reason
        from ._torch import torch_available

        return torch_available("cuda")

    @classmethod
    def faithful(cls, precision: str, device: str) -> bool:
        return True

    @classmethod
    def caveats(cls, precision: str, device: str) -> list[str]:
        return []

    def required_provider(self) -> str:
        return PROVIDER

    def provider_list(self) -> list[Any]:
        trt_options: dict[str, Any] = {"device_id": 0, "user_compute_stream": str(self.timer.handle)}
        cache_dir = self.options.get("engine_cache_dir")
        if cache_dir:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            trt_options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
        workspace_mb = self.options.get("trt_workspace_mb")
        if workspace_mb:
            trt_options["trt_max_workspace_size"] = int(workspace_mb) * 2**20
        cuda_options = {"device_id": 0, "user_compute_stream": str(self.timer.handle)}
        return [(PROVIDER, trt_options), ("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
