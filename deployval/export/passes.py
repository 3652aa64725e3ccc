"""ONNX-to-ONNX passes: load/check, simplify and int64 -> int32 (fp16 in fp16.py, int8 in int8.py).

Each pass takes a ModelProto and returns a new one (the input is never mutated) plus a small
details dataclass for the report. None of them verifies numerics: the pipeline compares every
artifact against the reference on real inputs, which random-input checks cannot replace.

Heavy imports (onnx, numpy, onnxsim, onnxruntime) live inside the
functions so that `deployval` imports, lists and parses specs without them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DeployvalError, ExportError, UsageError
from .onnx_graph import (
    DEFAULT_DOMAINS,
    copy_model,
    default_opset,
    error_line,
    iter_nodes,
    iter_tensors,
    subgraphs,
)

if TYPE_CHECKING:
    import numpy as np
    from onnx import GraphProto, ModelProto, NodeProto, TypeProto

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "Int32Details",
    "SimplifyDetails",
    "as_model",
    "cast_int64_to_int32",
    "check_onnx",
    "load_onnx",
    "run_onnxruntime",
    "simplify_onnx",
]

PathLike = str | os.PathLike[str]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
_INT32 = 6  # onnx.TensorProto.INT32, spelled out so the module imports without onnx
_INT64 = 7  # onnx.TensorProto.INT64
# Ops that only move elements around without changing their values, and the inputs they move
# (None: all). A Slice bound that reaches Slice through them can still be clamped exactly; the
# legacy exporter builds `ends` with Concat. Schemas cannot express this, hence the short list.
_VALUE_PRESERVING: dict[str, set[int] | None] = {
    "Identity": None,
    "Concat": None,
    "Unsqueeze": {0},
    "Squeeze": {0},
    "Reshape": {0},
}


def as_model(model_or_path: ModelProto | PathLike) -> ModelProto:
    import onnx

    return model_or_path if isinstance(model_or_path, onnx.ModelProto) else load_onnx(model_or_path)


# --------------------------------------------------------------------------- load and check


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
        raise UsageError(f"cannot read {p}: {error_line(exc)}") from None
    except Exception as exc:  # DecodeError and whatever else protobuf raises on garbage
        raise UsageError(f"not an ONNX model: {p} could not be parsed ({error_line(exc)})") from None
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
            raise UsageError(f"{p}: cannot read external data ({error_line(exc)})") from None
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
        raise error(f"{what} fails the ONNX checker: {error_line(exc)}") from None


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
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {k: np.asarray(v) for k, v in feeds.items()})
    return dict(zip(names, values))


# --------------------------------------------------------------------------- simplify


@dataclass
class SimplifyDetails:
    nodes_before: int
    nodes_after: int
    ops_removed: dict[str, int] = field(default_factory=dict)  # op type -> how many fewer
    ops_added: dict[str, int] = field(default_factory=dict)  # fusions (e.g. MatMul+Add -> Gemm)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _op_counts(model: ModelProto) -> Counter[str]:
    return Counter(
        n.op_type if n.domain in DEFAULT_DOMAINS else f"{n.domain}::{n.op_type}" for n in iter_nodes(model.graph)
    )


def simplify_onnx(model: ModelProto) -> tuple[ModelProto, SimplifyDetails]:
    """Constant-fold and fuse with onnxsim; its random-input check is skipped on purpose.

    The pipeline verifies the simplified model on the user's real inputs, which is both
    stricter and cheaper than onnxsim's check on uniform noise. Node counts include subgraphs.
    """
    import onnxsim

    before = _op_counts(model)
    try:
        simplified, ok = onnxsim.simplify(copy_model(model), check_n=0)
    except Exception as exc:
        raise ExportError(f"onnxsim failed: {error_line(exc)}") from None
    if not ok:
        raise ExportError("onnxsim produced a model that fails its own validity check")
    # onnxsim rebuilds the ModelProto; keep what describes the model (producer, metadata).
    for name in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        if getattr(model, name) and not getattr(simplified, name):
            setattr(simplified, name, getattr(model, name))
    have = {p.key for p in simplified.metadata_props}
    for prop in model.metadata_props:
        if prop.key not in have:
            simplified.metadata_props.add(key=prop.key, value=prop.value)
    after = _op_counts(simplified)
    return simplified, SimplifyDetails(
        nodes_before=sum(before.values()),
        nodes_after=sum(after.values()),
        ops_removed=dict(sorted((before - after).items())),
        ops_added=dict(sorted((after - before).items())),
    )


# --------------------------------------------------------------------------- int64 -> int32


@dataclass
class Int32Details:
    inputs: int = 0  # graph inputs now int32
    outputs: int = 0  # graph outputs now int32
    initializers: int = 0
    constants: int = 0  # Constant node values and tensor attributes (ConstantOfShape value)
    casts_retargeted: int = 0  # Cast(to=INT64) -> Cast(to=INT32)
    dtype_attrs_retargeted: int = 0  # other dtype attributes that said INT64 (EyeLike, Multinomial...)
    casts_before: int = 0  # Cast(to=INT64) inserted before inputs whose schema requires int64
    casts_after: int = 0  # Cast(to=INT32) inserted after outputs that can only be int64
    clamped_slice_bounds: int = 0  # Slice starts/ends elements clamped to the int32 range
    kept_int64: list[str] = field(default_factory=list)  # nodes left int64 inside (no ORT int32 kernel)
    int32_inputs: list[str] = field(default_factory=list)  # feeds the caller must cast (range-checked)

    @property
    def changed(self) -> bool:
        return any(v for k, v in asdict(self).items() if k != "int32_inputs")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Untyped(Exception):
    """A node's input has no known type, so its outputs cannot be inferred."""


