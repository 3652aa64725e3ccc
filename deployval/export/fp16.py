"""fp16 artifact: float weights and activations converted to fp16, io kept fp32."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ExportError
from .onnx_graph import copy_model, error_line, iter_nodes
from .passes import check_onnx

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, NodeProto

__all__ = ["Fp16Details", "convert_fp16"]

@dataclass
class Fp16Details:
    kept_fp32: list[str] = field(default_factory=list)  # nodes left in fp32 (op or node block list)
    casts_added: int = 0
    initializers_converted: int = 0
    constants_converted: int = 0  # Constant nodes / tensor attributes made fp16
    overflow: int = 0  # converted weight values with |w| > fp16 max (65504): clamped to it
    flush_to_zero: int = 0  # converted weight values with 0 < |w| < smallest fp16 subnormal (2**-24)
    op_block_list: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def convert_fp16(
    model: ModelProto,
    keep_io_types: bool = True,
    op_block_list: Iterable[str] | None = None,
    node_block_list: Iterable[str] | None = None,
) -> tuple[ModelProto, Fp16Details]:
    """Convert float weights and activations to fp16 with onnxconverter-common.

    `op_block_list` extends the converter's default block list (ops such as Range, TopK, Resize
    whose fp16 versions are missing or wrong), it does not replace it. Weights are clamped to
    the finite fp16 range and tiny non-zero weights kept at the smallest subnormal (the
    converter's own defaults, 1e4 and 1e-7, would clip representable values); the details count
    how many values that affected, from np.finfo(np.float16), so the report can say so.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper
    from onnxconverter_common import float16

    fp16 = np.finfo(np.float16)
    fp16_max, fp16_tiny = float(fp16.max), float(fp16.smallest_subnormal)
    blocked_ops = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(op_block_list or ()))
    blocked_nodes = sorted(set(node_block_list or ()))

    def floats(graph: GraphProto) -> dict[str, Any]:
        found = {f"init:{t.name}": t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
        for node in iter_nodes(graph):
            for attr in node.attribute:
                if attr.HasField("t") and attr.t.data_type == onnx.TensorProto.FLOAT:
                    found[f"attr:{node.name}:{node.output[0] if node.output else ''}:{attr.name}"] = attr.t
        return found

    def fp16_keys(graph: GraphProto) -> set[str]:
        keys = {f"init:{t.name}" for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
        for node in iter_nodes(graph):
            for attr in node.attribute:
                if attr.HasField("t") and attr.t.data_type == onnx.TensorProto.FLOAT16:
                    keys.add(f"attr:{node.name}:{node.output[0] if node.output else ''}:{attr.name}")
        return keys

    before = floats(model.graph)
    casts_before = sum(n.op_type == "Cast" for n in iter_nodes(model.graph))
    source = _separate_consumed_outputs(model) if keep_io_types else copy_model(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the converter warns per clamped tensor; we count instead
            converted = float16.convert_float_to_float16(
                source,
                min_positive_val=fp16_tiny,
                max_finite_val=fp16_max,
                keep_io_types=keep_io_types,
                op_block_list=blocked_ops,
                node_block_list=blocked_nodes,
            )
    except Exception as exc:
        raise ExportError(f"fp16 conversion failed: {error_line(exc)}") from None
    if keep_io_types:
        _restore_fp32_outputs(model, converted)
    check_onnx(converted, full=True, what="the fp16 model")

    details = Fp16Details(op_block_list=blocked_ops)
    for key in sorted(fp16_keys(converted.graph) & set(before)):
        values = np.abs(numpy_helper.to_array(before[key]).astype(np.float64))
        details.overflow += int(np.count_nonzero(np.isfinite(values) & (values > fp16_max)))
        details.flush_to_zero += int(np.count_nonzero((values > 0) & (values < fp16_tiny)))
        if key.startswith("init:"):
            details.initializers_converted += 1
        else:
            details.constants_converted += 1
    details.casts_added = sum(n.op_type == "Cast" for n in iter_nodes(converted.graph)) - casts_before
    details.kept_fp32 = [
        n.name or n.output[0]
        for n in iter_nodes(converted.graph)
        if n.op_type in blocked_ops or (n.name and n.name in blocked_nodes)
    ]
    return converted, details


def _separate_consumed_outputs(model: ModelProto) -> ModelProto:
    """A copy where every graph output that other nodes also read is produced by an Identity of
    its own. onnxconverter-common puts the fp32 Cast of a kept-fp32 output on the value itself, so
    the nodes reading it inside the graph got fp32 next to fp16 weights (an invalid model, e.g. a
    codec's z_hat that feeds the hyper-decoder); with the Identity, only the output is cast."""
    copy = copy_model(model)
    graph = copy.graph
    consumed = {name for node in graph.node for name in node.input}
    for output in graph.output:
        if output.name not in consumed:
            continue
        internal = f"{output.name}__deployval_internal"
        for node in graph.node:
            node.output[:] = [internal if o == output.name else o for o in node.output]
            node.input[:] = [internal if i == output.name else i for i in node.input]
        graph.node.append(_make_node("Identity", [internal], [output.name], name=f"{output.name}__deployval_out"))
    return copy


def _make_node(op_type: str, inputs: list[str], outputs: list[str], name: str) -> NodeProto:
    from onnx import helper

    return helper.make_node(op_type, inputs, outputs, name=name)


def _restore_fp32_outputs(original: ModelProto, converted: ModelProto) -> None:
    """Make graph outputs fp32 again where the converter left them fp16 despite keep_io_types.

    onnxconverter-common casts a blocked node's output back to fp16 even when that output is a
    graph output. Its trailing Cast is retargeted to FLOAT when nothing else reads it; otherwise
    the fp16 value is renamed for its readers and a Cast to FLOAT produces the output name.
    """
    import onnx

    graph = converted.graph
    fp32, fp16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    was_fp32 = {o.name for o in original.graph.output if o.type.tensor_type.elem_type == fp32}
    producers = {out: node for node in graph.node for out in node.output}
    names = {n.name for n in graph.node} | set(producers) | {t.name for t in graph.initializer}
    for vi in graph.output:
        if vi.name not in was_fp32 or vi.type.tensor_type.elem_type != fp16:
            continue
        node = producers.get(vi.name)
        if node is None:
            raise ExportError(f"fp16 conversion made graph output '{vi.name}' fp16 and it has no producer to cast")
        vi.type.tensor_type.elem_type = fp32
        readers = [n for n in graph.node if vi.name in n.input]
        if node.op_type == "Cast" and not readers:
            next(a for a in node.attribute if a.name == "to").i = fp32
            continue
        half = vi.name + "__fp16"
        while half in names:
            half += "_"
        names.add(half)
        node.output[list(node.output).index(vi.name)] = half
        for reader in readers:
            for k, name in enumerate(reader.input):
                if name == vi.name:
                    reader.input[k] = half
        for info in graph.value_info:
            if info.name == vi.name:
                info.name = half
        graph.node.append(onnx.helper.make_node("Cast", [half], [vi.name], name=half + "__cast_fp32", to=fp32))
