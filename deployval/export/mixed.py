"""Mixed precision in PyTorch eager: a half model with some modules kept in fp32, or an fp32 model
with some modules in half. Both compute with real half arithmetic, so what they show about fp16 on
the CPU is faithful, unlike ONNX Runtime's CPU provider (which computes fp16 models in fp32)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any

from ..errors import UsageError


def _cast_floats(value: Any, dtype: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(_cast_floats(v, dtype) for v in value)
    if isinstance(value, list):
        return [_cast_floats(v, dtype) for v in value]
    if isinstance(value, dict):
        return {k: _cast_floats(v, dtype) for k, v in value.items()}
    return value


def _island_class() -> type:
    import torch

    class PrecisionIsland(torch.nn.Module):
        """Runs `inner` at `compute` dtype inside a model that runs at `outer` dtype: floating inputs
        are cast on the way in and outputs cast back on the way out, as a mixed-precision engine
        inserts Casts around a layer it keeps at another precision."""

        def __init__(self, inner: Any, compute: Any, outer: Any) -> None:
            super().__init__()
            self.inner, self.compute, self.outer = inner, compute, outer

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            out = self.inner(*_cast_floats(args, self.compute), **_cast_floats(kwargs, self.compute))
            return _cast_floats(out, self.outer)

    return PrecisionIsland


def matching_modules(module: Any, patterns: Sequence[str]) -> list[str]:
    """Qualified names of the modules matching any fnmatch pattern, outermost only (a match inside a
    matched module is covered by it). A pattern that matches nothing is the user's typo."""
    names = [name for name, _ in module.named_modules() if name]
    for pattern in patterns:
        if not any(fnmatchcase(n, pattern) for n in names):
            raise UsageError(f"--keep-fp32 '{pattern}' matches no module (modules look like {', '.join(names[:3])})")
    matched = [n for n in names if any(fnmatchcase(n, p) for p in patterns)]
    return [n for n in matched if not any(n.startswith(m + ".") for m in matched if m != n)]


def _replace(root: Any, name: str, new: Any) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)  # also right for Sequential/ModuleList children ("0", "1"...)


def _cast_inputs_to(dtype: Any) -> Any:
    def hook(_module: Any, args: Any, kwargs: Any) -> tuple[Any, Any]:
        return _cast_floats(args, dtype), _cast_floats(kwargs, dtype)
    return hook


def half_except(module: Any, keep_fp32: Iterable[str]) -> Any:
    """A half copy of `module` whose modules named in `keep_fp32` (exact qualified names) run in fp32
    with their original weights.

    Every module holding weights casts its floating inputs to its own precision, as an engine casts
    at the boundary of a layer kept at another precision; a tensor keeps the precision of the layer
    that made it until then, so two adjacent kept layers pass fp32 between them (a kept layer's
    output is not squeezed into half on its way to the next kept layer).
    """
    import torch

    keep = list(keep_fp32)
    lowered = copy.deepcopy(module).half()
    for name in keep:
        _replace(lowered, name, copy.deepcopy(module.get_submodule(name)).float())
    kept = [lowered.get_submodule(name) for name in keep]
    for name, sub in lowered.named_modules():
        if any(sub is k for k in kept):
            sub.register_forward_pre_hook(_cast_inputs_to(torch.float32), with_kwargs=True)
            continue
        params = [p for p in sub.parameters(recurse=False) if p.is_floating_point()]
        if params and not any(name.startswith(k + ".") for k in keep):
            sub.register_forward_pre_hook(_cast_inputs_to(params[0].dtype), with_kwargs=True)
    return lowered.eval()


def half_only(module: Any, names: Iterable[str]) -> Any:
    """A copy of the fp32 `module` in which only the named modules run in half."""
    import torch

    island = _island_class()
    lowered = copy.deepcopy(module)
    for name in names:
        _replace(lowered, name, island(copy.deepcopy(module.get_submodule(name)).half(), torch.float16,
                                       torch.float32))
    return lowered.eval()
