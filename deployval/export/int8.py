"""int8 artifact: static Q/DQ quantization calibrated on real samples, for TensorRT's explicit
quantization and ONNX Runtime."""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util import quiet_libraries
from ..errors import DeployvalError, ExportError, UsageError
from .onnx_graph import error_line, iter_nodes
from .passes import as_model

if TYPE_CHECKING:
    import numpy as np
    from onnx import ModelProto, TensorProto

__all__ = ["ENTROPY_BINS", "Int8Details", "preprocess_for_quantization", "quantize_int8"]

PathLike = str | os.PathLike[str]

@dataclass
class Int8Details:
    method: str
    samples: int
    per_channel: bool
    quantize_nodes: int = 0
    dequantize_nodes: int = 0
    quantized_op_types: list[str] = field(default_factory=list)
    nonzero_zero_points: int = 0  # must be 0 for TensorRT explicit quantization
    preprocess: str = "full"  # "full", "no symbolic shape inference" or "failed: <why>; unprocessed model used"
    excluded_nodes: list[str] = field(default_factory=list)
    excluded_op_types: list[str] = field(default_factory=list)
    path: str = ""
    ranges_from_cache: bool = False  # tensor ranges read from a calibration cache (samples is then 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _FeedReader:
    """CalibrationDataReader over any iterable of feeds, counting what it hands out.

    Feeds are checked against the model's inputs (a mismatch is the user's calibration data,
    not a failed export) and cast to the input dtypes (float64 arrays from numpy are common).
    """

    def __init__(self, first: Mapping[str, Any], rest: Iterator[Mapping[str, Any]], inputs: Mapping[str, Any]) -> None:
        self._first: Mapping[str, Any] | None = first
        self._rest = rest
        self._inputs = inputs  # input name -> numpy dtype
        self.count = 0

    def get_next(self) -> dict[str, Any] | None:
        import numpy as np

        if self._first is not None:
            feed, self._first = self._first, None
        else:
            feed = next(self._rest, None)
            if feed is None:
                return None
        unknown = sorted(set(feed) - set(self._inputs))
        missing = sorted(set(self._inputs) - set(feed))
        if unknown or missing:
            raise UsageError(
                f"calibration sample {self.count + 1}: "
                + "; ".join(
                    part
                    for part in (
                        f"unknown input(s) {', '.join(unknown)}" if unknown else "",
                        f"missing input(s) {', '.join(missing)}" if missing else "",
                    )
                    if part
                )
                + f" (model inputs: {', '.join(self._inputs)})"
            )
        self.count += 1
        return {k: np.asarray(v).astype(self._inputs[k], copy=False) for k, v in feed.items()}


_CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
ENTROPY_BINS = 2048


