"""Load, check and run ONNX models: the I/O every export pass and command shares.

Heavy imports (onnx, numpy, onnxruntime) live inside the functions so that `deployval`
imports, lists and parses specs without them.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util import sha256_file, timed_import
from ..errors import DeployvalError, ExportError, UsageError, first_line
from .graph import iter_tensors

if TYPE_CHECKING:
    import numpy as np
    from onnx import ModelProto

__all__ = [
    "ONNX_DTYPES",
    "PathLike",
    "as_model",
    "check_onnx",
    "external_data_locations",
    "load_onnx",
    "onnx_file_digest",
    "onnx_input_dtypes",
    "refused_node",
    "run_onnxruntime",
    "runtime_refusal",
]

PathLike = str | os.PathLike[str]


def as_model(model_or_path: ModelProto | PathLike) -> ModelProto:
    import onnx

    return model_or_path if isinstance(model_or_path, onnx.ModelProto) else load_onnx(model_or_path)


def load_onnx(path: PathLike) -> ModelProto:
    """Load an ONNX file with its external data; anything unreadable is the user's input error.

    Raises UsageError (one line) for a missing or empty file, bytes that are not an ONNX model
    (corrupt, truncated, random) and external data that is missing or unreadable.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model, uses_external_data

    p = Path(path)
    if not p.exists():
        raise UsageError(f"ONNX file not found: {p}")
    if not p.is_file():
        raise UsageError(f"not an ONNX file (it is a directory or device): {p}")
    if p.stat().st_size == 0:
        raise UsageError(f"not an ONNX model: {p} is empty")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except OSError as exc:
        raise UsageError(f"cannot read {p}: {first_line(exc, named=False)}") from None
    except Exception as exc:  # DecodeError and whatever else protobuf raises on garbage
        raise UsageError(f"not an ONNX model: {p} could not be parsed ({first_line(exc, named=False)})") from None
    # Protobuf happily parses many byte strings (a text file, a cut-off file) into a partial
    # message; a model without graph, IR version or opset cannot be the file the user meant.
    if not model.HasField("graph") or model.ir_version <= 0 or not model.opset_import:
        raise UsageError(f"not an ONNX model: {p} has no graph, IR version or opset import (truncated or wrong file?)")
    base = p.parent
    external = [t for t in iter_tensors(model.graph) if uses_external_data(t)]
    for tensor in external:
        location = ExternalDataInfo(tensor).location
        if not (base / location).is_file():
            raise UsageError(
                f"{p}: external data file '{location}' for tensor '{tensor.name}' is missing "
                f"(expected next to the model, in {base})"
            )
    if external:
        try:
            load_external_data_for_model(model, str(base))
        except Exception as exc:
            raise UsageError(f"{p}: cannot read external data ({first_line(exc, named=False)})") from None
    return model


def check_onnx(
    model_or_path: ModelProto | PathLike,
    full: bool = True,
    *,
    what: str = "model",
    error: type[DeployvalError] = ExportError,
) -> None:
    """Run onnx.checker (with strict shape inference when `full`) and raise one line on failure.

    The default `error=ExportError` fits models deployval produced itself; callers checking a
    file the user handed in pass `error=UsageError` (and `what="'model.onnx'"`) since a bad file
    is bad input, not a failed export. A path is checked from disk, so >2 GB models and
    external data work.
    """
    import onnx

    target = model_or_path if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    try:
        onnx.checker.check_model(target, full_check=full)
    except Exception as exc:
        raise error(f"{what} fails the ONNX checker: {first_line(exc, named=False)}") from None


# ONNX TensorProto element types -> numpy dtype names, for the types deployval feeds.
ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16", 7: "int64", 6: "int32",
               5: "int16", 3: "int8", 2: "uint8", 9: "bool"}


def onnx_input_dtypes(model_or_path: ModelProto | PathLike) -> dict[str, str]:
    """dtype of each graph input (initializers excluded), read without loading weights."""
    import onnx

    model = (model_or_path if isinstance(model_or_path, onnx.ModelProto)
             else onnx.load(str(model_or_path), load_external_data=False))
    initializers = {i.name for i in model.graph.initializer}
    return {
        value.name: ONNX_DTYPES.get(value.type.tensor_type.elem_type, str(value.type.tensor_type.elem_type))
        for value in model.graph.input
        if value.name not in initializers
    }


def run_onnxruntime(model_or_path: ModelProto | PathLike, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run a model once on ONNX Runtime's CPU provider; outputs keyed by graph output name."""
    return run_onnxruntime_each(model_or_path, [feeds])[0]


def run_onnxruntime_each(model_or_path: ModelProto | PathLike,
                         feeds: Sequence[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
    """Run a model on each set of inputs, with one ONNX Runtime CPU session."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, {k: np.asarray(v) for k, v in one.items()}))) for one in feeds]


_RUNTIME_PREFIXES = (
    re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : "),
    re.compile(r"^Load model from .*? failed:"),
    re.compile(r"^Load model from memory failed:"),
)
_NODE_PATTERNS = (
    re.compile(r"Node \(([^)]+)\)"),
    re.compile(r"node with name '([^']+)'"),
    re.compile(r"Name:'([^']+)'"),
    re.compile(r"node name: ([^)\s]+)"),
)


def runtime_refusal(model_or_path: ModelProto | PathLike) -> str | None:
    """Why ONNX Runtime's CPU provider will not load the model, in one line; None when it loads.

    Graph optimizations are off: what is checked is that the runtime resolves the graph (every
    value wired, types and shapes consistent, a kernel for every node), at a fraction of the
    optimizer's cost. Raises ImportError without onnxruntime.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    try:
        ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        text = " ".join(str(exc).split())
        for prefix in _RUNTIME_PREFIXES:
            text = prefix.sub("", text).strip()
        return text or type(exc).__name__
    return None


def refused_node(message: str) -> str | None:
    """The node an ONNX Runtime error message names, if it names one."""
    for pattern in _NODE_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None


def onnx_file_digest(path: Path) -> str:
    """sha256 over an ONNX file and each external data file it names (a missing one is named as missing:
    loading the model reports it)."""
    h = hashlib.sha256()
    h.update(sha256_file(path).encode())
    for location in external_data_locations(path):
        data = path.parent / location
        h.update(f"\x00{location}\x00".encode())
        h.update(sha256_file(data).encode() if data.is_file() else b"missing")
    return h.hexdigest()


def external_data_locations(path: Path) -> list[str]:
    """The external data files an ONNX file names, sorted (none when it cannot be parsed: loading says why)."""
    try:
        onnx = timed_import("onnx")
        from onnx.external_data_helper import ExternalDataInfo, uses_external_data

        model = onnx.load(str(path), load_external_data=False)
        return sorted({ExternalDataInfo(t).location for t in iter_tensors(model.graph) if uses_external_data(t)})
    except Exception:
        return []
