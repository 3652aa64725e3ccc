"""int8 artifact: static Q/DQ quantization calibrated on real samples, placed the way TensorRT's
explicit quantization wants it, for TensorRT and ONNX Runtime.

Placement follows TensorRT's "Q/DQ layer placement recommendations" (and NVIDIA's TensorRT Model
Optimizer, which implements them for ONNX): Q/DQ on the inputs of the compute-heavy ops only (Conv,
ConvTranspose, MatMul, Gemm; weights per output channel, activations per tensor, symmetric, zero-point
0), none on their outputs, none on Softmax, normalizations, residual sums of transformers or the
attention-mask path. A residual Add gets one Q/DQ, on its shortcut input, only where TensorRT fuses the
Add into the Conv that makes its other input. MatMuls of two activations (attention's QK^T and AV) are
quantized only on request. Biases stay float: TensorRT's dequantize layer takes INT8/FP8 inputs only.
The placement itself is planned in int8_placement.py.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util import quiet_libraries
from ..errors import DeployvalError, ExportError, UsageError, first_line
from .graph import copy_model, default_opset, iter_nodes, topological_sort, upgrade_opset
from .int8_placement import (
    PLACEMENT,
    PLACEMENT_RULES,
    WEIGHTED_OPS,
    Placement,
    clear_quantizer_names,
    constant_names,
    name_nodes,
    nothing_to_quantize,
    own_initializers,
    plan_placement,
)
from .names import Names
from .onnx_io import as_model

if TYPE_CHECKING:
    import numpy as np
    from onnx import GraphProto, ModelProto, TensorProto

__all__ = [
    "ENTROPY_BINS", "PLACEMENT", "WEIGHTED_OPS", "Int8Details", "NothingToQuantize",
    "Placement", "activation_ranges", "name_nodes", "plan_placement", "preprocess_for_quantization", "quantize_int8",
]

PathLike = str | os.PathLike[str]

# Part of the cached artifact's recipe: a change in how the graph is prepared for the quantizer rebuilds it
# (2: shared weights and biases copied per node, names from one allocator).
QUANTIZER = "deployval-int8 2"
MIN_OPSET = 13  # per-channel QuantizeLinear / DequantizeLinear (the axis attribute)
INT8_MAX = 127  # symmetric int8: [-127, 127], scale = max|x| / 127



class NothingToQuantize(DeployvalError):
    """The graph has no op the placement quantizes: an int8 row is skipped with this reason, not failed."""


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
    placement: str = PLACEMENT_RULES
    quantized_nodes: int = 0  # nodes reading at least one DequantizeLinear output
    quantized_per_op_type: dict[str, int] = field(default_factory=dict)
    qdq_pairs: int = 0  # activation QuantizeLinear -> DequantizeLinear pairs
    weights_quantized: int = 0  # int8 weight initializers read by a DequantizeLinear
    int32_dequantize_inputs: int = 0  # must be 0: TensorRT's dequantize layer takes INT8/FP8 inputs only
    activation_matmuls: int = 0  # MatMul/Gemm nodes whose two inputs are activations (attention QK^T, AV)
    activation_matmuls_quantized: bool = False
    residual_adds: int = 0  # Adds quantized on their shortcut input
    unshared_initializers: int = 0  # copies of weights/biases a quantized node shared with another reader
    renamed_values: dict[str, str] = field(default_factory=dict)  # values named as the quantizer names its own
    opset: str = ""  # set when the graph was upgraded to opset 13 first
    widest_ranges: list[dict[str, Any]] = field(default_factory=list)  # the quantized activations with most range

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
    quantize_activation_matmuls: bool = False,
) -> Int8Details:
    """Static int8 QDQ quantization for TensorRT's explicit-quantization path; writes `out_path`.

    Q/DQ go where `plan_placement` says (the module docstring has the rules). A graph below opset 13
    is upgraded first. `quant_pre_process` runs first; when symbolic shape inference fails it is
    retried without it, and when that fails too the unprocessed model is quantized and the details
    say so. Node names in `exclude_nodes` refer to the model after pre-processing, which keeps the
    names of nodes it does not fuse away. Raises NothingToQuantize when the graph has no node the
    placement quantizes.

    For sensitivity analysis: `only_nodes` quantizes just those nodes; `calibration_cache` (a JSON
    file of tensor ranges, written by the first call and read by later ones where ONNX Runtime
    supports it) calibrates once for many quantizations of the same model; `preprocess=False` takes
    a model that already went through `preprocess_for_quantization`.
    """
    import onnx

    if method not in _CALIBRATION_METHODS:
        raise UsageError(f"unknown calibration method '{method}' (one of {', '.join(_CALIBRATION_METHODS)})")
    feeds = iter(calibration)
    first = next(feeds, None)
    if first is None:
        raise UsageError("int8 quantization needs calibration data, but the calibration set is empty")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    details = Int8Details(
        method=method,
        samples=0,
        per_channel=per_channel,
        excluded_nodes=sorted(set(exclude_nodes)),
        excluded_op_types=sorted(set(exclude_op_types)),
        path=str(out),
        activation_matmuls_quantized=quantize_activation_matmuls,
    )

    with tempfile.TemporaryDirectory(prefix="deployval-int8-") as tmp:
        loaded = as_model(model)
        known_nodes = {n.name for n in loaded.graph.node}
        unknown_nodes = [n for n in details.excluded_nodes if n not in known_nodes]
        if unknown_nodes:
            raise UsageError(f"int8: no node named {', '.join(map(repr, unknown_nodes))} to exclude from quantization")
        if not any(node.op_type in WEIGHTED_OPS for node in loaded.graph.node):  # before any upgrade
            raise NothingToQuantize(nothing_to_quantize(loaded, Placement({}, [], {}, {})))
        loaded, details.opset = _upgrade_opset(loaded)
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
        if preprocess:
            source, prepared = Path(tmp) / "model.onnx", Path(tmp) / "prepared.onnx"
            onnx.save(loaded, str(source))
            details.preprocess = preprocess_for_quantization(source, prepared)
            planned = onnx.load(str(source if details.preprocess.startswith("failed") else prepared))
        else:
            details.preprocess = "done before"
            planned = copy_model(loaded)  # named and folded below: the caller's model stays as it is
        name_nodes(planned)
        placement = plan_placement(planned, quantize_activation_matmuls)
        details.activation_matmuls = len(placement.activation_matmuls)
        if not placement.nodes:
            raise NothingToQuantize(nothing_to_quantize(planned, placement))
        only = set(only_nodes) if only_nodes is not None else None
        selected = [name for name, op_type in placement.nodes.items()
                    if (only is None or name in only) and name not in details.excluded_nodes
                    and op_type not in details.excluded_op_types]
        taken = Names.of(planned)
        details.unshared_initializers = len(own_initializers(planned, selected, taken))
        details.renamed_values = clear_quantizer_names(planned, selected, taken)
        _fold_gemm_beta(planned, selected, taken)
        planned_path = Path(tmp) / "planned.onnx"
        onnx.save(planned, str(planned_path))
        if not selected:  # everything excluded: the float model, as the quantizer would leave it
            shutil.copyfile(planned_path, out)
        else:
            # Calibrate the inputs of every op type the placement uses, whatever this call selects, so
            # that a calibration cache written by one call serves every later selection.
            _quantize(planned_path, out, reader, method, per_channel, sorted(set(placement.nodes.values())),
                      selected, calibration_cache, details, Path(tmp))
            allowed = {name: {1 - placement.residual_adds[name]} if name in placement.residual_adds else {0, 1}
                       for name in selected}
            quantized = onnx.load(str(out))
            if _confine_qdq(quantized.graph, planned.graph, allowed):
                onnx.save(quantized, str(out))
            details.residual_adds = sum(name in placement.residual_adds for name in selected)
    details.samples = reader.count
    details.ranges_from_cache = bool(selected) and reader.count == 0

    result = onnx.load(str(out))
    if topological_sort(result.graph):  # ONNX Runtime's quantizer can leave readers before producers
        onnx.save(result, str(out))
    try:  # what TensorRT and other runtimes will parse: a broken artifact is an export failure, not a row
        onnx.checker.check_model(result)
    except Exception as exc:
        raise ExportError(f"the int8 model fails the ONNX checker: {first_line(exc, named=False)}") from None
    _summarize_qdq(result, details)
    return details


def _quantize(source: Path, out: Path, reader: _FeedReader, method: str, per_channel: bool, op_types: list[str],
              selected: list[str], calibration_cache: PathLike | None, details: Int8Details, tmp: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

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
            cache = Path(calibration_cache) if calibration_cache is not None else tmp / "ranges.json"
            if not cache.is_file():
                _entropy_ranges(source, op_types, reader, cache, tmp)
            kwargs["calibration_cache_path"] = str(cache)
    try:
        # ORT's calibrators print progress to stdout and warnings to the root logger (e.g. per-channel
        # axes of 1-D norm weights); deployval's report is where results go.
        with quiet_libraries(""):
            quantize_static(
                str(source),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=op_types,
                per_channel=per_channel,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=selected,
                calibrate_method={
                    "minmax": CalibrationMethod.MinMax,
                    "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile,
                }[method],
                **kwargs,
                extra_options={
                    "ActivationSymmetric": True,
                    "WeightSymmetric": True,
                    "QuantizeBias": False,  # an int32 bias into DequantizeLinear is not TensorRT's
                    "OpTypesToExcludeOutputQuantization": op_types,
                },
            )
    except DeployvalError:
        raise
    except Exception as exc:
        raise ExportError(f"int8 quantization failed: {first_line(exc, named=False)}") from None


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
        raise ExportError(f"int8 entropy calibration failed: {first_line(exc, named=False)}") from None


def preprocess_for_quantization(source: PathLike, out_path: PathLike) -> str:
    """ONNX Runtime's `quant_pre_process` (shape inference, fusions) into `out_path`; retried without
    symbolic shape inference when that fails. Returns what was done ("full", "no symbolic shape
    inference" or "failed: <why>; unprocessed model used").

    It runs in a scratch working directory that is removed afterwards, failures included: ONNX
    Runtime's symbolic shape inference saves `sym_shape_infer_temp.onnx` and its weights as
    `<uuid>.data` into the working directory when it cannot infer every shape."""
    from onnxruntime.quantization import quant_pre_process

    source, out_path = Path(source).absolute(), Path(out_path).absolute()
    failure = ""
    with _scratch_working_directory():
        for label, kwargs in (("full", {}), ("no symbolic shape inference", {"skip_symbolic_shape": True})):
            try:
                with quiet_libraries(""):
                    quant_pre_process(str(source), str(out_path), **kwargs)
                return label
            except Exception as exc:
                failure = first_line(exc, named=False)
    return f"failed: {failure}; unprocessed model used"


@contextmanager
def _scratch_working_directory() -> Iterator[None]:
    """The process works in a new temporary directory until the block ends, then returns to where it
    was (by descriptor where the OS has one, so a renamed directory is found again) and the directory
    is removed, also on failure. Without a working directory to return to (it was removed), nothing
    there needs protecting: the block runs where it is."""
    home: int | str | None = None
    with suppress(OSError):
        home = os.open(".", getattr(os, "O_PATH", os.O_RDONLY)) if hasattr(os, "fchdir") else os.getcwd()
    if home is None:
        yield
        return
    try:
        with tempfile.TemporaryDirectory(prefix="deployval-preprocess-") as scratch:
            os.chdir(scratch)
            try:
                yield
            finally:
                os.fchdir(home) if isinstance(home, int) else os.chdir(home)
    finally:
        if isinstance(home, int):
            os.close(home)


def _upgrade_opset(model: ModelProto) -> tuple[ModelProto, str]:
    """Opset 13 or later, which per-channel Q/DQ needs; converted with ONNX's version converter."""
    version = default_opset(model)
    if not version or version >= MIN_OPSET:
        return model, ""
    import onnx

    try:
        upgraded = upgrade_opset(model, MIN_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as exc:
        raise ExportError(f"int8 needs opset {MIN_OPSET} (per-channel QuantizeLinear), and converting this "
                          f"opset-{version} model failed: {first_line(exc, named=False)}") from None
    return upgraded, f"upgraded from opset {version} to {MIN_OPSET} (per-channel QuantizeLinear needs it)"


def _fold_gemm_beta(model: ModelProto, nodes: Iterable[str], taken: Names) -> None:
    """ONNX Runtime resets a quantized Gemm's beta to 1 even when it leaves the bias float: fold beta
    into the bias first."""
    from onnx import helper, numpy_helper

    selected = set(nodes)
    initializers = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Gemm" or node.name not in selected or len(node.input) < 3:
            continue
        beta = next((a for a in node.attribute if a.name == "beta"), None)
        if beta is None or beta.f == 1.0 or node.input[2] not in initializers:
            continue
        bias = numpy_helper.to_array(initializers[node.input[2]])
        folded = numpy_helper.from_array((bias * beta.f).astype(bias.dtype), taken.fresh(f"{node.input[2]}_beta"))
        model.graph.initializer.append(folded)
        node.input[2] = folded.name
        node.attribute.remove(beta)
        node.attribute.append(helper.make_attribute("beta", 1.0))


def _confine_qdq(graph: GraphProto, planned: GraphProto, allowed: Mapping[str, set[int]]) -> bool:
    """ONNX Runtime's quantizer hands a quantized tensor's DequantizeLinear output to every node that
    reads the tensor, and makes it the graph output when the tensor is one. Give the float tensor back
    to every input the placement does not quantize (a UNet's skip Concat, a residual Add's conv branch,
    graph outputs), taking it from `planned`, the graph before quantization. Returns whether it changed."""
    changed = False
    taken = Names.of(graph)
    producers = {out: node for node in graph.node for out in node.output}
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producers.get(dq.input[0])
        name = dq.output[0]
        if name not in {o.name for o in graph.output} or q is None or q.input[0] not in producers:
            continue
        # a quantized graph output: ORT renamed its producer's output and made the DQ output the graph output
        renamed, source = q.input[0], producers[q.input[0]]
        source.output[list(source.output).index(renamed)] = name
        q.input[0] = name
        dq.output[0] = taken.fresh(f"{name}_DequantizeLinear_Output")
        for node in graph.node:
            for index, tensor in enumerate(node.input):
                if tensor == name and index in allowed.get(node.name, ()):
                    node.input[index] = dq.output[0]
        changed = True
    dq_outputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    originals = {node.name: node for node in planned.node}
    float_tensors = {t.name: t for t in planned.initializer}
    present = {t.name for t in graph.initializer}
    for node in graph.node:
        original = originals.get(node.name)
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or original is None:
            continue
        for index, tensor in enumerate(node.input):
            if tensor in dq_outputs and index not in allowed.get(node.name, ()):
                node.input[index] = original.input[index]
                if original.input[index] in float_tensors and original.input[index] not in present:
                    graph.initializer.append(float_tensors[original.input[index]])  # a weight shared with it
                    present.add(original.input[index])
                changed = True
    if not changed:
        return False
    while True:  # drop the pairs nothing reads any more
        read = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
        dead = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not read.intersection(node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {i for node in iter_nodes(graph) for i in node.input}
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)
    return True


# ----------------------------------------------------------------------------------- summary


def activation_ranges(model: ModelProto | PathLike) -> dict[str, float]:
    """Quantized activation tensor -> the largest magnitude its Q/DQ represents (127 x scale)."""
    from onnx import numpy_helper

    loaded = as_model(model)
    scales = {t.name: t for t in loaded.graph.initializer}
    consts = constant_names(loaded.graph)
    ranges: dict[str, float] = {}
    for node in loaded.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in consts and node.input[1] in scales:
            scale = numpy_helper.to_array(scales[node.input[1]])
            if scale.size == 1:
                ranges[node.input[0]] = float(scale.reshape(())) * INT8_MAX
    return ranges


def _summarize_qdq(model: ModelProto, details: Int8Details) -> None:
    """Count Q/DQ nodes and pairs, quantized nodes per op type, non-zero zero-points, int32 inputs of
    DequantizeLinear, and the widest quantized activation ranges."""
    import numpy as np
    from onnx import TensorProto as TP
    from onnx import numpy_helper

    consts: dict[str, TensorProto] = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            consts[node.output[0]] = node.attribute[0].t
    producers = {out: node for node in iter_nodes(model.graph) for out in node.output}
    dq_outputs: set[str] = set()
    for node in iter_nodes(model.graph):
        if node.op_type == "QuantizeLinear":
            details.quantize_nodes += 1
        elif node.op_type == "DequantizeLinear":
            details.dequantize_nodes += 1
            dq_outputs.update(node.output)
            source = node.input[0]
            if source in consts:
                details.weights_quantized += 1
                details.int32_dequantize_inputs += consts[source].data_type == TP.INT32
            elif source in producers and producers[source].op_type == "QuantizeLinear":
                details.qdq_pairs += 1
        else:
            continue
        if len(node.input) > 2 and node.input[2] in consts:
            details.nonzero_zero_points += int(np.count_nonzero(numpy_helper.to_array(consts[node.input[2]])))
    readers: dict[str, list[str]] = {}  # quantized float tensor -> the nodes reading its DequantizeLinear
    per_type: Counter[str] = Counter()
    for node in iter_nodes(model.graph):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or not dq_outputs.intersection(node.input):
            continue
        per_type[node.op_type] += 1
        for name in dq_outputs.intersection(node.input):
            q = producers.get(producers[name].input[0])
            readers.setdefault(q.input[0] if q is not None else name, []).append(node.name)
    details.quantized_nodes = sum(per_type.values())
    details.quantized_per_op_type = dict(sorted(per_type.items()))
    details.quantized_op_types = sorted(per_type)
    ranges = activation_ranges(model)
    details.widest_ranges = [
        {"tensor": name, "max_abs": amax, "step": amax / INT8_MAX, "read_by": readers.get(name, [])[:4]}
        for name, amax in sorted(ranges.items(), key=lambda item: -item[1])[:5]
    ]