def _elem(tp: TypeProto | None) -> int:
    """Element type of a tensor type, 0 for unknown or non-tensor types."""
    if tp is None or tp.WhichOneof("value") != "tensor_type":
        return 0
    return int(tp.tensor_type.elem_type)


def _mentions_int64(tp: TypeProto | None) -> bool:
    """Whether a (possibly nested: sequence, optional, map) type carries int64 elements."""
    if tp is None:
        return False
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return tp.tensor_type.elem_type == _INT64
    if kind == "sparse_tensor_type":
        return tp.sparse_tensor_type.elem_type == _INT64
    if kind == "sequence_type":
        return _mentions_int64(tp.sequence_type.elem_type)
    if kind == "optional_type":
        return _mentions_int64(tp.optional_type.elem_type)
    if kind == "map_type":
        return tp.map_type.key_type == _INT64 or _mentions_int64(tp.map_type.value_type)
    return False


def _with_elem(tp: TypeProto, elem: int) -> TypeProto:
    import onnx

    out = onnx.TypeProto()
    out.CopyFrom(tp)
    out.tensor_type.elem_type = elem
    return out


def _tensor_type(elem: int, dims: Sequence[int]) -> TypeProto:
    import onnx

    tp = onnx.TypeProto()
    tp.tensor_type.elem_type = elem
    tp.tensor_type.shape.SetInParent()
    for d in dims:
        tp.tensor_type.shape.dim.add().dim_value = int(d)
    return tp


def _has_dim_info(tp: TypeProto | None) -> bool:
    return _elem(tp) != 0 and tp is not None and tp.tensor_type.HasField("shape")


@dataclass
class _Source:
    """An int64 value stored in the model: an initializer or a tensor-valued attribute."""

    label: str  # "initializer 'x'", "Constant 'c' value", ...
    value: str  # the graph value it defines (consumers are looked up by it)
    array: Any  # numpy int64 array
    key: tuple[Any, ...]  # ("init", name) or ("attr", node_index, attr_name)
    slice_ok: bool  # may be clamped when only Slice starts/ends consume it


