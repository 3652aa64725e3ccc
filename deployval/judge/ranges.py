"""Activation ranges from the reference run, checked against the limits of fp16 and bf16.

ONNX Runtime's CPU provider computes fp16 models in fp32, so an fp16 overflow never shows there;
the reference run's own activations tell whether a faithful fp16 executor (a GPU, TensorRT) would
overflow, and in which layer, before any engine is built. Recording costs one pass over each module
output (max |x| and the share of values fp16 would flush to zero or store as subnormals).

The statistics are one function for torch tensors (on their device) and numpy arrays (the ONNX
graph's tensors, tensor_ranges.py), and one record of them (ValueRange) under both kinds of range.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import Any

# Limits of the IEEE half and of bfloat16 (largest finite value, smallest normal, smallest subnormal).
LIMITS = {
    "fp16": {"max": 65504.0, "min_normal": 2.0**-14, "min_subnormal": 2.0**-24},
    "bf16": {"max": 3.3895313892515355e38, "min_normal": 2.0**-126, "min_subnormal": 2.0**-133},
}
# A layer is reported as flushing to zero when more than this share of its non-zero values would.
FLUSH_REPORT_SHARE = 0.01
BLOCK_ELEMENTS = 1 << 20  # statistics over blocks of this many values: small temporaries
# max |x|, elements, non-zero values, and per precision the non-zero values below its smallest
# subnormal and those in its subnormal range
Stats = tuple[float, int, int, dict[str, int], dict[str, int]]


@dataclass(frozen=True)
class ValueRange:
    """One measured value (a module's output, an ONNX tensor) against the limits of the lower precisions."""

    module: str  # the module that computed it ('' where none is known)
    max_abs: float
    elements: int
    nonzero: int
    below: dict[str, float]  # precision -> share of non-zero values below its smallest subnormal
    subnormal: dict[str, float]  # precision -> share of non-zero values stored as subnormals

    def overflows(self, precision: str) -> bool:
        return self.max_abs > LIMITS[precision]["max"]

    def flushes(self, precision: str) -> bool:
        """More than FLUSH_REPORT_SHARE of its non-zero values flush to zero in `precision`."""
        return self.below.get(precision, 0.0) > FLUSH_REPORT_SHARE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class LayerRange(ValueRange):
    """A module's output tensors, from a forward hook of the reference run."""

    type: str  # the module's class name


def range_fields(stats: Sequence[Stats], precisions: Sequence[str]) -> dict[str, Any]:
    """The statistics fields of a ValueRange over the values measured by `stats` (one or several
    tensors of one output), the flushed and subnormal values as shares of the non-zero ones."""
    nonzero = sum(st[2] for st in stats)
    count = max(nonzero, 1)
    return {"max_abs": max(st[0] for st in stats), "elements": sum(st[1] for st in stats), "nonzero": nonzero,
            "below": {p: sum(st[3][p] for st in stats) / count for p in precisions},
            "subnormal": {p: sum(st[4][p] for st in stats) / count for p in precisions}}


class Recorded(list):  # type: ignore[type-arg]
    """The layer ranges of one recording, in execution order, and the seconds its hooks took."""

    seconds: float = 0.0


@contextmanager
def record_ranges(module: Any, precisions: Sequence[str] = ("fp16",)) -> Iterator[Recorded]:
    """Forward hooks on every submodule for the duration of the block; yields the list they fill
    (in execution order). A container whose output is its last child's tensor is not repeated."""
    import torch

    ranges = Recorded()
    # The tensors recorded last: a container returns its last child's very tensor right after the
    # child's hook ran. Identity, not addresses: freed memory is reused for the next layer's output.
    recent: deque[Any] = deque(maxlen=4)
    scratch = Scratch()
    started = time.perf_counter

    def hook(name: str) -> Any:
        def record(mod: Any, args: Any, output: Any) -> None:
            start = started()
            tensors = [t for t in _tensors(output) if t.is_floating_point() and t.numel()]
            fresh = [t for t in tensors if not any(t is seen for seen in recent)]
            if not fresh:
                return
            recent.extend(fresh)
            with torch.no_grad():
                stats = [array_stats(t.detach(), precisions, scratch) for t in fresh]
            ranges.seconds += started() - start
            ranges.append(LayerRange(module=name, type=type(mod).__name__, **range_fields(stats, precisions)))
        return record

    handles = [sub.register_forward_hook(hook(name)) for name, sub in module.named_modules() if name]
    try:
        yield ranges
    finally:
        for handle in handles:
            handle.remove()
        scratch.buffer = None


class Scratch:
    """One buffer for |x|, grown to the largest block measured and reused by every call it is given to:
    a fresh |x| per layer costs the page faults of a new allocation each time (a third of a recording's
    time). Holds a numpy array or a torch tensor (on the device of the values measured)."""

    def __init__(self) -> None:
        self.buffer: Any = None

    def abs_of(self, block: Any, xp: Any) -> Any:
        size = block.shape[0]
        buffer = self.buffer
        if buffer is None or type(buffer) is not type(block) or buffer.shape[0] < size \
                or buffer.dtype != block.dtype or getattr(buffer, "device", None) != getattr(block, "device", None):
            self.buffer = buffer = xp.empty_like(block)
        return xp.abs(block, out=buffer[:size])


def array_stats(values: Any, precisions: Sequence[str], scratch: Scratch | None = None) -> Stats:
    """max |x| over finite values, element count, non-zero count, and per precision the non-zero values
    below its smallest subnormal and those in its subnormal range, of a numpy array or a torch tensor
    (computed where the tensor lives); over blocks, so temporaries stay small."""
    import numpy as np

    if isinstance(values, np.ndarray):
        xp: Any = np
    else:
        import torch as xp
    flat = values.reshape(-1)
    size = int(flat.shape[0])
    scratch = scratch or Scratch()
    peak, zeros = 0.0, 0
    below = dict.fromkeys(precisions, 0)
    subnormal = dict.fromkeys(precisions, 0)
    for begin in range(0, size, BLOCK_ELEMENTS):
        block = flat[begin:begin + BLOCK_ELEMENTS]
        magnitude = scratch.abs_of(block, xp)
        top = float(magnitude.max())
        if not math.isfinite(top):
            finite = magnitude[xp.isfinite(magnitude)]
            top = float(finite.max()) if finite.shape[0] else 0.0
        peak = max(peak, top)
        block_zeros = int(block.shape[0]) - int(xp.count_nonzero(block))
        zeros += block_zeros
        for p in precisions:
            under_normal = int(xp.count_nonzero(magnitude < LIMITS[p]["min_normal"])) - block_zeros
            if under_normal:
                under_sub = int(xp.count_nonzero(magnitude < LIMITS[p]["min_subnormal"])) - block_zeros
                below[p] += under_sub
                subnormal[p] += under_normal - under_sub
    return peak, size, size - zeros, below, subnormal


def _tensors(output: Any) -> list[Any]:
    import torch

    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in _tensors(item)]
    return []


