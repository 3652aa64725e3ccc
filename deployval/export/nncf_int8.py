"""int8 as OpenVINO users make it: NNCF's post-training quantization of the simplified ONNX, calibrated on
the run's calibration set (`--calibration`, else the run's own inputs), written as a Q/DQ ONNX that
OpenVINO runs in int8. deployval's own int8 pass (int8.py) places Q/DQ for ONNX Runtime and TensorRT;
NNCF places them as OpenVINO's CPU plugin expects (its default preset, fast bias correction), so the
openvino int8 row judges the model an OpenVINO deployment would ship.

API checked against nncf 3.4 (nncf/quantization/quantize_model.py): nncf.quantize(onnx.ModelProto,
nncf.Dataset(list of feed dicts), subset_size=N) -> onnx.ModelProto; its ONNX backend needs onnxruntime.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._util import quiet_libraries
from ..errors import ExportError, first_line
from ..progress import Step
from .artifacts import Artifact
from .builders import Plan, Workshop, calibration_digest
from .int8 import NothingToQuantize

MIN_OPSET = 10  # NNCF refuses older ONNX models
TARGET_OPSET = 13  # what an older model is converted to first (per-axis Q/DQ, as NNCF places them)


def nncf_version() -> str | None:
    if importlib.util.find_spec("nncf") is None:
        return None
    from importlib.metadata import version

    return version("nncf")


def prepared(model: Any) -> tuple[Any, dict[str, Any]]:
    """The model as NNCF takes it, computing the same: opset 13 where it is older than NNCF's 10 (the int8
    pass's own upgrade, graph.upgrade_opset), and a unique name on every node (NNCF keys its placement by
    node name). What was changed is returned for the step's details."""
    import onnx

    from .graph import default_opset, upgrade_opset
    from .names import Names

    changes: dict[str, Any] = {}
    opset = default_opset(model)
    if opset and opset < MIN_OPSET:
        try:
            model = upgrade_opset(model, TARGET_OPSET)
            onnx.checker.check_model(model)
        except Exception as exc:
            raise ExportError(f"NNCF needs opset {MIN_OPSET} or later and the opset {opset} model cannot be "
                              f"converted to {TARGET_OPSET}: {first_line(exc)}") from None
        changes["opset"] = f"{opset} -> {TARGET_OPSET} (NNCF needs {MIN_OPSET} or later)"
    names = Names.of(model)
    seen: set[str] = set()
    renamed = 0
    for node in model.graph.node:
        if not node.name or node.name in seen:
            node.name = names.fresh(node.name or node.op_type)
            renamed += 1
        seen.add(node.name)
    if renamed:
        changes["nodes_named"] = renamed
    return model, changes


def quantize(source: Path, samples: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """`source` quantized by NNCF on `samples`, written to `out`; what it did, for the step's details."""
    import onnx

    model, changes = prepared(onnx.load(str(source)))
    with quiet_libraries("nncf", ""):
        import nncf

        try:
            quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
        except Exception as exc:  # NNCF's own reason (an op it cannot place, a shape it cannot follow)
            raise ExportError(f"NNCF could not quantize the model: {first_line(exc)}") from None
    ops = [node.op_type for node in quantized.graph.node]
    if "QuantizeLinear" not in ops:
        kinds = ", ".join(sorted(set(ops))[:8])
        raise NothingToQuantize(f"nothing to quantize in int8: NNCF placed no quantizer (the graph has {kinds})")
    onnx.save(quantized, str(out))
    return {"quantizer": f"nncf {nncf_version()}", "samples": len(samples), **changes,
            "quantize_nodes": ops.count("QuantizeLinear"), "dequantize_nodes": ops.count("DequantizeLinear")}


def onnx_int8_nncf(store: Workshop, kind: str, sources: Sequence[Artifact]) -> Plan:
    (source,) = sources
    version = nncf_version()
    if version is None:
        raise ExportError("NNCF is not installed (pip install 'deployval[openvino]'): OpenVINO's int8 needs it")
    samples = store.calibration_samples()
    digest = calibration_digest(samples, {"quantizer": f"nncf {version}", "preset": "default", "opset": TARGET_OPSET})
    source_name = str(store.config.calibration) if store.config.calibration else "the run's inputs"

    def run(step: Step, path: Path) -> dict[str, Any]:
        step.details = {**quantize(source.path, samples, path), "calibration_source": source_name}
        if not store.has_calibration:
            step.reason = "calibrated on the run's own inputs; pass --calibration DIR with real data"
        return {"calibration": digest}

    return Plan(run, f"int8 NNCF post-training quantization ({len(samples)} samples)",
                fresh=lambda meta: meta.get("calibration") == digest, skipped_on=(NothingToQuantize,))