class _Int32Pass:
    """State for one int64 -> int32 conversion (see cast_int64_to_int32)."""

    def __init__(self, model: ModelProto, keep_int64: frozenset[int] = frozenset()) -> None:
        import onnx

        self.onnx = onnx
        self.model = copy_model(model)
        self.graph = self.model.graph
        self.opset = default_opset(self.model)
        self.details = Int32Details()
        self.opsets = list(self.model.opset_import)
        self.ir_version = int(self.model.ir_version) or onnx.IR_VERSION
        self.orig: dict[str, TypeProto] = {}  # value types of the input model
        self.cur: dict[str, TypeProto] = {}  # value types of the model being built
        self.i64_source: dict[str, str] = {}  # int32 value -> int64 value it was cast from
        self.to_i64: dict[str, str] = {}  # int32 value -> output of its shared Cast(to=INT64)
        self.arrays: dict[tuple[Any, ...], Any] = {}  # source key -> int32 array
        self.nodes = [self._copy_node(n) for n in self.graph.node]
        self.keep_int64 = keep_int64  # indices of nodes that keep int64 inputs and outputs
        self.origin: list[int | None] = []  # per output node: its index in self.nodes, None if inserted
        self.output_names = {o.name for o in self.graph.output}
        self.consumers: dict[str, list[tuple[int, int]]] = {}
        for i, node in enumerate(self.nodes):
            for j, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((i, j))
            for name in self._outer_refs(node):
                self.consumers.setdefault(name, []).append((i, -1))
        self.used_names = self._all_names()
        self._pending_after: list[NodeProto] = []  # Cast(to=INT32) nodes for the current node

    # ---- helpers

    def _copy_node(self, node: NodeProto) -> NodeProto:
        out = self.onnx.NodeProto()
        out.CopyFrom(node)
        return out

    def _outer_refs(self, node: NodeProto) -> set[str]:
        """Names a node's subgraphs read from the enclosing scope."""
        refs: set[str] = set()
        for sub in subgraphs(node):
            local = {v.name for v in sub.input} | {t.name for t in sub.initializer}
            for inner in sub.node:
                refs.update(n for n in inner.input if n and n not in local)
                refs.update(self._outer_refs(inner) - local)
                local.update(inner.output)
        return refs

    def _all_names(self) -> set[str]:
        names: set[str] = set()

        def visit(graph: GraphProto) -> None:
            names.update(v.name for v in [*graph.input, *graph.output, *graph.value_info])
            names.update(t.name for t in graph.initializer)
            for node in graph.node:
                names.add(node.name)
                names.update(node.input)
                names.update(node.output)
                for sub in subgraphs(node):
                    visit(sub)

        visit(self.graph)
        return names

    def _unique(self, base: str) -> str:
        name, k = base, 0
        while name in self.used_names:
            k += 1
            name = f"{base}_{k}"
        self.used_names.add(name)
        return name

    def _schema(self, node: NodeProto) -> Any:
        try:
            return self.onnx.defs.get_schema(node.op_type, max_inclusive_version=self.opset, domain="")
        except Exception:
            raise ExportError(
                f"int64 -> int32: no ONNX schema for {node.op_type} at opset {self.opset} (node '{node.name}')"
            ) from None

    def _param(self, params: Sequence[Any], index: int) -> Any | None:
        if index < len(params):
            return params[index]
        if params and params[-1].option == self.onnx.defs.OpSchema.FormalParameterOption.Variadic:
            return params[-1]
        return None

    def _param_name(self, node: NodeProto, index: int) -> str:
        if index < 0:
            return "(subgraph)"
        try:
            param = self._param(self._schema(node).inputs, index)
        except ExportError:
            param = None
        return param.name if param is not None else f"#{index}"

    def _allows_int32(self, schema: Any, index: int) -> bool:
        param = self._param(schema.inputs, index)
        if param is None:
            return True  # beyond the schema: the checker will say so, not us
        constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
        return "tensor(int32)" in constraints.get(param.type_str, [param.type_str])

    def _node_label(self, node: NodeProto) -> str:
        return f"{node.op_type} '{node.name}'" if node.name else f"{node.op_type} (unnamed, output '{node.output[0]}')"

    # ---- type inference

    def _infer(self, schema: Any, node: NodeProto, types: Mapping[str, TypeProto]) -> dict[str, TypeProto]:
        """Per-node inference from the schema; a one-node model when the schema has none."""
        inputs = {}
        for name in node.input:
            if name:
                if name not in types or types[name].WhichOneof("value") is None:
                    raise _Untyped(name)
                inputs[name] = types[name]
        out = self.onnx.shape_inference.infer_node_outputs(
            schema, node, inputs, opset_imports=self.opsets, ir_version=self.ir_version
        )
        known = {k: v for k, v in out.items() if v.WhichOneof("value") is not None}
        if all(o in known for o in node.output if o):
            return known
        # Function-bodied ops may lack an inference function: infer a one-node model instead.
        h = self.onnx.helper
        graph = h.make_graph(
            [node],
            "infer",
            [h.make_value_info(n, tp) for n, tp in inputs.items()],
            [],
        )
        mini = h.make_model(graph, opset_imports=self.opsets, ir_version=self.ir_version)
        inferred = self.onnx.shape_inference.infer_shapes(mini, strict_mode=True)
        known.update({v.name: v.type for v in inferred.graph.value_info})
        return known

    def _original_types(self) -> None:
        """Types of the input model: model-level inference, then per-node inference for gaps."""
        try:
            inferred = self.onnx.shape_inference.infer_shapes(
                self.model, check_type=False, strict_mode=False, data_prop=True
            )
        except Exception:
            inferred = self.model
        for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
            if vi.type.WhichOneof("value") is not None:
                self.orig[vi.name] = vi.type
        for init in self.graph.initializer:
            self.orig[init.name] = _tensor_type(init.data_type, init.dims)
        for node in self.graph.node:
            if all(o in self.orig for o in node.output if o):
                continue
            if node.domain not in DEFAULT_DOMAINS or subgraphs(node):
                continue
            try:
                out = self._infer(self._schema(node), node, self.orig)
            except Exception:
                continue
            for name, tp in out.items():
                self.orig.setdefault(name, tp)

    # ---- int64 constants and the range check

    def _sources(self) -> list[_Source]:
        import numpy as np
        from onnx import numpy_helper

        sources: list[_Source] = []
        for init in self.graph.initializer:
            if init.data_type == _INT64:
                if init.data_location == self.onnx.TensorProto.EXTERNAL:
                    raise ExportError(f"int64 -> int32: initializer '{init.name}' is external data that is not loaded")
                sources.append(
                    _Source(
                        f"initializer '{init.name}'", init.name, numpy_helper.to_array(init), ("init", init.name), True
                    )
                )
        for sparse in self.graph.sparse_initializer:
            if _INT64 in (sparse.values.data_type, sparse.indices.data_type):
                raise ExportError(f"int64 -> int32: sparse initializer '{sparse.values.name}' is not handled")
        for i, node in enumerate(self.nodes):
            if node.domain not in DEFAULT_DOMAINS or subgraphs(node):
                continue  # judged as a whole by _refuse_if_int64
            for attr in node.attribute:
                label = f"{self._node_label(node)} attribute '{attr.name}'"
                out = node.output[0] if node.output else ""
                is_constant = node.op_type == "Constant"
                if attr.HasField("t") and attr.t.data_type == _INT64:
                    sources.append(
                        _Source(label, out, numpy_helper.to_array(attr.t), ("attr", i, attr.name), is_constant)
                    )
                elif attr.HasField("sparse_tensor") and _INT64 in (attr.sparse_tensor.values.data_type,):
                    raise ExportError(f"int64 -> int32: sparse int64 {label} is not handled")
                elif any(t.data_type == _INT64 for t in attr.tensors):
                    raise ExportError(f"int64 -> int32: int64 tensor list in {label} is not handled")
                elif is_constant and attr.name == "value_int":
                    sources.append(_Source(label, out, np.array(attr.i, np.int64), ("attr", i, attr.name), True))
                elif is_constant and attr.name == "value_ints":
                    sources.append(
                        _Source(label, out, np.array(list(attr.ints), np.int64), ("attr", i, attr.name), True)
                    )
        return sources

    def _only_slice_bounds(self, value: str, seen: set[str]) -> bool:
        """Whether `value` reaches nothing but Slice starts/ends (through value-preserving ops)."""
        if value in seen:
            return True
        seen.add(value)
        uses = self.consumers.get(value, [])
        if value in self.output_names or not uses:
            return False
        for i, j in uses:
            node = self.nodes[i]
            if node.domain not in DEFAULT_DOMAINS or j < 0:
                return False
            if node.op_type == "Slice" and j in (1, 2) and self.opset >= 10:
                continue
            ports = _VALUE_PRESERVING.get(node.op_type, set())
            preserving = node.op_type in _VALUE_PRESERVING and (ports is None or j in ports)
            if preserving and all(self._only_slice_bounds(o, seen) for o in node.output if o):
                continue
            return False
        return True

    def _describe_uses(self, value: str) -> str:
        parts = [
            f"{self._node_label(self.nodes[i])} input '{self._param_name(self.nodes[i], j)}'"
            for i, j in self.consumers.get(value, [])
        ]
        if value in self.output_names:
            parts.append("graph output")
        return ", ".join(parts) if parts else "unused"

    def _range_check(self) -> None:
        import numpy as np

        problems = []
        for src in self._sources():
            arr = np.asarray(src.array, dtype=np.int64)
            bad = (arr < INT32_MIN) | (arr > INT32_MAX)
            if bad.any():
                if src.slice_ok and self._only_slice_bounds(src.value, set()):
                    self.details.clamped_slice_bounds += int(bad.sum())
                    arr = np.clip(arr, INT32_MIN, INT32_MAX)
                else:
                    offending = arr[bad]
                    more = f" and {offending.size - 1} more out-of-range value(s)" if offending.size > 1 else ""
                    problems.append(
                        f"{src.label} holds {int(offending.flat[0])}{more} (used by {self._describe_uses(src.value)}), "
                        f"outside int32 [{INT32_MIN}, {INT32_MAX}]"
                    )
                    continue
            self.arrays[src.key] = arr.astype(np.int32)
        if problems:
            raise UsageError("int64 -> int32: " + "; ".join(problems) + " (the model needs int64 there)")

    # ---- int64 detection for nodes the pass does not rewrite

    def _graph_has_int64(self, graph: GraphProto, outer: Mapping[str, TypeProto]) -> bool:
        """Whether a subgraph touches int64 anywhere (types from per-node inference)."""
        types = dict(outer)
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            if _mentions_int64(vi.type):
                return True
            types[vi.name] = vi.type
        for init in graph.initializer:
            if init.data_type == _INT64:
                return True
            types[init.name] = _tensor_type(init.data_type, init.dims)
        for node in graph.node:
            if self._attrs_have_int64(node):
                return True
            if any(_mentions_int64(types.get(n)) for n in node.input if n):
                return True
            for sub in subgraphs(node):
                if self._graph_has_int64(sub, types):
                    return True
            if node.domain not in DEFAULT_DOMAINS or subgraphs(node):
                continue  # outputs untyped here; any int64 consumer shows up through its own types
            try:
                out = self._infer(self._schema(node), node, types)
            except Exception:
                continue
            if any(_mentions_int64(tp) for tp in out.values()):
                return True
            types.update(out)
        return False

    @staticmethod
    def _attrs_have_int64(node: NodeProto) -> bool:
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_type == _INT64:
                return True
            if any(t.data_type == _INT64 for t in attr.tensors):
                return True
            if node.op_type == "Constant" and attr.name in ("value_int", "value_ints"):
                return True
            if node.op_type == "Cast" and attr.name == "to" and attr.i == _INT64:
                return True
        return False

    def _refuse_if_int64(self, node: NodeProto) -> None:
        """Pass through a node this pass cannot rewrite, unless int64 is involved."""
        domain = node.domain not in DEFAULT_DOMAINS
        why = f"custom-domain op '{node.domain}::{node.op_type}'" if domain else f"subgraphs ({node.op_type})"
        touched = (
            any(_mentions_int64(self.orig.get(n)) for n in node.input if n)
            or any(_mentions_int64(self.orig.get(n)) for n in node.output if n)
            or any(_mentions_int64(self.orig.get(n)) for n in self._outer_refs(node))
            or self._attrs_have_int64(node)
            or any(self._graph_has_int64(sub, self.orig) for sub in subgraphs(node))
        )
        if touched:
            raise ExportError(
                f"int64 -> int32: node '{node.name or node.output[0]}' uses int64 with {why}, "
                "which this pass does not handle"
            )
        for name in node.output:
            if name and name in self.orig:
                self.cur[name] = self.orig[name]

    # ---- the rewrite

    def _cast_node(self, src: str, dst: str, to: int, name: str) -> NodeProto:
        return self.onnx.helper.make_node("Cast", [src], [dst], name=name, to=to)

    def _int64_input(self, value: str, new_nodes: list[NodeProto]) -> str:
        """An int64 version of an int32 value: the original if one exists, else one shared Cast."""
        if value in self.i64_source:
            return self.i64_source[value]
        if value not in self.to_i64:
            out = self._unique(f"{value}__int64")
            new_nodes.append(self._cast_node(value, out, _INT64, self._unique(f"{value}__cast_int64")))
            self.cur[out] = _with_elem(self.cur[value], _INT64)
            self.to_i64[value] = out
            self.details.casts_before += 1
        return self.to_i64[value]

    def _convert_attrs(self, index: int, node: NodeProto) -> None:
        from onnx import numpy_helper

        h = self.onnx.helper
        attrs = []
        for attr in node.attribute:
            key = ("attr", index, attr.name)
            if key in self.arrays:
                arr = self.arrays[key]
                if attr.name in ("value_int", "value_ints"):
                    attr = h.make_attribute("value", numpy_helper.from_array(arr, name=node.output[0]))
                else:
                    tensor = numpy_helper.from_array(arr, name=attr.t.name)
                    tensor.doc_string = attr.t.doc_string
                    attr.t.CopyFrom(tensor)
                self.details.constants += 1
            attrs.append(attr)
        del node.attribute[:]
        node.attribute.extend(attrs)

    def _retarget_dtype_attrs(self, schema: Any, node: NodeProto, out: dict[str, TypeProto]) -> dict[str, TypeProto]:
        """Flip INT attributes equal to INT64 when that turns an int64 output into int32.

        Which attribute is a dtype is discovered, not listed: an attribute is one exactly when
        changing it from INT64 to INT32 changes an inferred output from int64 to int32.
        """
        for attr in node.attribute:
            if attr.type != self.onnx.AttributeProto.INT or attr.i != _INT64:
                continue
            if not any(_elem(tp) == _INT64 for tp in out.values()):
                break
            attr.i = _INT32
            try:
                trial = self._infer(schema, node, self.cur)
            except Exception:
                trial = {}
            flipped = [n for n, tp in out.items() if _elem(tp) == _INT64 and _elem(trial.get(n)) == _INT32]
            if flipped and all(n in trial for n in out):
                out = trial
                if node.op_type == "Cast":
                    self.details.casts_retargeted += 1
                else:
                    self.details.dtype_attrs_retargeted += 1
            else:
                attr.i = _INT64
        return out

    def _rewrite_node(self, index: int, node: NodeProto, new_nodes: list[NodeProto]) -> None:
        schema = self._schema(node)
        keep = index in self.keep_int64
        if keep:
            self.details.kept_int64.append(self._node_label(node))
        else:
            self._convert_attrs(index, node)
        for j, name in enumerate(node.input):
            if not name or _elem(self.cur.get(name)) != _INT32:
                continue
            if (keep and _elem(self.orig.get(name)) == _INT64) or not self._allows_int32(schema, j):
                node.input[j] = self._int64_input(name, new_nodes)
        try:
            out = self._infer(schema, node, self.cur)
        except _Untyped as exc:
            if any(_mentions_int64(self.orig.get(n)) for n in node.output if n):
                raise ExportError(
                    f"int64 -> int32: cannot tell the type of '{exc}', input of {self._node_label(node)}"
                ) from None
            out = {n: self.orig[n] for n in node.output if n in self.orig}
        except Exception as exc:
            raise ExportError(
                f"int64 -> int32: {self._node_label(node)} does not type-check after conversion: {error_line(exc)}"
            ) from None
        if not keep:
            out = self._retarget_dtype_attrs(schema, node, out)
        for k, name in enumerate(node.output):
            if not name:
                continue
            tp = out.get(name)
            if tp is None:
                if _mentions_int64(self.orig.get(name)):
                    raise ExportError(f"int64 -> int32: cannot infer the type of '{name}' ({self._node_label(node)})")
                if name in self.orig:
                    self.cur[name] = self.orig[name]
                continue
            if _has_dim_info(self.orig.get(name)) and _elem(tp):
                tp = _with_elem(self.orig[name], _elem(tp))  # keep the shape from model-level inference
            if _elem(tp) == _INT64:
                wide = self._unique(f"{name}__int64")
                node.output[k] = wide
                self.cur[wide] = tp
                self.cur[name] = _with_elem(tp, _INT32)
                self.i64_source[name] = wide
                cast_name = self._unique(f"{node.name or name}__cast_int32")
                self._pending_after.append(self._cast_node(wide, name, _INT32, cast_name))
                self.details.casts_after += 1
            elif _mentions_int64(tp):
                raise ExportError(
                    f"int64 -> int32: {self._node_label(node)} output '{name}' is a sequence/map of int64, "
                    "which this pass does not handle"
                )
            else:
                self.cur[name] = tp

    def run(self) -> tuple[ModelProto, Int32Details]:
        import numpy as np
        from onnx import numpy_helper

        self._original_types()
        self._range_check()
        graph, details = self.graph, self.details
        init_names = {t.name for t in graph.initializer}
        for i, init in enumerate(graph.initializer):
            key = ("init", init.name)
            if key in self.arrays:
                tensor = numpy_helper.from_array(np.asarray(self.arrays[key], np.int32), name=init.name)
                tensor.doc_string = init.doc_string
                graph.initializer[i].CopyFrom(tensor)
                details.initializers += 1
            self.cur[init.name] = _tensor_type(graph.initializer[i].data_type, graph.initializer[i].dims)
        for vi in graph.input:
            if _elem(vi.type) == _INT64:
                vi.type.tensor_type.elem_type = _INT32
                if vi.name not in init_names:
                    details.inputs += 1
                    details.int32_inputs.append(vi.name)
            elif _mentions_int64(vi.type):
                raise ExportError(f"int64 -> int32: graph input '{vi.name}' is a sequence/map of int64, not handled")
            if vi.name not in init_names:
                self.cur[vi.name] = vi.type

        new_nodes: list[NodeProto] = []
        for index, node in enumerate(self.nodes):
            self._pending_after = []
            if node.domain not in DEFAULT_DOMAINS or subgraphs(node):
                self._refuse_if_int64(node)
            else:
                self._rewrite_node(index, node, new_nodes)
            self.origin.extend([None] * (len(new_nodes) - len(self.origin)))
            new_nodes.append(node)
            self.origin.append(index)
            new_nodes.extend(self._pending_after)
        self.origin.extend([None] * (len(new_nodes) - len(self.origin)))
        del graph.node[:]
        graph.node.extend(new_nodes)

        for vi in graph.output:
            if _elem(vi.type) == _INT64:
                if _elem(self.cur.get(vi.name)) != _INT32:
                    raise ExportError(f"int64 -> int32: graph output '{vi.name}' would not be int32")
                vi.type.tensor_type.elem_type = _INT32
                details.outputs += 1
        # value_info must agree with the new types, or full_check's strict inference refuses it.
        known = {vi.name for vi in graph.value_info}
        for vi in graph.value_info:
            elem = _elem(self.cur.get(vi.name))
            if _elem(vi.type) == _INT64 and elem:
                vi.type.tensor_type.elem_type = elem
        for name in [*self.i64_source.values(), *self.to_i64.values()]:
            if name not in known:
                graph.value_info.append(self.onnx.helper.make_value_info(name, self.cur[name]))

        leftovers = [vi.name for vi in [*graph.input, *graph.output] if _elem(vi.type) == _INT64]
        leftovers += [t.name for t in graph.initializer if t.data_type == _INT64]
        if leftovers:
            raise ExportError(f"int64 -> int32: still int64 after the pass: {', '.join(leftovers[:5])}")
        check_onnx(self.model, full=True, what="the int32 model (a deployval bug, please report)")
        return self.model, details


