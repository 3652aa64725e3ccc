"""Where int8 Q/DQ go: TensorRT's placement rules (the compute-heavy ops' inputs, and a residual Add's
shortcut where TensorRT fuses the Add into the Conv making its other input), as node names in graph
order; and the graph's preparation for ONNX Runtime's quantizer (node names, unshared weights and
biases). No quantizer runs here."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import names
from .graph import iter_graphs, iter_nodes
from .names import Names

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, NodeProto

WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
PLACEMENT = "tensorrt-2"  # part of the artifact cache key: change it when the placement rules change
PLACEMENT_RULES = (
    "TensorRT explicit quantization: Q/DQ on the inputs of Conv, ConvTranspose, MatMul and Gemm (weights per "
    "channel, activations per tensor, symmetric, zero-point 0), none on outputs, biases float; a residual Add "
    "only on its shortcut input, where TensorRT fuses it into the Conv making the other input"
)


@dataclass
class Placement:
    """Where Q/DQ go: node names in graph order."""

    nodes: dict[str, str]  # node -> op type: every node the placement quantizes
    activation_matmuls: list[str]  # MatMul/Gemm nodes with two non-constant inputs (in `nodes` only on request)
    residual_adds: dict[str, int]  # Add -> index of its conv-branch input, which stays float
    inputs: dict[str, list[str]]  # node -> the activation tensors it quantizes


def plan_placement(model: ModelProto, quantize_activation_matmuls: bool = False) -> Placement:
    """The nodes whose inputs get Q/DQ (main graph only: ONNX Runtime's quantizer does not enter
    If/Loop bodies). Nodes need names (`name_nodes`)."""
    graph = model.graph
    consts = constant_names(graph)
    producers = {out: node for node in graph.node for out in node.output}
    consumers: Counter[str] = Counter(i for node in graph.node for i in node.input)
    consumers.update(o.name for o in graph.output)
    placement = Placement({}, [], {}, {})
    for node in graph.node:
        if node.op_type in WEIGHTED_OPS:
            if node.op_type in ("MatMul", "Gemm") and not any(i in consts for i in node.input[:2]):
                placement.activation_matmuls.append(node.name)
                if not quantize_activation_matmuls:
                    continue
            placement.nodes[node.name] = node.op_type
            placement.inputs[node.name] = [i for i in node.input[:2] if i and i not in consts]
        elif node.op_type == "Add":
            index = _conv_branch_input(node, producers, consumers, consts)
            if index is not None:
                placement.residual_adds[node.name] = index
                placement.nodes[node.name] = node.op_type
                placement.inputs[node.name] = [node.input[1 - index]]
    return placement


def _conv_branch_input(add: NodeProto, producers: Mapping[str, NodeProto], consumers: Counter[str],
                       consts: set[str]) -> int | None:
    """For a residual Add TensorRT fuses into a Conv: the index of the input that Conv makes (it stays
    float; the other, the shortcut, is quantized). None for any other Add. As in TensorRT Model
    Optimizer: when both inputs come from Convs, the one on the longer path from their lowest common
    ancestor is the fused one; an input that derives from the other's Conv is no shortcut."""
    if len(add.input) != 2 or any(i in consts or i not in producers for i in add.input):
        return None
    chains = [_conv_chain(i, producers, consumers, consts) for i in add.input]
    if not any(chains):
        return None
    depths = [_depths(i, producers, consts) for i in add.input]
    common = set(depths[0]) & set(depths[1])
    if not common:
        return None
    lca = min(common, key=lambda t: (depths[0][t] + depths[1][t], t))
    if chains[0] and chains[1]:
        if chains[0][-1] == chains[1][-1]:
            return None
        return 0 if depths[0][lca] > depths[1][lca] else 1
    index = 0 if chains[0] else 1
    return None if lca in chains[index] else index


def _conv_chain(tensor: str, producers: Mapping[str, NodeProto], consumers: Counter[str],
                consts: set[str]) -> list[str] | None:
    """The tensors from `tensor` back to the Conv/ConvTranspose output it is made of, through what
    TensorRT fuses into a convolution (BatchNormalization, Relu, a constant bias or scale), each read
    only by the next op; None when `tensor` is not such a convolution's epilogue."""
    chain = [tensor]
    for _ in range(6):
        node = producers.get(tensor)
        if node is None or consumers[tensor] != 1:
            return None
        if node.op_type in ("Conv", "ConvTranspose"):
            return chain
        if node.op_type in ("BatchNormalization", "Relu"):
            tensor = node.input[0]
        elif node.op_type in ("Add", "Mul") and len(node.input) == 2 and sum(i in consts for i in node.input) == 1:
            tensor = next(i for i in node.input if i not in consts)
        else:
            return None
        chain.append(tensor)
    return None