@dataclass(frozen=True)
class RangeFinding:
    """A layer whose reference activations do not fit a precision."""

    module: str
    kind: str  # "overflow" or "flush"
    value: float  # max |x|, or the share flushed to zero
    precision: str
    # Set by the tensor-level check (tensor_ranges.py): how to name the place, the node and tensor.
    where: str = ""  # e.g. "layer 'block'" (default), "the forward code after layer 'boost'", "node 'Mul_3'"
    detail: str = ""  # e.g. " in node 'Mul_0' (Mul)"
    node: str = ""
    tensor: str = ""

    def describe(self) -> str:
        limit = LIMITS[self.precision]
        place = self.where or f"layer '{self.module}'"
        if self.kind == "overflow":
            return (f"{place} reaches {self.value:.3g}{self.detail}, beyond {self.precision}'s largest value "
                    f"{limit['max']:.6g}: a faithful {self.precision} run overflows to inf there")
        return (f"{place}{self.detail}: {self.value:.1%} of its non-zero values are below {self.precision}'s "
                f"smallest subnormal {limit['min_subnormal']:.3g} and flush to zero")


def findings(ranges: Sequence[LayerRange], precision: str, keep_fp32: Sequence[str] = ()) -> list[RangeFinding]:
    """Overflowing layers first (in execution order), then layers that flush to zero; layers kept in
    fp32 (`keep_fp32` fnmatch patterns over module names) are exempt."""
    if precision not in LIMITS:
        return []
    kept = [r for r in ranges if not any(fnmatchcase(r.module, p) for p in keep_fp32)]
    result = [RangeFinding(r.module, "overflow", r.max_abs, precision) for r in kept if r.overflows(precision)]
    result += [RangeFinding(r.module, "flush", r.below[precision], precision) for r in kept if r.flushes(precision)]
    return result
