"""The ONNX graph toolkit, one for the export passes, debug and the tensor-level range check (no
numerics, no runtime): small helpers over protos (copies, shapes, sub-graphs, opsets, topological
order), then the surgery debug and the range check do: expose intermediate tensors as graph outputs,
keep only what those outputs need, cut out the sub-graph between given tensors, estimate its cost,
and size tensors by shape inference."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


# ----------------------------------------------------------------------------- surgery

PRODUCER = "deployval-debug"  # the producer name of the models debug cuts out


class GraphIndex:
    """Producers and types of the tensors of one model."""

    def __init__(self, model: ModelProto, *, infer: bool = True) -> None:
        self.model = model
        self.nodes = list(model.graph.node)
        self.producer: dict[str, int] = {out: i for i, n in enumerate(self.nodes) for out in n.output if out}
        self.initializers = {t.name for t in model.graph.initializer}
        self.inputs = [i.name for i in model.graph.input if i.name not in self.initializers]
        self.outputs = [o.name for o in model.graph.output]
        self.types: dict[str, ValueInfoProto] = {}
        source = inferred(model) if infer else model
        for info in [*source.graph.value_info, *source.graph.input, *source.graph.output]:
            if info.type.HasField("tensor_type"):
                self.types[info.name] = info

    @property
    def tensor_names(self) -> set[str]:
        return set(self.producer) | set(self.inputs) | self.initializers

    def value_info(self, name: str) -> ValueInfoProto:
        import onnx

        info = self.types.get(name)
        if info is not None:
            out = onnx.ValueInfoProto()
            out.CopyFrom(info)
            return out
        return onnx.helper.make_empty_tensor_value_info(name)

    def elem_type(self, name: str) -> int | None:
        info = self.types.get(name)
        return info.type.tensor_type.elem_type if info is not None else None

    def shape(self, name: str) -> tuple[int | None, ...] | None:
        info = self.types.get(name)
        return None if info is None else shape_of(info)

    def ancestors(self, targets: Iterable[str], stop: set[str]) -> tuple[list[int], set[str]]:
        """Indices of the nodes `targets` depend on (in graph order), walking back until a tensor in
        `stop`, an initializer or a graph input; and the graph inputs and `stop` tensors reached."""
        needed: set[int] = set()
        reached: set[str] = set()
        pending = list(targets)
        seen: set[str] = set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in stop or name in self.inputs:
                reached.add(name)
                continue
            if name in self.initializers:
                continue
            index = self.producer.get(name)
            if index is None or index in needed:
                continue
            needed.add(index)
            pending.extend(node_inputs(self.nodes[index]))
        return sorted(needed), reached


def expose(index: GraphIndex, tensors: Sequence[str], *, keep_outputs: bool = True) -> ModelProto:
    """The model with `tensors` as extra graph outputs, and without the nodes no output needs (so
    that an early chunk of layers does not run the whole network)."""
    outputs = list(index.outputs) if keep_outputs else []
    outputs += [t for t in dict.fromkeys(tensors) if t not in outputs]
    node_indices, _ = index.ancestors(outputs, set())
    graph_inputs = [i for i in index.model.graph.input if i.name not in index.initializers]
    declared = {o.name: o for o in index.model.graph.output}
    output_infos = [declared[t] if t in declared else index.value_info(t) for t in outputs]
    return model_of(index.model, [index.nodes[i] for i in node_indices], graph_inputs, output_infos, "debug",
                    PRODUCER)


@dataclass
class Region:
    """The sub-graph that computes `targets` from `inputs` (tensors whose reference values are fed)."""

    model: ModelProto
    inputs: list[str]
    targets: list[str]
    node_names: list[str]
    graph_inputs: list[str]  # model inputs the region reads directly


def region(index: GraphIndex, targets: Sequence[str], available: Iterable[str]) -> Region:
    """Cut out what computes `targets` from the `available` tensors (and the model's inputs)."""
    available = set(available)
    node_indices, reached = index.ancestors(targets, available)
    region_inputs = [name for name in dict.fromkeys(
        n for i in node_indices for n in node_inputs(index.nodes[i])) if name in reached]
    for target in targets:  # a target that is itself available or a graph input
        if target in reached and target not in region_inputs:
            region_inputs.append(target)
    infos = [index.value_info(n) for n in region_inputs]
    model = model_of(index.model, [index.nodes[i] for i in node_indices], infos,
                     [index.value_info(t) for t in targets], "region", PRODUCER)
    return Region(model, region_inputs, list(targets), [index.nodes[i].name for i in node_indices],
                  [n for n in region_inputs if n in index.inputs and n not in available])


def estimate_macs(index: GraphIndex, node_names: Iterable[str]) -> float:
    """Multiply-accumulates of the convolutions and matrix products among `node_names` (from the
    inferred shapes), plus one per output element of every other node: what a pure-numpy evaluator
    has to do."""
    import math

    wanted = set(node_names)
    total = 0.0
    for node in index.nodes:
        if node.name not in wanted:
            continue
        out_shape = index.shape(node.output[0]) if node.output else None
        out_elems = math.prod(d or 1 for d in out_shape) if out_shape else 1
        if node.op_type in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv") and len(node.input) > 1:
            w = index.shape(node.input[1 if node.op_type != "QLinearConv" else 3]) or ()
            per = math.prod(d or 1 for d in w[1:]) if len(w) > 1 else 1
            if node.op_type == "ConvTranspose":
                # every input element is spread over the kernel: in * Cout/g * kernel
                x = index.shape(node.input[0]) or ()
                total += (math.prod(d or 1 for d in x) if x else out_elems) * per
                continue
            total += out_elems * per
        elif node.op_type in ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul") and node.input:
            a = index.shape(node.input[0]) or ()
            k = a[-1] if a and a[-1] else 1
            total += out_elems * k
        else:
            total += out_elems
    return total


WEIGHTS_FILE = "weights.bin"


def externalize(model: ModelProto, directory: Path) -> None:
    """Write the model's weights once to directory/weights.bin and keep only references in memory:
    every model cut from it (debug chunks, regions) and saved into `directory` is then a small graph
    file, instead of another copy of the weights per backend run."""
    from onnx.external_data_helper import convert_model_to_external_data, write_external_data_tensors

    directory.mkdir(parents=True, exist_ok=True)
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=WEIGHTS_FILE, size_threshold=1024,
                                   convert_attribute=False)
    write_external_data_tensors(model, str(directory))