def _depths(tensor: str, producers: Mapping[str, NodeProto], consts: set[str]) -> dict[str, int]:
    """Every non-constant tensor `tensor` is computed from, with its distance in ops."""
    depth = {tensor: 0}
    queue = deque([tensor])
    while queue:
        current = queue.popleft()
        node = producers.get(current)
        for name in node.input if node is not None else ():
            if name and name not in consts and name not in depth:
                depth[name] = depth[current] + 1
                queue.append(name)
    return depth


def constant_names(graph: GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer}
    names.update(node.output[0] for node in graph.node if node.op_type == "Constant" and node.output)
    return names


def name_nodes(model: ModelProto) -> int:
    """Name the main graph's unnamed nodes (the quantizer selects nodes by name); returns how many."""
    return names.name_nodes(model.graph.node, Names.of(model))


# The element types ONNX Runtime's quantizer quantizes weights of (float, float16).
_QUANTIZABLE = (1, 10)


def own_initializers(model: ModelProto, nodes: Iterable[str], taken: Names) -> list[str]:
    """Give each of `nodes` its own copy of every float initializer it shares with another reader (a
    bias read by many Convs, an embedding matrix a Gather and a MatMul both read), named by `taken`;
    the last reader keeps the original. ONNX Runtime's quantizer otherwise copies a shared bias itself,
    as `NAME0`, `NAME1`…, checking only initializer names: where a node output is already called that,
    the output is wired in as the bias. Returns the names of the copies."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    graph_inputs = {vi.name: vi for vi in graph.input}
    readers: Counter[str] = Counter(name for node in iter_nodes(graph) for name in node.input if name)
    readers.update(vi.name for vi in graph.output)
    selected = set(nodes)
    copies: list[str] = []
    for node in graph.node:
        if node.name not in selected or node.op_type not in WEIGHTED_OPS:
            continue
        for index, name in enumerate(node.input):
            tensor = initializers.get(name)
            if tensor is None or tensor.data_type not in _QUANTIZABLE or readers[name] < 2:
                continue
            copy = type(tensor)()
            copy.CopyFrom(tensor)
            copy.name = taken.fresh(f"{name}_{node.name}")
            graph.initializer.append(copy)
            if name in graph_inputs:  # IR < 4 lists initializers as inputs too
                graph.input.append(graph_inputs[name])
                graph.input[-1].name = copy.name
            node.input[index] = copy.name
            readers[name] -= 1
            copies.append(copy.name)
    return copies


# What ONNX Runtime's quantizer appends to a tensor's name for the tensors and nodes it adds (the
# scale, zero-point and int8 copy of a weight; Q/DQ nodes and their outputs).
QUANTIZER_SUFFIXES = ("_scale", "_zero_point", "_quantized", "_QuantizeLinear", "_DequantizeLinear")


def clear_quantizer_names(model: ModelProto, nodes: Iterable[str], taken: Names) -> dict[str, str]:
    """Rename the values that already carry a name ONNX Runtime's quantizer derives from a tensor it
    quantizes (`W_scale`, `x_QuantizeLinear_Output`, … for an input of one of `nodes`): it adds its own
    under those names without looking, and a reader of the old value then reads the quantizer's (a
    per-channel scale of another shape). Graph inputs and outputs keep their names. Returns old -> new."""
    graph = model.graph
    selected = set(nodes)
    quantized = {name for node in graph.node if node.name in selected for name in node.input if name}
    interface = {vi.name for vi in [*graph.input, *graph.output]}
    values = {name for g in iter_graphs(graph) for node in g.node for name in [*node.input, *node.output]}
    values.update(t.name for t in graph.initializer)
    renamed = {name: taken.fresh(f"{name}_orig") for name in sorted(values - interface - quantized)
               if any(name.startswith(t + s) for t in quantized for s in QUANTIZER_SUFFIXES)}
    if not renamed:
        return renamed
    for g in iter_graphs(graph):
        for node in g.node:
            node.input[:] = [renamed.get(name, name) for name in node.input]
            node.output[:] = [renamed.get(name, name) for name in node.output]
        for tensor in g.initializer:
            tensor.name = renamed.get(tensor.name, tensor.name)
        for vi in [*g.value_info, *g.input]:
            vi.name = renamed.get(vi.name, vi.name)
    return renamed


def nothing_to_quantize(model: ModelProto, placement: Placement) -> str:
    if placement.activation_matmuls:
        return (f"nothing to quantize in int8: the only MatMul/Gemm nodes ({len(placement.activation_matmuls)}) "
                f"multiply two activations, quantized only with --int8-activation-matmuls")
    nested = sum(1 for graph in iter_graphs(model.graph) if graph is not model.graph
                 for node in graph.node if node.op_type in WEIGHTED_OPS)
    if nested:
        return (f"nothing to quantize in int8: no Conv, ConvTranspose, MatMul or Gemm in the main graph ({nested} "
                "inside If/Loop/Scan bodies, which ONNX Runtime's quantizer does not enter)")
    ops = sorted({node.op_type for node in model.graph.node})
    return f"nothing to quantize in int8: no Conv, ConvTranspose, MatMul or Gemm (the graph has {', '.join(ops)})"
