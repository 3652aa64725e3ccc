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


def nncf_version() -> str | None:
    if importlib.util.find_spec("nncf") is None:
        return None
    from importlib.metadata import version

    return version("nncf")


def quantize(source: Path, samples: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """`source` quantized by NNCF on `samples`, written to `out`; what it did, for the step's details."""
    import onnx

    with quiet_libraries("nncf", ""):
        import nncf

        model = onnx.load(str(source))
        try:
            quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
        except Exception as exc:  # NNCF's own reason (an op it cannot place, a shape it cannot follow)
            raise ExportError(f"NNCF could not quantize the model: {first_line(exc)}") from None
    onnx.save(quantized, str(out))
    ops = [node.op_type for node in quantized.graph.node]
    if "QuantizeLinear" not in ops:
        raise ExportError("NNCF quantized nothing in this model (no QuantizeLinear placed)")
    return {"quantizer": f"nncf {nncf_version()}", "samples": len(samples),
            "quantize_nodes": ops.count("QuantizeLinear"), "dequantize_nodes": ops.count("DequantizeLinear")}


def onnx_int8_nncf(store: Workshop, kind: str, sources: Sequence[Artifact]) -> Plan:
    (source,) = sources
    version = nncf_version()
    if version is None:
        raise ExportError("NNCF is not installed (pip install 'deployval[openvino]'): OpenVINO's int8 needs it")
    samples = store.calibration_samples()
    digest = calibration_digest(samples, {"quantizer": f"nncf {version}", "preset": "default"})
    source_name = str(store.config.calibration) if store.config.calibration else "the run's inputs"

    def run(step: Step, path: Path) -> dict[str, Any]:
        step.details = {**quantize(source.path, samples, path), "calibration_source": source_name}
        if not store.has_calibration:
            step.reason = "calibrated on the run's own inputs; pass --calibration DIR with real data"
        return {"calibration": digest}

    return Plan(run, f"int8 NNCF post-training quantization ({len(samples)} samples)",
                fresh=lambda meta: meta.get("calibration") == digest)