def quantize_int8(
    model: ModelProto | PathLike,
    calibration: Iterable[Mapping[str, np.ndarray]],
    out_path: PathLike,
    method: str = "minmax",
    per_channel: bool = True,
    exclude_nodes: Iterable[str] = (),
    exclude_op_types: Iterable[str] = (),
    only_nodes: Iterable[str] | None = None,
    calibration_cache: PathLike | None = None,
    preprocess: bool = True,
) -> Int8Details:
    """Static int8 QDQ quantization for TensorRT's explicit-quantization path; writes `out_path`.

    Activations and weights are symmetric QInt8 (zero-point 0, which TensorRT requires), weights
    per channel. `quant_pre_process` runs first; when symbolic shape inference fails it is
    retried without it, and when that fails too the unprocessed model is quantized and the
    details say so. Node names in `exclude_nodes` refer to the model after pre-processing,
    which keeps the names of nodes it does not fuse away.

    For sensitivity analysis: `only_nodes` quantizes just those nodes; `calibration_cache` (a JSON
    file of tensor ranges, written by the first call and read by later ones where ONNX Runtime
    supports it) calibrates once for many quantizations of the same model; `preprocess=False` takes
    a model that already went through `preprocess_for_quantization`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if method not in _CALIBRATION_METHODS:
        raise UsageError(f"unknown calibration method '{method}' (one of {', '.join(_CALIBRATION_METHODS)})")
    calib_method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    feeds = iter(calibration)
    first = next(feeds, None)
    if first is None:
        raise UsageError("int8 quantization needs calibration data, but the calibration set is empty")
    excluded_types = sorted(set(exclude_op_types))
    op_types = sorted((set(QLinearOpsRegistry) | set(QDQRegistry)) - set(excluded_types))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    details = Int8Details(
        method=method,
        samples=0,
        per_channel=per_channel,
        excluded_nodes=sorted(set(exclude_nodes)),
        excluded_op_types=excluded_types,
        path=str(out),
    )

    with tempfile.TemporaryDirectory(prefix="deployval-int8-") as tmp:
        source = Path(tmp) / "model.onnx"
        loaded = as_model(model)
        onnx.save(loaded, str(source))
        initializers = {t.name for t in loaded.graph.initializer}
        reader = _FeedReader(
            first,
            feeds,
            {
                v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
                for v in loaded.graph.input
                if v.name not in initializers
            },
        )
        known_nodes = {n.name for n in loaded.graph.node}
        unknown_nodes = [n for n in details.excluded_nodes if n not in known_nodes]
        if unknown_nodes:
            raise UsageError(f"int8: no node named {', '.join(map(repr, unknown_nodes))} to exclude from quantization")
        input_path = source
        if preprocess:
            prepared = Path(tmp) / "prepared.onnx"
            details.preprocess = preprocess_for_quantization(source, prepared)
            if not details.preprocess.startswith("failed"):
                input_path = prepared
        else:
            details.preprocess = "done before"
        kwargs: dict[str, Any] = {}
        takes_cache = "calibration_cache_path" in inspect.signature(quantize_static).parameters
        if calibration_cache is not None and takes_cache:
            kwargs["calibration_cache_path"] = str(calibration_cache)
        if method == "entropy":
            # quantize_static gives the entropy calibrator 128 histogram bins for 128 quantized bins,
            # which leaves one candidate threshold: the full range, i.e. MinMax. Calibrate here with
            # 2048 bins (as TensorRT's entropy calibrator does) and hand the ranges over as a cache.
            if not takes_cache:
                details.method = "entropy (this ONNX Runtime computes it as minmax: no calibration cache support)"
            else:
                cache = Path(calibration_cache) if calibration_cache is not None else Path(tmp) / "ranges.json"
                if not cache.is_file():
                    _entropy_ranges(input_path, op_types, reader, cache, Path(tmp))
                kwargs["calibration_cache_path"] = str(cache)
        try:
            # ORT's calibrators print progress to stdout and warnings to the root logger (e.g. per-channel
            # axes of 1-D norm weights); deployval's report is where results go.
            with quiet_libraries(""):
                quantize_static(
                    str(input_path),
                    str(out),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=op_types,
                    per_channel=per_channel,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=details.excluded_nodes,
                    nodes_to_quantize=sorted(only_nodes) if only_nodes is not None else None,
                    calibrate_method=calib_method,
                    **kwargs,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
                )
        except DeployvalError:
            raise
        except Exception as exc:
            raise ExportError(f"int8 quantization failed: {error_line(exc)}") from None
    details.samples = reader.count
    details.ranges_from_cache = reader.count == 0

    quantized = onnx.load(str(out))
    _summarize_qdq(quantized, details)
    return details


def _entropy_ranges(model_path: Path, op_types: list[str], reader: Any, cache: Path, tmp: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    try:
        with quiet_libraries(""):
            calibrator = create_calibrator(
                model_path, op_types, augmented_model_path=str(tmp / "augmented.onnx"),
                calibrate_method=CalibrationMethod.Entropy,
                extra_options={"symmetric": True, "num_bins": ENTROPY_BINS, "num_quantized_bins": 128},
            )
            calibrator.collect_data(reader)
            save_tensors_data(calibrator.compute_data(), cache)
    except DeployvalError:
        raise
    except Exception as exc:
        raise ExportError(f"int8 entropy calibration failed: {error_line(exc)}") from None


def preprocess_for_quantization(source: PathLike, out_path: PathLike) -> str:
    """ONNX Runtime's `quant_pre_process` (shape inference, fusions) into `out_path`; retried without
    symbolic shape inference when that fails. Returns what was done ("full", "no symbolic shape
    inference" or "failed: <why>; unprocessed model used")."""
    from onnxruntime.quantization import quant_pre_process

    failure = ""
    for label, kwargs in (("full", {}), ("no symbolic shape inference", {"skip_symbolic_shape": True})):
        try:
            with quiet_libraries(""):
                quant_pre_process(str(source), str(out_path), **kwargs)
            return label
        except Exception as exc:
            failure = error_line(exc)
    return f"failed: {failure}; unprocessed model used"


def _summarize_qdq(model: ModelProto, details: Int8Details) -> None:
    """Count Q/DQ nodes, non-zero zero-points and the op types fed by DequantizeLinear."""
    import numpy as np
    from onnx import numpy_helper

    consts: dict[str, TensorProto] = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            consts[node.output[0]] = node.attribute[0].t
    dq_outputs: set[str] = set()
    for node in iter_nodes(model.graph):
        if node.op_type == "QuantizeLinear":
            details.quantize_nodes += 1
        elif node.op_type == "DequantizeLinear":
            details.dequantize_nodes += 1
            dq_outputs.update(node.output)
        else:
            continue
        if len(node.input) > 2 and node.input[2] in consts:
            details.nonzero_zero_points += int(np.count_nonzero(numpy_helper.to_array(consts[node.input[2]])))
    details.quantized_op_types = sorted(
        {
            n.op_type
            for n in iter_nodes(model.graph)
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and dq_outputs.intersection(n.input)
        }
    )
