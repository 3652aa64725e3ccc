"""torch.export -> AOTInductor: the module exported to an ExportedProgram and compiled ahead of time into
a `.pt2` package (shared library plus weights) that `torch._inductor.aoti_load_package` runs without
Python's model code, as PyTorch's own deployment path now recommends over TorchScript.

The package is compiled for the run's shapes and device (static shapes: the cache key holds them) at the
module's precision: half and bfloat16 packages come from a copy of the module cast first, as
`module.half()` deployments do. An export that fails (a graph break, data-dependent control flow) is an
ExportError carrying torch.export's own first line.
API checked against torch 2.13: torch.export.export(module, args, strict=False),
torch._inductor.aoti_compile_and_package(exported, package_path=...),
torch._inductor.aoti_load_package(path) -> a callable taking the positional inputs.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._util import atomic_path, timed_import
from ..errors import ExportError, first_line
from ..model.spec import HALF_DTYPES


def compile_package(module: Any, args: Sequence[Any], path: Path, precision: str = "fp32",
                    device: str = "cpu") -> dict[str, Any]:
    """Export and compile `module` on `args` into the package at `path`; the details for the report."""
    torch = timed_import("torch")
    dtype = HALF_DTYPES.get(precision)  # None: fp32
    module = copy.deepcopy(module).to(device).eval()
    args = tuple(a.to(device) for a in args)
    if dtype is not None:
        module = module.to(getattr(torch, dtype))
        args = tuple(a.to(getattr(torch, dtype)) if a.is_floating_point() else a for a in args)
    start = time.perf_counter()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations, not the user's model
            exported = torch.export.export(module, args, strict=False)
    except Exception as exc:
        raise ExportError(f"torch.export failed: {first_line(exc)}") from exc
    exported_s = time.perf_counter() - start
    start = time.perf_counter()
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():  # a .pt2 name: the packager checks the suffix
            warnings.simplefilter("ignore", FutureWarning)
            torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp))
    except Exception as exc:
        raise ExportError(f"AOTInductor could not compile the exported program: {first_line(exc)}") from exc
    return {"exporter": "torch.export", "compiler": "AOTInductor", "precision": precision, "device": device,
            "export_s": round(exported_s, 3), "compile_s": round(time.perf_counter() - start, 3),
            "nodes": len(exported.graph.nodes)}


def load_package(path: Path) -> Any:
    torch = timed_import("torch")
    return torch._inductor.aoti_load_package(str(path))
