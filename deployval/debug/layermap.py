"""Which ONNX tensor holds each module call's output (and each `mark()`).

Read from the *raw* export, before simplification (the simplifiers drop node metadata but keep node
and tensor names), then applied to the artifact that is actually debugged. Which modules each node
ran in (its scope chain, from the dynamo exporter's name scopes or the legacy exporter's node names)
is read by export/scopes.py.

For a module M, its nodes are those with M in their scope chain (nodes an optimizer made without a
scope take the scope their neighbours share). The nodes of one call are contiguous in the exported
(execution) order, so M's nodes split into runs separated by other scoped nodes; with as many runs
as eager calls, run k is call k (one eager call and several runs, e.g. interleaved constants, are
merged). A call's output is the tensor produced inside its run and read outside it (or a graph
output), matched to the eager output by shape (several outputs: in the order produced, corrected by
which tensor the consumer of each output reads). A container that returns its last child's output
maps to that child's tensor, or to nothing when that child has no node (an activation merged into the
op after it). An eval-mode BatchNorm folded into its conv maps to the fused tensor, and the conv is
listed as fused. A call's inputs are the tensors its run reads from outside (initializers and
constants excluded).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..export.scopes import node_chains
from .capture import Call, Survey

if TYPE_CHECKING:
    from onnx import ModelProto


@dataclass
class CallMapping:
    """Where one call lives in the raw export."""

    key: str
    tensors: list[str | None] = field(default_factory=list)  # per eager output tensor
    nodes: list[str] = field(default_factory=list)  # names of the nodes of this call's run
    ops: list[str] = field(default_factory=list)  # op types in the run (first occurrence order)
    own_ops: list[str] = field(default_factory=list)  # op types of nodes not inside a child module
    inputs: list[str] = field(default_factory=list)  # tensors read from outside the run, first use first
    produced: set[str] = field(default_factory=set)  # every tensor the run's nodes produce
    reason: str = ""  # why nothing (or not everything) is mapped
    # The exporter folded the previous call into this one (BatchNorm into Conv): the nodes start from
    # that call's inputs, so an own-error replay must be fed with them.
    inputs_call: str | None = None
    note: str = ""


@dataclass
class LayerMap:
    source: str  # scopes.DYNAMO, scopes.LEGACY, or "none"
    calls: dict[str, CallMapping]
    shapes: dict[str, tuple[int | None, ...] | None]  # raw tensor -> static shape when known
    # raw tensor -> (producing node name, op type, its inputs, its scope chain): for walks in the raw graph
    producers: dict[str, tuple[str, str, list[str], tuple[str, ...] | None]] = field(default_factory=dict)

    def model_code_ops(self, start: list[str], stop: set[str]) -> list[str]:
        """Op types of the model's own forward code (nodes outside every module) that `start` depends
        on, walking back in the raw graph until tensors in `stop` (outputs of compared layers)."""
        mapped = {t for m in self.calls.values() for t in m.tensors if t}
        ops: list[str] = []
        seen: set[str] = set()
        pending = list(start)
        while pending:
            name = pending.pop()
            if name in seen or name in stop or name in mapped:
                continue
            seen.add(name)
            produced = self.producers.get(name)
            if produced is None:
                continue
            _node, op_type, inputs, chain = produced
            if chain:  # inside a module: not the model's own code
                continue
            if op_type != "Constant" and op_type not in ops:
                ops.append(op_type)
            pending.extend(inputs)
        return ops

    def tensor(self, key: str, index: int = 0) -> str | None:
        mapping = self.calls.get(key)
        if mapping is None or index >= len(mapping.tensors):
            return None
        return mapping.tensors[index]


# ----------------------------------------------------------------------------- the map


def static_shapes(model: ModelProto) -> dict[str, tuple[int | None, ...] | None]:
    """Shapes of every tensor the graph declares or ONNX shape inference finds."""
    from ..export.graph import inferred, shape_of

    graph = inferred(model).graph
    return {info.name: shape_of(info) for info in [*graph.input, *graph.value_info, *graph.output]}


def build_map(model: ModelProto, survey: Survey, module_names: Iterable[str]) -> LayerMap:
    """Map every module call of the survey onto the raw export."""
    chains, source = node_chains(model, module_names)
    shapes = static_shapes(model)
    graph = model.graph
    nodes = list(graph.node)
    initializers = {t.name for t in graph.initializer}
    constants = {o for n in nodes if n.op_type == "Constant" for o in n.output}
    graph_outputs = {o.name for o in graph.output}
    position = {out: i for i, n in enumerate(nodes) for out in n.output}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)

    members: dict[str, list[int]] = {}
    for i, chain in enumerate(chains):
        for scope in chain or ():
            members.setdefault(scope, []).append(i)
    separators = [chain is not None and nodes[i].op_type != "Constant" for i, chain in enumerate(chains)]

    def runs_of(scope: str) -> list[list[int]]:
        runs: list[list[int]] = []
        indices = members.get(scope, [])
        for index in indices:
            if runs and not any(separators[j] and scope not in (chains[j] or ()) for j in range(runs[-1][-1] + 1,
                                                                                              index)):
                runs[-1].append(index)
            else:
                runs.append([index])
        return runs

    calls_by_module: dict[str, list[Call]] = {}
    for call in survey.calls:
        if call.kind == "module":
            calls_by_module.setdefault(call.name, []).append(call)

    result: dict[str, CallMapping] = {}
    for name, calls in calls_by_module.items():
        runs = runs_of(name)
        if not runs:
            for call in calls:
                result[call.key] = CallMapping(call.key, [None] * len(call.outputs),
                                            reason="no ONNX nodes (the exporter removed or folded it)")
            continue
        if len(runs) != len(calls):
            if len(calls) == 1:
                runs = [[i for run in runs for i in run]]
            else:
                for call in calls:
                    result[call.key] = CallMapping(
                        call.key, [None] * len(call.outputs),
                        reason=f"called {len(calls)} times but its nodes form {len(runs)} groups in the graph")
                continue
        for call, run in zip(calls, runs):
            result[call.key] = _map_run(call, run, nodes, chains, shapes, initializers, constants, graph_outputs,
                                        position, consumers)

    _from_consumers(survey, result)
    _folds(survey, result)
    # A call whose output is the very tensor an earlier call returned maps to that call's tensor.
    # If that call has no node at all (an activation merged into the op after it), the value is not in
    # the graph: the tensor leaving this call's nodes is an earlier, different value.
    labels = {c.key: c.label for c in survey.calls}
    for call in survey.calls:
        mapping = result.get(call.key)
        if mapping is None:
            continue
        for index, same in enumerate(call.same_as):
            earlier = result.get(same[0]) if same is not None else None
            if earlier is None or same is None or same[1] >= len(earlier.tensors):
                continue
            if earlier.tensors[same[1]] is not None:
                mapping.tensors[index] = earlier.tensors[same[1]]
            elif not earlier.nodes and earlier.inputs_call is None:
                mapping.tensors[index] = None
                mapping.reason = (f"its output is {labels.get(same[0], same[0])}'s, which is not in the graph "
                                  f"({earlier.reason or 'no nodes'})")
        if all(t is not None for t in mapping.tensors):
            mapping.reason = ""
    producers = {out: (n.name, n.op_type, [i for i in n.input if i], chains[k])
                 for k, n in enumerate(nodes) for out in n.output if out}
    return LayerMap(source, result, shapes, producers)


def _from_consumers(survey: Survey, result: dict[str, CallMapping]) -> None:
    """For calls with several outputs, the dataflow decides: when a later call reads output j of C
    (the same tensor object in eager) and exactly one of its input tensors in the graph comes from
    C's nodes, that tensor is C's output j."""
    for call in survey.calls:
        mine = result.get(call.key)
        if mine is None or call.kind != "module":
            continue
        sources = [s for s in call.inputs_from if s is not None]
        for source_key, position in sources:
            theirs = result.get(source_key)
            if theirs is None or len(theirs.tensors) < 2 or position >= len(theirs.tensors):
                continue
            if sum(1 for s in sources if s[0] == source_key) != 1:
                continue  # reads several outputs of it: ambiguous
            read = [name for name in mine.inputs if name in theirs.produced]
            if len(read) == 1 and read[0] in (theirs.tensors[position], *[t for t in theirs.tensors if t is None],
                                              *[n for n in theirs.produced]):
                previous = theirs.tensors[position]
                if previous != read[0]:
                    if read[0] in theirs.tensors:  # swap with the output that had claimed it
                        theirs.tensors[theirs.tensors.index(read[0])] = previous
                    theirs.tensors[position] = read[0]


_FOLD_TARGETS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def _folds(survey: Survey, result: dict[str, CallMapping]) -> None:
    """Eval-mode BatchNorm after a conv becomes one Conv node: the legacy exporter names it after the
    conv (the norm has no node), the dynamo exporter after the norm (the conv has none). Either way
    the one tensor holds the norm's output and the conv's own output is not in the graph. (Other
    modules without nodes, e.g. a ReLU merged into a following Clip, are left unmapped: their
    output is not in the graph.)"""
    calls = survey.by_key()
    pairs = []
    for call in survey.calls:
        mine = result.get(call.key)
        if mine is None or call.kind != "module" or len(call.inputs_from) != 1 or call.inputs_from[0] is None \
                or len(call.outputs) != 1 or call.same_as[0] is not None:
            continue
        source = calls.get(call.inputs_from[0][0])
        theirs = result.get(call.inputs_from[0][0])
        if source is None or theirs is None or source.kind != "module" or len(source.outputs) != 1 \
                or source.outputs[0].shape != call.outputs[0].shape or "BatchNorm" not in call.type:
            continue
        pairs.append((call, mine, source, theirs))
    fused_forward = set()
    for call, mine, source, theirs in pairs:  # dynamo: the conv has no node, the norm's node is a Conv
        if mine.nodes and not theirs.nodes and mine.tensors[0] is not None and _FOLD_TARGETS & set(mine.ops):
            mine.inputs_call = source.key
            mine.note = f"the exporter fused {source.label} into it"
            theirs.reason = f"the exporter fused it with {call.label} ({call.type}): its own output is not in the graph"
            fused_forward.add(source.key)
    for call, mine, source, theirs in pairs:  # legacy: the norm has no node, the conv's node holds both
        if call.key in fused_forward or mine.nodes or not theirs.nodes or theirs.tensors[0] is None \
                or not _FOLD_TARGETS & set(theirs.ops) or source.key in fused_forward:
            continue
        mine.tensors, mine.nodes, mine.ops, mine.own_ops = list(theirs.tensors), theirs.nodes, theirs.ops, \
            theirs.own_ops
        mine.inputs, mine.inputs_call, mine.reason = theirs.inputs, source.key, ""
        mine.note = f"the exporter fused {source.label} into it"
        theirs.tensors, theirs.nodes = [None], []
        theirs.reason = f"the exporter fused it with {call.label} ({call.type}): its own output is not in the graph"


def _map_run(call: Call, run: list[int], nodes: list[Any], chains: list[tuple[str, ...] | None],
             shapes: dict[str, Any], initializers: set[str], constants: set[str], graph_outputs: set[str],
             position: dict[str, int], consumers: dict[str, list[int]]) -> CallMapping:
    inside = set(run)
    produced = [out for i in run for out in nodes[i].output if out]
    produced_set = set(produced)
    leaving = [t for t in produced if t in graph_outputs or any(c not in inside for c in consumers.get(t, []))]
    inputs: list[str] = []
    for i in run:
        for name in nodes[i].input:
            if name and name not in produced_set and name not in initializers and name not in constants \
                    and name not in inputs:
                inputs.append(name)
    ops = list(dict.fromkeys(nodes[i].op_type for i in run))
    own_ops = list(dict.fromkeys(nodes[i].op_type for i in run if (chains[i] or ("",))[-1] == call.name))
    mapping = CallMapping(call.key, nodes=[nodes[i].name for i in run], ops=ops, own_ops=own_ops, inputs=inputs,
                          produced=produced_set)
    used: set[str] = set()
    for info in call.outputs:
        want = tuple(info.shape)
        fitting = [t for t in leaving if t not in used and _shape_fits(shapes.get(t), want)]
        # one output: the last tensor produced (outputs come last); several: in the order produced
        chosen = (fitting[-1] if len(call.outputs) == 1 else fitting[0]) if fitting else None
        mapping.tensors.append(chosen)
        if chosen is not None:
            used.add(chosen)
    if any(t is None for t in mapping.tensors):
        mapping.reason = ("no tensor leaving its nodes has the eager output's shape"
                          if leaving else "none of its tensors is used outside it")
    return mapping


def _shape_fits(shape: tuple[int | None, ...] | None, want: tuple[int, ...]) -> bool:
    if shape is None:
        return True  # unknown: accept, the comparison checks the shape anyway
    return len(shape) == len(want) and all(s is None or s == w for s, w in zip(shape, want))


# ----------------------------------------------------------------------------- markers


@dataclass(frozen=True)
class MarkBinding:
    """Which tensor a `mark()` named in the marker export, described by its producing node so that
    it can be found in the deployable export."""

    name: str
    call: int
    producer: str  # node name; "" for a graph input
    op_type: str
    output_index: int
    tensor: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "call": self.call, "producer": self.producer, "op_type": self.op_type,
                "output_index": self.output_index, "tensor": self.tensor}


def marker_bindings(model: ModelProto) -> list[MarkBinding]:
    from .marks import MARK_DOMAIN, MARK_OP

    nodes = list(model.graph.node)
    producer = {out: (n, k) for n in nodes for k, out in enumerate(n.output)}
    counts: dict[str, int] = {}
    bindings = []
    for node in nodes:
        if node.domain != MARK_DOMAIN or node.op_type != MARK_OP:
            continue
        name = next((a.s.decode() for a in node.attribute if a.name == "name"), "")
        tensor = node.input[0]
        source = producer.get(tensor)
        while source is not None and source[0].domain == MARK_DOMAIN and source[0].op_type == MARK_OP:
            tensor = source[0].input[0]
            source = producer.get(tensor)
        call = counts.get(name, 0)
        counts[name] = call + 1
        if source is None:
            bindings.append(MarkBinding(name, call, "", "input", 0, tensor))
        else:
            bindings.append(MarkBinding(name, call, source[0].name, source[0].op_type, source[1], tensor))
    return bindings


def transfer_marks(bindings: Sequence[MarkBinding], model: ModelProto) -> dict[tuple[str, int], tuple[str | None, str]]:
    """(mark name, call) -> (tensor in `model`, reason when none)."""
    by_name = {n.name: n for n in model.graph.node if n.name}
    inputs = {i.name for i in model.graph.input}
    found: dict[tuple[str, int], tuple[str | None, str]] = {}
    for binding in bindings:
        key = (binding.name, binding.call)
        if not binding.producer:
            found[key] = (binding.tensor, "") if binding.tensor in inputs else (
                None, f"marks graph input '{binding.tensor}', which the deployable export does not have")
            continue
        node = by_name.get(binding.producer)
        if node is None or node.op_type != binding.op_type or binding.output_index >= len(node.output):
            found[key] = (None, f"the marked value (from {binding.op_type} node '{binding.producer}') has no "
                                "counterpart in the deployable export (fused or removed by the exporter)")
        else:
            found[key] = (node.output[binding.output_index], "")
    return found
