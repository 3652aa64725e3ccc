"""Small helpers over ONNX protos shared by the export passes, debug and the tensor-level range check
(no numerics, no runtime)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto

DEFAULT_DOMAINS = ("", "ai.onnx")


def copy_model(model: ModelProto) -> ModelProto:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def light_copy(model: ModelProto) -> ModelProto:
    """A copy without the data of large initializers (their names, types and dims stay): enough for
    shape inference, which then does not copy hundreds of megabytes of weights."""
    import onnx

    copy = onnx.ModelProto()
    graph = model.graph
    if not graph.initializer:
        copy.CopyFrom(model)
        return copy
    for name in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(copy, name, getattr(model, name))
    copy.opset_import.extend(model.opset_import)
    copy.functions.extend(model.functions)
    light = copy.graph
    light.name = graph.name
    light.node.extend(graph.node)
    light.input.extend(graph.input)
    light.output.extend(graph.output)
    light.value_info.extend(graph.value_info)
    for tensor in graph.initializer:
        if tensor.ByteSize() <= 4096:
            light.initializer.append(tensor)
        else:
            stub = light.initializer.add()
            stub.name, stub.data_type = tensor.name, tensor.data_type
            stub.dims.extend(tensor.dims)
    return copy


def inferred(model: ModelProto) -> ModelProto:
    """The model's light copy with ONNX shape inference's value_info (not strict), or the model itself
    where inference fails: its declared types only."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(light_copy(model), strict_mode=False)
    except Exception:
        return model


def shape_of(info: ValueInfoProto) -> tuple[int | None, ...] | None:
    """A tensor's dims as declared (None for a symbolic or unknown dim), or None without a shape."""
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)


def model_of(source: ModelProto, nodes: Sequence[NodeProto], inputs: Sequence[ValueInfoProto],
             outputs: Sequence[ValueInfoProto], name: str, producer: str) -> ModelProto:
    """A model of `nodes` (a part of `source`, in order) with the initializers of `source` they read,
    their bodies' outer reads included, and `source`'s opsets, IR version and local functions."""
    import onnx

    reads = {n for node in nodes for n in node_inputs(node)}
    graph = onnx.helper.make_graph(list(nodes), name, list(inputs), list(outputs),
                                   initializer=[t for t in source.graph.initializer if t.name in reads])
    out = onnx.helper.make_model(graph, opset_imports=list(source.opset_import), producer_name=producer)
    out.ir_version = source.ir_version
    out.functions.extend(source.functions)
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


def outer_reads(node: NodeProto) -> set[str]:
    """Names a node's If/Loop/Scan bodies read from the enclosing graph (at any depth)."""
    reads: set[str] = set()
    for sub in subgraphs(node):
        defined = {i.name for i in sub.input} | {t.name for t in sub.initializer}
        for inner in sub.node:
            defined.update(inner.output)
        for inner in sub.node:
            reads.update(n for n in inner.input if n and n not in defined)
            reads.update(n for n in outer_reads(inner) if n not in defined)
    return reads


def node_inputs(node: NodeProto) -> list[str]:
    """Every name a node reads: its inputs, then (sorted) the outer values its bodies read."""
    names = [n for n in node.input if n]
    return names + sorted(outer_reads(node) - set(names))


def topological_sort(graph: GraphProto) -> bool:
    """Order the graph's nodes so that each comes after the producers of what it reads (a body's outer
    values count), keeping the existing order where it is already valid; True when it changed. Some
    rewriters append nodes at the end; ONNX Runtime tolerates that, the checker and TensorRT do not."""
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    deps = [{producer[name] for name in node_inputs(node) if name in producer and producer[name] != i}
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
