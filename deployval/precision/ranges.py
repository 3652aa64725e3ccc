"""Activation ranges from the reference run, checked against the limits of fp16 and bf16.

ONNX Runtime's CPU provider computes fp16 models in fp32, so an fp16 overflow never shows there;
the reference run's own activations tell whether a faithful fp16 executor (a GPU, TensorRT) would
overflow, and in which layer, before any engine is built. Recording costs one pass over each module
output (max |x| and the share of values fp16 would flush to zero or store as subnormals).
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


@dataclass(frozen=True)
class LayerRange:
    module: str
    type: str
    max_abs: float
    elements: int
    nonzero: int
    below: dict[str, float]  # precision -> share of non-zero values below its smallest subnormal
    subnormal: dict[str, float]  # precision -> share of non-zero values stored as subnormals

    def overflows(self, precision: str) -> bool:
        return self.max_abs > LIMITS[precision]["max"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    scratch = _Scratch()
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
                stats = [_stats(t.detach(), precisions, scratch) for t in fresh]
            ranges.seconds += started() - start
            elements = sum(st[1] for st in stats)
            nonzero = sum(st[2] for st in stats)
            count = max(nonzero, 1)
            below = {p: sum(st[3][p] for st in stats) / count for p in precisions}
            subnormal = {p: sum(st[4][p] for st in stats) / count for p in precisions}
            ranges.append(LayerRange(name, type(mod).__name__, max(st[0] for st in stats), elements, nonzero,
                                     below, subnormal))
        return record

    handles = [sub.register_forward_hook(hook(name)) for name, sub in module.named_modules() if name]
    try:
        yield ranges
    finally:
        for handle in handles:
            handle.remove()
        scratch.buffer = None


class _Scratch:
    """One buffer for |x|, grown to the largest activation and reused by every hook: a fresh |x| per
    layer costs the page faults of a new allocation each time (a third of the recording's time)."""

    def __init__(self) -> None:
        self.buffer: Any = None

    def abs_of(self, t: Any) -> Any:
        import torch

        flat = t.reshape(-1)
        if self.buffer is None or self.buffer.numel() < flat.numel() or self.buffer.dtype != flat.dtype \
                or self.buffer.device != flat.device:
            self.buffer = torch.empty(flat.numel(), dtype=flat.dtype, device=flat.device)
        return torch.abs(flat, out=self.buffer[:flat.numel()])


def _stats(t: Any, precisions: Sequence[str], scratch: _Scratch | None = None
           ) -> tuple[float, int, int, dict[str, int], dict[str, int]]:
    """max |x| over finite values, element count, non-zero count, and per precision the non-zero
    values below its smallest subnormal and those in its subnormal range; few passes, one temporary."""
    import torch

    low, high = torch.aminmax(t)
    peak = max(abs(float(low)), abs(float(high)))
    zeros = int(t.numel()) - int(torch.count_nonzero(t))
    a = (scratch or _Scratch()).abs_of(t)
    if not math.isfinite(peak):
        a = torch.where(torch.isfinite(a), a, torch.zeros((), dtype=a.dtype, device=a.device))
        peak = float(a.max())
    below, subnormal = {}, {}
    for p in precisions:
        under_normal = int(torch.count_nonzero(a < LIMITS[p]["min_normal"])) - zeros
        under_sub = int(torch.count_nonzero(a < LIMITS[p]["min_subnormal"])) - zeros if under_normal else 0
        below[p], subnormal[p] = under_sub, under_normal - under_sub
    return peak, int(t.numel()), int(t.numel()) - zeros, below, subnormal


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
    result += [RangeFinding(r.module, "flush", r.below[precision], precision) for r in kept
               if r.below.get(precision, 0.0) > FLUSH_REPORT_SHARE]
    return result