def cast_int64_to_int32(model: ModelProto, *, runtime_check: bool = True) -> tuple[ModelProto, Int32Details]:
    """Turn every int64 tensor into int32, for TensorRT 8.x and embedded targets without int64.

    Graph inputs/outputs, initializers, Constant values, ConstantOfShape values, Cast(to=INT64)
    and other INT64 dtype attributes become int32. Which op inputs need int64 and which outputs
    can only be int64 comes from the ONNX schemas and per-node type inference, not from a list:
    a shared Cast(to=INT64) goes in front of inputs whose schema refuses int32 (or the original
    int64 value is reused when a Cast(to=INT32) made it), and a Cast(to=INT32) follows outputs
    that stay int64 (the producer's output is renamed so graph output names never change).

    int64 constants outside int32 raise UsageError naming tensor, consumers and value, except
    those consumed only by Slice starts/ends, which are clamped: Slice clamps its bounds to the
    dimension anyway, so this is exact for any dimension below 2**31. Values computed at run
    time can still overflow int32 (e.g. products of large dims); the pipeline's verification on
    real inputs is what catches that. Subgraphs and custom-domain nodes are refused when they
    touch int64, passed through otherwise. The result passes onnx.checker's full check.

    A schema allowing int32 does not mean a runtime implements it (ONNX Runtime has no int32
    OneHot, for one). With `runtime_check` and onnxruntime installed, the result is loaded in
    ONNX Runtime; a node it has no kernel for is kept int64 inside (casts around it, listed in
    `kept_int64`) and the pass reruns, as long as the original model loads there.
    """
    keep: frozenset[int] = frozenset()
    original_loads: bool | None = None
    while True:
        pass_ = _Int32Pass(model, keep)
        converted, details = pass_.run()
        if not runtime_check or not details.changed:
            return converted, details
        error = _ort_load_error(converted)
        if error is None:
            return converted, details
        if original_loads is None:
            original_loads = _ort_load_error(model) is None
        if not original_loads:  # nothing to learn: the runtime refuses the input model too
            return converted, details
        culprit = pass_.origin[error[0]] if error[0] is not None else None
        if culprit is None or culprit in keep:
            raise ExportError(f"int64 -> int32: ONNX Runtime cannot load the int32 model: {error[1]}")
        keep = keep | {culprit}


_PROBE_PREFIX = "__deployval_probe_"


def _ort_load_error(model: ModelProto) -> tuple[int | None, str] | None:
    """Load a model in ONNX Runtime (CPU); on failure, the index of the node it blames and why.

    Nodes are renamed to numbered probe names in a copy, so unnamed nodes can be blamed too.
    None when it loads, or when onnxruntime is missing or the model is too big to probe.
    """
    import re

    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if model.ByteSize() > 2**31 - 2**26:
        return None
    probe = copy_model(model)
    for i, node in enumerate(probe.graph.node):
        node.name = f"{_PROBE_PREFIX}{i}"
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        text = str(exc)
        match = re.search(re.escape(_PROBE_PREFIX) + r"(\d+)", text)
        index = int(match.group(1)) if match else None
        if index is not None:
            node = model.graph.node[index]
            text = text.replace(match.group(0), node.name or f"{node.op_type} #{index}")
        return index, error_line(RuntimeError(text))
    return None
