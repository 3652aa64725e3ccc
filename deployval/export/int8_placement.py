"""Where int8 Q/DQ go: TensorRT's placement rules (the compute-heavy ops' inputs, and a residual Add's
shortcut where TensorRT fuses the Add into the Conv making its other input), as node names in graph
order. Pure graph analysis: no quantizer runs here."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .onnx_graph import iter_graphs

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
    taken = {node.name for node in model.graph.node if node.name}
    named = 0
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            named += 1
    return named


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
