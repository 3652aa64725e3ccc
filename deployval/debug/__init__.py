"""Layer-wise localization: where (which layer) and why (export or runtime) a backend diverges.

    deployval debug MODEL --backend ort [--precision fp16]

`deployval.mark(x, "name")` names a value inside `forward` that no module hook can see. This
package imports neither torch nor numpy until something is called: `mark` imports torch on its
first call (a model calling it has imported torch anyway).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DebugReport", "mark", "render_debug", "run_debug"]

_LAZY = {
    "run_debug": ("deployval.debug.run", "run_debug"),
    "DebugReport": ("deployval.debug.report", "DebugReport"),
    "render_debug": ("deployval.debug.report", "render_debug"),
}


def mark(x: Any, name: str) -> Any:
    """Name the value `x` for `deployval debug`; returns `x` unchanged.

    Inside `forward`, for code the module hooks cannot see (functional ops between two module
    calls). Outside a debug run it does nothing, and the deployable export is the same with or
    without it; in a debug run the eager value is compared with the ONNX tensor the marker binds.
    """
    from .marks import mark as _mark

    return _mark(x, name)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deployval.debug' has no attribute '{name}'")
