"""fp16 artifact: float weights and activations converted to fp16, io kept fp32.

deployval's own pass over the ONNX protos. onnxconverter-common's converter retypes every float
value_info to fp16 and hopes the nodes follow; on exporter output they do not (Cast(to=FLOAT),
If/Loop bodies reading outer values, stale value_info, sequences), and the artifact fails the
checker. Here every node decides, from its operator schema at the model's opset, which of its
float values it computes in fp16; each value then exists in the precision its producer gives, and
a Cast is inserted (once per value and scope) where a reader needs the other one. Control-flow
nodes keep their interface fp32 and their bodies are converted the same way. What the checker or
ONNX Runtime still refuses is kept fp32, named in the details, and the conversion redone.
"""

from __future__ import annotations

import re
from collections import ChainMap, Counter
from collections.abc import Iterable, MutableMapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ExportError, first_line
from .fp16_schema import FLOAT, FLOAT16, fp16_precisions, holds_float, operator_schema
from .graph import (
    DEFAULT_DOMAINS,
    copy_model,
    default_opset,
    iter_graphs,
    subgraphs,
    upgrade_opset,
)
from .names import Names, name_nodes

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, NodeProto, TensorProto, TypeProto

__all__ = ["CONVERTER", "DEFAULT_OP_BLOCK_LIST", "Fp16Details", "convert_fp16"]

CONVERTER = "deployval-fp16 4"  # part of the cached artifact's recipe: a new pass rebuilds it

# onnxconverter-common's default block list (the ONNX-ML operators included): ops whose fp16
# versions are missing or wrong in runtimes, or compute sizes and indices from float values.
DEFAULT_OP_BLOCK_LIST = (
    "ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "DictVectorizer", "FeatureVectorizer",
    "Imputer", "LabelEncoder", "LinearClassifier", "LinearRegressor", "Normalizer", "OneHotEncoder",
    "RandomUniformLike", "SVMClassifier", "SVMRegressor", "Scaler", "TreeEnsembleClassifier",
    "TreeEnsembleRegressor", "ZipMap", "NonMaxSuppression", "TopK", "RoiAlign", "Resize", "Range", "CumSum",
    "Min", "Max", "Upsample",
)
SOURCE_OPS = ("Constant", "ConstantOfShape")  # float output made from an attribute tensor
DATA_MOVEMENT_OPS = ("Identity", "Pad", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Expand", "Slice",
                     "Gather", "GatherElements", "GatherND", "Concat", "Split", "Tile", "DepthToSpace", "SpaceToDepth")
FLEXIBLE_OPS = ("Shape", "Size", "Cast")  # read either precision as it is: no Cast in front of them
MAX_RETRIES = 24
MIN_OPSET = 6  # Cast(to=FLOAT16) with an integer `to`


@dataclass
class Fp16Details:
    kept_fp32: list[str] = field(default_factory=list)  # nodes with float values left in fp32
    kept_fp32_reasons: dict[str, str] = field(default_factory=dict)  # node -> why it stayed fp32
    # of those, the ones no block list asked for: no fp16 version, unknown or sequence types, or
    # refused by the checker / ONNX Runtime
    unconvertible: list[str] = field(default_factory=list)
    casts_added: int = 0
    initializers_converted: int = 0
    constants_converted: int = 0  # Constant / ConstantOfShape tensors made fp16
    overflow: int = 0  # converted weight values with |w| > fp16 max (65504): clamped to it
    flush_to_zero: int = 0  # converted weight values with 0 < |w| < smallest fp16 subnormal (2**-24)
    weights: list[Any] = field(default_factory=list)  # those tensors named (precision/weight_ranges.py)
    op_block_list: list[str] = field(default_factory=list)
    retries: int = 0  # conversions redone after the checker or ONNX Runtime refused a node

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def convert_fp16(
    model: ModelProto,
    keep_io_types: bool = True,
    op_block_list: Iterable[str] | None = None,
    node_block_list: Iterable[str] | None = None,
) -> tuple[ModelProto, Fp16Details]:
    """Convert float weights and activations to fp16 where the operators allow it.

    `op_block_list` extends DEFAULT_OP_BLOCK_LIST, it does not replace it. Weights are clamped to
    the finite fp16 range and tiny non-zero weights kept at the smallest subnormal; the details
    count how many values that affected. The artifact passes the full ONNX check and, where
    onnxruntime is installed, loads in it: a node that either refuses is kept fp32, and the
    conversion redone (at most MAX_RETRIES times).
    """
    blocked_ops = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(op_block_list or ()))
    requested = set(node_block_list or ())
    prepared = _prepare(model)
    checkable = prepared.ByteSize() < 2**31  # protobuf's limit: a larger model is checked from its saved file
    runtime = checkable and _runtime_error(prepared) is None  # else its refusals are not the conversion's doing
    refused: dict[str, str] = {}  # node -> what the checker / ONNX Runtime said about its fp16 version
    for attempt in range(MAX_RETRIES + 1):
        converter = _Converter(prepared, blocked_ops, requested, refused, keep_io_types)
        try:
            converted = converter.run()
        except Exception as exc:  # a graph this pass does not understand: say so, never a half artifact
            raise ExportError(f"fp16 conversion failed: {first_line(exc, named=False)}") from None
        problem = _problem(converted, runtime) if checkable else None
        if problem is None:
            details = converter.details
            details.op_block_list, details.retries = blocked_ops, attempt
            return converted, details
        blamed = [name for name in converter.blame(problem) if name not in refused]
        if not blamed or attempt == MAX_RETRIES:
            raise ExportError(_short(f"the fp16 model {problem}"))
        for name in blamed:
            refused[name] = _short(f"its fp16 version {problem}")
    raise AssertionError("unreachable")


