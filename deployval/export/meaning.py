"""Which tensor of a debugged artifact holds the value of which tensor of the reference graph, decided
by the graphs' structure rather than by tensor names.

A rewrite that merges a node into its producer often keeps the producer's output name: onnxsim, and
ONNX Runtime's optimizations in the int8 quantizer's pre-processing, fold a BatchNormalization (or a
Mul, Add, Sub or Div by a constant) into the Conv, Gemm or MatMul before it, and the Conv's output then
holds the later value. Compared by name, the Conv would carry the whole BatchNormalization as error.

1. The artifact's Cast, QuantizeLinear, DequantizeLinear and Identity nodes are seen through; in the
   reference, Identity, Dropout and a Cast to the type a tensor already has repeat their input.
2. An artifact node stands for a reference node (the producer of its output's name, the node of its
   name, else the one reader of the corresponding inputs) of the same op type (Gemm for MatMul) and
   attributes, whose activation inputs correspond and whose constants agree within the conversion's
   rounding (weights dequantized or cast back): its outputs hold that node's outputs.
3. A Conv, Gemm or MatMul whose weights differ, followed in the reference (as its only reader) by
   BatchNormalization, Mul, Add, Sub or Div by constants that the artifact lacks, had them merged in:
   when folding them into the reference's weights gives the artifact's, its output holds the last
   merged op's value; when not, a value the reference does not have.
4. Where weights cannot be read, a node present in both graphs that reads B in the artifact but A in
   the reference, A following B through such ops only, shows the same merge.

What the structure cannot decide (an op the artifact computes another way) is left to the names: a
tensor holds its namesake's value unless shown otherwise, and a weight that differs for no structural
reason is compared, so that a broken conversion still shows as an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

WRAPPERS = ("Cast", "QuantizeLinear", "DequantizeLinear", "Identity")  # what conversions put around a node
REPEATS = ("Identity", "Dropout")  # reference ops whose output is their input
FOLD_TARGETS = ("Conv", "Gemm", "MatMul")
FOLDABLE = ("BatchNormalization", "Mul", "Add", "Sub", "Div")
# Weights agree when they differ by at most this share of their largest value: int8 per-channel
# weights round within 1/254 of their channel's largest value, fp16 within 1/2048.
RTOL = 0.01


@dataclass(frozen=True)
class Merge:
    """Ops merged into an artifact node, and the reference tensor its output then holds (None: the
    folded weights did not match, so no reference tensor holds its value)."""

    ops: str  # e.g. "BatchNormalization", "Mul and Add"
    holds: str | None


@dataclass
class Meanings:
    """The artifact's tensors in terms of the reference's (see the module docstring)."""

    names: set[str]  # the artifact's tensors
    reference_names: set[str]
    held: dict[str, str] = field(default_factory=dict)  # artifact tensor -> reference tensor, by structure
    merged: dict[str, Merge] = field(default_factory=dict)  # artifact tensors that absorbed later ops
    repeats: dict[str, str] = field(default_factory=dict)  # reference tensor -> the one it repeats
    proven: set[str] = field(default_factory=set)  # held with every constant compared
    holders: dict[str, list[str]] = field(default_factory=dict)  # reference root -> artifact tensors

    def root(self, name: str) -> str:
        for _ in range(64):
            if name not in self.repeats:
                break
            name = self.repeats[name]
        return name

    def value_of(self, tensor: str) -> str | None:
        """The reference tensor whose value artifact tensor `tensor` holds: by structure, else by its
        name; None for a merged tensor that holds no reference value, or a name the reference lacks."""
        if tensor in self.held:
            return self.held[tensor]
        if tensor in self.merged:
            return None
        return tensor if tensor in self.reference_names else None

    def candidate(self, reference: str) -> str | None:
        """The artifact tensor to compare with reference tensor `reference`: its namesake when that
        holds its value, else one the structure shows holding it, else None."""
        root = self.root(reference)
        if reference in self.names:
            value = self.value_of(reference)
            if value is not None and self.root(value) == root:
                return reference
        return next(iter(self.holders.get(root, ())), None)

    def sources(self) -> dict[str, str]:
        """Every artifact tensor that holds a reference value -> that reference tensor (what a replay of
        artifact nodes may be fed)."""
        return {name: value for name in self.names if (value := self.value_of(name)) is not None}

    def why_not(self, reference: str, kind: str) -> str:
        """Why `reference` has no artifact tensor to be compared with."""
        merge = self.merged.get(reference)
        if merge is None and reference in self.held:
            return (f"in the {kind} artifact the tensor '{reference}' holds the value of '{self.held[reference]}' "
                    "(its node was rewritten)")
        if merge is None:
            return f"its tensor is not in the {kind} artifact (removed by simplification or conversion)"
        holds = f"that later value ('{merge.holds}')" if merge.holds else "another value"
        return (f"in the {kind} artifact the {merge.ops} after it was merged into its node: the tensor "
                f"'{reference}' holds {holds}")

    def merged_ops(self) -> dict[str, str]:
        """Artifact tensors named like a reference tensor whose value they no longer hold -> the op
        types merged into their node."""
        return {name: merge.ops for name, merge in self.merged.items() if name in self.reference_names}


def meanings(reference: ModelProto, artifact: ModelProto) -> Meanings:
    """What each tensor of `artifact` holds in terms of `reference`'s tensors (read before the models'
    weights are written out: weights that cannot be read are not compared)."""
    ref, art = _Graph(reference, types=True), _Graph(artifact)
    result = Meanings(names=art.names, reference_names=ref.names, repeats=ref.repeats())
    for name in art.inputs & ref.inputs:
        result.held[name] = name
        result.proven.add(name)
    matcher = _Matcher(ref, art, result)
    for node in art.nodes:
        matcher.visit(node)
    for tensor, value in result.held.items():
        if tensor not in art.inputs:
            result.holders.setdefault(result.root(value), []).append(tensor)
    for names in result.holders.values():  # the namesake first, then in graph order
        names.sort(key=lambda n: (n not in result.reference_names, art.order.get(n, -1)))
    return result


class _Graph:
    """Producers, readers, constants and (for the reference) element types of one model."""

    def __init__(self, model: ModelProto, *, types: bool = False) -> None:
        self.nodes = list(model.graph.node)
        self.producer: dict[str, tuple[NodeProto, int]] = {}
        self.readers: dict[str, list[tuple[NodeProto, int]]] = {}
        self.order: dict[str, int] = {}
        for position, node in enumerate(self.nodes):
            for k, out in enumerate(node.output):
                if out:
                    self.producer[out] = (node, k)
                    self.order[out] = position
            for p, name in enumerate(node.input):
                if name:
                    self.readers.setdefault(name, []).append((node, p))
        self.by_name = {n.name: n for n in self.nodes if n.name}
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.inputs = {i.name for i in model.graph.input if i.name not in self.initializers}
        self.outputs = {o.name for o in model.graph.output}
        self.names = set(self.producer) | self.inputs | set(self.initializers)
        self.static = set(self.initializers)  # constants, and what is computed from constants and shapes
        for node in self.nodes:
            if node.op_type in ("Constant", "Shape", "Size") or (
                    node.input and all(not n or n in self.static for n in node.input) and not _has_graph(node)):
                self.static.update(o for o in node.output if o)
        self.types: dict[str, int] = {}
        if types:
            self._infer_types(model)

    def _infer_types(self, model: ModelProto) -> None:
        import onnx

        from .graph import light_copy

        try:
            inferred = onnx.shape_inference.infer_shapes(light_copy(model), strict_mode=False)
        except Exception:
            inferred = model
        for info in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
            if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
                self.types[info.name] = info.type.tensor_type.elem_type
        self.types.update({t.name: t.data_type for t in model.graph.initializer})

    def repeats(self) -> dict[str, str]:
        repeats = {}
        for node in self.nodes:
            if not node.input or not node.output or not node.output[0]:
                continue
            if node.op_type in REPEATS or (node.op_type == "Cast" and self.types.get(node.input[0]) is not None
                                           and _attribute(node, "to", None) == self.types.get(node.input[0])):
                repeats[node.output[0]] = node.input[0]
        return repeats

    def value(self, name: str, depth: int = 0) -> np.ndarray | None:
        """A constant's value, dequantized or cast back through wrappers; None when `name` is no constant
        or its data is not loaded."""
        from onnx import TensorProto, numpy_helper

        tensor = self.initializers.get(name)
        if tensor is not None:
            if tensor.data_location == TensorProto.EXTERNAL:
                return None
            try:
                return np.asarray(numpy_helper.to_array(tensor), np.float64)
            except Exception:
                return None
        found = self.producer.get(name)
        if found is None or depth > 8:
            return None
        node = found[0]
        if node.op_type == "Constant":
            attribute = next((a for a in node.attribute if a.name == "value"), None)
            try:
                return None if attribute is None else np.asarray(numpy_helper.to_array(attribute.t), np.float64)
            except Exception:
                return None
        if node.op_type in ("Cast", "Identity"):
            return self.value(node.input[0], depth + 1)
        if node.op_type == "DequantizeLinear":
            x, scale = self.value(node.input[0], depth + 1), self.value(node.input[1], depth + 1)
            zero = self.value(node.input[2], depth + 1) if len(node.input) > 2 and node.input[2] else np.zeros(1)
            if x is None or scale is None or zero is None:
                return None
            if scale.size > 1 and x.ndim:
                shape = [1] * x.ndim
                shape[int(_attribute(node, "axis", 1)) % x.ndim] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.size > 1 else zero
            return (x - zero) * scale
        return None


def _attribute(node: NodeProto, name: str, default: object) -> object:
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _has_graph(node: NodeProto) -> bool:
    return any(a.HasField("g") or len(a.graphs) for a in node.attribute)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        if a.size != b.size:
            return False
        a = a.reshape(b.shape)
    if not a.size:
        return True
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))))
    return bool(np.all(np.isfinite(a) == np.isfinite(b))) and float(np.nanmax(np.abs(a - b))) <= RTOL * scale + 1e-6


@dataclass
class _Outcome:
    node: NodeProto  # the reference node
    merged: list[NodeProto] = field(default_factory=list)  # the reference ops merged into the artifact's node
    end: str | None = None  # the reference tensor the output holds after the merge (None: none does)
    proven: bool = False


class _Matcher:
    def __init__(self, ref: _Graph, art: _Graph, result: Meanings) -> None:
        self.ref, self.art, self.result = ref, art, result

    def visit(self, node: NodeProto) -> None:
        outputs = [o for o in node.output if o]
        if node.op_type == "Constant" or not outputs or all(o in self.art.static for o in outputs):
            return
        if node.op_type in WRAPPERS and not any(o in self.ref.producer for o in outputs):
            return  # seen through
        for candidate in self._named(node):
            outcome = self._match(node, candidate, evidence=True)
            if outcome is not None:
                self._record(node, outcome)
                return
        found = [o for o in (self._match(node, c, evidence=False) for c in self._readers(node)) if o is not None]
        proven = [o for o in found if o.proven]
        if len(proven) == 1 or len(found) == 1:
            self._record(node, (proven or found)[0])

    def _named(self, node: NodeProto) -> list[NodeProto]:
        """The reference nodes that produce this node's first output name, or have its name."""
        found = self.ref.producer.get(node.output[0]) if node.output else None
        candidates = [found[0]] if found is not None and found[1] == 0 else []
        named = self.ref.by_name.get(node.name)
        if named is not None and all(named is not c for c in candidates):
            candidates.append(named)
        return [c for c in candidates if _compatible(node.op_type, c.op_type)]

    def _readers(self, node: NodeProto) -> list[NodeProto]:
        """Reference nodes of this op type reading what its first activation input holds, there."""
        for position, name in enumerate(node.input):
            if name and name not in self.art.static:
                value = self.held_through(name)
                if value is None:
                    return []
                return [reader for reader, p in self.ref.readers.get(value, [])
                        if p == position and _compatible(node.op_type, reader.op_type)]
        return []

    def held_through(self, tensor: str) -> str | None:
        """The reference tensor an artifact tensor holds, seen through Cast and Q/DQ wrappers."""
        for _ in range(16):
            value = self.result.value_of(tensor)
            if value is not None or tensor in self.result.merged:
                return value
            found = self.art.producer.get(tensor)
            if found is None or found[0].op_type not in WRAPPERS or not found[0].input:
                return None
            tensor = found[0].input[0]
        return None

    def _corresponds(self, tensor: str, reference: str) -> bool:
        value = self.held_through(tensor)
        return value is not None and self.result.root(value) == self.result.root(reference)

    def _match(self, node: NodeProto, ref: NodeProto, *, evidence: bool) -> _Outcome | None:
        if not _same_attributes(node, ref):
            return None
        constants, pending = [], []
        for position in range(max(len(node.input), len(ref.input))):
            a = node.input[position] if position < len(node.input) else ""
            r = ref.input[position] if position < len(ref.input) else ""
            a_static, r_static = not a or a in self.art.static, not r or r in self.ref.static
            if a_static != r_static:
                return None
            if a_static:
                constants.append((a, r))
            elif not self._corresponds(a, r):
                pending.append((a, r))
        if pending and not (evidence and self._merged_by_readers(pending)):
            return None
        fold = node.op_type in FOLD_TARGETS and ref.op_type in FOLD_TARGETS
        same = self._same_weights(node, ref) if fold else self._same_constants(constants)
        if same is not False:
            return _Outcome(ref, proven=same is True)
        if not fold:
            return None  # computed another way: left to the names
        merged, end = self._chain(node, ref)
        if not merged:
            return None  # weights differ for no structural reason: compared, so that the difference shows
        return _Outcome(ref, merged, end if self._folds(node, ref, merged) else None, proven=True)

    def _record(self, node: NodeProto, outcome: _Outcome) -> None:
        result = self.result
        if outcome.merged:
            pairs = [(node.output[0], outcome.end)]
            ops = " and ".join(dict.fromkeys(m.op_type for m in outcome.merged))
        else:
            pairs = [(out, outcome.node.output[k] if k < len(outcome.node.output) else None)
                     for k, out in enumerate(node.output) if out]
            ops = outcome.node.op_type
        for tensor, value in pairs:
            if value:
                result.held[tensor] = value
                if outcome.proven:
                    result.proven.add(tensor)
            if outcome.merged and (value is None or result.root(tensor) != result.root(value)):
                result.merged[tensor] = Merge(ops, value)

    def _merged_by_readers(self, pending: list[tuple[str, str]]) -> bool:
        """Rule 4: each input the artifact reads is a reference tensor B (past wrappers) not shown to be
        unchanged, the reference reads A, and only foldable ops the artifact lacks lead from B to A."""
        found = []
        for tensor, reference in pending:
            for _ in range(16):
                if tensor in self.ref.names:
                    break
                producer = self.art.producer.get(tensor)
                if producer is None or producer[0].op_type not in WRAPPERS or not producer[0].input:
                    return False
                tensor = producer[0].input[0]
            if tensor not in self.ref.names or tensor in self.result.proven or tensor in self.result.merged:
                return False
            ops = self._path(tensor, reference)
            if not ops:
                return False
            found.append((tensor, reference, ops))
        for tensor, reference, ops in found:
            self.result.held[tensor] = reference
            self.result.merged[tensor] = Merge(" and ".join(dict.fromkeys(ops)), reference)
        return True

    def _path(self, start: str, end: str) -> list[str]:
        """The foldable ops (of their only reader) from reference tensor `start` to `end`, which the
        artifact lacks; empty when there is no such path or no foldable op on it."""
        ops, tensor = [], start
        for _ in range(16):
            if tensor == end:
                return ops if any(op in FOLDABLE for op in ops) else []
            readers = self.ref.readers.get(tensor, [])
            if len(readers) != 1 or tensor in self.ref.outputs:
                return []
            reader, position = readers[0]
            if reader.output[0] in self.art.names or not (reader.op_type in REPEATS
                                                          or self._foldable(reader, position)):
                return []
            ops.append(reader.op_type)
            tensor = reader.output[0]
        return []

    def _foldable(self, node: NodeProto, position: int) -> bool:
        if node.op_type not in FOLDABLE or not node.output or not node.output[0]:
            return False
        if node.op_type == "BatchNormalization" and (position != 0 or _attribute(node, "training_mode", 0)
                                                     or any(node.output[1:])):
            return False
        if node.op_type == "Div" and position != 0:
            return False
        return all(n in self.ref.static for p, n in enumerate(node.input) if p != position and n)

    def _chain(self, node: NodeProto, ref: NodeProto) -> tuple[list[NodeProto], str]:
        """The foldable reference ops after `ref` (each the only reader) whose outputs the artifact lacks,
        or has only as `node`'s output (seen through wrappers); and the tensor the last one makes."""
        chain: list[NodeProto] = []
        tensor = ref.output[0]
        for _ in range(16):
            readers = self.ref.readers.get(tensor, [])
            if len(readers) != 1 or tensor in self.ref.outputs or not self._foldable(*readers[0]):
                break
            reader = readers[0][0]
            out = reader.output[0]
            mine = self._made_by(out, node)
            if out in self.art.names and not mine:
                break
            chain.append(reader)
            tensor = out
            if mine:
                break
        return chain, tensor

    def _made_by(self, tensor: str, node: NodeProto) -> bool:
        for _ in range(16):
            producer = self.art.producer.get(tensor)
            if producer is None:
                return False
            if producer[0] is node:
                return True
            if producer[0].op_type not in WRAPPERS or not producer[0].input:
                return False
            tensor = producer[0].input[0]
        return False

    def _same_constants(self, pairs: list[tuple[str, str]]) -> bool | None:
        unknown = False
        for a, r in pairs:
            if not a and not r:
                continue
            va = self.art.value(a) if a else None
            vr = self.ref.value(r) if r else None
            if va is None or vr is None:
                unknown = True
            elif not _close(va, vr):
                return False
        return None if unknown else True

    def _same_weights(self, node: NodeProto, ref: NodeProto) -> bool | None:
        mine, theirs = _weights(node, self.art), _weights(ref, self.ref)
        if mine is None or theirs is None:
            return None
        return _close(mine[0], theirs[0]) and _close(mine[1], theirs[1])

    def _folds(self, node: NodeProto, ref: NodeProto, chain: list[NodeProto]) -> bool:
        """Whether folding `chain` into `ref`'s weights gives `node`'s."""
        mine, theirs = _weights(node, self.art), _weights(ref, self.ref)
        if mine is None or theirs is None:
            return False
        weight, bias = theirs
        # from the output's end: its channel axis (1 for Conv, the last for Gemm/MatMul)
        from_end = weight.ndim - 1 if ref.op_type == "Conv" else 1
        tensor = ref.output[0]
        for op in chain:
            position = list(op.input).index(tensor)
            values = [self.ref.value(n) if n else None for p, n in enumerate(op.input) if p != position]
            if any(v is None for v in values):
                return False
            if op.op_type == "BatchNormalization":
                scale, shift, mean, var = (_per_channel(v, len(bias), 1) for v in values[:4])
                if scale is None or shift is None or mean is None or var is None:
                    return False
                factor = scale / np.sqrt(var + float(_attribute(op, "epsilon", 1e-5)))  # type: ignore[arg-type]
                weight, bias = weight * factor.reshape(-1, *[1] * (weight.ndim - 1)), (bias - mean) * factor + shift
            else:
                vector = _per_channel(values[0], len(bias), from_end)  # type: ignore[arg-type]
                if vector is None:
                    return False
                column = vector.reshape(-1, *[1] * (weight.ndim - 1))
                if op.op_type == "Mul":
                    weight, bias = weight * column, bias * vector
                elif op.op_type == "Div":
                    weight, bias = weight / column, bias / vector
                elif op.op_type == "Add":
                    bias = bias + vector
                elif position == 0:  # Sub: x - c
                    bias = bias - vector
                else:  # c - x
                    weight, bias = -weight, vector - bias
            tensor = op.output[0]
        return _close(mine[0], weight) and _close(mine[1], bias)


