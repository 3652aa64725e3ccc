"""What a cache key covers of a model, so that an artifact is reused only for the model that made it.

A PyTorch module is digested by everything that decides what it computes: every module reachable from
it (registered children, and modules held as plain attributes), each with its class and module path,
its plain attributes (hyperparameters such as stride, padding or an activation picked at construction,
and its hooks), its parameters and all its buffers, persistent or not; then the source file of every
class and function that is not torch's or the standard library's, and of the callables the caller
names (the factory). Nothing in it depends on the process: no ids, no addresses, a fixed order.

An ONNX file is digested together with every external data file it names: rewriting `net.data` beside
`net.onnx` changes the model as much as rewriting `net.onnx` does.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import re
import sys
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .._util import timed_import

# Bumped whenever what a digest covers changes.
DIGEST_FORMAT = 2
# How deep plain (non-module) objects held in attributes are described; below that, their type only.
MAX_DEPTH = 6
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_SKIPPED_ROOTS = ("builtins", "torch", "numpy", "__future__")


def module_digest(module: Any, *, header: Sequence[str] = (), callables: Iterable[Any] = ()) -> str:
    """sha256 over `header` (e.g. the factory's name and the forward arguments), the module's structure,
    its tensors, and the source files of its non-torch code and of `callables`."""
    walker = _Walker(timed_import("torch"))
    walker.feed(f"digest format {DIGEST_FORMAT}")
    for text in header:
        walker.feed(text)
    walker.module("", module)
    for target in callables:
        walker.source_of(target)
    walker.sources()
    return walker.hash.hexdigest()


def qualified(cls: type) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', getattr(cls, '__name__', '?'))}"


class _Walker:
    """Feeds one sha256 with a depth-first description of a module tree."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.hash = hashlib.sha256()
        self.modules: dict[int, str] = {}  # id -> path of each module described (all alive during the walk)
        self.tensors: dict[int, str] = {}  # id -> where each tensor was hashed (tied weights once)
        self.stack: set[int] = set()  # plain objects being described (cycles)
        self.files: dict[str, str] = {}  # module name -> source file

    def feed(self, text: str) -> None:
        self.hash.update(text.encode("utf-8", "backslashreplace"))
        self.hash.update(b"\x00")

    # ------------------------------------------------------------------ modules
    def module(self, path: str, module: Any) -> None:
        torch = self.torch
        self.modules[id(module)] = path
        cls = type(module)
        self.feed(f"module {path} {qualified(cls)} training={module.training}")
        self.source_of(cls)
        if isinstance(module, torch.jit.ScriptModule):
            self.feed(f"script {getattr(module, 'original_name', '')}")
            try:
                self.feed(module.code)
            except Exception:  # a module without forward has no code
                self.feed("no code")
        else:
            state = vars(module)
            graph_module = isinstance(module, torch.fx.GraphModule)
            if graph_module:
                self.feed(module.code)
            for name in sorted(state):
                if name in ("_parameters", "_buffers", "_modules") or (graph_module and name in ("_graph", "graph")):
                    continue
                value = state[name]
                self.feed(f"attribute {name}")
                if name.startswith("_") and "hook" in name and isinstance(value, dict):
                    value = list(value.values())  # keyed by process-wide handle ids
                self.value(value, 1, _join(path, name))
        persistent_not = getattr(module, "_non_persistent_buffers_set", set())
        for name, parameter in module._parameters.items():
            self.feed(f"parameter {name}")
            self.value(parameter, 1, _join(path, name))
        for name, buffer in module._buffers.items():
            self.feed(f"buffer {name}" + (" (not persistent)" if name in persistent_not else ""))
            self.value(buffer, 1, _join(path, name))
        if type(module).get_extra_state is not torch.nn.Module.get_extra_state:
            self.feed("extra state")
            self.value(module.get_extra_state(), 1, _join(path, "_extra_state"))
        for name, child in module._modules.items():
            self.feed(f"child {name}")
            self.value(child, 1, _join(path, name))

    # ------------------------------------------------------------------ plain values
    def value(self, value: Any, depth: int, where: str) -> None:
        torch = self.torch
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            self.feed(f"{type(value).__name__} {value!r}")
        elif isinstance(value, torch.Tensor):
            self.tensor(value, where)
        elif isinstance(value, torch.nn.Module):
            seen = self.modules.get(id(value))
            if seen is not None:
                self.feed(f"module {seen}")
            else:
                self.module(where, value)
        elif isinstance(value, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
            self.feed(f"torch {value}")
        elif isinstance(value, enum.Enum):
            self.feed(f"enum {qualified(type(value))}.{value.name}")
            self.source_of(type(value))
        elif type(value).__module__ == "numpy" and hasattr(value, "dtype"):
            self.array(value)
        elif isinstance(value, (list, tuple)):
            self.feed(f"{qualified(type(value))} [{len(value)}")
            for index, item in enumerate(value):
                self.value(item, depth + 1, f"{where}[{index}]")
            self.feed("]")
        elif isinstance(value, dict):
            self.feed(f"{qualified(type(value))} {{{len(value)}")
            for key in sorted(value, key=_key_text):
                self.feed(f"key {_key_text(key)}")
                self.value(value[key], depth + 1, f"{where}[{_key_text(key)}]")
            self.feed("}")
        elif isinstance(value, (set, frozenset)):
            self.feed(f"{qualified(type(value))} " + ", ".join(sorted(map(_key_text, value))))
        elif isinstance(value, type):
            self.feed(f"class {qualified(value)}")
            self.source_of(value)
        elif isinstance(value, functools.partial):
            self.feed("partial")
            self.value([value.func, list(value.args), dict(value.keywords)], depth + 1, where)
        elif isinstance(value, types.FunctionType):
            self.function(value, depth, where)
        elif isinstance(value, types.MethodType):
            self.feed(f"method {value.__func__.__qualname__}")
            self.value(value.__self__, depth + 1, f"{where}.__self__")
            self.source_of(value.__func__)
        elif callable(value) and not hasattr(value, "__dict__"):  # builtins, method wrappers, ufuncs
            self.feed(f"callable {getattr(value, '__module__', None)}.{getattr(value, '__qualname__', type(value))}")
        else:
            self.object(value, depth, where)

    def function(self, fn: types.FunctionType, depth: int, where: str) -> None:
        """A Python function: its name and file, and what it closes over (a lambda's captured scale)."""
        self.feed(f"function {fn.__module__}.{fn.__qualname__}")
        self.source_of(fn)
        if depth >= MAX_DEPTH:
            return
        self.value(list(fn.__defaults__ or ()), depth + 1, where)
        self.value(dict(fn.__kwdefaults__ or {}), depth + 1, where)
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # an empty cell
                cells.append(None)
        self.value(cells, depth + 1, where)

    def object(self, value: Any, depth: int, where: str) -> None:
        """Any other object: its type, and its attributes down to MAX_DEPTH (a repr only if it names no address)."""
        cls = type(value)
        self.feed(f"object {qualified(cls)}")
        self.source_of(cls)
        if depth >= MAX_DEPTH or id(value) in self.stack:
            return
        state = getattr(value, "__dict__", None)
        slots = [s for klass in cls.__mro__ for s in getattr(klass, "__slots__", ()) if isinstance(s, str)]
        if not isinstance(state, dict) and not slots:
            try:
                text = repr(value)
            except Exception:
                text = ""
            self.feed(_ADDRESS.sub("0x", text))
            return
        self.stack.add(id(value))
        try:
            for name in sorted(state or {}):
                self.feed(f"attribute {name}")
                self.value(state[name], depth + 1, f"{where}.{name}")  # type: ignore[index]
            for name in sorted(set(slots)):
                if name != "__dict__" and hasattr(value, name):
                    self.feed(f"slot {name}")
                    self.value(getattr(value, name), depth + 1, f"{where}.{name}")
        finally:
            self.stack.discard(id(value))

    def tensor(self, tensor: Any, where: str) -> None:
        torch = self.torch
        seen = self.tensors.get(id(tensor))
        if seen is not None:
            self.feed(f"tensor {seen}")
            return
        self.tensors[id(tensor)] = where
        self.feed(f"tensor {tensor.dtype} {tuple(tensor.shape)} {tensor.layout}")
        data = tensor.detach()
        if data.is_meta:
            return
        try:
            if data.is_quantized:
                self.feed(f"quantized {data.qscheme()}")
                if data.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                    self.feed(f"{data.q_scale()!r} {data.q_zero_point()}")
                else:
                    self.tensor(data.q_per_channel_scales(), f"{where}.scales")
                    self.tensor(data.q_per_channel_zero_points(), f"{where}.zero_points")
                data = data.int_repr()
            if data.layout != torch.strided:
                data = data.to_dense()
            flat = data.cpu().contiguous().reshape(-1)
            # Raw bytes whatever the dtype (bfloat16 has no numpy equivalent).
            self.hash.update(memoryview(flat.view(torch.uint8).numpy()))
        except Exception:
            self.feed(str(data.cpu().tolist()))

    def array(self, array: Any) -> None:
        import numpy as np

        array = np.asarray(array)
        self.feed(f"array {array.dtype} {array.shape}")
        if array.dtype.hasobject:
            self.feed(repr(array.tolist()))
        else:
            self.hash.update(np.ascontiguousarray(array).tobytes())

    # ------------------------------------------------------------------ source files
    def source_of(self, target: Any) -> None:
        """Remember the file that defines `target` (a class, function, partial or callable object)."""
        while isinstance(target, functools.partial):
            target = target.func
        target = inspect.unwrap(target) if callable(target) else target
        name = getattr(target, "__module__", None)
        if not isinstance(name, str):
            name = getattr(type(target), "__module__", None)
        if not isinstance(name, str) or name in self.files or _skipped(name):
            return
        module = sys.modules.get(name)
        try:
            self.files[name] = inspect.getfile(module) if module is not None else ""
        except (TypeError, OSError):
            self.files[name] = ""

    def sources(self) -> None:
        for name in sorted(self.files):
            self.feed(f"source {name}")
            path = self.files[name]
            try:
                self.hash.update(Path(path).read_bytes() if path else b"(no source file)")
            except OSError:
                self.feed("(unreadable)")


def _skipped(module_name: str) -> bool:
    root = module_name.split(".", 1)[0]
    return root in _SKIPPED_ROOTS or root in getattr(sys, "stdlib_module_names", ())


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _key_text(key: Any) -> str:
    if key is None or isinstance(key, (bool, int, float, str, bytes)):
        return f"{type(key).__name__} {key!r}"
    if isinstance(key, enum.Enum):
        return f"enum {qualified(type(key))}.{key.name}"
    if isinstance(key, tuple):
        return "(" + ", ".join(map(_key_text, key)) + ")"
    return _ADDRESS.sub("0x", f"{qualified(type(key))} {key!r}")