def _prepare(model: ModelProto) -> ModelProto:
    """A copy at opset >= 6 (Cast's `to` is a string before), with local functions inlined, every
    node named so that it can be blamed, and types inferred (the exporter's value_info is only a
    starting point)."""
    import onnx

    work = copy_model(model)
    if 0 < default_opset(work) < MIN_OPSET:
        try:
            work = upgrade_opset(work, MIN_OPSET)
        except Exception as exc:
            raise ExportError(f"fp16 needs opset {MIN_OPSET}; converting this opset-{default_opset(work)} "
                              f"model failed: {first_line(exc, named=False)}") from None
    if len(work.functions):
        try:
            from onnx import inliner

            work = inliner.inline_local_functions(work)
        except Exception:  # calls of functions then stay fp32 (unknown operator)
            pass
    name_nodes([node for graph in iter_graphs(work.graph) for node in graph.node], Names.of(work))
    try:
        return onnx.shape_inference.infer_shapes(work, check_type=False, strict_mode=False)
    except Exception:  # too large or not inferable: the declared types must do
        return work


def _problem(model: ModelProto, runtime: bool) -> str | None:
    """Why the model is not a usable artifact: the full checker, then ONNX Runtime's loader."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        return f"fails the ONNX checker: {_flat(exc)}"
    error = _runtime_error(model) if runtime else None
    return f"does not load in ONNX Runtime: {error}" if error else None


def _runtime_error(model: ModelProto) -> str | None:
    """ONNX Runtime's (CPU provider) refusal to load the model; None when it loads or is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return _flat(exc)
    return None


