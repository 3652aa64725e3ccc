"""deployval: does the deployed model still compute what the PyTorch model computes, and how fast?

    import deployval
    report = deployval.compare("convs", backends=["torch", "ort"], precisions=["fp32", "fp16"])
    assert report, report.exit_code

Attributes are imported lazily, so `import deployval` stays cheap (no torch, no numpy).
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

_LAZY = {
    "compare": ("deployval.api", "compare"),
    "mark": ("deployval.debug", "mark"),
    "validate": ("deployval.api", "validate"),
    "export_artifacts": ("deployval.api", "export_artifacts"),
    "ModelSpec": ("deployval.model.spec", "ModelSpec"),
    "InputSpec": ("deployval.model.spec", "InputSpec"),
    "Tolerance": ("deployval.model.spec", "Tolerance"),
    "ToleranceTable": ("deployval.model.spec", "ToleranceTable"),
    "TaskSpec": ("deployval.model.spec", "TaskSpec"),
    "ExportOptions": ("deployval.model.spec", "ExportOptions"),
    "RunConfig": ("deployval.model.spec", "RunConfig"),
    "Runner": ("deployval.backends.base", "Runner"),
    "register_backend": ("deployval.backends.base", "register_backend"),
    "Report": ("deployval.judge.results", "Report"),
    "DeployvalError": ("deployval.errors", "DeployvalError"),
    "UsageError": ("deployval.errors", "UsageError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deployval' has no attribute '{name}'")
