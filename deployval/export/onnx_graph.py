"""Small helpers over ONNX protos shared by the export passes (no numerics, no runtime)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, NodeProto, TensorProto

DEFAULT_DOMAINS = ("", "ai.onnx")


def copy_model(model: ModelProto) -> ModelProto:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def subgraphs(node: NodeProto) -> list[GraphProto]:
    graphs = []
    for attr in node.attribute:
        if attr.HasField("g"):
            graphs.append(attr.g)
        graphs.extend(attr.graphs)
    return graphs


def iter_nodes(graph: GraphProto) -> Iterator[NodeProto]:
    """Every node of a graph, the nodes of its If/Loop/Scan bodies included (depth first)."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from iter_nodes(sub)


def iter_graphs(graph: GraphProto) -> Iterator[GraphProto]:
    """The graph and every subgraph nested in it."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from iter_graphs(sub)


def iter_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """Every tensor a graph stores (initializers and attribute tensors, subgraphs included)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from iter_tensors(attr.g)
            for sub in attr.graphs:
                yield from iter_tensors(sub)


def default_opset(model: ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in DEFAULT_DOMAINS:
            return int(opset.version)
    return 0


def _reads(node: NodeProto) -> set[str]:
    """Every name a node reads, the outer values its If/Loop/Scan bodies read included."""
    names = {name for name in node.input if name}
    for sub in subgraphs(node):
        for inner in iter_nodes(sub):
            names.update(name for name in inner.input if name)
    return names


def topological_sort(graph: GraphProto) -> bool:
    """Order the graph's nodes so that each comes after the producers of what it reads (a body's outer
    values count), keeping the existing order where it is already valid; True when it changed. Some
    rewriters append nodes at the end; ONNX Runtime tolerates that, the checker and TensorRT do not."""
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    deps = [{producer[name] for name in _reads(node) if name in producer and producer[name] != i}
            for i, node in enumerate(nodes)]
    placed: list[int] = []
    done: set[int] = set()
    pending = list(range(len(nodes)))
    while pending:
        progress = False
        rest = []
        for i in pending:
            if deps[i] <= done:
                placed.append(i)
                done.add(i)
                progress = True
            else:
                rest.append(i)
        if not progress:  # a cycle: leave the graph as it is for the checker to name
            return False
        pending = rest
    if placed == list(range(len(nodes))):
        return False
    ordered = [nodes[i] for i in placed]
    del graph.node[:]
    graph.node.extend(ordered)
    return True


def upgrade_opset(model: ModelProto, opset: int) -> ModelProto:
    """The model converted to the default-domain `opset` with ONNX's version converter. IR 3 models
    list every initializer as a graph input and the converter checks that, so missing ones are listed
    first; the IR version is raised to what the new opset needs (IR 3 would require every initializer
    a later pass adds to be an input too). Raises whatever the converter raises."""
    import onnx
    from onnx import version_converter

    source = model
    graph_inputs = {value.name for value in model.graph.input}
    missing = [t for t in model.graph.initializer if t.name not in graph_inputs]
    if model.ir_version < 4 and missing:
        source = copy_model(model)
        for tensor in missing:
            source.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    upgraded = version_converter.convert_version(source, opset)
    needed = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])  # other domains: as they were
    upgraded.ir_version = max(upgraded.ir_version, needed)
    return upgraded