def save_model(model: ModelProto, path: Path) -> Path:
    """Save next to the weights written by `externalize` (the model's external references are relative)."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def cast_feeds(feeds: Mapping[str, Any], index: GraphIndex) -> dict[str, Any]:
    """Feeds in the element types the graph declares (fp16 inside an fp16 model)."""
    import numpy as np
    import onnx

    out = {}
    for name, value in feeds.items():
        elem = index.elem_type(name)
        value = np.asarray(value)
        if elem:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
            if value.dtype != dtype:
                value = value.astype(dtype)
        out[name] = value
    return out


def tensor_bytes(model: ModelProto, feeds: Mapping[str, Any]) -> dict[str, int]:
    """Bytes of every tensor whose shape inference resolves once the inputs' dynamic dimensions are
    fixed to the feeds' shapes."""
    import numpy as np
    import onnx

    copy = light_copy(model)
    for value in copy.graph.input:
        if value.name in feeds and value.type.HasField("tensor_type"):
            value.type.tensor_type.shape.ClearField("dim")
            for d in feeds[value.name].shape:
                value.type.tensor_type.shape.dim.add().dim_value = int(d)
    with suppress(Exception):
        copy = onnx.shape_inference.infer_shapes(copy, strict_mode=False, data_prop=True)
    sizes: dict[str, int] = {}
    for info in [*copy.graph.value_info, *copy.graph.output]:
        tensor, dims = info.type.tensor_type, shape_of(info)
        if info.type.HasField("tensor_type") and tensor.elem_type and dims is not None and None not in dims:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
            sizes[info.name] = int(np.prod(dims, dtype=np.int64)) * itemsize
    return sizes
