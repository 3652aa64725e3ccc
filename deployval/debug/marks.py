"""`deployval.mark(x, "name")`: name a value inside `forward` that no module hook can see.

Outside a debug run `mark` returns `x` untouched and adds nothing to any graph: eager runs, the
TorchScript trace and the deployable ONNX export are exactly what they would be without it.

In a debug run it does one of two things:

* eager capture (`capturing(...)`): hands the value to the capture session, which compares it with
  the backend's value of the same tensor, and returns `x`;
* marker export (`exporting_markers()`): leaves a node `deployval::Mark(name=...)` in the exported
  graph whose input is the marked tensor: `torch.onnx.ops.symbolic` for the dynamo exporter, an
  autograd Function with an ONNX `symbolic` for the legacy (TorchScript-based) exporter. deployval
  reads which tensor each marker names, and maps it onto the deployable export by its producing
  node; the marker export itself is never run or deployed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import torch

MARK_DOMAIN = "deployval"
MARK_OP = "Mark"


class MarkSink(Protocol):
    def on_mark(self, value: torch.Tensor, name: str) -> None: ...


_sink: MarkSink | None = None
_exporting = False


class _MarkFunction(torch.autograd.Function):
    """Identity in eager; `deployval::Mark` in the legacy exporter's graph."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, name: str) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def symbolic(g: Any, x: Any, name: str) -> Any:
        return g.op(f"{MARK_DOMAIN}::{MARK_OP}", x, name_s=name)


def mark(x: Any, name: str) -> Any:
    if not isinstance(name, str) or not name:
        raise ValueError("deployval.mark(x, name): name must be a non-empty string")
    if not isinstance(x, torch.Tensor):
        return x
    if _exporting:
        if torch.jit.is_tracing():
            return _MarkFunction.apply(x, name)
        if torch.onnx.is_in_onnx_export():
            return torch.onnx.ops.symbolic(f"{MARK_DOMAIN}::{MARK_OP}", (x,), {"name": name}, dtype=x.dtype,
                                           shape=x.shape, version=1)
        return x
    if _sink is not None:
        _sink.on_mark(x, name)
    return x


@contextlib.contextmanager
def capturing(sink: MarkSink) -> Iterator[None]:
    """Route every `mark()` of this thread's forward passes to `sink` while the block runs."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous


@contextlib.contextmanager
def exporting_markers() -> Iterator[None]:
    """Make `mark()` leave `deployval::Mark` nodes in graphs exported while the block runs."""
    global _exporting
    previous, _exporting = _exporting, True
    try:
        yield
    finally:
        _exporting = previous
