"""Eager side of `debug`: forward hooks on every submodule (leaves and containers) and `mark()`.

Two passes over the same inputs:

* `survey()`: one forward pass that records the structure only: every module call and mark in
  execution order (a call is complete when its module returns, so children come before their
  parents), its enclosing calls, the shapes and dtypes of its outputs, and which outputs are the very
  same tensor object as an earlier call's (a container that returns its last child's output). No
  activation is kept, whatever the size of the model.
* `stream()`: a forward pass that hands each call's inputs and outputs to a callback the moment the
  module returns, so the comparison runs layer by layer and each activation is released as the
  forward pass goes on, exactly as without hooks. The callback may stop the pass early.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import marks


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name

    @property
    def nbytes(self) -> int:
        import numpy as np

        count = 1
        for d in self.shape:
            count *= d
        return count * np.dtype(self.dtype).itemsize


@dataclass
class Call:
    """One module call or one mark, in execution (completion) order."""

    index: int
    kind: str  # "module" or "mark"
    name: str  # module qualified name, or the mark's name
    call: int  # how many times this module (or mark name) ran before
    type: str  # module class name, or "mark"
    ancestors: tuple[str, ...]  # keys of the enclosing module calls, nearest first
    outputs: list[TensorInfo] = field(default_factory=list)
    same_as: list[tuple[str, int] | None] = field(default_factory=list)  # (earlier call key, output index)
    inputs_from: list[tuple[str, int] | None] = field(default_factory=list)  # per tensor input: its producer call
    calls_total: int = 1  # filled after the survey: how often this name ran

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}#{self.call}"

    @property
    def label(self) -> str:
        base = self.name if self.kind == "module" else f"mark:{self.name}"
        return base if self.calls_total == 1 else f"{base}#{self.call}"


def call_key(kind: str, name: str, call: int) -> str:
    return f"{kind}:{name}#{call}"


def tensor_leaves(value: Any) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves

    return [leaf for leaf in tree_leaves(value) if isinstance(leaf, torch.Tensor)]


def numpy_dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).replace("torch.", "")


class StopForward(Exception):
    """Raised from a callback to end the forward pass early (nothing after it is needed)."""


@dataclass
class Frame:
    name: str
    call: int
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    versions: tuple[int, ...]  # tensor versions of the inputs when the call started
    ancestors: tuple[str, ...]

    @property
    def key(self) -> str:
        return call_key("module", self.name, self.call)

    def inputs(self) -> list[torch.Tensor]:
        return tensor_leaves((self.args, dict(self.kwargs)))

    def inputs_changed(self) -> bool:
        """True when an input was modified in place during the call (its value at entry is gone)."""
        return tuple(t._version for t in self.inputs()) != self.versions


class CallTracer:
    """Forward hooks on every submodule of `model` and the `mark()` sink, for one forward pass."""

    def __init__(self, model: torch.nn.Module,
                 on_module: Callable[[Frame, Any], None],
                 on_mark: Callable[[str, int, torch.Tensor, tuple[str, ...]], None],
                 on_enter: Callable[[Frame], None] | None = None) -> None:
        self.model = model
        self.names = {id(m): n for n, m in model.named_modules() if n}
        self.on_module, self.on_mark_cb, self.on_enter = on_module, on_mark, on_enter
        self.counts: Counter[str] = Counter()
        self.mark_counts: Counter[str] = Counter()
        self.stack: list[Frame] = []
        self.handles: list[Any] = []

    def _pre(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        name = self.names[id(module)]
        call = self.counts[name]
        self.counts[name] += 1
        ancestors = tuple(f.key for f in reversed(self.stack))
        tensors = tensor_leaves((args, dict(kwargs)))
        frame = Frame(name, call, args, kwargs, tuple(t._version for t in tensors), ancestors)
        self.stack.append(frame)
        if self.on_enter is not None:
            self.on_enter(frame)

    def _post(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Any) -> None:
        frame = self.stack.pop()
        self.on_module(frame, output)

    def on_mark(self, value: torch.Tensor, name: str) -> None:
        call = self.mark_counts[name]
        self.mark_counts[name] += 1
        self.on_mark_cb(name, call, value, tuple(f.key for f in reversed(self.stack)))

    def run(self, inputs: Sequence[torch.Tensor]) -> Any:
        for module in self.model.modules():
            if id(module) in self.names:
                self.handles.append(module.register_forward_pre_hook(self._pre, with_kwargs=True))
                self.handles.append(module.register_forward_hook(self._post, with_kwargs=True))
        try:
            with torch.no_grad(), marks.capturing(self):
                return self.model(*inputs)
        finally:
            for handle in self.handles:
                handle.remove()
            self.handles.clear()
            self.stack.clear()


@dataclass
class Survey:
    calls: list[Call]
    outputs: Any  # the model's return value (final outputs; small next to the activations)

    def by_key(self) -> dict[str, Call]:
        return {c.key: c for c in self.calls}

    def calls_to_json(self) -> list[dict[str, Any]]:
        return [{"index": c.index, "kind": c.kind, "name": c.name, "call": c.call, "type": c.type,
                 "ancestors": list(c.ancestors), "outputs": [[list(o.shape), o.dtype] for o in c.outputs],
                 "same_as": [list(s) if s else None for s in c.same_as],
                 "inputs_from": [list(s) if s else None for s in c.inputs_from], "calls_total": c.calls_total}
                for c in self.calls]

    @classmethod
    def from_json(cls, calls: list[dict[str, Any]]) -> Survey:
        return cls([Call(c["index"], c["kind"], c["name"], c["call"], c["type"], tuple(c["ancestors"]),
                         [TensorInfo(tuple(shape), dtype) for shape, dtype in c["outputs"]],
                         [tuple(s) if s else None for s in c["same_as"]],
                         [tuple(s) if s else None for s in c["inputs_from"]], c["calls_total"]) for c in calls], None)


def survey(model: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> Survey:
    """One forward pass recording the call structure (no activations kept)."""
    calls: list[Call] = []
    seen: dict[int, tuple[weakref.ref[torch.Tensor], str, int]] = {}
    type_of = {n: type(m).__name__ for n, m in model.named_modules() if n}

    def record(call: Call, tensors: list[torch.Tensor]) -> None:
        for position, tensor in enumerate(tensors):
            call.outputs.append(TensorInfo(tuple(tensor.shape), numpy_dtype(tensor)))
            earlier = source(tensor)
            if earlier is not None:
                call.same_as.append(earlier)
            else:
                call.same_as.append(None)
                seen[id(tensor)] = (weakref.ref(tensor), call.key, position)
        calls.append(call)

    def source(tensor: torch.Tensor) -> tuple[str, int] | None:
        earlier = seen.get(id(tensor))
        return (earlier[1], earlier[2]) if earlier is not None and earlier[0]() is tensor else None

    def on_module(frame: Frame, output: Any) -> None:
        call = Call(len(calls), "module", frame.name, frame.call, type_of.get(frame.name, "?"), frame.ancestors)
        call.inputs_from = [source(t) for t in frame.inputs()]
        record(call, tensor_leaves(output))

    def on_mark(name: str, number: int, value: torch.Tensor, ancestors: tuple[str, ...]) -> None:
        record(Call(len(calls), "mark", name, number, "mark", ancestors), [value])

    tracer = CallTracer(model, on_module, on_mark)
    outputs = tracer.run(inputs)
    totals = Counter((c.kind, c.name) for c in calls)
    for call in calls:
        call.calls_total = totals[(call.kind, call.name)]
    return Survey(calls, outputs)


def to_numpy(tensor: torch.Tensor) -> Any:
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy()
