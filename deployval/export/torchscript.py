"""TorchScript export: trace by default (what deployment pipelines ship), script on request."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from .._util import atomic_path, timed_import
from ..errors import ExportError, first_line


def export_torchscript(module: Any, args: tuple[Any, ...], path: Path, mode: str = "trace") -> dict[str, Any]:
    """Write `module` as TorchScript to `path` (atomically); returns details for the report."""
    torch = timed_import("torch")
    if isinstance(module, torch.jit.ScriptModule):
        raise ExportError("the model already is TorchScript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.jit.trace is deprecated" and tracer warnings
        try:
            with torch.no_grad():
                if mode == "script":
                    scripted = torch.jit.script(module)
                else:
                    # check_trace would run the model twice more; the comparison checks it instead.
                    scripted = torch.jit.trace(module, args, check_trace=False, strict=False)
        except Exception as exc:
            raise ExportError(f"torch.jit.{mode} failed: {first_line(exc)}") from exc
    with atomic_path(path) as tmp:
        torch.jit.save(scripted, str(tmp))
    return {"mode": mode, "torch": torch.__version__}
