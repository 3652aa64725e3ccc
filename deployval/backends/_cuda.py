"""CUDA execution shared by the GPU backends: a non-default stream and event timing around each run.

The default stream synchronizes with everything (TensorRT warns about it), so every GPU backend
runs on its own stream; CUDA events recorded on that stream give the accelerator's time, next to
the host wall time (copies included) that the harness measures.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class CudaStreamTimer:
    """A side stream plus start/end events. Checked against torch 2.13 `torch.cuda.Stream`,
    `torch.cuda.Event(enable_timing=True)`, `Event.record(stream)` and `Event.elapsed_time` (ms)."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)
        self._recorded = False

    @property
    def handle(self) -> int:
        """The raw cudaStream_t, as TensorRT's execute_async_v3 and ORT's user stream want it."""
        return int(self.stream.cuda_stream)

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Run the body on the side stream between two events; inputs copied on the current stream
        are waited for first."""
        torch = self.torch
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            self.start.record(self.stream)
            yield
            self.end.record(self.stream)
        self._recorded = True

    def synchronize(self) -> None:
        self.stream.synchronize()

    def elapsed_ms(self) -> float | None:
        if not self._recorded:
            return None
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))


def c_contiguous(array: Any) -> Any:
    """`array` in C order (itself when it already is): torch.from_numpy keeps a Fortran-ordered or
    transposed array's strides (and refuses negative ones), and backends that hand a runtime a bare
    device pointer read it as C order."""
    return array if array.flags.c_contiguous else array.copy(order="C")


def to_cuda(array: Any, stream: Any | None = None) -> Any:
    """A host numpy array as a C-contiguous CUDA tensor (copied on `stream`, or the current stream)."""
    import torch

    tensor = torch.from_numpy(c_contiguous(array))
    if stream is None:
        return tensor.to("cuda", non_blocking=False)
    with torch.cuda.stream(stream):
        return tensor.to("cuda", non_blocking=False)


def device_description() -> dict[str, Any]:
    """GPU name, compute capability, driver and CUDA versions, for reports and cache keys."""
    import torch

    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    info: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(index),
        "compute_capability": f"{major}.{minor}",
        "cuda_runtime": torch.version.cuda,
        "memory_gb": round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1),
    }
    driver = _driver_version()
    if driver:
        info["driver"] = driver
    return info


def _driver_version() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as handle:
            first = handle.readline()
    except OSError:
        return None
    for token in first.split():
        if token[:1].isdigit() and "." in token:
            return token
    return None