def _compatible(artifact_op: str, reference_op: str) -> bool:
    return artifact_op == reference_op or (artifact_op, reference_op) == ("Gemm", "MatMul")


def _same_attributes(node: NodeProto, ref: NodeProto) -> bool:
    """Attributes set on both sides agree (one side only: a default an optimizer wrote out). A Cast's
    target type and Gemm's scaling (compared with the weights) aside, and subgraph bodies, which
    conversions rewrite."""
    import onnx

    if node.op_type != ref.op_type:
        return True  # Gemm for MatMul: compared by the weights
    theirs = {a.name: a for a in ref.attribute}
    skip = {"Cast": {"to"}, "Gemm": {"alpha", "beta", "transB"}}.get(node.op_type, set())
    for attribute in node.attribute:
        other = theirs.get(attribute.name)
        if other is None or attribute.name in skip or attribute.type in (onnx.AttributeProto.GRAPH,
                                                                          onnx.AttributeProto.GRAPHS):
            continue
        if attribute != other:
            return False
    return True


def _weights(node: NodeProto, graph: _Graph) -> tuple[np.ndarray, np.ndarray] | None:
    """A Conv's, Gemm's or MatMul's weight with the output channels first, and its bias (zeros when it
    has none); None when they cannot be read."""
    if len(node.input) < 2:
        return None
    weight = graph.value(node.input[1])
    if weight is None:
        return None
    bias = graph.value(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    if bias is None:
        return None
    if node.op_type == "Conv":
        channels = weight.shape[0] if weight.ndim else 0
    else:
        if weight.ndim != 2 or (node.op_type == "Gemm" and _attribute(node, "transA", 0)):
            return None
        if node.op_type == "Gemm":
            weight = weight * float(_attribute(node, "alpha", 1.0))  # type: ignore[arg-type]
            bias = bias * float(_attribute(node, "beta", 1.0))  # type: ignore[arg-type]
            if not _attribute(node, "transB", 0):
                weight = weight.T
        else:
            weight = weight.T
        channels = weight.shape[0]
    if bias.size not in (1, channels):
        return None
    return weight, np.broadcast_to(bias.reshape(-1), (channels,)).copy()


def _per_channel(value: np.ndarray, channels: int, from_end: int) -> np.ndarray | None:
    """A constant that broadcasts over an output along its channel axis (`from_end` axes from the
    last), as one value per channel; None when it varies along another axis."""
    if value.size == 1:
        return np.full(channels, float(value.reshape(-1)[0]))
    if value.ndim < from_end or value.shape[value.ndim - from_end] != channels or value.size != channels:
        return None
    return value.reshape(-1)


# ----------------------------------------------------------------------------- raw -> artifact

def changed_meaning(raw: ModelProto, artifact: ModelProto) -> dict[str, str]:
    """Tensors of the artifact that keep a raw tensor's name but hold another value, because an op
    after them was merged into their node (onnxsim or ONNX Runtime folding `Conv -> BatchNormalization`
    or `Conv -> Mul(const)` into the Conv and keeping the Conv's output name) -> the op types merged in.
    Decided by structure, through Cast and Q/DQ wrappers."""
    from .meaning import meanings

    return meanings(raw, artifact).merged_ops()
