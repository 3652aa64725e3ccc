"""Types for the int64 -> int32 pass (int32.py): element types of TypeProtos, the ONNX schemas
and per-node type inference, which decide where int64 must stay, and int64 detection in
subgraphs the pass does not rewrite. onnx is imported inside, as in every export module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ExportError
from .graph import DEFAULT_DOMAINS, default_opset, subgraphs

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, NodeProto, TypeProto

__all__ = [
    "INT32",
    "INT64",
    "NodeTypes",
    "Untyped",
    "attrs_have_int64",
    "elem_type",
    "has_dim_info",
    "mentions_int64",
    "tensor_type",
    "with_elem",
]

INT32 = 6  # onnx.TensorProto.INT32, spelled out so the module imports without onnx
INT64 = 7  # onnx.TensorProto.INT64


class Untyped(Exception):
    """A node's input has no known type, so its outputs cannot be inferred."""


def elem_type(tp: TypeProto | None) -> int:
    """Element type of a tensor type, 0 for unknown or non-tensor types."""
    if tp is None or tp.WhichOneof("value") != "tensor_type":
        return 0
    return int(tp.tensor_type.elem_type)


def mentions_int64(tp: TypeProto | None) -> bool:
    """Whether a (possibly nested: sequence, optional, map) type carries int64 elements."""
    if tp is None:
        return False
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return tp.tensor_type.elem_type == INT64
    if kind == "sparse_tensor_type":
        return tp.sparse_tensor_type.elem_type == INT64
    if kind == "sequence_type":
        return mentions_int64(tp.sequence_type.elem_type)
    if kind == "optional_type":
        return mentions_int64(tp.optional_type.elem_type)
    if kind == "map_type":
        return tp.map_type.key_type == INT64 or mentions_int64(tp.map_type.value_type)
    return False


def with_elem(tp: TypeProto, elem: int) -> TypeProto:
    import onnx

    out = onnx.TypeProto()
    out.CopyFrom(tp)
    out.tensor_type.elem_type = elem
    return out


def tensor_type(elem: int, dims: Sequence[int]) -> TypeProto:
    import onnx

    tp = onnx.TypeProto()
    tp.tensor_type.elem_type = elem
    tp.tensor_type.shape.SetInParent()
    for d in dims:
        tp.tensor_type.shape.dim.add().dim_value = int(d)
    return tp


def has_dim_info(tp: TypeProto | None) -> bool:
    return elem_type(tp) != 0 and tp is not None and tp.tensor_type.HasField("shape")


def attrs_have_int64(node: NodeProto) -> bool:
    for attr in node.attribute:
        if attr.HasField("t") and attr.t.data_type == INT64:
            return True
        if any(t.data_type == INT64 for t in attr.tensors):
            return True
        if node.op_type == "Constant" and attr.name in ("value_int", "value_ints"):
            return True
        if node.op_type == "Cast" and attr.name == "to" and attr.i == INT64:
            return True
    return False


class NodeTypes:
    """ONNX schemas and per-node type inference at one model's opset and IR version."""

    def __init__(self, model: ModelProto) -> None:
        import onnx

        self.onnx = onnx
        self.opset = default_opset(model)
        self.opsets = list(model.opset_import)
        self.ir_version = int(model.ir_version) or onnx.IR_VERSION

    # ---- schemas

    def schema(self, node: NodeProto) -> Any:
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

    def param_name(self, node: NodeProto, index: int) -> str:
        if index < 0:
            return "(subgraph)"
        try:
            param = self._param(self.schema(node).inputs, index)
        except ExportError:
            param = None
        return param.name if param is not None else f"#{index}"

    def allows_int32(self, schema: Any, index: int) -> bool:
        param = self._param(schema.inputs, index)
        if param is None:
            return True  # beyond the schema: the checker will say so, not us
        constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
        return "tensor(int32)" in constraints.get(param.type_str, [param.type_str])

    # ---- type inference

    def infer(self, schema: Any, node: NodeProto, types: Mapping[str, TypeProto]) -> dict[str, TypeProto]:
        """Per-node inference from the schema; a one-node model when the schema has none."""
        inputs = {}
        for name in node.input:
            if name:
                if name not in types or types[name].WhichOneof("value") is None:
                    raise Untyped(name)
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

    # ---- int64 detection for nodes the pass does not rewrite

    def graph_has_int64(self, graph: GraphProto, outer: Mapping[str, TypeProto]) -> bool:
        """Whether a subgraph touches int64 anywhere (types from per-node inference)."""
        types = dict(outer)
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            if mentions_int64(vi.type):
                return True
            types[vi.name] = vi.type
        for init in graph.initializer:
            if init.data_type == INT64:
                return True
            types[init.name] = tensor_type(init.data_type, init.dims)
        for node in graph.node:
            if attrs_have_int64(node):
                return True
            if any(mentions_int64(types.get(n)) for n in node.input if n):
                return True
            for sub in subgraphs(node):
                if self.graph_has_int64(sub, types):
                    return True
            if node.domain not in DEFAULT_DOMAINS or subgraphs(node):
                continue  # outputs untyped here; any int64 consumer shows up through its own types
            try:
                out = self.infer(self.schema(node), node, types)
            except Exception:
                continue
            if any(mentions_int64(tp) for tp in out.values()):
                return True
            types.update(out)
        return False
