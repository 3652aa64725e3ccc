"""The artifact vocabulary: the kinds a backend may consume, the `Artifact` they come as, and the
file each kind is stored in. Precision lives in the artifact, the backend is the runtime.

Kept free of heavy imports and of the rest of deployval, so backends, the store and plugins can all
name kinds without pulling in each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODULE = "module"  # the PyTorch nn.Module in memory
TORCHSCRIPT = "torchscript"  # traced or scripted TorchScript file
ONNX_RAW = "onnx-raw"  # as exported
ONNX = "onnx"  # checked, simplified (verified) fp32 ONNX
ONNX_INT32 = "onnx-int32"  # ONNX with int64 cast to int32 (TensorRT 8.x, embedded targets)
ONNX_FP16 = "onnx-fp16"  # fp16 weights and compute, fp32 I/O
ONNX_INT8 = "onnx-int8"  # Q/DQ int8, calibrated
ONNX_FP16_INT32 = "onnx-fp16-int32"  # the fp16 ONNX after the int64 -> int32 pass
ONNX_INT8_INT32 = "onnx-int8-int32"  # the Q/DQ ONNX after the int64 -> int32 pass
ONNX_INT8_NNCF = "onnx-int8-nncf"  # Q/DQ int8 placed and calibrated by NNCF, for OpenVINO
PT2 = "pt2"  # torch.export -> AOTInductor package (.pt2), compiled for the run's shapes and device
PT2_FP16 = "pt2-fp16"  # the same from the module in half precision
PT2_BF16 = "pt2-bf16"  # the same from the module in bfloat16
SERVED = "served"  # nothing built here: the model as a server serves it (names only)
PT2_KINDS = {"fp32": PT2, "fp16": PT2_FP16, "bf16": PT2_BF16}
ONNX_KINDS = (ONNX_RAW, ONNX, ONNX_INT32, ONNX_FP16, ONNX_INT8, ONNX_FP16_INT32, ONNX_INT8_INT32,  # .onnx files
              ONNX_INT8_NNCF)
ARTIFACT_KINDS = (MODULE, TORCHSCRIPT, ONNX_RAW, ONNX, ONNX_INT32, ONNX_FP16, ONNX_INT8, ONNX_FP16_INT32,
                  ONNX_INT8_INT32, ONNX_INT8_NNCF, PT2, PT2_FP16, PT2_BF16, SERVED)

# The file of each kind in a store's directory (and in `deployval export --out`); `module` and `served` have none.
FILE_NAMES = {
    TORCHSCRIPT: "model.ts",
    ONNX_RAW: "exported.onnx",
    ONNX: "model.onnx",
    ONNX_INT32: "model.int32.onnx",
    ONNX_FP16: "model.fp16.onnx",
    ONNX_INT8: "model.int8.onnx",
    ONNX_FP16_INT32: "model.fp16.int32.onnx",
    ONNX_INT8_INT32: "model.int8.int32.onnx",
    ONNX_INT8_NNCF: "model.int8.nncf.onnx",
    PT2: "model.pt2",
    PT2_FP16: "model.fp16.pt2",
    PT2_BF16: "model.bf16.pt2",
}
NO_FILE_KINDS = (MODULE, SERVED)  # the module in memory, a model a server serves: nothing to write or cache
DEVICE_KINDS = (TORCHSCRIPT, PT2, PT2_FP16, PT2_BF16)  # traced or compiled on the device its rows run on
# The int64 -> int32 variant of each ONNX artifact, and what it is made from.
INT32_SOURCES = {ONNX_INT32: ONNX, ONNX_FP16_INT32: ONNX_FP16, ONNX_INT8_INT32: ONNX_INT8}


@dataclass
class Artifact:
    """A deployable form of the model: a file (or, for `module`, an object in memory)."""

    kind: str
    path: Path | None = None
    obj: Any = None
    sha256: str | None = None
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path) if self.path else None, "sha256": self.sha256}
