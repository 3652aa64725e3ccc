"""torch -> ONNX: the dynamo exporter by default, the legacy TorchScript-based exporter on request
or as a recorded fallback when dynamo fails."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._util import atomic_path, quiet_libraries, timed_import
from ..errors import ExportError, first_line

LEGACY_DEFAULT_OPSET = 17
EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")
# Above this many bytes of weights the protobuf 2 GB limit is near: keep weights in a side file.
EXTERNAL_DATA_BYTES = 1_500_000_000


def export_onnx(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    exporter: str = "dynamo",
    opset: int | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> dict[str, Any]:
    """Export to `path`; returns details (exporter used, fallback reason, opset) for the report."""
    torch = timed_import("torch")
    details: dict[str, Any] = {"exporter_requested": exporter}
    from ..model.loading import bound_model

    if isinstance(bound_model(module), torch.jit.ScriptModule):
        # A TorchScript file behind bound --arg values: neither exporter traces into a ScriptModule held
        # by a Python module, but a trace of the whole is TorchScript, which the legacy exporter takes.
        with torch.no_grad():
            module = torch.jit.trace(module, args, check_trace=False, strict=False)
        details["traced_first"] = "TorchScript file with bound arguments, traced before export"
    if isinstance(module, torch.jit.ScriptModule) and exporter == "dynamo":
        details["fallback_reason"] = "TorchScript modules only export with the legacy exporter"
        exporter = "legacy"
    param_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    common = {
        "input_names": list(input_names),
        "output_names": list(output_names),
        "dynamic_axes": {k: dict(v) for k, v in dynamic_axes.items()} if dynamic_axes else None,
    }
    if exporter == "dynamo":
        try:
            _export(torch, module, args, path, dynamo=True, opset=opset, large=param_bytes > EXTERNAL_DATA_BYTES,
                    **common)
            details["exporter"] = "dynamo"
        except Exception as exc:
            details["fallback_reason"] = f"dynamo exporter failed: {first_line(exc)}"
            exporter = "legacy"
    if exporter == "legacy":
        try:
            _export(torch, module, args, path, dynamo=False, opset=opset or LEGACY_DEFAULT_OPSET,
                    large=param_bytes > EXTERNAL_DATA_BYTES, **common)
            details["exporter"] = "legacy"
        except Exception as exc:
            previous = details.get("fallback_reason")
            message = f"legacy exporter failed: {first_line(exc)}"
            raise ExportError(f"{previous}; {message}" if previous else message) from exc
    onnx = timed_import("onnx")
    model = onnx.load(str(path), load_external_data=False)
    details["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    details["nodes"] = len(model.graph.node)
    return details


def _export(torch: Any, module: Any, args: tuple[Any, ...], path: Path, *, dynamo: bool, opset: int | None,
            large: bool, **common: Any) -> None:
    with atomic_path(path) as tmp, quiet_libraries(*EXPORTER_LOGGERS), torch.no_grad():
        if dynamo:
            torch.onnx.export(module, args, str(tmp), dynamo=True, opset_version=opset, verbose=False,
                              external_data=large, **common)
        else:
            torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=opset,
                              do_constant_folding=True, **common)