def _flat(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\(")
_BLAME = (
    re.compile(r"node name: ([^)]*)\)"),  # checker / shape inference (innermost last)
    re.compile(r"node with name '([^']*)'"),  # onnxruntime: no kernel
    re.compile(r"Node \(([^)]*)\)"),  # onnxruntime: node-level failures
    re.compile(r"[Nn]ode:\s*'?([^\s',]+)"),
)


@dataclass
class _Plan:
    wants: list[int | None]  # per input: the precision the node reads (None: whatever is there)
    gives: list[int | None]  # per output: the precision it produces (None: as in the source model)
    reason: str = ""  # why a node with float values stays fp32
    on_demand: bool = False  # Cast(to=FLOAT) / Constant / ConstantOfShape: fp16 only if all readers want it
    requested: bool = False  # kept fp32 by the op or node block list


class _Converter:
    """One conversion of a prepared model (a fresh copy each try)."""

    def __init__(self, prepared: ModelProto, blocked_ops: list[str], requested: set[str],
                 refused: dict[str, str], keep_io_types: bool) -> None:
        import numpy as np

        self.model = copy_model(prepared)
        self.opset = default_opset(self.model) or 1
        self.blocked_ops, self.requested, self.refused = set(blocked_ops), requested, refused
        self.keep_io = keep_io_types
        self.details = Fp16Details()
        finfo = np.finfo(np.float16)
        self.fp16_max, self.fp16_tiny = float(finfo.max), float(finfo.smallest_subnormal)
        self.types: dict[str, TypeProto] = {}  # as in the source model (after inference)
        self.final: dict[str, TypeProto] = {}  # values retyped or added by the conversion
        self.names = Names.of(self.model)  # what the inserted Casts and fp16 copies may not be called
        self.read: set[str] = set()  # values some node or graph output reads
        for graph in iter_graphs(self.model.graph):
            self._collect(graph)
        self.plans: dict[int, _Plan] = {}
        self.alive: list[NodeProto] = []
        self.demand: dict[str, set[int]] = {}
        self.output_demand: list[str] = []
        self.origin: dict[str, str] = {}  # inserted node -> the node it serves
        self.node_ops: dict[str, str] = {}
        self.fp16_nodes: set[str] = set()
        self.schemas: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------ types
    def _collect(self, graph: GraphProto) -> None:
        from onnx import helper

        for vi in [*graph.input, *graph.output, *graph.value_info]:
            if vi.type.WhichOneof("value") is not None:
                self.types.setdefault(vi.name, vi.type)
        for init in graph.initializer:
            self.types[init.name] = helper.make_tensor_type_proto(init.data_type, list(init.dims))
        for node in graph.node:
            self.read.update(node.input)
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and node.output:
                tensor = next((a.t for a in node.attribute if a.name == "value"), None)
                if tensor is not None:
                    self.types.setdefault(node.output[0], helper.make_tensor_type_proto(tensor.data_type, None))
        self.read.update(vi.name for vi in graph.output)

    def elem(self, name: str) -> int | None:
        """Element type of a tensor value; None when unknown or not a tensor."""
        tp = self.types.get(name)
        if tp is None or tp.WhichOneof("value") != "tensor_type" or not tp.tensor_type.elem_type:
            return None
        return tp.tensor_type.elem_type

    # ------------------------------------------------------------------ planning
    def run(self) -> ModelProto:
        self._plan_graph(self.model.graph, top=True)
        self._settle_data_movement()
        self._rewrite(self.model.graph, ChainMap(), top=True)
        return self.model

    def _plan_graph(self, graph: GraphProto, top: bool) -> None:
        for node in graph.node:
            self.node_ops[node.name] = node.op_type
            plan = self._plan(node)
            self.plans[id(node)] = plan
            self.alive.append(node)  # protobuf wrappers keep their id only while referenced
            if FLOAT16 in plan.wants or FLOAT16 in plan.gives or plan.on_demand:
                self.fp16_nodes.add(node.name)
            if plan.reason:
                self.details.kept_fp32.append(node.name)
                self.details.kept_fp32_reasons[node.name] = plan.reason
                if not plan.requested:
                    self.details.unconvertible.append(node.name)
            for sub in subgraphs(node):
                self._plan_graph(sub, top=False)
        for vi in graph.output:
            if self.elem(vi.name) == FLOAT and not (top and not self.keep_io):
                self.output_demand.append(vi.name)

    def _settle_data_movement(self) -> None:
        """Count the precisions each value is read in (graph outputs: their declared fp32). Then
        reshapes, transposes, slices... read only in fp32 (a weight reshaped for a node kept fp32)
        move in fp32 too: their values stay exact instead of making an fp16 round trip."""
        readers: dict[str, Counter] = {name: Counter([FLOAT]) for name in self.output_demand}
        for node in self.alive:
            for name, want in zip(node.input, self.plans[id(node)].wants):
                if name and want is not None:
                    readers.setdefault(name, Counter())[want] += 1
        changed = True
        while changed:  # readers come after their producers: backwards, one pass settles most chains
            changed = False
            for node in reversed(self.alive):
                plan = self.plans[id(node)]
                if node.op_type not in DATA_MOVEMENT_OPS or FLOAT16 not in plan.gives:
                    continue
                wanted = {w for o in node.output if o for w, n in readers.get(o, Counter()).items() if n}
                if wanted != {FLOAT}:
                    continue
                for name, want in zip(node.input, plan.wants):
                    if name and want == FLOAT16:
                        readers[name][FLOAT16] -= 1
                        readers[name][FLOAT] += 1
                plan.wants = [FLOAT if w == FLOAT16 else w for w in plan.wants]
                plan.gives = [None] * len(plan.gives)
                self.fp16_nodes.discard(node.name)
                changed = True
        self.demand = {name: {w for w, n in counts.items() if n} for name, counts in readers.items()}

    def _plan(self, node: NodeProto) -> _Plan:
        inputs, outputs = list(node.input), list(node.output)
        elems_in = [self.elem(n) if n else None for n in inputs]
        elems_out = [self.elem(n) if n else None for n in outputs]
        as_is = _Plan([FLOAT if e == FLOAT else None for e in elems_in], [None] * len(outputs))
        if not any(self._holds_float(n) for n in [*inputs, *outputs] if n) or subgraphs(node):
            return as_is  # nothing float, or a control-flow node: its interface stays, its bodies convert
        as_is.reason = self._why_fp32(node)
        if as_is.reason:
            as_is.requested = node.name not in self.refused and (
                node.name in self.requested or node.op_type in self.blocked_ops)
            return as_is
        if node.op_type in SOURCE_OPS or (node.op_type == "Cast" and elems_out[0] == FLOAT):
            if node.op_type == "Constant" and not any(a.name in ("value", "value_float", "value_floats")
                                                      for a in node.attribute):
                return as_is  # sparse_value: stays
            wants = [None] * len(inputs)
            return _Plan(wants, [None] * len(outputs), on_demand=elems_out[0] == FLOAT)
        schema = self._schema(node)
        if schema is None:
            as_is.reason = f"no schema for {node.op_type} at opset {self.opset}"
            return as_is
        precisions = fp16_precisions(schema, elems_in, elems_out, flexible=node.op_type in FLEXIBLE_OPS)
        if precisions is None:
            as_is.reason = f"{node.op_type} has no fp16 version at opset {self.opset}"
            return as_is
        return _Plan(*precisions)

    def _holds_float(self, name: str) -> bool:
        return holds_float(self.types.get(name))

    def _why_fp32(self, node: NodeProto) -> str:
        if node.name in self.refused:
            return self.refused[node.name]
        if node.name in self.requested:
            return "kept fp32 on request (node block list)"
        if node.op_type in self.blocked_ops:
            return f"{node.op_type} is in the op block list"
        if node.domain not in DEFAULT_DOMAINS:
            return f"operator of domain '{node.domain}' (no fp16 rules known)"
        for name in [*node.input, *(o for o in node.output if o in self.read)]:  # unread outputs do not matter
            if not name:
                continue
            tp = self.types.get(name)
            if tp is None or tp.WhichOneof("value") is None:
                return f"type of '{name}' unknown (shape inference did not reach it)"
            if tp.WhichOneof("value") != "tensor_type":
                return f"'{name}' is a {tp.WhichOneof('value').replace('_type', '')}, not a tensor"
        return ""

    def _schema(self, node: NodeProto) -> Any:
        key = (node.op_type, node.domain)
        if key not in self.schemas:
            self.schemas[key] = operator_schema(node.op_type, node.domain, self.opset)
        return self.schemas[key]

    # ------------------------------------------------------------------ rewriting
    def _rewrite(self, graph: GraphProto, scope: ChainMap, top: bool) -> None:
        """Rebuild one graph's nodes: each value gets the precisions its readers need.
        `versions[name]` maps a precision to the name holding the value in it."""
        from onnx import helper

        versions: ChainMap = scope.new_child()
        out: list[NodeProto] = []
        initializers = {t.name for t in graph.initializer}
        for vi in graph.input:
            if vi.name in initializers:
                continue
            elem = self.elem(vi.name)
            if top and not self.keep_io and elem == FLOAT:
                vi.type.tensor_type.elem_type = elem = FLOAT16
            versions[vi.name] = {elem: vi.name}
        inputs = {vi.name: vi for vi in graph.input}
        for init in list(graph.initializer):
            versions[init.name] = {init.data_type: init.name}
            if init.data_type != FLOAT or FLOAT16 not in self.demand.get(init.name, ()):
                continue
            half = self._half_tensor(init, source=init.name)
            if half is None:
                continue
            self.details.initializers_converted += 1
            if self.demand[init.name] == {FLOAT16}:
                init.CopyFrom(half)
                if init.name in inputs:  # IR < 4: initializers are listed as inputs too
                    inputs[init.name].type.tensor_type.elem_type = FLOAT16
                versions[init.name] = {FLOAT16: init.name}
            else:  # also read in fp32: a clamped fp16 copy for the fp16 readers
                half.name = self.names.fresh(init.name + "_fp16")
                graph.initializer.append(half)
                if self.model.ir_version < 4:  # every initializer must also be an input there
                    graph.input.append(helper.make_tensor_value_info(half.name, FLOAT16, list(half.dims)))
                self._retype(half.name, init.name, FLOAT16)
                versions[init.name] = {FLOAT: init.name, FLOAT16: half.name}
        graph_outputs = {vi.name for vi in graph.output}
        for node in list(graph.node):
            plan = self.plans[id(node)]
            for k, (name, want) in enumerate(zip(node.input, plan.wants)):
                if name and want is not None:
                    node.input[k] = self._version(name, want, versions, out, node.name)
            for sub in subgraphs(node):
                self._rewrite(sub, versions, top=False)
            out.append(node)
            if plan.on_demand:
                self._on_demand(node, versions, out)
                continue
            for k, (name, give) in enumerate(zip(node.output, plan.gives)):
                if not name:
                    continue
                if give is None or give == self.elem(name):
                    versions[name] = {self.elem(name): name}
                    continue
                if top and self.keep_io and name in graph_outputs:  # the output keeps its name and fp32
                    internal = self.names.fresh(name + "_fp16")
                    node.output[k] = internal
                    self._retype(internal, name, give)
                    out.append(self._cast(internal, name, FLOAT, node.name))
                    versions[name] = {give: internal, FLOAT: name}
                else:
                    self._retype(name, name, give)
                    versions[name] = {give: name}
        for vi in graph.output:
            entry = versions.get(vi.name) or {}
            if top and not self.keep_io:
                vi.type.tensor_type.elem_type = next((p for p, n in entry.items() if n == vi.name),
                                                     vi.type.tensor_type.elem_type)
            elif not top and self.elem(vi.name) == FLOAT and entry and FLOAT not in entry:
                vi.name = self._version(vi.name, FLOAT, versions, out, graph.name)  # positional: renamed
        del graph.node[:]
        graph.node.extend(out)
        self._value_info(graph)

    def _on_demand(self, node: NodeProto, versions: MutableMapping, out: list[NodeProto]) -> None:
        """Cast(to=FLOAT), Constant, ConstantOfShape: fp16 when every reader wants fp16; a
        constant read in both precisions gets a clamped fp16 twin."""
        name = node.output[0]
        demand = self.demand.get(name, set())
        versions[name] = {FLOAT: name}
        if FLOAT16 not in demand:
            return
        if node.op_type == "Cast":
            if demand == {FLOAT16}:
                next(a for a in node.attribute if a.name == "to").i = FLOAT16
                self._retype(name, name, FLOAT16)
                versions[name] = {FLOAT16: name}
            return
        twin = node
        if demand != {FLOAT16}:
            twin = type(node)()
            twin.CopyFrom(node)
        if not self._half_attribute(twin):
            return
        self.details.constants_converted += 1
        if twin is node:
            self._retype(name, name, FLOAT16)
            versions[name] = {FLOAT16: name}
            return
        twin.name = self.names.fresh(node.name + "_fp16")
        twin.output[0] = self.names.fresh(name + "_fp16")
        self.origin[twin.name] = node.name
        self._retype(twin.output[0], name, FLOAT16)
        out.append(twin)
        versions[name] = {FLOAT: name, FLOAT16: twin.output[0]}

    def _version(self, name: str, want: int, versions: MutableMapping, out: list[NodeProto], reader: str) -> str:
        """The name holding `name` in precision `want`, casting it (once per scope) if needed."""
        entry = versions.get(name)
        if not entry or want in entry:
            return entry[want] if entry else name
        source = next(iter(entry.values()))
        cast = self.names.fresh(f"{name}_{'fp16' if want == FLOAT16 else 'fp32'}")
        out.append(self._cast(source, cast, want, reader))
        self._retype(cast, name, want)
        versions[name] = {**entry, want: cast}
        return cast

    def _cast(self, source: str, target: str, to: int, reader: str) -> NodeProto:
        from onnx import helper

        node_name = self.names.fresh(target + "_cast")
        self.origin[node_name] = reader
        self.details.casts_added += 1
        return helper.make_node("Cast", [source], [target], name=node_name, to=to)

    def _retype(self, name: str, like: str, elem: int) -> None:
        import onnx

        tp = onnx.TypeProto()
        if like in self.types:
            tp.CopyFrom(self.types[like])
        tp.tensor_type.elem_type = elem
        self.final[name] = tp

    def _value_info(self, graph: GraphProto) -> None:
        """value_info from scratch: the inferred types of this graph's values, in their new precision."""
        from onnx import helper

        skip = {vi.name for vi in [*graph.input, *graph.output]} | {t.name for t in graph.initializer}
        del graph.value_info[:]
        for node in graph.node:
            for name in node.output:
                tp = self.final.get(name) or self.types.get(name)
                if name and name not in skip and tp is not None and tp.WhichOneof("value") is not None:
                    vi = helper.make_value_info(name, tp)
                    graph.value_info.append(vi)
                    skip.add(name)

    # ------------------------------------------------------------------ tensors
    def _half_tensor(self, tensor: TensorProto, source: str = "") -> TensorProto | None:
        """An fp16 copy of a float tensor, clamped to the finite fp16 range, counting the clamps; the
        value `source` (its name in the graph) is named with its fp16 readers when any were needed."""
        import numpy as np
        from onnx import numpy_helper

        try:
            values = numpy_helper.to_array(tensor)
        except Exception:  # external data not loaded: the tensor stays fp32
            return None
        magnitude = np.abs(values)
        overflow = np.isfinite(values) & (magnitude > self.fp16_max)
        flush = (magnitude > 0) & (magnitude < self.fp16_tiny)
        counts = int(np.count_nonzero(overflow)), int(np.count_nonzero(flush))
        self.details.overflow += counts[0]
        self.details.flush_to_zero += counts[1]
        if source and any(counts):
            from ..judge.weight_ranges import ONNX, tensor_findings

            nodes = self._fp16_readers(source)
            self.details.weights += tensor_findings(values, source, source=ONNX, nodes=tuple(nodes),
                                                    ops=tuple(self.node_ops.get(n, "?") for n in nodes))
        clamped = np.where(overflow, np.sign(values) * self.fp16_max, values)
        clamped = np.where(flush, np.sign(values) * self.fp16_tiny, clamped)
        return numpy_helper.from_array(clamped.astype(np.float16), tensor.name)

    def _half_attribute(self, node: NodeProto) -> bool:
        """Make a Constant / ConstantOfShape's float tensor attribute fp16 (value_float(s) included)."""
        import numpy as np
        from onnx import helper, numpy_helper

        for k, attr in enumerate(node.attribute):
            if attr.name == "value" and attr.t.data_type == FLOAT:
                half = self._half_tensor(attr.t, source=node.output[0])
                if half is None:
                    return False
                attr.t.CopyFrom(half)
                return True
            if attr.name in ("value_float", "value_floats"):
                values = np.array(attr.f if attr.name == "value_float" else list(attr.floats), dtype=np.float32)
                half = self._half_tensor(numpy_helper.from_array(values), source=node.output[0])
                del node.attribute[k]
                node.attribute.append(helper.make_attribute("value", half))
                return half is not None
        if node.op_type == "ConstantOfShape":  # no value: fp32 zeros by default
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float16))))
            return True
        return False

    def _fp16_readers(self, name: str) -> list[str]:
        """The nodes reading value `name` in fp16, through data movement (a weight reshaped for a Conv:
        the Conv); asked while converting its initializer or Constant, before any reader is rewritten."""
        found: list[str] = []
        todo, seen = [name], {name}
        while todo:
            value = todo.pop()
            for node in self.alive:
                if not any(i == value and w == FLOAT16 for i, w in zip(node.input, self.plans[id(node)].wants)):
                    continue
                if node.op_type in DATA_MOVEMENT_OPS:
                    todo += [o for o in node.output if o and o not in seen]
                    seen.update(node.output)
                elif node.name not in found:
                    found.append(node.name)
        return found

    # ------------------------------------------------------------------ blame
    def blame(self, problem: str) -> list[str]:
        """The source-model nodes a checker / ONNX Runtime message is about: the node it names,
        or every converted node of an op type ONNX Runtime has no kernel for."""
        missing = _NO_KERNEL.search(problem)
        if missing:
            same = [n for n, op in self.node_ops.items() if op == missing.group(1) and n in self.fp16_nodes]
            if same:
                return same
        for pattern in _BLAME:
            for name in reversed(pattern.findall(problem)):
                name = self.origin.get(name, name)
                if name in self.node_ops:
                    return [name]
        return []

