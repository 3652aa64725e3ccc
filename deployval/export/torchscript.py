"""TorchScript export: trace by default (what deployment pipelines ship), script on request."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from .._util import atomic_path, timed_import
from ..errors import ExportError, first_line


def trace_module(module: Any, args: tuple[Any, ...]) -> Any:
    """torch.jit.trace as deployval traces: no gradients, tracer warnings silenced, and no check_trace
    (it would run the model twice more; the comparison with the reference checks it instead)."""
    torch = timed_import("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.jit.trace is deprecated" and tracer warnings
        with torch.no_grad():
            return torch.jit.trace(module, args, check_trace=False, strict=False)


def save_torchscript(scripted: Any, path: Path, mode: str = "trace") -> dict[str, Any]:
    """Write a TorchScript module to `path` atomically; returns details for the report."""
    torch = timed_import("torch")
    with atomic_path(path) as tmp:
        torch.jit.save(scripted, str(tmp))
    return {"mode": mode, "torch": torch.__version__}


def export_torchscript(module: Any, args: tuple[Any, ...], path: Path, mode: str = "trace") -> dict[str, Any]:
    """Write `module` as TorchScript to `path` (atomically); returns details for the report."""
    torch = timed_import("torch")
    if isinstance(module, torch.jit.ScriptModule):
        raise ExportError("the model already is TorchScript")
    try:
        if mode == "script":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scripted = torch.jit.script(module)
        else:
            scripted = trace_module(module, args)
    except Exception as exc:
        raise ExportError(f"torch.jit.{mode} failed: {first_line(exc)}") from exc
    return save_torchscript(scripted, path, mode)
