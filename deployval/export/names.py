"""The names a model already uses, and fresh ones that collide with none of them: the one allocator
every graph pass (fp16, int64 -> int32, int8) invents names with.

A pass that checks only the kind of name it is about to add (an initializer among initializers, a
node output among node outputs) can pick one that already names something else in the model; the
runtime then wires the wrong value in, e.g. a node's output read as a Conv's bias. So every name
counts here: values, nodes, initializers (sparse ones too), graph inputs, outputs and value_info,
graph and function names, in the main graph, in every If/Loop/Scan body and in local functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .graph import iter_graphs, subgraphs

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, NodeProto

__all__ = ["Names", "name_nodes"]


class Names:
    """Every name taken in a model, and fresh ones (`base`, else `base_1`, `base_2`, …)."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._taken: set[str] = {name for name in taken if name}

    @classmethod
    def of(cls, model: ModelProto | GraphProto) -> Names:
        """The names a model (or a graph, with its bodies) uses anywhere."""
        names = cls()
        graph = model.graph if hasattr(model, "graph") else model
        for one in iter_graphs(graph):
            names.add_graph(one)
        for function in getattr(model, "functions", ()):
            names.update([function.name, *function.input, *function.output])
            names.update(vi.name for vi in getattr(function, "value_info", ()))
            for node in function.node:
                names.add_node(node)
                for sub in subgraphs(node):
                    for one in iter_graphs(sub):
                        names.add_graph(one)
        return names

    def add_graph(self, graph: GraphProto) -> None:
        """One graph's own names (its bodies are separate graphs: `of` visits them)."""
        self.add(graph.name)
        self.update(vi.name for vi in [*graph.input, *graph.output, *graph.value_info])
        self.update(t.name for t in graph.initializer)
        for sparse in graph.sparse_initializer:
            self.update([sparse.values.name, sparse.indices.name])
        for node in graph.node:
            self.add_node(node)

    def add_node(self, node: NodeProto) -> None:
        self.update([node.name, *node.input, *node.output])

    def add(self, name: str) -> None:
        if name:
            self._taken.add(name)

    def update(self, names: Iterable[str]) -> None:
        self._taken.update(name for name in names if name)

    def __contains__(self, name: object) -> bool:
        return name in self._taken

    def __len__(self) -> int:
        return len(self._taken)

    def fresh(self, base: str) -> str:
        """`base` if no one uses it, else the first free `base_k`; taken from then on."""
        name, k = base, 0
        while name in self._taken:
            k += 1
            name = f"{base}_{k}"
        self._taken.add(name)
        return name


def name_nodes(nodes: Iterable[NodeProto], names: Names) -> int:
    """Name the unnamed nodes `OpType_index` (index in `nodes`), fresh in `names`; returns how many.
    Named nodes keep their names: node names are what `--int8-exclude` and the reports use."""
    named = 0
    for index, node in enumerate(nodes):
        if not node.name:
            node.name = names.fresh(f"{node.op_type}_{index}")
            named += 1
    return named
