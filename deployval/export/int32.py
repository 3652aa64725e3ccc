"""The int64 -> int32 pass, for TensorRT 8.x and embedded targets without int64 (cast_int64_to_int32).

It takes a ModelProto and returns a new one (the input is never mutated) plus a details
dataclass for the report; numerics are verified by the pipeline on real inputs, not here.
Schemas, per-node type inference and int64 detection live in int32_types.py. Heavy imports
(onnx, numpy, onnxruntime) live inside the functions so that `deployval` imports without them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ExportError, UsageError, first_line
from .graph import DEFAULT_DOMAINS, copy_model, outer_reads, subgraphs
from .int32_types import (
    INT32,
    INT64,
    NodeTypes,
    Untyped,
    attrs_have_int64,
    elem_type,
    has_dim_info,
    mentions_int64,
    tensor_type,
    with_elem,
)
from .names import Names
from .onnx_io import check_onnx

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto, TypeProto

__all__ = ["INT32_MAX", "INT32_MIN", "Int32Details", "cast_int64_to_int32"]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
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
        self.types = NodeTypes(self.model)
        self.opset = self.types.opset
        self.details = Int32Details()
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
            for name in outer_reads(node):
                self.consumers.setdefault(name, []).append((i, -1))
        self.names = Names.of(self.model)  # what the inserted Casts may not be called
        self._pending_after: list[NodeProto] = []  # Cast(to=INT32) nodes for the current node

    # ---- helpers

    def _copy_node(self, node: NodeProto) -> NodeProto:
        out = self.onnx.NodeProto()
        out.CopyFrom(node)
        return out

    def _node_label(self, node: NodeProto) -> str:
        return f"{node.op_type} '{node.name}'" if node.name else f"{node.op_type} (unnamed, output '{node.output[0]}')"

    # ---- types of the input model

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
            self.orig[init.name] = tensor_type(init.data_type, init.dims)
        for node in self.graph.node:
            if all(o in self.orig for o in node.output if o):
                continue
            if node.domain not in DEFAULT_DOMAINS or subgraphs(node):
                continue
            try:
                out = self.types.infer(self.types.schema(node), node, self.orig)
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
            if init.data_type == INT64:
                if init.data_location == self.onnx.TensorProto.EXTERNAL:
                    raise ExportError(f"int64 -> int32: initializer '{init.name}' is external data that is not loaded")
                sources.append(
                    _Source(
                        f"initializer '{init.name}'", init.name, numpy_helper.to_array(init), ("init", init.name), True
                    )
                )
        for sparse in self.graph.sparse_initializer:
            if INT64 in (sparse.values.data_type, sparse.indices.data_type):
                raise ExportError(f"int64 -> int32: sparse initializer '{sparse.values.name}' is not handled")
        for i, node in enumerate(self.nodes):
            if node.domain not in DEFAULT_DOMAINS or subgraphs(node):
                continue  # judged as a whole by _refuse_if_int64
            for attr in node.attribute:
                label = f"{self._node_label(node)} attribute '{attr.name}'"
                out = node.output[0] if node.output else ""
                is_constant = node.op_type == "Constant"
                if attr.HasField("t") and attr.t.data_type == INT64:
                    sources.append(
                        _Source(label, out, numpy_helper.to_array(attr.t), ("attr", i, attr.name), is_constant)
                    )
                elif attr.HasField("sparse_tensor") and INT64 in (attr.sparse_tensor.values.data_type,):
                    raise ExportError(f"int64 -> int32: sparse int64 {label} is not handled")
                elif any(t.data_type == INT64 for t in attr.tensors):
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
            f"{self._node_label(self.nodes[i])} input '{self.types.param_name(self.nodes[i], j)}'"
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

    def _refuse_if_int64(self, node: NodeProto) -> None:
        """Pass through a node this pass cannot rewrite, unless int64 is involved."""
        domain = node.domain not in DEFAULT_DOMAINS
        why = f"custom-domain op '{node.domain}::{node.op_type}'" if domain else f"subgraphs ({node.op_type})"
        touched = (
            any(mentions_int64(self.orig.get(n)) for n in node.input if n)
            or any(mentions_int64(self.orig.get(n)) for n in node.output if n)
            or any(mentions_int64(self.orig.get(n)) for n in outer_reads(node))
            or attrs_have_int64(node)
            or any(self.types.graph_has_int64(sub, self.orig) for sub in subgraphs(node))
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
            out = self.names.fresh(f"{value}__int64")
            new_nodes.append(self._cast_node(value, out, INT64, self.names.fresh(f"{value}__cast_int64")))
            self.cur[out] = with_elem(self.cur[value], INT64)
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
            if attr.type != self.onnx.AttributeProto.INT or attr.i != INT64:
                continue
            if not any(elem_type(tp) == INT64 for tp in out.values()):
                break
            attr.i = INT32
            try:
                trial = self.types.infer(schema, node, self.cur)
            except Exception:
                trial = {}
            flipped = [n for n, tp in out.items() if elem_type(tp) == INT64 and elem_type(trial.get(n)) == INT32]
            if flipped and all(n in trial for n in out):
                out = trial
                if node.op_type == "Cast":
                    self.details.casts_retargeted += 1
                else:
                    self.details.dtype_attrs_retargeted += 1
            else:
                attr.i = INT64
        return out

    def _rewrite_node(self, index: int, node: NodeProto, new_nodes: list[NodeProto]) -> None:
        schema = self.types.schema(node)
        keep = index in self.keep_int64
        if keep:
            self.details.kept_int64.append(self._node_label(node))
        else:
            self._convert_attrs(index, node)
        for j, name in enumerate(node.input):
            if not name or elem_type(self.cur.get(name)) != INT32:
                continue
            if (keep and elem_type(self.orig.get(name)) == INT64) or not self.types.allows_int32(schema, j):
                node.input[j] = self._int64_input(name, new_nodes)
        try:
            out = self.types.infer(schema, node, self.cur)
        except Untyped as exc:
            if any(mentions_int64(self.orig.get(n)) for n in node.output if n):
                raise ExportError(
                    f"int64 -> int32: cannot tell the type of '{exc}', input of {self._node_label(node)}"
                ) from None
            out = {n: self.orig[n] for n in node.output if n in self.orig}
        except Exception as exc:
            raise ExportError(
                f"int64 -> int32: {self._node_label(node)} does not type-check after conversion: "
                f"{first_line(exc, named=False)}"
            ) from None
        if not keep:
            out = self._retarget_dtype_attrs(schema, node, out)
        for k, name in enumerate(node.output):
            if not name:
                continue
            tp = out.get(name)
            if tp is None:
                if mentions_int64(self.orig.get(name)):
                    raise ExportError(f"int64 -> int32: cannot infer the type of '{name}' ({self._node_label(node)})")
                if name in self.orig:
                    self.cur[name] = self.orig[name]
                continue
            if has_dim_info(self.orig.get(name)) and elem_type(tp):
                tp = with_elem(self.orig[name], elem_type(tp))  # keep the shape from model-level inference
            if elem_type(tp) == INT64:
                wide = self.names.fresh(f"{name}__int64")
                node.output[k] = wide
                self.cur[wide] = tp
                self.cur[name] = with_elem(tp, INT32)
                self.i64_source[name] = wide
                cast_name = self.names.fresh(f"{node.name or name}__cast_int32")
                self._pending_after.append(self._cast_node(wide, name, INT32, cast_name))
                self.details.casts_after += 1
            elif mentions_int64(tp):
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
            self.cur[init.name] = tensor_type(graph.initializer[i].data_type, graph.initializer[i].dims)
        for vi in graph.input:
            if elem_type(vi.type) == INT64:
                vi.type.tensor_type.elem_type = INT32
                if vi.name not in init_names:
                    details.inputs += 1
                    details.int32_inputs.append(vi.name)
            elif mentions_int64(vi.type):
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
            if elem_type(vi.type) == INT64:
                if elem_type(self.cur.get(vi.name)) != INT32:
                    raise ExportError(f"int64 -> int32: graph output '{vi.name}' would not be int32")
                vi.type.tensor_type.elem_type = INT32
                details.outputs += 1
        # value_info must agree with the new types, or full_check's strict inference refuses it.
        known = {vi.name for vi in graph.value_info}
        for vi in graph.value_info:
            elem = elem_type(self.cur.get(vi.name))
            if elem_type(vi.type) == INT64 and elem:
                vi.type.tensor_type.elem_type = elem
        for name in [*self.i64_source.values(), *self.to_i64.values()]:
            if name not in known:
                graph.value_info.append(self.onnx.helper.make_value_info(name, self.cur[name]))

        leftovers = [vi.name for vi in [*graph.input, *graph.output] if elem_type(vi.type) == INT64]
        leftovers += [t.name for t in graph.initializer if t.data_type == INT64]
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
        return index, first_line(RuntimeError(text), named=False)
    return None
